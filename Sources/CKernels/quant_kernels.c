// C tier of the quantized kernels: Q8_0 activation quantization, row dequantization, and the
// OpenMP-threaded quantized matmuls (integer path and f32-activation path). Contracts: see
// include/quant_kernels.h. No model knowledge, no allocation.
//
// Portability: the file compiles on any C11 compiler and target. The x86-64 paths are compiled with
// per-function `target` attributes (so they need no -mavx2 / -march flags) and are chosen at run
// time from CPUID; every other target uses the portable generic path.
//
// All float arithmetic of the integer path is written as separate f32 mul / add; FMA contraction is
// switched off for this file so the compiler cannot fuse them (bit-identity with the Swift tiers).
#pragma STDC FP_CONTRACT OFF
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant_kernels.h"
#include "ckernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define CK_X86 1
#include <immintrin.h>
#else
#define CK_X86 0
#endif

#define QK 32
#define Q8_BYTES 34
#define Q4_BYTES 18

size_t ck_block_bytes(int wtype) {
    switch (wtype) {  // the 32-value integer block types of this file; every other id is rejected
    case CK_WTYPE_Q8_0: return Q8_BYTES;
    case CK_WTYPE_Q4_0: return Q4_BYTES;
    default: return 0;
    }
}

static inline int resolve_threads(int nthreads) {
    int t = nthreads > 0 ? nthreads : ck_get_threads();
    return t > 0 ? t : 1;
}

// MARK: - f16 <-> f32 (portable, exact)

static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

float ck_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else {  // subnormal: mant * 2^-24, exact in f32
            float f = (float)mant * 0x1p-24f;
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ck_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN, quiet
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to inf (RNE)
    if (ax < 0x38800000u) {  // below 2^-14: f16 subnormal or zero; m = RNE(|f| * 2^24) <= 1024
        float v;
        memcpy(&v, &ax, 4);
        v = v * 0x1p24f;                    // exact (power of two, no underflow)
        volatile float t = v + 8388608.0f;  // RNE to an integer (v < 2^23)
        uint32_t m = (uint32_t)(t - 8388608.0f);
        return (uint16_t)(sign | m);        // m == 1024 encodes the smallest normal, as it should
    }
    uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;  // carry into the exponent is correct
    return (uint16_t)(sign | h);
}

// MARK: - ISA selection

static int g_isa = -2;  // -2: not yet initialised

#if CK_X86
static int cpu_has(int isa) {
    __builtin_cpu_init();
    switch (isa) {
    case CK_ISA_GENERIC: return 1;
    case CK_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case CK_ISA_AVX512VNNI:
        return cpu_has(CK_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
}
#else
static int cpu_has(int isa) { return isa == CK_ISA_GENERIC; }
#endif

int ck_quant_isa_available(int isa) { return cpu_has(isa); }

const char *ck_quant_isa_name(int isa) {
    switch (isa) {
    case CK_ISA_GENERIC: return "generic";
    case CK_ISA_AVX2: return "avx2";
    case CK_ISA_AVX512VNNI: return "avx512vnni";
    default: return "?";
    }
}

static int best_isa_at_most(int isa) {
    if (isa < 0 || isa > CK_ISA_AVX512VNNI) isa = CK_ISA_AVX512VNNI;
    while (isa > CK_ISA_GENERIC && !cpu_has(isa)) isa--;
    return isa;
}

int ck_quant_set_isa(int isa) {
    g_isa = best_isa_at_most(isa);
    return g_isa;
}

int ck_quant_isa_selected(void) {
    if (g_isa == -2) {
        int want = CK_ISA_AUTO;
        const char *env = getenv("NLA_C_ISA");
        if (env) {
            if (!strcmp(env, "generic")) want = CK_ISA_GENERIC;
            else if (!strcmp(env, "avx2")) want = CK_ISA_AVX2;
            else if (!strcmp(env, "avx512vnni")) want = CK_ISA_AVX512VNNI;
        }
        g_isa = best_isa_at_most(want);
    }
    return g_isa;
}

static inline int resolve_isa(int isa) {
    return isa == CK_ISA_AUTO ? ck_quant_isa_selected() : best_isa_at_most(isa);
}

// MARK: - Quantize / dequantize (portable)

static void quantize_row_q8_0(const float *x, uint8_t *y, int64_t k) {
    for (int64_t b = 0; b < k / QK; b++) {
        const float *xb = x + b * QK;
        uint8_t *yb = y + b * Q8_BYTES;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ck_f32_to_f16(d);
        yb[0] = (uint8_t)(dh & 0xff);
        yb[1] = (uint8_t)(dh >> 8);
        for (int j = 0; j < QK; j++) {
            float v = roundf(xb[j] * id);  // half away from zero; |v| <= 127 for finite input
            v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
            yb[2 + j] = (uint8_t)(int8_t)(v == v ? v : 0.0f);
        }
    }
}

void ck_quantize_rows_q8_0(const float *x, int64_t ldx, void *y, int64_t rows, int64_t k, int nthreads) {
    int nt = resolve_threads(nthreads);
    int64_t rowBytes = (k / QK) * Q8_BYTES;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows > 1)
    for (int64_t r = 0; r < rows; r++) quantize_row_q8_0(x + r * ldx, (uint8_t *)y + r * rowBytes, k);
}

int ck_dequantize_row(int wtype, const void *xv, float *y, int64_t k) {
    if (ck_block_bytes(wtype) == 0) return CK_EBADTYPE;
    const uint8_t *x = (const uint8_t *)xv;
    for (int64_t b = 0; b < k / QK; b++) {
        float *yb = y + b * QK;
        if (wtype == CK_WTYPE_Q8_0) {
            const uint8_t *p = x + b * Q8_BYTES;
            float d = ck_f16_to_f32(load_u16(p));
            for (int j = 0; j < QK; j++) yb[j] = (float)(int8_t)p[2 + j] * d;
        } else {  // CK_WTYPE_Q4_0 (checked above)
            const uint8_t *p = x + b * Q4_BYTES;
            float d = ck_f16_to_f32(load_u16(p));
            for (int j = 0; j < 16; j++) {
                yb[j] = (float)((int)(p[2 + j] & 15) - 8) * d;
                yb[j + 16] = (float)((int)(p[2 + j] >> 4) - 8) * d;
            }
        }
    }
    return 0;
}

// MARK: - Generic path

static inline int32_t idot_generic(int wtype, const uint8_t *wb, const uint8_t *xb) {
    const int8_t *xq = (const int8_t *)(xb + 2);
    int32_t s = 0;
    if (wtype == CK_WTYPE_Q8_0) {
        const int8_t *wq = (const int8_t *)(wb + 2);
        for (int j = 0; j < QK; j++) s += (int32_t)wq[j] * (int32_t)xq[j];
    } else {
        const uint8_t *q = wb + 2;
        int32_t lo = 0, hi = 0;
        for (int j = 0; j < 16; j++) {
            lo += ((int32_t)(q[j] & 15) - 8) * (int32_t)xq[j];
            hi += ((int32_t)(q[j] >> 4) - 8) * (int32_t)xq[j + 16];
        }
        s = lo + hi;
    }
    return s;
}

static void matmul_q8act_generic(int wtype, const uint8_t *w, const uint8_t *xq, float *y, int64_t ldy,
                                 int64_t M, int64_t N, int64_t nb, int nt) {
    const size_t wbs = ck_block_bytes(wtype);
    const int64_t wrow = nb * (int64_t)wbs, xrow = nb * Q8_BYTES;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *wn = w + n * wrow;
        for (int64_t m = 0; m < M; m++) {
            const uint8_t *xm = xq + m * xrow;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *wb = wn + b * (int64_t)wbs, *xb = xm + b * Q8_BYTES;
                float dd = ck_f16_to_f32(load_u16(wb)) * ck_f16_to_f32(load_u16(xb));
                acc = acc + (float)idot_generic(wtype, wb, xb) * dd;
            }
            y[m * ldy + n] = acc;
        }
    }
}

static void matmul_f32act_generic(int wtype, const uint8_t *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                                  int64_t M, int64_t N, int64_t nb, int nt) {
    const size_t wbs = ck_block_bytes(wtype);
    const int64_t wrow = nb * (int64_t)wbs;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *wn = w + n * wrow;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * ldx;
            float acc[8] = {0};
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *wb = wn + b * (int64_t)wbs;
                const float *xb = xm + b * QK;
                float d = ck_f16_to_f32(load_u16(wb));
                float wf[QK];
                if (wtype == CK_WTYPE_Q8_0) {
                    for (int j = 0; j < QK; j++) wf[j] = (float)(int8_t)wb[2 + j] * d;
                } else {
                    for (int j = 0; j < 16; j++) {
                        wf[j] = (float)((int)(wb[2 + j] & 15) - 8) * d;
                        wf[j + 16] = (float)((int)(wb[2 + j] >> 4) - 8) * d;
                    }
                }
                for (int j = 0; j < QK; j++) acc[j & 7] += xb[j] * wf[j];
            }
            y[m * ldy + n] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        }
    }
}

// MARK: - x86-64 paths

#if CK_X86
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
#define INL static inline __attribute__((always_inline))

// 8 vectors of 8 int32 -> one vector of their 8 horizontal sums (exact integer adds).
#define HSUM8x8(v, out)                                                               \
    do {                                                                              \
        __m256i t0 = _mm256_hadd_epi32(v[0], v[1]), t1 = _mm256_hadd_epi32(v[2], v[3]); \
        __m256i t2 = _mm256_hadd_epi32(v[4], v[5]), t3 = _mm256_hadd_epi32(v[6], v[7]); \
        __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);       \
        out = _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),               \
                               _mm256_permute2x128_si256(u0, u1, 0x31));              \
    } while (0)

// Expand a weight block to 32 signed int8 (Q4_0: nibble - 8).
#define EXPAND_W(wtype, wb, out)                                                              \
    do {                                                                                      \
        if ((wtype) == CK_WTYPE_Q8_0) {                                                       \
            out = _mm256_loadu_si256((const __m256i *)((wb) + 2));                            \
        } else {                                                                              \
            __m128i q_ = _mm_loadu_si128((const __m128i *)((wb) + 2));                        \
            __m128i m_ = _mm_set1_epi8(15);                                                   \
            __m128i lo_ = _mm_and_si128(q_, m_), hi_ = _mm_and_si128(_mm_srli_epi16(q_, 4), m_); \
            out = _mm256_sub_epi8(_mm256_set_m128i(hi_, lo_), _mm256_set1_epi8(8));           \
        }                                                                                     \
    } while (0)

// --- AVX2: |w| (unsigned) x sign(x, w) (signed) with vpmaddubsw; needs x in [-127, 127].
INL T_AVX2 __m256i pair_avx2(__m256i wabs, __m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// --- VNNI: (x + 128) (unsigned) x w (signed) with vpdpbusd, accumulator pre-loaded with -128*sum(w).
INL T_VNNI __m256i wcorr_vnni(__m256i w) {
    __m256i c = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), w);
    return _mm256_sub_epi32(_mm256_setzero_si256(), c);
}
INL T_VNNI __m256i pair_vnni(__m256i corr, __m256i w, __m256i xu) { return _mm256_dpbusd_epi32(corr, xu, w); }

INL T_AVX2 __m256i xflip(__m256i x) { return _mm256_xor_si256(x, _mm256_set1_epi8((char)0x80)); }

// Per-path 8-column tile: MT rows (<= 4) of Xq against 8 weight rows, writing out[r][0..7].
// `TARGET`, `PREP_W(j)`, `PAIR(j, x)` and `PREP_X(x)` form the per-ISA vocabulary.
#define DEFINE_TILE(NAME, TARGET, MTX, WSTATE, PREP_W, PREP_X, PAIR)                                      \
    INL TARGET void NAME(int wtype, const uint8_t *const wc[8], size_t wbs, const uint8_t *const xr[MTX], int mt, \
                         int64_t nb, float out[MTX][8]) {                                               \
        if (mt > MTX) mt = MTX;                                                                           \
        __m256 acc[MTX];                                                                                \
        for (int r = 0; r < MTX; r++) acc[r] = _mm256_setzero_ps();                                     \
        for (int64_t b = 0; b < nb; b++) {                                                                \
            const size_t wo = (size_t)b * wbs, xo = (size_t)b * Q8_BYTES;                                 \
            __m256i w[8];                                                                                 \
            WSTATE;                                                                                       \
            uint16_t dh[8];                                                                               \
            for (int j = 0; j < 8; j++) {                                                                 \
                const uint8_t *wb = wc[j] + wo;                                                           \
                dh[j] = load_u16(wb);                                                                     \
                EXPAND_W(wtype, wb, w[j]);                                                                \
                PREP_W;                                                                                   \
            }                                                                                             \
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));                            \
            for (int r = 0; r < mt; r++) {                                                                \
                const uint8_t *xb = xr[r] + xo;                                                           \
                __m256 dd = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(load_u16(xb))));                   \
                __m256i x = _mm256_loadu_si256((const __m256i *)(xb + 2));                                \
                PREP_X;                                                                                   \
                __m256i v[8];                                                                             \
                for (int j = 0; j < 8; j++) v[j] = (PAIR);                                                 \
                __m256i s;                                                                                \
                HSUM8x8(v, s);                                                                            \
                acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(_mm256_cvtepi32_ps(s), dd));                 \
            }                                                                                             \
        }                                                                                                 \
        for (int r = 0; r < mt; r++) _mm256_storeu_ps(out[r], acc[r]);                                   \
    }

DEFINE_TILE(tile_avx2, T_AVX2, 4, __m256i wa[8], wa[j] = _mm256_abs_epi8(w[j]), (void)0, pair_avx2(wa[j], w[j], x))
DEFINE_TILE(tile_vnni, T_VNNI, 8, __m256i wk[8], wk[j] = wcorr_vnni(w[j]), x = xflip(x), pair_vnni(wk[j], w[j], x))

INL T_AVX2 int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static T_AVX2 void block_dots_avx2(int wtype, const uint8_t *w, const uint8_t *xq, int32_t *out, int64_t nb) {
    size_t wbs = ck_block_bytes(wtype);
    for (int64_t b = 0; b < nb; b++) {
        __m256i wv;
        EXPAND_W(wtype, w + b * wbs, wv);
        __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * Q8_BYTES + 2));
        out[b] = hsum_epi32(pair_avx2(_mm256_abs_epi8(wv), wv, x));
    }
}

static T_VNNI void block_dots_vnni(int wtype, const uint8_t *w, const uint8_t *xq, int32_t *out, int64_t nb) {
    size_t wbs = ck_block_bytes(wtype);
    for (int64_t b = 0; b < nb; b++) {
        __m256i wv;
        EXPAND_W(wtype, w + b * wbs, wv);
        __m256i x = xflip(_mm256_loadu_si256((const __m256i *)(xq + b * Q8_BYTES + 2)));
        out[b] = hsum_epi32(pair_vnni(wcorr_vnni(wv), wv, x));
    }
}

// One 8-column tile of the output over rows [m0, m1): rows in tiles of MTX (each weight block is
// expanded once per MTX rows; 8 on AVX-512, whose 32 vector registers hold the 8-row tile, 4 on AVX2). The OpenMP driver below is generic C: clang does not carry `target`
// attributes into outlined parallel regions, so vector code never sits inside a parallel region.
typedef void (*ck_q8_range_fn)(int wtype, const uint8_t *w, const uint8_t *xq, float *y, int64_t ldy,
                               int64_t N, int64_t nb, int64_t tile, int64_t m0, int64_t m1);

#define DEFINE_RANGE(NAME, TARGET, MTX, TILE)                                                             \
    static TARGET void NAME(int wtype, const uint8_t *w, const uint8_t *xq, float *y, int64_t ldy,        \
                            int64_t N, int64_t nb, int64_t tile, int64_t m0, int64_t m1) {                \
        const size_t wbs = ck_block_bytes(wtype);                                                         \
        const int64_t wrow = nb * (int64_t)wbs, xrow = nb * Q8_BYTES;                                     \
        const int64_t n0 = tile * 8;                                                                      \
        const int nv = (int)(N - n0 < 8 ? N - n0 : 8);                                                    \
        const uint8_t *wc[8];                                                                             \
        for (int j = 0; j < 8; j++) wc[j] = w + (n0 + (j < nv ? j : nv - 1)) * wrow;                      \
        for (int64_t m = m0; m < m1; m += MTX) {                                                        \
            const int mt = (int)(m1 - m < MTX ? m1 - m : MTX);                                        \
            const uint8_t *xr[MTX];                                                                     \
            for (int r = 0; r < MTX; r++) xr[r] = xq + (m + (r < mt ? r : 0)) * xrow;                  \
            float out[MTX][8];                                                                          \
            switch (mt) {                                                                                 \
            case MTX: TILE(wtype, wc, wbs, xr, MTX, nb, out); break;                                  \
            case 3: TILE(wtype, wc, wbs, xr, 3, nb, out); break;                                          \
            case 2: TILE(wtype, wc, wbs, xr, 2, nb, out); break;                                          \
            case 1: TILE(wtype, wc, wbs, xr, 1, nb, out); break;                                          \
            default: TILE(wtype, wc, wbs, xr, mt, nb, out); break;                                        \
            }                                                                                             \
            for (int r = 0; r < mt; r++)                                                                  \
                for (int j = 0; j < nv; j++) y[(m + r) * ldy + n0 + j] = out[r][j];                       \
        }                                                                                                 \
    }

DEFINE_RANGE(q8act_range_avx2, T_AVX2, 4, tile_avx2)
DEFINE_RANGE(q8act_range_vnni, T_VNNI, 8, tile_vnni)

// f32-activation path, AVX2 + FMA: one weight row, up to 4 activation rows; the dequantized block
// (exact) is reused across the rows. Per-lane partial sums, horizontal sum at the end.
INL T_AVX2 void expand_wf(int wtype, const uint8_t *wb, __m256 wf[4]) {
    __m256 d = _mm256_set1_ps(_cvtsh_ss(load_u16(wb)));
    __m256i w;
    EXPAND_W(wtype, wb, w);
    __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
    wf[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d);
    wf[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d);
    wf[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d);
    wf[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d);
}

INL T_AVX2 float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INL T_AVX2 void ftile_avx2(int wtype, const uint8_t *wn, size_t wbs, const float *const xr[4], int mt, int64_t nb,
                           float out[4]) {
    __m256 acc[4][2];
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256 wf[4];
        expand_wf(wtype, wn + (size_t)b * wbs, wf);
        for (int r = 0; r < mt; r++) {
            const float *xb = xr[r] + b * QK;
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb), wf[0], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), wf[1], acc[r][1]);
            acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), wf[2], acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), wf[3], acc[r][1]);
        }
    }
    for (int r = 0; r < mt; r++) out[r] = hsum_ps(_mm256_add_ps(acc[r][0], acc[r][1]));
}

// Output column n over rows [m0, m1), rows in tiles of 4.
static T_AVX2 void f32act_col_avx2(int wtype, const uint8_t *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                                   int64_t nb, int64_t n, int64_t m0, int64_t m1) {
    const size_t wbs = ck_block_bytes(wtype);
    const uint8_t *wn = w + n * nb * (int64_t)wbs;
    for (int64_t m = m0; m < m1; m += 4) {
        const int mt = (int)(m1 - m < 4 ? m1 - m : 4);
        const float *xr[4];
        for (int r = 0; r < 4; r++) xr[r] = x + (m + (r < mt ? r : 0)) * ldx;
        float out[4] = {0, 0, 0, 0};
        switch (mt) {
        case 4: ftile_avx2(wtype, wn, wbs, xr, 4, nb, out); break;
        case 3: ftile_avx2(wtype, wn, wbs, xr, 3, nb, out); break;
        case 2: ftile_avx2(wtype, wn, wbs, xr, 2, nb, out); break;
        default: ftile_avx2(wtype, wn, wbs, xr, 1, nb, out); break;
        }
        for (int r = 0; r < mt; r++) y[(m + r) * ldy + n] = out[r];
    }
}
#endif  // CK_X86

// MARK: - Public entry points

int ck_block_dots(int wtype, const void *w, const void *xq, int32_t *out, int64_t nb, int isa) {
    const uint8_t *wp = (const uint8_t *)w, *xp = (const uint8_t *)xq;
    size_t wbs = ck_block_bytes(wtype);
    if (wbs == 0) return CK_EBADTYPE;
    switch (resolve_isa(isa)) {
#if CK_X86
    case CK_ISA_AVX512VNNI: block_dots_vnni(wtype, wp, xp, out, nb); return 0;
    case CK_ISA_AVX2: block_dots_avx2(wtype, wp, xp, out, nb); return 0;
#endif
    default:
        for (int64_t b = 0; b < nb; b++) out[b] = idot_generic(wtype, wp + b * wbs, xp + b * Q8_BYTES);
    }
    return 0;
}

// Generic OpenMP driver: rows in chunks of 64 (the active slice of Xq stays in L2), 8-column tiles
// split statically over threads. Each output is written by exactly one thread.
static void run_q8_ranges(ck_q8_range_fn fn, int wtype, const uint8_t *w, const uint8_t *xq, float *y, int64_t ldy,
                          int64_t M, int64_t N, int64_t nb, int nt) {
    const int64_t ntiles = (N + 7) / 8, MC = 64;
#pragma omp parallel num_threads(nt) if (nt > 1)
    for (int64_t m0 = 0; m0 < M; m0 += MC) {
        const int64_t m1 = m0 + MC < M ? m0 + MC : M;
#pragma omp for schedule(static) nowait
        for (int64_t t = 0; t < ntiles; t++) fn(wtype, w, xq, y, ldy, N, nb, t, m0, m1);
    }
}

int ck_matmul_q8act(int wtype, const void *w, const void *xq, float *y, int64_t ldy,
                     int64_t M, int64_t N, int64_t K, int isa, int nthreads) {
    if (ck_block_bytes(wtype) == 0) return CK_EBADTYPE;
    if (M <= 0 || N <= 0) return 0;
    int nt = resolve_threads(nthreads);
    const uint8_t *wp = (const uint8_t *)w, *xp = (const uint8_t *)xq;
    int64_t nb = K / QK;
    switch (resolve_isa(isa)) {
#if CK_X86
    case CK_ISA_AVX512VNNI: run_q8_ranges(q8act_range_vnni, wtype, wp, xp, y, ldy, M, N, nb, nt); return 0;
    case CK_ISA_AVX2: run_q8_ranges(q8act_range_avx2, wtype, wp, xp, y, ldy, M, N, nb, nt); return 0;
#endif
    default: matmul_q8act_generic(wtype, wp, xp, y, ldy, M, N, nb, nt);
    }
    return 0;
}

int ck_matmul_f32act(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                      int64_t M, int64_t N, int64_t K, int isa, int nthreads) {
    if (ck_block_bytes(wtype) == 0) return CK_EBADTYPE;
    if (M <= 0 || N <= 0) return 0;
    int nt = resolve_threads(nthreads);
    const uint8_t *wp = (const uint8_t *)w;
    int64_t nb = K / QK;
    switch (resolve_isa(isa)) {
#if CK_X86
    case CK_ISA_AVX512VNNI:
    case CK_ISA_AVX2: {
        const int64_t MC = 64;
#pragma omp parallel num_threads(nt) if (nt > 1)
        for (int64_t m0 = 0; m0 < M; m0 += MC) {
            const int64_t m1 = m0 + MC < M ? m0 + MC : M;
#pragma omp for schedule(static) nowait
            for (int64_t n = 0; n < N; n++) f32act_col_avx2(wtype, wp, x, ldx, y, ldy, nb, n, m0, m1);
        }
        return 0;
    }
#endif
    default: matmul_f32act_generic(wtype, wp, x, ldx, y, ldy, M, N, nb, nt);
    }
    return 0;
}

int ck_matmul_f32act_blas(int wtype, const void *w, const float *x, int64_t ldx, float *y, int64_t ldy,
                           int64_t M, int64_t N, int64_t K, float *scratch, int64_t scratchFloats, int nthreads) {
    size_t wbs = ck_block_bytes(wtype);
    if (wbs == 0) return CK_EBADTYPE;
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    int nt = resolve_threads(nthreads);
    int64_t panel = scratchFloats / K;
    if (panel < 1) return CK_EBADSHAPE;
    if (panel > N) panel = N;
    const uint8_t *wp = (const uint8_t *)w;
    const int64_t wrow = (K / QK) * (int64_t)wbs;
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
        int64_t pn = N - n0 < panel ? N - n0 : panel;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t i = 0; i < pn; i++) ck_dequantize_row(wtype, wp + (n0 + i) * wrow, scratch + i * K, K);
        ck_sgemm_nt((int)M, (int)pn, (int)K, x, (int)ldx, scratch, (int)K, y + n0, (int)ldy, 0.0f);
    }
    return 0;
}
