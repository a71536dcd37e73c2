// Element-wise kernels of the forward pass (RMSNorm, residual add, scale, GELU-tanh · up, rotate-half
// RoPE, the f32 dot under RMSNorm), built for the machine they run on: one body, compiled three times
// (baseline x86-64, AVX2 + FMA, AVX-512) with per-function `target` attributes and chosen at run time
// from CPUID, the same choice as the quantized kernels (ck_quant_isa_selected, NLA_C_ISA).
//
// Numerical contract: every path is bit-identical to the Swift SIMD tier (VectorKernels) for every
// input, NaN lanes excepted (NaN in, NaN out, payload unspecified). The per-element operation order is
// the Swift tier's (separate f32 mul / add / div / sqrt, FMA contraction off, no fast-math), the exp
// is VectorMath.exp's, and the Σx² of RMSNorm keeps its 16 partial sums (lane = i mod 16), their
// fixed-order reduction and the sequential tail. So the bounds of the SIMD tier against the scalar
// reference (ScalarKernels) hold unchanged, and results do not depend on the path, the thread count
// or how many rows a call holds.
//
// Threads: calls with at least CK_EW_PAR_MIN elements (GELU: 2 · 16384) spread rows / chunks over ck_get_threads()
// OpenMP threads (results are per element or per row, so they do not change).
// `isa`: CK_ISA_AUTO (-1) = the selected path; an unavailable path falls back to the best available.
// `out` may alias `x` / `gate` / `up` (exact aliasing only, no partial overlap).
#ifndef CK_ELEMENTWISE_KERNELS_H
#define CK_ELEMENTWISE_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Elements (rows × n for RMSNorm) from which a call is spread over threads.
#define CK_EW_PAR_MIN 65536

/// The path `isa` runs on (CK_ISA_AUTO resolved, unavailable paths clamped down).
int ck_ew_isa(int isa);

/// Σ a[i]·b[i] with VectorKernels.dot's order (16 lane sums, fixed reduction, sequential tail).
float ck_ew_dot(const float *a, const float *b, int64_t n, int isa);

/// a[i] += b[i].
void ck_ew_add(float *a, const float *b, int64_t n, int isa);

/// a[i] *= s.
void ck_ew_scale(float *a, float s, int64_t n, int isa);

/// For each of `rows` rows of length n (n > 0): out = (x · inv) · weight, inv = 1 / sqrt(Σx²/n + eps).
void ck_ew_rmsnorm_rows(const float *x, const float *weight, float *out, int64_t rows, int64_t n, float eps,
                        int isa);

/// out[i] = x / (1 + e^{-2u}) · up[i], x = gate[i], u = β·(x + κ·x·x·x) (GELU-tanh in its stable form;
/// β = √(2/π), κ = 0.044715 as f32).
void ck_ew_gelu_tanh_mul(const float *gate, const float *up, float *out, int64_t n, int isa);

/// Rotate-half RoPE of one head (head_dim even): for i < h = head_dim/2,
/// x[i] = x[i]·cos[i] − x[i+h]·sin[i], x[i+h] = x[i+h]·cos[i] + x[i]·sin[i].
void ck_ew_rope_rotate_half(float *x, const float *cos_t, const float *sin_t, int64_t head_dim, int isa);

#ifdef __cplusplus
}
#endif
#endif
