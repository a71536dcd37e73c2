// Decode-sized quantized matmuls ("gemv": a few activation rows against a whole weight matrix).
//
// Decode reads every weight once per token, so its speed is set by how few instructions each weight
// costs and how well the memory system is kept busy. These kernels quantize the activation rows once
// per call into an integer format chosen per weight type, then stream the weight rows with integer
// dot products (AVX-512 VNNI / AVX-512BW, AVX2, or portable C), applying the two block scales in f32.
//
// Activation formats (rows are independent; one row = `nb = K/32` blocks):
//   CK_ACT_Q16: per block f32 d = amax/32767, int16 q[32] = round(x/d)    (error <= d/2 = amax/65534)
//   CK_ACT_Q8:  per block f32 d = amax/127,   int8  q[32] = round(x/d), int32 s = Σq
// A row of the activation buffer is laid out as [f32 d[nb]] [int32 s[nb]] [quants], each part padded
// to 64 bytes. A block that holds a NaN or an infinity gets d = NaN (and zero quants), so the outputs
// it feeds are NaN, as in the f32 product.
// A block whose amax is so small that 1/d would overflow (below ~qmax·2^-128) is stored as d = 0, zero
// quants. Quants are round-half-away-from-zero of x·(1/d), clamped to ±qmax; every ISA path writes
// the same bytes.
//
// Pairings (what the model uses by default): Q8_0 weights with Q16 activations — as accurate as f32
// activations for the model (the int16 rounding is ~2^-16 of a block's largest value); Q4_0 weights
// with Q8 activations, as ggml does (the 4-bit weight error dominates). Q8_0 weights with Q8
// activations are allowed too (faster, less accurate).
//
// Result: y[m,n] = Σ_b f32(dw[n,b]) · dx[m,b] · isum(m,n,b) with isum the exact int32 block dot
// (Q4_0: nibble − 8). Accumulation is f32 in an order that depends on the instruction-set path:
// |y − exact| <= ~nb·2^-23·Σ_b |dw·dx·isum| (tests: every path against a float64 reference). The
// thread count never changes the result (each output is computed by one thread).
#ifndef CK_GEMV_KERNELS_H
#define CK_GEMV_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CK_ACT_Q8 = 1, CK_ACT_Q16 = 2 };

/// Bytes of one activation row of k values (k % 32 == 0) in format `act` (0 for an unknown format).
size_t ck_gemv_act_row_bytes(int act, int64_t k);

/// Quantize `rows` f32 rows (row stride ldx) into `out` (rows · ck_gemv_act_row_bytes bytes,
/// 64-byte aligned). Identical bytes on every machine (portable C, or AVX-512 code that writes the same).
void ck_gemv_quantize(int act, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k);

/// ck_gemv_quantize (split 0) or ck_packed_quantize (split 1) through one code path: CK_ISA_GENERIC the
/// portable per-block code, anything else the AVX-512 row code when the CPU has it (for tests: the
/// paths write identical bytes).
void ck_quantize_rows_isa(int act, int split, int isa, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k);

/// Y[M,N] (row stride ldy) = Xa[M,K] · W[N,K]^T with W raw ggml blocks of type wtype (CK_WTYPE_Q8_0 or
/// CK_WTYPE_Q4_0) and Xa made by ck_gemv_quantize. Any M works; it is meant for M < 16.
/// Returns 0, or -1 for an unsupported (wtype, act) pair (nothing written).
int ck_gemv(int wtype, int act, const void *w, const void *xa, float *y, int64_t ldy,
            int64_t M, int64_t N, int64_t K, int isa, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
