// Decode-sized quantized matmuls: contracts in include/gemv_kernels.h. No model knowledge, no allocation.
//
// Structure: ck_gemv splits the N weight rows into one contiguous range per thread (a single OpenMP
// region per call) and runs a per-ISA range function on it. The range functions take tiles of NR = 4
// weight rows × up to MR = 4 activation rows: each weight block is expanded once and used for every
// activation row, and each activation block is loaded once for four weight rows. The vector code
// lives in functions with `target` attributes called from the region (clang does not carry those
// attributes into outlined OpenMP regions).

#include "gemv_kernels.h"
#include "packed_kernels.h"
#include "quant_kernels.h"
#include "ckernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define GV_X86 1
#include <immintrin.h>
#else
#define GV_X86 0
#endif

#define QK 32
#define NR 4
#define MR 4

static inline int64_t pad64(int64_t n) { return (n + 63) & ~(int64_t)63; }
static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline int64_t quant_bytes(int act) { return act == CK_ACT_Q16 ? 2 : act == CK_ACT_Q8 ? 1 : 0; }

size_t ck_gemv_act_row_bytes(int act, int64_t k) {
    int64_t qb = quant_bytes(act);
    if (qb == 0 || k <= 0 || k % QK) return 0;
    int64_t nb = k / QK;
    return (size_t)(pad64(nb * 4) * 2 + pad64(k * qb));
}

// Views into one activation row.
typedef struct {
    const float *d;
    const int32_t *s;
    const void *q;
} act_row;

static inline act_row row_view(int act, const uint8_t *base, int64_t k) {
    int64_t nb = k / QK;
    act_row r;
    r.d = (const float *)base;
    r.s = (const int32_t *)(base + pad64(nb * 4));
    r.q = base + 2 * pad64(nb * 4);
    (void)act;
    return r;
}

// One block of 32 values: scale, quants, sum. Written so the compiler vectorizes it (clones for AVX-512,
// AVX2 and baseline x86-64, picked at load time) while every clone produces the same bytes: only exact
// IEEE operations in a fixed order, no fused multiply-add (FP_CONTRACT OFF), and round-half-away-from-
// zero (C roundf) done without libm: round-half-even through the 1.5·2^23 magic number, then a tie that
// went toward zero is pushed away (|v| < 2^22 always holds here: |v| ≤ qmax + 1).
#pragma STDC FP_CONTRACT OFF
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void quantize_block(const float *xb, float qmax, int64_t qb, int split, float *d_out, int32_t *s_out, void *q_out) {
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < QK; j++) {
        const float a = fabsf(xb[j]);
        finite &= a <= 3.4028235e38f;  // false for NaN and inf
        amax = a > amax ? a : amax;
    }
    if (!finite) {
        *d_out = NAN;
        *s_out = 0;
        memset(q_out, 0, (size_t)(QK * qb));
        return;
    }
    float db = amax / qmax;
    float id = db != 0.0f ? 1.0f / db : 0.0f;
    if (!(id <= 3.4028235e38f)) db = id = 0.0f;  // amax below ~qmax·2^-128: 1/d overflows; the block is 0
    *d_out = db;
    int32_t iv[QK];
    for (int j = 0; j < QK; j++) {
        const float v = xb[j] * id;
        const float magic = 12582912.0f;  // 1.5 * 2^23
        float r = v + magic;
        r = r - magic;                      // nearest, ties to even
        const float diff = v - r;           // exact
        const float away = v >= 0.0f ? 1.0f : -1.0f;
        r = (diff == 0.5f || diff == -0.5f) && (r * away < v * away) ? r + away : r;
        r = r > qmax ? qmax : (r < -qmax ? -qmax : r);
        iv[j] = (int32_t)r;
    }
    int32_t sum = 0;
    for (int j = 0; j < QK; j++) sum += iv[j];
    *s_out = sum;
    if (qb == 2 && split) {  // packed_kernels.h layout: 32 low bytes, then 32 high bytes + 128
        for (int j = 0; j < QK; j++) {
            ((uint8_t *)q_out)[j] = (uint8_t)(iv[j] & 0xff);
            ((uint8_t *)q_out)[QK + j] = (uint8_t)((iv[j] >> 8) + 128);
        }
    } else if (qb == 2) {
        for (int j = 0; j < QK; j++) ((int16_t *)q_out)[j] = (int16_t)iv[j];
    } else {
        for (int j = 0; j < QK; j++) ((int8_t *)q_out)[j] = (int8_t)iv[j];
    }
}
#pragma STDC FP_CONTRACT DEFAULT

#if GV_X86
// quantize_block for a whole row with AVX-512 intrinsics: the same operations in the same order on 16
// lanes (max of |x| is exact in any order, every other step is one IEEE operation per value, integer
// sums are exact), so the bytes equal quantize_block's — the test compares the two paths. Kept out of
// the target_clones code because the compiler does not vectorize that per-block function across the
// row, and its per-block indirect call costs as much as the arithmetic at decode sizes.
#define T_Q512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))
T_Q512 static void quantize_row_512(const float *xr, int64_t nb, float qmax, int64_t qb, int split, float *d, int32_t *s,
                                    uint8_t *q) {
    const __m512 fmax = _mm512_set1_ps(3.4028235e38f), magic = _mm512_set1_ps(12582912.0f);
    const __m512 half = _mm512_set1_ps(0.5f), mhalf = _mm512_set1_ps(-0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 vq = _mm512_set1_ps(qmax), vnq = _mm512_set1_ps(-qmax), zero = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = xr + b * QK;
        const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
        const __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
        const __mmask16 f0 = _mm512_cmp_ps_mask(a0, fmax, _CMP_LE_OQ), f1 = _mm512_cmp_ps_mask(a1, fmax, _CMP_LE_OQ);
        uint8_t *qo = q + b * QK * qb;
        if ((f0 & f1) != 0xFFFF) {
            d[b] = NAN;
            s[b] = 0;
            memset(qo, 0, (size_t)(QK * qb));
            continue;
        }
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        float db = amax / qmax;
        float id = db != 0.0f ? 1.0f / db : 0.0f;
        if (!(id <= 3.4028235e38f)) db = id = 0.0f;
        d[b] = db;
        const __m512 vid = _mm512_set1_ps(id);
        __m512i iv[2];
        const __m512 xs[2] = {x0, x1};
        for (int h = 0; h < 2; h++) {
            const __m512 v = _mm512_mul_ps(xs[h], vid);
            __m512 r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
            const __m512 diff = _mm512_sub_ps(v, r);
            const __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GE_OQ);
            const __m512 away = _mm512_mask_blend_ps(pos, _mm512_set1_ps(-1.0f), one);
            const __mmask16 tie = _mm512_cmp_ps_mask(diff, half, _CMP_EQ_OQ) | _mm512_cmp_ps_mask(diff, mhalf, _CMP_EQ_OQ);
            const __mmask16 toward = _mm512_cmp_ps_mask(_mm512_mul_ps(r, away), _mm512_mul_ps(v, away), _CMP_LT_OQ);
            r = _mm512_mask_add_ps(r, tie & toward, r, away);
            r = _mm512_min_ps(_mm512_max_ps(r, vnq), vq);
            iv[h] = _mm512_cvttps_epi32(r);
        }
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(iv[0], iv[1]));
        if (qb == 2 && split) {  // 32 low bytes, then 32 high bytes + 128
            const __m512i k128 = _mm512_set1_epi32(128);
            _mm_storeu_si128((__m128i *)qo, _mm512_cvtepi32_epi8(iv[0]));
            _mm_storeu_si128((__m128i *)(qo + 16), _mm512_cvtepi32_epi8(iv[1]));
            _mm_storeu_si128((__m128i *)(qo + 32), _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_srai_epi32(iv[0], 8), k128)));
            _mm_storeu_si128((__m128i *)(qo + 48), _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_srai_epi32(iv[1], 8), k128)));
        } else if (qb == 2) {
            _mm256_storeu_si256((__m256i *)qo, _mm512_cvtepi32_epi16(iv[0]));
            _mm256_storeu_si256((__m256i *)(qo + 32), _mm512_cvtepi32_epi16(iv[1]));
        } else {
            _mm_storeu_si128((__m128i *)qo, _mm512_cvtepi32_epi8(iv[0]));
            _mm_storeu_si128((__m128i *)(qo + 16), _mm512_cvtepi32_epi8(iv[1]));
        }
    }
}
#endif

// Rows are independent and each is written the same way whatever thread takes it: large calls (the
// prefill of many rows) split the rows over the threads. isa: CK_ISA_GENERIC runs quantize_block, any
// other value the AVX-512 row code when this CPU has it (identical bytes).
static void quantize_rows(int act, int split, int isa, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k) {
    const int64_t qb = quant_bytes(act), rb = (int64_t)ck_gemv_act_row_bytes(act, k), nb = k / QK;
    if (rb == 0 || rows <= 0) return;
    const float qmax = act == CK_ACT_Q16 ? 32767.0f : 127.0f;
#if GV_X86
    static int has512 = -1;  // benign race: every thread computes the same value
    if (has512 < 0) {
        __builtin_cpu_init();
        has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    const int use512 = has512 && isa != CK_ISA_GENERIC;
#else
    (void)isa;
#endif
    // From 8 K values on (the 16 rows of a batched decode step) the rows are split: the other threads are
    // spinning at the matmul's barrier anyway, and the row code is fast enough that only waking them for
    // smaller calls would cost more than it saves.
    int nt = rows * k >= (int64_t)1 << 13 ? ck_get_threads() : 1;
    if (nt > rows) nt = (int)rows;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *base = (uint8_t *)out + r * rb;
        float *d = (float *)base;
        int32_t *s = (int32_t *)(base + pad64(nb * 4));
        uint8_t *q = base + 2 * pad64(nb * 4);
        const float *xr = x + r * ldx;
#if GV_X86
        if (use512) {
            quantize_row_512(xr, nb, qmax, qb, split, d, s, q);
            continue;
        }
#endif
        for (int64_t b = 0; b < nb; b++) quantize_block(xr + b * QK, qmax, qb, split, d + b, s + b, q + b * QK * qb);
    }
}

void ck_gemv_quantize(int act, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k) {
    quantize_rows(act, 0, CK_ISA_AUTO, x, ldx, out, rows, k);
}

// Declared in packed_kernels.h (the packed kernels' row layout); here because it shares quantize_block.
void ck_packed_quantize(int act, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k) {
    quantize_rows(act, ck_packed_layout() == CK_PACK_AVX512, CK_ISA_AUTO, x, ldx, out, rows, k);
}

void ck_quantize_rows_isa(int act, int split, int isa, const float *x, int64_t ldx, void *out, int64_t rows, int64_t k) {
    quantize_rows(act, split ? 1 : 0, isa, x, ldx, out, rows, k);
}

// MARK: - Portable path

static void range_generic(int wtype, int act, const uint8_t *w, const uint8_t *xa, int64_t xrb, float *y, int64_t ldy,
                          int64_t M, int64_t n0, int64_t n1, int64_t k) {
    const int64_t nb = k / QK, wbs = (int64_t)ck_block_bytes(wtype), wrow = nb * wbs;
    for (int64_t m = 0; m < M; m++) {
        act_row xr = row_view(act, xa + m * xrb, k);
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t *wn = w + n * wrow;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *wb = wn + b * wbs;
                int32_t isum = 0;
                if (wtype == CK_WTYPE_Q8_0) {
                    const int8_t *wq = (const int8_t *)(wb + 2);
                    if (act == CK_ACT_Q16) {
                        const int16_t *xq = (const int16_t *)xr.q + b * QK;
                        for (int j = 0; j < QK; j++) isum += (int32_t)wq[j] * xq[j];
                    } else {
                        const int8_t *xq = (const int8_t *)xr.q + b * QK;
                        for (int j = 0; j < QK; j++) isum += (int32_t)wq[j] * xq[j];
                    }
                } else {  // Q4_0 with Q8
                    const uint8_t *qs = wb + 2;
                    const int8_t *xq = (const int8_t *)xr.q + b * QK;
                    for (int j = 0; j < 16; j++) isum += (int32_t)(qs[j] & 15) * xq[j] + (int32_t)(qs[j] >> 4) * xq[j + 16];
                    isum -= 8 * xr.s[b];
                }
                acc += (float)isum * (ck_f16_to_f32(ld16(wb)) * xr.d[b]);
            }
            y[m * ldy + n] = acc;
        }
    }
}

#if GV_X86
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_512 __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))
#define INL static inline __attribute__((always_inline))

INL T_AVX2 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Four f16 block scales (one per weight row of the tile) as f32.
INL T_AVX2 __m128 scales4(const uint8_t *const wr[NR], int64_t off) {
    __m128i h = _mm_setr_epi16((short)ld16(wr[0] + off), (short)ld16(wr[1] + off), (short)ld16(wr[2] + off),
                               (short)ld16(wr[3] + off), 0, 0, 0, 0);
    return _mm_cvtph_ps(h);
}

// Q4_0 block → 32 unsigned nibbles in value order (low nibbles = values 0..15, high = 16..31).
INL T_AVX2 __m256i nibbles(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

// --- AVX-512: Q8_0 × Q16 (vpmaddwd on 32 int16 pairs per block) ---
INL T_512 void tile_q8q16_512_body(const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb, float out[NR][MR]) {
    __m512 acc[NR][MR];
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const int64_t wo = b * 34;
        __m512i x[MR];
        float dx[MR];
        for (int r = 0; r < mr; r++) {
            x[r] = _mm512_loadu_si512((const void *)((const int16_t *)xr[r].q + b * QK));
            dx[r] = xr[r].d[b];
        }
        __m128 dw = scales4(wr, wo);
        float dws[4];
        _mm_storeu_ps(dws, dw);
        for (int i = 0; i < NR; i++) {
            __m512i wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(wr[i] + wo + 2)));
            for (int r = 0; r < mr; r++) {
                __m512i p = _mm512_madd_epi16(wv, x[r]);
                acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(dws[i] * dx[r]), acc[i][r]);
            }
        }
    }
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < mr; r++) out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

// --- AVX-512 VNNI: Q8_0 × Q8 (two blocks per 512-bit vpdpbusd: x + 128 unsigned × w signed) ---
// Σ (x+128)·w = Σ x·w + 128·Σ w, so the accumulator starts at −128·Σw computed with vpdpbusd too.
INL T_512 void tile_q8q8_512_body(const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb, float out[NR][MR]) {
    __m256 acc[NR][MR];
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm256_setzero_ps();
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int64_t b = 0; b < nb; b++) {
        const int64_t wo = b * 34;
        __m256i x[MR];
        float dx[MR];
        for (int r = 0; r < mr; r++) {
            x[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((const int8_t *)xr[r].q + b * QK)), flip);
            dx[r] = xr[r].d[b];
        }
        float dws[4];
        _mm_storeu_ps(dws, scales4(wr, wo));
        for (int i = 0; i < NR; i++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(wr[i] + wo + 2));
            __m256i corr = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), flip, wv));
            for (int r = 0; r < mr; r++) {
                __m256i p = _mm256_dpbusd_epi32(corr, x[r], wv);
                acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dws[i] * dx[r]), acc[i][r]);
            }
        }
    }
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < mr; r++) out[i][r] = hsum256(acc[i][r]);
}

// --- AVX-512 VNNI: Q4_0 × Q8 (unsigned nibbles × signed x; the −8 offset through Σx per block) ---
// Each of the 8 lanes starts at −Σx, so the lanes sum to Σ n·x − 8·Σx = Σ (n − 8)·x.
INL T_512 void tile_q4q8_512_body(const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb, float out[NR][MR]) {
    __m256 acc[NR][MR];
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const int64_t wo = b * 18;
        __m256i x[MR], c[MR];
        float dx[MR];
        for (int r = 0; r < mr; r++) {
            x[r] = _mm256_loadu_si256((const __m256i *)((const int8_t *)xr[r].q + b * QK));
            c[r] = _mm256_set1_epi32(-xr[r].s[b]);
            dx[r] = xr[r].d[b];
        }
        float dws[4];
        _mm_storeu_ps(dws, scales4(wr, wo));
        for (int i = 0; i < NR; i++) {
            __m256i wv = nibbles(wr[i] + wo + 2);
            for (int r = 0; r < mr; r++) {
                __m256i p = _mm256_dpbusd_epi32(c[r], wv, x[r]);
                acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dws[i] * dx[r]), acc[i][r]);
            }
        }
    }
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < mr; r++) out[i][r] = hsum256(acc[i][r]);
}

// --- AVX2: Q8_0 × Q16 (two vpmaddwd per block) ---
INL T_AVX2 void tile_q8q16_avx2_body(const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb, float out[NR][MR]) {
    __m256 acc[NR][MR];
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const int64_t wo = b * 34;
        float dws[4];
        _mm_storeu_ps(dws, scales4(wr, wo));
        for (int i = 0; i < NR; i++) {
            const uint8_t *wq = wr[i] + wo + 2;
            __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wq));
            __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wq + 16)));
            for (int r = 0; r < mr; r++) {
                const int16_t *xq = (const int16_t *)xr[r].q + b * QK;
                __m256i p = _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xq)),
                                             _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xq + 16))));
                acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dws[i] * xr[r].d[b]), acc[i][r]);
            }
        }
    }
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < mr; r++) out[i][r] = hsum256(acc[i][r]);
}

// --- AVX2: Q8_0 × Q8 and Q4_0 × Q8 (vpmaddubsw: |w| unsigned × sign-adjusted x, or nibbles × x) ---
INL T_AVX2 void tile_x8_avx2(int wtype, const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb,
                                float out[NR][MR]) {
    __m256 acc[NR][MR];
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < MR; r++) acc[i][r] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t wbs = wtype == CK_WTYPE_Q8_0 ? 34 : 18;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t wo = b * wbs;
        __m256i x[MR];
        for (int r = 0; r < mr; r++) x[r] = _mm256_loadu_si256((const __m256i *)((const int8_t *)xr[r].q + b * QK));
        float dws[4];
        _mm_storeu_ps(dws, scales4(wr, wo));
        for (int i = 0; i < NR; i++) {
            if (wtype == CK_WTYPE_Q8_0) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(wr[i] + wo + 2));
                __m256i wa = _mm256_abs_epi8(wv);
                for (int r = 0; r < mr; r++) {
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(x[r], wv)), ones);
                    acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dws[i] * xr[r].d[b]), acc[i][r]);
                }
            } else {
                __m256i wv = nibbles(wr[i] + wo + 2);
                for (int r = 0; r < mr; r++) {
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, x[r]), ones);
                    p = _mm256_add_epi32(p, _mm256_set1_epi32(-xr[r].s[b]));
                    acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dws[i] * xr[r].d[b]), acc[i][r]);
                }
            }
        }
    }
    for (int i = 0; i < NR; i++)
        for (int r = 0; r < mr; r++) out[i][r] = hsum256(acc[i][r]);
}

typedef void (*tile_fn)(const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb, float out[NR][MR]);

// One out-of-line function per kernel that dispatches on the activation-row count, so each body is
// inlined with a constant row count and its accumulators stay in registers.
#define SPECIALIZE(NAME, TARGET, CALL)                                                                  \
    static TARGET void NAME(const uint8_t *const wr[NR], const act_row *xr, int mr, int64_t nb, float out[NR][MR]) { \
        switch (mr) {                                                                                   \
        case 1: CALL(wr, xr, 1, nb, out); break;                                                        \
        case 2: CALL(wr, xr, 2, nb, out); break;                                                        \
        case 3: CALL(wr, xr, 3, nb, out); break;                                                        \
        default: CALL(wr, xr, 4, nb, out); break;                                                       \
        }                                                                                               \
    }
#define Q8X8_AVX2(wr, xr, mr, nb, out) tile_x8_avx2(CK_WTYPE_Q8_0, wr, xr, mr, nb, out)
#define Q4X8_AVX2(wr, xr, mr, nb, out) tile_x8_avx2(CK_WTYPE_Q4_0, wr, xr, mr, nb, out)
SPECIALIZE(tile_q8q16_512, T_512, tile_q8q16_512_body)
SPECIALIZE(tile_q8q8_512, T_512, tile_q8q8_512_body)
SPECIALIZE(tile_q4q8_512, T_512, tile_q4q8_512_body)
SPECIALIZE(tile_q8q16_avx2, T_AVX2, tile_q8q16_avx2_body)
SPECIALIZE(tile_q8q8_avx2, T_AVX2, Q8X8_AVX2)
SPECIALIZE(tile_q4q8_avx2, T_AVX2, Q4X8_AVX2)

// Rows [n0, n1) of the output for all M activation rows, in NR × MR tiles (ragged edges reuse the last
// valid row pointer and drop its results).
static void range_tiles(tile_fn fn, int wtype, int act, const uint8_t *w, const uint8_t *xa, int64_t xrb, float *y,
                        int64_t ldy, int64_t M, int64_t n0, int64_t n1, int64_t k) {
    const int64_t nb = k / QK, wrow = nb * (int64_t)ck_block_bytes(wtype);
    for (int64_t m0 = 0; m0 < M; m0 += MR) {
        const int mr = (int)(M - m0 < MR ? M - m0 : MR);
        act_row xr[MR];
        for (int r = 0; r < MR; r++) xr[r] = row_view(act, xa + (m0 + (r < mr ? r : 0)) * xrb, k);
        for (int64_t n = n0; n < n1; n += NR) {
            const int nr = (int)(n1 - n < NR ? n1 - n : NR);
            const uint8_t *wr[NR];
            for (int i = 0; i < NR; i++) wr[i] = w + (n + (i < nr ? i : nr - 1)) * wrow;
            float out[NR][MR];
            fn(wr, xr, mr, nb, out);
            for (int i = 0; i < nr; i++)
                for (int r = 0; r < mr; r++) y[(m0 + r) * ldy + n + i] = out[i][r];
        }
    }
}
#endif  // GV_X86

static int pair_supported(int wtype, int act) {
    return (wtype == CK_WTYPE_Q8_0 && (act == CK_ACT_Q16 || act == CK_ACT_Q8)) || (wtype == CK_WTYPE_Q4_0 && act == CK_ACT_Q8);
}

int ck_gemv(int wtype, int act, const void *w, const void *xa, float *y, int64_t ldy,
            int64_t M, int64_t N, int64_t K, int isa, int nthreads) {
    if (!pair_supported(wtype, act) || K <= 0 || K % QK) return -1;
    if (M <= 0 || N <= 0) return 0;
    if (isa == CK_ISA_AUTO) isa = ck_quant_isa_selected();
    else if (!ck_quant_isa_available(isa)) isa = ck_quant_isa_selected() < isa ? ck_quant_isa_selected() : CK_ISA_GENERIC;
    int nt = nthreads > 0 ? nthreads : ck_get_threads();
    if (nt < 1) nt = 1;
    // Small products are not worth waking the other threads for.
    if (N * K < (int64_t)1 << 16) nt = 1;
    const uint8_t *wp = (const uint8_t *)w, *xp = (const uint8_t *)xa;
    const int64_t xrb = (int64_t)ck_gemv_act_row_bytes(act, K);
#if GV_X86
    tile_fn fn = 0;
    if (isa == CK_ISA_AVX512VNNI)
        fn = wtype == CK_WTYPE_Q4_0 ? tile_q4q8_512 : act == CK_ACT_Q16 ? tile_q8q16_512 : tile_q8q8_512;
    else if (isa == CK_ISA_AVX2)
        fn = wtype == CK_WTYPE_Q4_0 ? tile_q4q8_avx2 : act == CK_ACT_Q16 ? tile_q8q16_avx2 : tile_q8q8_avx2;
#endif
    // One contiguous, NR-aligned slice of the weight rows per thread.
    const int64_t groups = (N + NR - 1) / NR;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        extern int omp_get_thread_num(void);
        extern int omp_get_num_threads(void);
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        int64_t g0 = groups * t / T, g1 = groups * (t + 1) / T;
        int64_t n0 = g0 * NR, n1 = g1 * NR < N ? g1 * NR : N;
        if (n0 < n1) {
#if GV_X86
            if (fn) range_tiles(fn, wtype, act, wp, xp, xrb, y, ldy, M, n0, n1, K);
            else
#endif
                range_generic(wtype, act, wp, xp, xrb, y, ldy, M, n0, n1, K);
        }
    }
    return 0;
}
