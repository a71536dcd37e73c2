// C tier of the K-quant / IQ4_NL / Q5_0 weight kernels (Q4_K, Q6_K, IQ4_NL, Q5_0; ggml byte layouts, documented in
// Sources/Quant/QuantKBlocks.swift). f32 activations: weights are dequantized exactly (the same f32 values as
// the Swift reference dequantizers, bit for bit) and multiplied with f32 FMAs.
//
// Type ids are ggml's, as in the Quant type table (QuantType). Every entry point validates the type with a
// switch and returns CK_KQ_EBADTYPE for any other id (never a default format); 0 on success.
// Threads: `nthreads` <= 0 uses ck_get_threads(); work is split over output columns (N) only, so results do
// not depend on the thread count. The ISA path (generic C or AVX2+FMA, chosen at run time like the other C
// kernels) changes only the f32 summation order.
#ifndef CK_KQUANT_KERNELS_H
#define CK_KQUANT_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include "quant_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CK_WTYPE_Q5_0 = 6, CK_WTYPE_Q4_K = 12, CK_WTYPE_Q6_K = 14, CK_WTYPE_IQ4_NL = 20 };
// Errors: CK_EBADTYPE, CK_EBADSHAPE (quant_kernels.h).
#define CK_KQ_EBADTYPE CK_EBADTYPE
#define CK_KQ_EBADSHAPE CK_EBADSHAPE

/// Values per block (256 or 32) and bytes per block (144, 210, 18, 22); 0 for any other type.
int ck_kq_block_size(int wtype);
size_t ck_kq_block_bytes(int wtype);

/// Dequantize one row of k values (k a multiple of the block size). Exact.
int ck_kq_dequantize_row(int wtype, const void *x, float *y, int64_t k);

/// Y[M,N] (row stride ldy) = X[M,K] (row stride ldx) · dequant(W)[N,K]^T, W rows of K/blockSize blocks.
/// `isa`: CK_ISA_AUTO (-1) = the selected C path, or force CK_ISA_GENERIC / CK_ISA_AVX2 (AVX-512 runs AVX2).
int ck_kq_matmul_f32act(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                        int64_t M, int64_t N, int64_t K, int isa, int nthreads);

/// Same product for prefill: dequantize panels of scratchFloats/K rows of W (OpenMP) and multiply each with
/// OpenBLAS sgemm (OpenBLAS's threads). scratchFloats >= K.
int ck_kq_matmul_f32act_blas(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                             int64_t M, int64_t N, int64_t K, float *scratch, int64_t scratchFloats, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
