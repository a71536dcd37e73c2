// C tier of the Q4_K / Q6_K / IQ4_NL / Q5_0 weight matmuls (contracts: include/kquant_kernels.h). Dequantization is
// exact and bit-identical to the Swift reference (products rounded separately: FMA contraction is off for this
// file); only the f32 dot products use FMAs. No model knowledge, no allocation (stack buffers of one block row).
#pragma STDC FP_CONTRACT OFF
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "kquant_kernels.h"
#include "quant_kernels.h"
#include "ckernels.h"
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define KQ_X86 1
#include <immintrin.h>
#else
#define KQ_X86 0
#endif

#define QKK 256

static const int8_t kIQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int ck_kq_block_size(int wtype) {
    switch (wtype) {
    case CK_WTYPE_Q4_K: return QKK;
    case CK_WTYPE_Q6_K: return QKK;
    case CK_WTYPE_IQ4_NL: return 32;
    case CK_WTYPE_Q5_0: return 32;
    default: return 0;
    }
}

size_t ck_kq_block_bytes(int wtype) {
    switch (wtype) {
    case CK_WTYPE_Q4_K: return 144;
    case CK_WTYPE_Q6_K: return 210;
    case CK_WTYPE_IQ4_NL: return 18;
    case CK_WTYPE_Q5_0: return 22;
    default: return 0;
    }
}

// MARK: - Block decoders (exact)

static void dq_q4_k(const uint8_t *p, float *y) {
    const float d = ck_f16_to_f32(ld16(p)), dmin = ck_f16_to_f32(ld16(p + 2));
    const uint8_t *s = p + 4;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
        else { sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)); m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4)); }
        const float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = p + 16 + 32 * (j / 2);
        const int shift = (j & 1) ? 4 : 0;
        float *yb = y + 32 * j;
        for (int l = 0; l < 32; l++) {
            float t = dl * (float)((q[l] >> shift) & 15);
            yb[l] = t - ml;
        }
    }
}

static void dq_q6_k(const uint8_t *p, float *y) {
    const float d = ck_f16_to_f32(ld16(p + 208));
    const int8_t *sc = (const int8_t *)(p + 192);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
        float *yh = y + 128 * h;
        for (int i = 0; i < 128; i++) {
            int lo = i < 64 ? (ql[i & 63] & 15) : (ql[i & 63] >> 4);
            int hi = (qh[i & 31] >> (2 * (i / 32))) & 3;
            float dl = d * (float)sc[(128 * h + i) / 16];
            yh[i] = dl * (float)((lo | (hi << 4)) - 32);
        }
    }
}

static void dq_iq4_nl(const uint8_t *p, float *y) {
    const float d = ck_f16_to_f32(ld16(p));
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)kIQ4NL[p[2 + j] & 15];
        y[j + 16] = d * (float)kIQ4NL[p[2 + j] >> 4];
    }
}

// Q5_0: f16 d, u32 qh (bit j = bit 4 of element j), 16 nibble bytes (element j low, j + 16 high); d·(q − 16).
static void dq_q5_0(const uint8_t *p, float *y) {
    const float d = ck_f16_to_f32(ld16(p));
    const uint32_t qh = (uint32_t)p[2] | ((uint32_t)p[3] << 8) | ((uint32_t)p[4] << 16) | ((uint32_t)p[5] << 24);
    for (int j = 0; j < 16; j++) {
        const int q0 = (p[6 + j] & 15) | (int)(((qh >> j) & 1) << 4);
        const int q1 = (p[6 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(q0 - 16);
        y[j + 16] = d * (float)(q1 - 16);
    }
}

typedef void (*kq_decoder)(const uint8_t *, float *);

static kq_decoder decoder_for(int wtype) {
    switch (wtype) {
    case CK_WTYPE_Q4_K: return dq_q4_k;
    case CK_WTYPE_Q6_K: return dq_q6_k;
    case CK_WTYPE_IQ4_NL: return dq_iq4_nl;
    case CK_WTYPE_Q5_0: return dq_q5_0;
    default: return NULL;
    }
}

int ck_kq_dequantize_row(int wtype, const void *xv, float *y, int64_t k) {
    kq_decoder dec = decoder_for(wtype);
    if (!dec) return CK_KQ_EBADTYPE;
    const int bs = ck_kq_block_size(wtype);
    const size_t bb = ck_kq_block_bytes(wtype);
    if (k % bs) return CK_KQ_EBADSHAPE;
    const uint8_t *x = (const uint8_t *)xv;
    for (int64_t b = 0; b < k / bs; b++) dec(x + b * (int64_t)bb, y + b * bs);
    return 0;
}

// MARK: - Dot products over one decoded block

static int resolve_threads_kq(int nthreads) {
    int t = nthreads > 0 ? nthreads : ck_get_threads();
    return t > 0 ? t : 1;
}

// Generic: 8 partial sums (auto-vectorizable), combined pairwise.
static void dots_generic(const float *wf, const float *const xr[4], int mt, int64_t off, int bs, float acc[4][8]) {
    for (int r = 0; r < mt; r++) {
        const float *xb = xr[r] + off;
        for (int j = 0; j < bs; j++) acc[r][j & 7] += xb[j] * wf[j];
    }
}

#if KQ_X86
#define KQ_AVX2 __attribute__((target("avx2,fma,f16c")))
static KQ_AVX2 void dots_avx2(const float *wf, const float *const xr[4], int mt, int64_t off, int bs, float acc[4][8]) {
    for (int r = 0; r < mt; r++) {
        const float *xb = xr[r] + off;
        __m256 a0 = _mm256_loadu_ps(acc[r]), a1 = _mm256_setzero_ps();
        for (int j = 0; j < bs; j += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xb + j), _mm256_loadu_ps(wf + j), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xb + j + 8), _mm256_loadu_ps(wf + j + 8), a1);
        }
        _mm256_storeu_ps(acc[r], _mm256_add_ps(a0, a1));
    }
}
#endif

typedef void (*kq_dots_fn)(const float *, const float *const[4], int, int64_t, int, float[4][8]);

// Output column n (one weight row) against rows [m0, m1) of X, rows in tiles of 4: each weight block is
// decoded once per tile.
static void kq_column(kq_decoder dec, kq_dots_fn dots, int bs, size_t bb, const uint8_t *wn, int64_t nb,
                      const float *x, int64_t ldx, float *y, int64_t ldy, int64_t n, int64_t m0, int64_t m1) {
    float wf[QKK] __attribute__((aligned(64)));
    for (int64_t m = m0; m < m1; m += 4) {
        const int mt = (int)(m1 - m < 4 ? m1 - m : 4);
        const float *xr[4];
        for (int r = 0; r < 4; r++) xr[r] = x + (m + (r < mt ? r : 0)) * ldx;
        float acc[4][8];
        memset(acc, 0, sizeof acc);
        for (int64_t b = 0; b < nb; b++) {
            dec(wn + b * (int64_t)bb, wf);
            dots(wf, xr, mt, b * bs, bs, acc);
        }
        for (int r = 0; r < mt; r++) {
            const float *a = acc[r];
            y[(m + r) * ldy + n] = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
        }
    }
}

int ck_kq_matmul_f32act(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                        int64_t M, int64_t N, int64_t K, int isa, int nthreads) {
    kq_decoder dec = decoder_for(wtype);
    if (!dec) return CK_KQ_EBADTYPE;
    const int bs = ck_kq_block_size(wtype);
    const size_t bb = ck_kq_block_bytes(wtype);
    if (K % bs) return CK_KQ_EBADSHAPE;
    if (M <= 0 || N <= 0) return 0;
    const int nt = resolve_threads_kq(nthreads);
    const int64_t nb = K / bs, wrow = nb * (int64_t)bb;
    const int path = isa == CK_ISA_AUTO ? ck_quant_isa_selected() : isa;
    kq_dots_fn dots = dots_generic;
#if KQ_X86
    if (path >= CK_ISA_AVX2 && ck_quant_isa_available(CK_ISA_AVX2)) dots = dots_avx2;
#else
    (void)path;
#endif
    const uint8_t *wp = (const uint8_t *)w;
    const int64_t MC = 64;
#pragma omp parallel num_threads(nt) if (nt > 1 && N > 1)
    for (int64_t m0 = 0; m0 < M; m0 += MC) {
        const int64_t m1 = m0 + MC < M ? m0 + MC : M;
#pragma omp for schedule(static) nowait
        for (int64_t n = 0; n < N; n++) kq_column(dec, dots, bs, bb, wp + n * wrow, nb, x, ldx, y, ldy, n, m0, m1);
    }
    return 0;
}

int ck_kq_matmul_f32act_blas(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                             int64_t M, int64_t N, int64_t K, float *scratch, int64_t scratchFloats, int nthreads) {
    kq_decoder dec = decoder_for(wtype);
    if (!dec) return CK_KQ_EBADTYPE;
    const int bs = ck_kq_block_size(wtype);
    const size_t bb = ck_kq_block_bytes(wtype);
    if (K <= 0 || K % bs || scratchFloats < K) return CK_KQ_EBADSHAPE;
    if (M <= 0 || N <= 0) return 0;
    const int nt = resolve_threads_kq(nthreads);
    int64_t panel = scratchFloats / K;
    if (panel > N) panel = N;
    const uint8_t *wp = (const uint8_t *)w;
    const int64_t nb = K / bs, wrow = nb * (int64_t)bb;
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
        const int64_t pn = N - n0 < panel ? N - n0 : panel;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t i = 0; i < pn; i++) {
            const uint8_t *wr = wp + (n0 + i) * wrow;
            float *dst = scratch + i * K;
            for (int64_t b = 0; b < nb; b++) dec(wr + b * (int64_t)bb, dst + b * bs);
        }
        ck_sgemm_nt((int)M, (int)pn, (int)K, x, (int)ldx, scratch, (int)K, y + n0, (int)ldy, 0.0f);
    }
    return 0;
}
