// C tier of the quantized kernels (Q8_0 / Q4_0 weights, ggml-compatible raw blocks).
//
// Block layouts (little-endian, unaligned, 32 values per block):
//   Q8_0: { uint16 f16 d; int8  qs[32]; }  34 bytes   value[j] = d * qs[j]
//   Q4_0: { uint16 f16 d; uint8 qs[16]; }  18 bytes   value[j] = d * ((qs[j] & 15) - 8),
//                                                     value[j+16] = d * ((qs[j] >> 4) - 8)
// A weight matrix is [N rows (out), K cols (in)] row-major: each row is K/32 consecutive blocks.
// Activations for the integer path are Q8_0 rows made by ck_quantize_rows_q8_0 (or any tier of
// QuantKernels.quantizeRows: the bytes are identical).
//
// Numerical contract of the integer path (every ISA path, every thread count, and the Swift
// scalar / SIMD tiers produce bit-identical results):
//   y[m,n] = fold over blocks b = 0, 1, ..., K/32-1 of
//            acc = acc + (float)isum(b) * (f16tof32(dw[n,b]) * f16tof32(dx[m,b]))      (acc starts at +0)
//   where isum(b) is the exact int32 dot product of the 32 quants (Q4_0: nibble - 8), and every
//   float operation is a separately rounded f32 mul or add (no FMA contraction).
// Precondition of the AVX2 path (met by the quantizer, which never emits -128): activation quants
// lie in [-127, 127]. Weight quants may use the full int8 range.
//
// Threads: `nthreads` <= 0 uses ck_get_threads(). Work is split over output columns (N) only, so
// each output is computed by one thread in a fixed order: results do not depend on the thread count.
// No function allocates memory.
#ifndef CK_QUANT_KERNELS_H
#define CK_QUANT_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight block formats of this file, numbered as ggml type ids (the Quant type table's ids). The K-quant and
/// IQ4_NL types have their own entry points (kquant_kernels.h). Every entry point that takes a `wtype` checks it
/// and returns CK_EBADTYPE for any other id (never a default format); 0 on success.
enum { CK_WTYPE_Q4_0 = 2, CK_WTYPE_Q8_0 = 8 };
enum { CK_EBADTYPE = -1, CK_EBADSHAPE = -2 };

/// Instruction-set paths of the C kernels. Selection happens at run time from CPUID.
enum {
    CK_ISA_AUTO = -1,          ///< the selected path (ck_quant_isa_selected)
    CK_ISA_GENERIC = 0,        ///< portable C (auto-vectorized by the compiler)
    CK_ISA_AVX2 = 1,           ///< x86-64 AVX2 + FMA + F16C intrinsics (sign trick + vpmaddubsw)
    CK_ISA_AVX512VNNI = 2,     ///< x86-64 AVX-512 VNNI on 256-bit vectors (vpdpbusd), needs AVX512VL/BW
};

/// Bytes of one block of the type (34 or 18), 0 for an unknown type.
size_t ck_block_bytes(int wtype);
/// 1 if `isa` is compiled into this binary and supported by this CPU, else 0.
int ck_quant_isa_available(int isa);
/// The path the kernels use for CK_ISA_AUTO (best available unless forced by ck_quant_set_isa or
/// the environment variable NLA_C_ISA=generic|avx2|avx512vnni, read once at first use).
int ck_quant_isa_selected(void);
/// Force a path (CK_ISA_AUTO = best available). Unavailable paths fall back to the best available
/// one below them. Returns the path now selected. Not thread-safe: call before running kernels.
int ck_quant_set_isa(int isa);
/// "generic", "avx2", "avx512vnni" (or "?").
const char *ck_quant_isa_name(int isa);

/// f16 bits <-> f32, exact / round-to-nearest-even (portable bit manipulation; same results as
/// Swift's Float16 conversions, F16C and ggml's tables). NaN stays NaN (quiet).
float ck_f16_to_f32(uint16_t h);
uint16_t ck_f32_to_f16(float f);

/// Quantize `rows` f32 rows of length k (k % 32 == 0, row stride ldx floats) to Q8_0:
/// per block amax = max|x|, d = amax / 127, id = d != 0 ? 1/d : 0, q = roundf(x * id) (round half
/// away from zero), stored d = f16(d) (RNE). Output rows are contiguous (k/32 blocks each).
/// Threaded over rows. Bytes identical to the Swift tiers and to ggml's quantize_row_q8_0_ref.
void ck_quantize_rows_q8_0(const float *x, int64_t ldx, void *y, int64_t rows, int64_t k, int nthreads);

/// Dequantize one row of k values (k % 32 == 0) of type wtype to f32 (exact: q * f16tof32(d)).
int ck_dequantize_row(int wtype, const void *x, float *y, int64_t k);

/// Integer block dot products of one weight row and one Q8_0 activation row: out[b] = isum(b) for
/// b < nb. Exact int32 on every path (used by tests to check the integer core of each ISA path).
int ck_block_dots(int wtype, const void *w, const void *xq, int32_t *out, int64_t nb, int isa);

/// Y[M,N] (row stride ldy) = Xq[M,K] · W[N,K]^T with Xq Q8_0 rows (K/32 blocks each) and W of type
/// wtype. Contract: see the top of this header (bit-identical across paths and thread counts).
/// Prefill (M > 1) tiles 8 columns x 4 rows (AVX2) or 8 rows (AVX-512) so each weight block is
/// expanded once per tile of rows.
int ck_matmul_q8act(int wtype, const void *w, const void *xq, float *y, int64_t ldy,
                    int64_t M, int64_t N, int64_t K, int isa, int nthreads);

/// Y[M,N] = X[M,K] (f32, row stride ldx) · dequant(W)[N,K]^T: weights are dequantized exactly on
/// the fly and multiplied with f32 FMAs. Accumulation in f32, order unspecified (per-lane partial
/// sums, then a horizontal sum): |y - y_exact| <= ~K * 2^-24 * sum_j |x_j w_j| (worst case), typically
/// ~sqrt(K) * 2^-24 * sum_j |x_j w_j|. Thread count does not change the result; the ISA path does.
int ck_matmul_f32act(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                      int64_t M, int64_t N, int64_t K, int isa, int nthreads);

/// Same product as ck_matmul_f32act computed as "dequantize a panel of W to f32, then OpenBLAS
/// sgemm": `scratch` holds `scratchFloats` floats (>= K; a panel of scratchFloats/K rows of W is
/// dequantized at a time, threaded with OpenMP; sgemm uses OpenBLAS's own threads, set by
/// ck_set_threads). Accumulation order is OpenBLAS's.
int ck_matmul_f32act_blas(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                           int64_t M, int64_t N, int64_t K, float *scratch, int64_t scratchFloats, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
