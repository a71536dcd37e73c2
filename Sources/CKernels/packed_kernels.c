// Packed (16-row interleaved) Q8_0 / Q4_0 matmuls for AVX-512 VNNI: layout and contracts in
// include/packed_kernels.h. No model knowledge, no allocation.
//
// Micro-kernel: 16 weight rows (one zmm lane each) × MR activation rows. For each 32-value block the
// exact int32 block dots of all 16 rows build up in one zmm per activation row (8 dot-product
// instructions with 4 activation values broadcast); then one conversion and one FMA apply the 16
// weight scales × the activation scale. The weight block is prepared once and reused for the MR rows.

#include "packed_kernels.h"
#include "gemv_kernels.h"
#include "quant_kernels.h"
#include "ckernels.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define PK_X86 1
#include <immintrin.h>
#else
#define PK_X86 0
#endif

#define QK 32
#define RT 16  // rows per tile
#define MR 4   // activation rows per micro-kernel call
#ifndef PF_DIST
#define PF_DIST 4096  // software prefetch distance in bytes along the packed stream
#endif

static inline int64_t pad64(int64_t n) { return (n + 63) & ~(int64_t)63; }

size_t ck_packed_block_bytes(int wtype) {
    return wtype == CK_WTYPE_Q8_0 ? 32 + 512 : wtype == CK_WTYPE_Q4_0 ? 32 + 256 : 0;
}

int ck_packed_available(void) {
    static int cached = -1;
    if (cached < 0) {
        const char *env = getenv("NLA_PACK");
        int off = env && (!strcmp(env, "0") || !strcmp(env, "off"));
        cached = !off && PK_X86 && ck_quant_isa_available(CK_ISA_AVX512VNNI);
    }
    return cached;
}

int ck_pack(int wtype, const void *src, void *dst, int64_t N, int64_t K, int nthreads) {
    const size_t pbs = ck_packed_block_bytes(wtype), wbs = ck_block_bytes(wtype);
    if (pbs == 0 || N <= 0 || K <= 0 || N % RT || K % QK) return -1;
    const int64_t nb = K / QK, tiles = N / RT, wrow = nb * (int64_t)wbs;
    int nt = nthreads > 0 ? nthreads : ck_get_threads();
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *d = (uint8_t *)dst;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < tiles; t++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = d + (size_t)(t * nb + b) * pbs;
            for (int i = 0; i < RT; i++) {
                const uint8_t *blk = s + (t * RT + i) * wrow + b * (int64_t)wbs;
                memcpy(o + 2 * i, blk, 2);
                const int groups = wtype == CK_WTYPE_Q8_0 ? 8 : 4;
                for (int g = 0; g < groups; g++) memcpy(o + 32 + 64 * g + 4 * i, blk + 2 + 4 * g, 4);
            }
        }
    }
    return 0;
}

void ck_packed_dequantize_row(int wtype, const void *packed, int64_t r, int64_t K, float *y) {
    const size_t pbs = ck_packed_block_bytes(wtype);
    if (pbs == 0) return;
    const int64_t nb = K / QK, t = r / RT, i = r % RT;
    const uint8_t *p = (const uint8_t *)packed;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = p + (size_t)(t * nb + b) * pbs;
        float d = ck_f16_to_f32((uint16_t)(o[2 * i] | (o[2 * i + 1] << 8)));
        float *yb = y + b * QK;
        if (wtype == CK_WTYPE_Q8_0) {
            for (int j = 0; j < QK; j++) yb[j] = (float)(int8_t)o[32 + 64 * (j / 4) + 4 * i + j % 4] * d;
        } else {
            for (int j = 0; j < 16; j++) {
                uint8_t q = o[32 + 64 * (j / 4) + 4 * i + j % 4];
                yb[j] = (float)((int)(q & 15) - 8) * d;
                yb[j + 16] = (float)((int)(q >> 4) - 8) * d;
            }
        }
    }
}

#if PK_X86
#define T_512 __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq,avx512vnni")))
#define INL static inline __attribute__((always_inline))

// Activation row views (layout of gemv_kernels.h).
typedef struct {
    const float *d;
    const int32_t *s;
    const uint8_t *q;
} xrow;

// Q4_0 tile × Q8 rows: nibble quants unsigned × int8 activations signed (vpdpbusd); each row lane
// starts at −8·Σx so it ends at Σ (n − 8)·x.
INL T_512 void q4_tile(const uint8_t *w, int64_t nb, const xrow *x, int mr, __m512 acc[MR]) {
    const __m512i low = _mm512_set1_epi8(15);
    for (int64_t b = 0; b < nb; b++, w += 288) {
        for (int l = 0; l < 288; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
        __m512i lo[4], hi[4];
        for (int h = 0; h < 4; h++) {
            __m512i v = _mm512_loadu_si512((const void *)(w + 32 + 64 * h));
            lo[h] = _mm512_and_si512(v, low);
            hi[h] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        }
        for (int r = 0; r < mr; r++) {
            const int32_t *xq = (const int32_t *)(x[r].q + b * QK);
            __m512i s = _mm512_set1_epi32(-8 * x[r].s[b]);
            for (int h = 0; h < 4; h++) {
                s = _mm512_dpbusd_epi32(s, lo[h], _mm512_set1_epi32(xq[h]));
                s = _mm512_dpbusd_epi32(s, hi[h], _mm512_set1_epi32(xq[h + 4]));
            }
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(x[r].d[b])), acc[r]);
        }
    }
}

// Q8_0 tile × Q16 rows: int8 quants widened to int16 (rows 0–7 and 8–15 in two vectors, each lane a
// pair of values of one row) × int16 activation pairs (vpdpwssd); the two lanes of a row are added
// at the end of the block.
INL T_512 void q8_tile(const uint8_t *w, int64_t nb, const xrow *x, int mr, __m512 acc[MR]) {
    // Lane pairs (2i, 2i+1) of A hold row i, of B row 8+i: fold them into 16 lanes in row order.
    const __m512i idx_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i idx_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t b = 0; b < nb; b++, w += 544) {
        for (int l = 0; l < 544; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
        __m512i wa[8], wb[8];
        for (int g = 0; g < 8; g++) {
            wa[g] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32 + 64 * g)));
            wb[g] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32 + 64 * g + 32)));
        }
        for (int r = 0; r < mr; r++) {
            const int64_t *xq = (const int64_t *)(x[r].q + b * QK * 2);
            __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512();
            for (int g = 0; g < 8; g++) {
                __m512i xv = _mm512_set1_epi64(xq[g]);
                a = _mm512_dpwssd_epi32(a, wa[g], xv);
                c = _mm512_dpwssd_epi32(c, wb[g], xv);
            }
            __m512i s = _mm512_add_epi32(_mm512_permutex2var_epi32(a, idx_even, c), _mm512_permutex2var_epi32(a, idx_odd, c));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(x[r].d[b])), acc[r]);
        }
    }
}

#define DEFINE_RUN(NAME, TILE)                                                                         \
    static T_512 void NAME(const uint8_t *w, size_t pbs, const xrow *xr, int mr, int64_t nb, float *y, \
                           int64_t ldy, int64_t n0) {                                                  \
        __m512 acc[MR];                                                                                \
        for (int r = 0; r < MR; r++) acc[r] = _mm512_setzero_ps();                                     \
        switch (mr) {                                                                                  \
        case 1: TILE(w, nb, xr, 1, acc); break;                                                        \
        case 2: TILE(w, nb, xr, 2, acc); break;                                                        \
        case 3: TILE(w, nb, xr, 3, acc); break;                                                        \
        default: TILE(w, nb, xr, 4, acc); break;                                                       \
        }                                                                                              \
        for (int r = 0; r < mr; r++) _mm512_storeu_ps(y + r * ldy + n0, acc[r]);                       \
        (void)pbs;                                                                                     \
    }
DEFINE_RUN(run_q4, q4_tile)
DEFINE_RUN(run_q8, q8_tile)

typedef void (*run_fn)(const uint8_t *w, size_t pbs, const xrow *xr, int mr, int64_t nb, float *y, int64_t ldy, int64_t n0);
#endif  // PK_X86

int ck_packed_matmul(int wtype, int act, const void *w, const void *xa, float *y, int64_t ldy,
                     int64_t M, int64_t N, int64_t K, int nthreads) {
    return ck_packed_matmul_multi(wtype, act, 1, &w, &N, &y, &ldy, xa, M, K, nthreads);
}

int ck_packed_matmul_multi(int wtype, int act, int nparts, const void *const *w, const int64_t *N,
                           float *const *y, const int64_t *ldy, const void *xa, int64_t M, int64_t K, int nthreads) {
    const size_t pbs = ck_packed_block_bytes(wtype);
    const int ok = (wtype == CK_WTYPE_Q8_0 && act == CK_ACT_Q16) || (wtype == CK_WTYPE_Q4_0 && act == CK_ACT_Q8);
    if (!ok || !ck_packed_available() || K % QK || K <= 0 || nparts < 1 || nparts > CK_PACKED_MAX_PARTS) return -1;
    int64_t first[CK_PACKED_MAX_PARTS + 1];  // first global tile of each part
    first[0] = 0;
    for (int p = 0; p < nparts; p++) {
        if (N[p] < 0 || N[p] % RT) return -1;
        first[p + 1] = first[p] + N[p] / RT;
    }
    const int64_t tiles = first[nparts];
    if (M <= 0 || tiles == 0) return 0;
#if PK_X86
    const int64_t nb = K / QK, xrb = (int64_t)ck_gemv_act_row_bytes(act, K);
    const run_fn fn = wtype == CK_WTYPE_Q8_0 ? run_q8 : run_q4;
    int nt = nthreads > 0 ? nthreads : ck_get_threads();
    if (nt < 1) nt = 1;
    if (tiles * RT * K * (M < 4 ? M : 4) < (int64_t)1 << 16) nt = 1;  // not worth waking the other threads
    const uint8_t *xp = (const uint8_t *)xa;
    // Activation rows in chunks that stay in L2 while the weight tiles stream past; the tiles of all
    // parts form one list split statically over threads (each output written by one thread, in a
    // fixed order, the same computation as a call per part).
    const int64_t MC = 64;
#pragma omp parallel num_threads(nt) if (nt > 1)
    for (int64_t m0 = 0; m0 < M; m0 += MC) {
        const int64_t m1 = m0 + MC < M ? m0 + MC : M;
#pragma omp for schedule(static) nowait
        for (int64_t g = 0; g < tiles; g++) {
            int p = 0;
            while (g >= first[p + 1]) p++;
            const int64_t t = g - first[p];
            const uint8_t *wt = (const uint8_t *)w[p] + (size_t)(t * nb) * pbs;
            for (int64_t m = m0; m < m1; m += MR) {
                const int mr = (int)(m1 - m < MR ? m1 - m : MR);
                xrow xr[MR];
                for (int r = 0; r < MR; r++) {
                    const uint8_t *base = xp + (m + (r < mr ? r : 0)) * xrb;
                    xr[r].d = (const float *)base;
                    xr[r].s = (const int32_t *)(base + pad64(nb * 4));
                    xr[r].q = base + 2 * pad64(nb * 4);
                }
                fn(wt, pbs, xr, mr, nb, y[p] + m * ldy[p], ldy[p], t * RT);
            }
        }
    }
    return 0;
#else
    (void)w; (void)xa; (void)y; (void)ldy; (void)pbs; (void)nthreads;
    return -1;
#endif
}
