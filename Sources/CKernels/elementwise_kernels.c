// C tier of the element-wise kernels (contract: include/elementwise_kernels.h). The Swift SIMD tier
// compiles for baseline x86-64 (SSE2) because Swift has no per-function targets; here one body per
// kernel, written with 16-lane GCC/Clang vector types, is instantiated three times: without target
// attributes (baseline: four SSE registers per vector), for AVX2 + FMA (two YMM) and for AVX-512
// (one ZMM), and the path is chosen at run time with the quantized kernels' CPUID choice.
//
// Bit-identity with the Swift tier: the per-element formulas are VectorKernels' / VectorMath's, in
// the same order, as separate IEEE operations; FMA contraction is off for this file (the AVX2 and
// AVX-512 paths have FMA instructions available, and clang contracts a*b+c by default in C).
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// The 16-lane helpers below are always inlined, so no vector crosses a call boundary and the
// "AVX vector argument without avx512f changes the ABI" notes do not apply.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include "elementwise_kernels.h"
#include "quant_kernels.h"
#include "ckernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define CK_EW_X86 1
#else
#define CK_EW_X86 0
#endif

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

#define AI static inline __attribute__((always_inline))

AI v16f ld(const float *p) { v16f v; memcpy(&v, p, sizeof v); return v; }
AI void st(float *p, v16f v) { memcpy(p, &v, sizeof v); }
AI v8f ld8(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
AI v16f splat(float s) { return (v16f){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }
/// Lanes where m is set from a, the others from b (m: all-ones / all-zeros lanes of a comparison).
AI v16f sel(v16i m, v16f a, v16f b) { return (v16f)(((v16i)a & m) | ((v16i)b & ~m)); }

// MARK: - exp (VectorMath.exp, lane by lane the same operations)

AI v16f pow2(v16i n) { return (v16f)((n + 127) << 23); }

AI v16f vexp(v16f x) {
    const v16f hi = splat(89.0f), lo = splat(-104.0f);
    v16f xc = sel(x > hi, hi, x);
    xc = sel(xc < lo, lo, xc);
    // round to nearest even with 1.5·2^23 (|x·log2 e| < 2^22 here)
    const v16f t = xc * 1.44269504f + 12582912.0f;
    const v16i n = (v16i)t - 0x4B400000;
    const v16f nf = t - 12582912.0f;
    const v16f r = (xc - nf * 0.693359375f) - nf * -2.1219444e-4f;
    v16f q = splat(1.0f / 5040);
    q = q * r + 1.0f / 720;
    q = q * r + 1.0f / 120;
    q = q * r + 1.0f / 24;
    q = q * r + 1.0f / 6;
    q = q * r + 0.5f;
    const v16f p = 1.0f + (r + (r * r) * q);
    const v16i n1 = n >> 1;
    const v16f y = (p * pow2(n1)) * pow2(n - n1);
    return sel(x != x, x, y);
}

// MARK: - Kernel bodies (inlined into each path)

/// VectorKernels.dot: lanes i mod 16 (its acc0 = lanes 0..7, acc1 = 8..15), one more 8-block into
/// the low half, (acc0 + acc1) reduced as ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)), then the tail.
AI float dot_body(const float *a, const float *b, int64_t n) {
    v16f acc = splat(0.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = acc + ld(a + i) * ld(b + i);
    v8f lo = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7);
    const v8f hi = __builtin_shufflevector(acc, acc, 8, 9, 10, 11, 12, 13, 14, 15);
    if (i + 8 <= n) { lo = lo + ld8(a + i) * ld8(b + i); i += 8; }
    const v8f v = lo + hi;
    const v4f h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    float s = (h[0] + h[2]) + (h[1] + h[3]);
    for (; i < n; i++) s = s + a[i] * b[i];
    return s;
}

AI void add_body(float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) st(a + i, ld(a + i) + ld(b + i));
    for (; i < n; i++) a[i] = a[i] + b[i];
}

AI void scale_body(float *a, float s, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) st(a + i, ld(a + i) * s);
    for (; i < n; i++) a[i] = a[i] * s;
}

AI void rmsnorm_body(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        const float inv = 1.0f / sqrtf(dot_body(xr, xr, n) / (float)n + eps);
        int64_t i = 0;
        for (; i + 16 <= n; i += 16) st(o + i, (ld(xr + i) * inv) * ld(w + i));
        for (; i < n; i++) o[i] = (xr[i] * inv) * w[i];
    }
}

/// VectorKernels.geluTanhMul's g(x) = x / (1 + e^{−2u}), u = β·(x + ((κ·x)·x)·x).
AI v16f gelu_v(v16f x) {
    const v16f u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + vexp(-2.0f * u));
}

AI void gelu_body(const float *gate, const float *up, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) st(out + i, gelu_v(ld(gate + i)) * ld(up + i));
    if (i < n) {  // tail: padded lanes (gate 0, up 0) are computed and dropped
        float g[16] = {0}, u[16] = {0}, o[16];
        const size_t r = (size_t)(n - i);
        memcpy(g, gate + i, r * sizeof(float));
        memcpy(u, up + i, r * sizeof(float));
        st(o, gelu_v(ld(g)) * ld(u));
        memcpy(out + i, o, r * sizeof(float));
    }
}

AI void rope_body(float *x, const float *c, const float *s, int64_t d) {
    const int64_t h = d / 2;
    int64_t i = 0;
    for (; i + 16 <= h; i += 16) {
        const v16f a = ld(x + i), b = ld(x + i + h), cv = ld(c + i), sv = ld(s + i);
        st(x + i, a * cv - b * sv);
        st(x + i + h, b * cv + a * sv);
    }
    for (; i < h; i++) {
        const float a = x[i], b = x[i + h];
        x[i] = a * c[i] - b * s[i];
        x[i + h] = b * c[i] + a * s[i];
    }
}

// MARK: - The paths

typedef struct {
    float (*dot)(const float *, const float *, int64_t);
    void (*add)(float *, const float *, int64_t);
    void (*scale)(float *, float, int64_t);
    void (*rmsnorm)(const float *, const float *, float *, int64_t, int64_t, float);
    void (*gelu)(const float *, const float *, float *, int64_t);
    void (*rope)(float *, const float *, const float *, int64_t);
} ew_path;

#define EW_PATH(NAME, ATTR)                                                                                  \
    ATTR static float dot_##NAME(const float *a, const float *b, int64_t n) { return dot_body(a, b, n); }  \
    ATTR static void add_##NAME(float *a, const float *b, int64_t n) { add_body(a, b, n); }                 \
    ATTR static void scale_##NAME(float *a, float s, int64_t n) { scale_body(a, s, n); }                    \
    ATTR static void rmsnorm_##NAME(const float *x, const float *w, float *o, int64_t rows, int64_t n,     \
                                    float eps) { rmsnorm_body(x, w, o, rows, n, eps); }                     \
    ATTR static void gelu_##NAME(const float *g, const float *u, float *o, int64_t n) { gelu_body(g, u, o, n); } \
    ATTR static void rope_##NAME(float *x, const float *c, const float *s, int64_t d) { rope_body(x, c, s, d); } \
    static const ew_path path_##NAME = {dot_##NAME, add_##NAME, scale_##NAME, rmsnorm_##NAME, gelu_##NAME, rope_##NAME};

EW_PATH(generic, )
#if CK_EW_X86
// x86-64-v3 (AVX2, FMA, F16C, BMI) and x86-64-v4 (+ AVX-512 F/VL/BW/DQ); the AVX-512 path is taken with
// the quantized kernels' avx512vnni path (a CPU with AVX-512 but no VNNI runs the AVX2 path).
EW_PATH(avx2, __attribute__((target("avx2,fma,f16c,bmi,bmi2"))))
EW_PATH(avx512, __attribute__((target("avx2,fma,f16c,bmi,bmi2,avx512f,avx512vl,avx512bw,avx512dq"))))
#endif

int ck_ew_isa(int isa) {
    if (isa == CK_ISA_AUTO) return ck_quant_isa_selected();
    if (isa < CK_ISA_GENERIC || isa > CK_ISA_AVX512VNNI) isa = CK_ISA_AVX512VNNI;
    while (isa > CK_ISA_GENERIC && !ck_quant_isa_available(isa)) isa--;
    return isa;
}

static const ew_path *path_for(int isa) {
#if CK_EW_X86
    switch (ck_ew_isa(isa)) {
    case CK_ISA_AVX512VNNI: return &path_avx512;
    case CK_ISA_AVX2: return &path_avx2;
    default: return &path_generic;
    }
#else
    (void)isa;
    return &path_generic;
#endif
}

// MARK: - Entry points (threads over chunks / rows for big calls)

#define EW_CHUNK 16384  // elements per OpenMP work item (a multiple of 16: chunk edges fall on vector blocks)

static int ew_threads(int64_t work) { return work >= CK_EW_PAR_MIN ? ck_get_threads() : 1; }

float ck_ew_dot(const float *a, const float *b, int64_t n, int isa) { return path_for(isa)->dot(a, b, n); }

void ck_ew_add(float *a, const float *b, int64_t n, int isa) {
    const ew_path *p = path_for(isa);
    const int nt = ew_threads(n);
    if (nt <= 1) { p->add(a, b, n); return; }
    const int64_t nc = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t o = c * EW_CHUNK;
        p->add(a + o, b + o, n - o < EW_CHUNK ? n - o : EW_CHUNK);
    }
}

void ck_ew_scale(float *a, float s, int64_t n, int isa) {
    const ew_path *p = path_for(isa);
    const int nt = ew_threads(n);
    if (nt <= 1) { p->scale(a, s, n); return; }
    const int64_t nc = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t o = c * EW_CHUNK;
        p->scale(a + o, s, n - o < EW_CHUNK ? n - o : EW_CHUNK);
    }
}

void ck_ew_rmsnorm_rows(const float *x, const float *weight, float *out, int64_t rows, int64_t n, float eps,
                        int isa) {
    const ew_path *p = path_for(isa);
    const int nt = rows > 1 ? ew_threads(rows * n) : 1;
    if (nt <= 1) { p->rmsnorm(x, weight, out, rows, n, eps); return; }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) p->rmsnorm(x + r * n, weight, out + r * n, 1, n, eps);
}

void ck_ew_gelu_tanh_mul(const float *gate, const float *up, float *out, int64_t n, int isa) {
    const ew_path *p = path_for(isa);
    // tanh costs ~20 operations per value: threads pay off from two chunks on (a decode step of 16 rows
    // of a 2048-wide MLP).
    const int nt = n >= 2 * EW_CHUNK ? ck_get_threads() : 1;
    if (nt <= 1) { p->gelu(gate, up, out, n); return; }
    const int64_t nc = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t c = 0; c < nc; c++) {
        const int64_t o = c * EW_CHUNK;
        p->gelu(gate + o, up + o, out + o, n - o < EW_CHUNK ? n - o : EW_CHUNK);
    }
}

void ck_ew_rope_rotate_half(float *x, const float *cos_t, const float *sin_t, int64_t head_dim, int isa) {
    path_for(isa)->rope(x, cos_t, sin_t, head_dim);
}
