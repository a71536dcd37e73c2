// Row-interleaved ("packed") quantized weights and their matmul, for CPUs with AVX-512 VNNI or AVX2.
//
// A ggml Q8_0 / Q4_0 matrix keeps each row's blocks together, so a dot product ends every 32 values
// in a per-row horizontal sum and a per-row scalar scale. Packing interleaves 16 rows: for each
// 32-value block column the 16 rows' f16 scales are stored together, then their quants in groups of 4
// values × 16 rows (64 bytes), so one 512-bit integer dot product (vpdpbusd / vpdpwssd) with 4
// activation values broadcast advances 16 rows at once and the block's 16 scales apply as one vector.
// Packing is a load-time copy (ck_pack); the file keeps ggml's layout.
//
// Packed layout, tile t = rows [16t, 16t + 16), block b (nb = K/32 blocks per row), tiles of
// `ck_packed_block_bytes(wtype)` bytes at offset (t·nb + b)·that:
//   bytes [0, 32)  : f16 d of rows 16t+0 … 16t+15
//   Q8_0 (544 B)   : then for g = 0..7, row i: int8 q[4g .. 4g+3] at 32 + 64g + 4i
//   Q4_0 (288 B)   : then for h = 0..3, row i: the Q4_0 bytes qs[4h .. 4h+3] at 32 + 64h + 4i
//                    (low nibbles = values 4h…4h+3, high nibbles = values 16+4h…16+4h+3)
// N must be a multiple of 16 (every Gemma 3 projection is); ck_pack refuses other shapes.
//
// Two layouts, one per process (ck_packed_layout): the one above for AVX-512 VNNI (CK_PACK_AVX512), and
// for AVX2 CPUs (CK_PACK_AVX2) the same tiles and sizes with Q8_0 quants in value pairs (no 4-byte dot
// product there; vpmaddwd takes int16 pairs):
//   Q8_0 (544 B)   : after the 32 scale bytes, for g = 0..15, row i: int8 q[2g], q[2g+1] at 32 + 32g + 2i
//   Q4_0 (288 B)   : as above (AVX2 reads each 64-byte group as two 8-row halves)
// Both layouts give bit-identical matmul outputs (the same exact int32 block dots, the same f32 steps).
//
// Activations: Q8_0 weights pair with CK_ACT_Q16 rows, Q4_0 weights with CK_ACT_Q8 rows, made by
// ck_packed_quantize: the rows of ck_gemv_quantize (gemv_kernels.h), except that (AVX-512 layout) a CK_ACT_Q16 block's
// 32 int16 quants are stored as their 32 low bytes and then their 32 high bytes + 128 (so the int16
// products run as unsigned-byte × signed-byte dot products on the packed int8 weights). Q8_0 weights
// also take CK_ACT_Q8 rows on the AVX-512 layout (vpdpbusd on w XOR 0x80 with the row's block sums correcting
// the +128: half the dot-product instructions of the int16 rows, less accurate; the screen of ck_packed_top2_q8).
// Result and accuracy contract: as ck_gemv (exact int32 block dots, both scales applied in f32; summation
// order of this path). Threads split the row tiles; the thread count never changes the result.
#ifndef CK_PACKED_KERNELS_H
#define CK_PACKED_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CK_PACK_NONE = 0, CK_PACK_AVX512 = 1, CK_PACK_AVX2 = 2 };

/// The packed layout of this process, fixed at the first call: CK_PACK_AVX512 on x86-64 with AVX-512
/// F/BW/VL + VNNI, CK_PACK_AVX2 on AVX2 + FMA + F16C (or with NLA_C_ISA=avx2 in the environment),
/// CK_PACK_NONE otherwise, with NLA_C_ISA=generic, or with NLA_PACK=0 / off.
int ck_packed_layout(void);

/// 1 if packed kernels run in this process (ck_packed_layout() != CK_PACK_NONE), else 0.
int ck_packed_available(void);

/// 1 if ck_packed_top2_q8 and the (Q8_0, CK_ACT_Q8) matmul run (the AVX-512 layout), else 0.
int ck_packed_top2_available(void);

/// Bytes of one 16-row × 32-column packed tile of type wtype (544 for Q8_0, 288 for Q4_0, 0 otherwise).
size_t ck_packed_block_bytes(int wtype);

/// Pack an [N, K] ggml matrix `src` of type wtype into `dst` (N/16 · K/32 · ck_packed_block_bytes
/// bytes, 64-byte aligned). Threaded. Returns 0, or -1 (nothing written) for an unsupported type,
/// N % 16 != 0 or K % 32 != 0.
int ck_pack(int wtype, const void *src, void *dst, int64_t N, int64_t K, int nthreads);

/// Dequantize row r (K values) of a packed matrix (exact).
void ck_packed_dequantize_row(int wtype, const void *packed, int64_t r, int64_t K, float *y);

/// ck_gemv_quantize(act, …) in the packed kernels' row layout (see above; CK_ACT_Q8 rows, and every row of
/// the AVX2 layout, are unchanged).
void ck_packed_quantize(int act, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k);

/// Quant j of one CK_ACT_Q16 row made by ck_packed_quantize (K values): the int16 ck_gemv_quantize stores.
int ck_packed_q16_value(const void *row, int64_t k, int64_t j);

/// Y[M,N] (row stride ldy) = Xa[M,K] · W[N,K]^T, W packed by ck_pack, Xa rows from ck_packed_quantize
/// in a format the type pairs with (Q8_0 → CK_ACT_Q16 or CK_ACT_Q8, Q4_0 → CK_ACT_Q8). Any M.
/// Returns 0, or -1 for an unsupported (wtype, act) pair or when packed kernels are unavailable.
int ck_packed_matmul(int wtype, int act, const void *w, const void *xa, float *y, int64_t ldy,
                     int64_t M, int64_t N, int64_t K, int nthreads);

/// Most parts of one ck_packed_matmul_multi call.
#define CK_PACKED_MAX_PARTS 8

/// Several packed matrices of one type and one K applied to the same activation rows in one threaded
/// pass (the q, k, v projections of a layer; gate and up): part p computes Y_p[M, N[p]] (row stride
/// ldy[p]) = Xa · W_p^T. The tiles of all parts are one list split over the threads, so small
/// matrices share one parallel region; every output equals the ck_packed_matmul of its part bit for bit.
/// Returns 0, or -1 (nothing written) for an unsupported pair, nparts outside 1...CK_PACKED_MAX_PARTS,
/// or an N[p] that is not a multiple of 16.
int ck_packed_matmul_multi(int wtype, int act, int nparts, const void *const *w, const int64_t *N,
                           float *const *y, const int64_t *ldy, const void *xa, int64_t M, int64_t K, int nthreads);

/// Per row r of a packed Q8_0 / Q4_0 [N, K] matrix: norms[r] >= ||dequantized row r||_2 (double sum of
/// the exact squares, inflated for its rounding, rounded up to f32). stats[0] = max_r norms[r],
/// stats[1] = max |block scale|; both +inf when any scale is not finite. Threaded. Returns 0, or -1 for
/// an unsupported type or shape (nothing written).
int ck_packed_row_norms(int wtype, const void *packed, int64_t N, int64_t K, float *norms, float *stats, int nthreads);

/// Scratch bytes for ck_packed_top2_q8 (0 for an invalid shape).
size_t ck_packed_top2_q8_scratch_bytes(int64_t M, int64_t N, int64_t K);

/// Exact top-2 of the int16-activation logits of a packed Q8_0 matrix, screened with int8 activations
/// (AVX-512 layout only: on AVX2 the int8 product costs as many instructions as the int16 one).
/// For each of the M rows of x (f32, row stride ldx >= K): index[m], first[m], second[m] are exactly what
/// ck_top2 (ckernels.h) returns over the N values ck_packed_matmul(CK_WTYPE_Q8_0, CK_ACT_Q16, …) gives for
/// that row (first index of the maximum, the largest value at any other index, NaN semantics included).
/// How: every row is screened with the int8 kernel (CK_ACT_Q8), each screen value s_j has a rigorous
/// bound |s_j − exact_j| <= B_j = row_norms[j]·β + A (β from the two quantizations of the row, see
/// packed_kernels.c), and only the 16-row tiles that hold a row with s_j + B_j >= the second largest
/// s_j − B_j are recomputed with the int16 kernel. A row with a non-finite value, a non-finite norm or
/// scale, a magnitude near the f32 range, or more than N/128 + 1 candidate tiles takes the full exact
/// path. row_norms / norm_stats: from ck_packed_row_norms. screen: NULL, or M·N floats that receive the
/// int8 screen values (for tests). candidates: NULL, or per row the number of weight rows computed
/// with the int16 kernel (16 per candidate tile; N on the full path). Threaded; the thread count never
/// changes a result. Returns 0, or -1 (nothing written) when packed kernels are unavailable, the shape
/// is invalid (N % 16, K % 32, ldx < K), or the scratch is too small or not 64-byte aligned.
int ck_packed_top2_q8(const void *w, const float *row_norms, const float *norm_stats, const float *x, int64_t ldx,
                      int64_t M, int64_t N, int64_t K, void *scratch, size_t scratch_bytes, float *screen,
                      int64_t *index, float *first, float *second, int64_t *candidates, int nthreads);

/// The bound parameters ck_packed_top2_q8 uses for one activation row x[K]: returns β and sets *abs_term
/// to A (so |screen_j − exact_j| <= row_norms[j]·β + A), or NaN when the row takes the full exact path
/// because of its values (non-finite, or too large for the guards). For tests and diagnostics.
double ck_packed_top2_q8_bound(const float *x, int64_t K, const float *norm_stats, double *abs_term);

#ifdef __cplusplus
}
#endif
#endif
