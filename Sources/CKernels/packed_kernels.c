// Packed (16-row interleaved) Q8_0 / Q4_0 matmuls for AVX-512 VNNI: layout and contracts in
// include/packed_kernels.h. No model knowledge, no allocation.
//
// Micro-kernel: 16 weight rows (one zmm lane each) × MR activation rows (MR4 for Q4_0 weights). For each
// 32-value block the exact int32 block dots of all 16 rows build up in zmm registers per activation row
// (8 dot-product instructions with 4 activation values broadcast, 16 for int16 rows); then one conversion
// and one FMA apply the 16 weight scales × the activation scale. The weight block is prepared once and
// reused for the MR rows.

#include "packed_kernels.h"
#include "gemv_kernels.h"
#include "quant_kernels.h"
#include "ckernels.h"
#include <math.h>
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
#define MR 4   // activation rows per micro-kernel call (Q8_0 weights)
#define SMR 16   // activation rows per screen micro-kernel call
#define SMC 64   // activation rows per chunk (the lane state of a chunk lives on each thread's stack)
#define MR4 8  // the same for Q4_0 weights: their nibbles are unpacked once per block for 8 rows
#ifndef PF_DIST
#define PF_DIST 4096  // software prefetch distance in bytes along the packed stream
#endif

static inline int64_t pad64(int64_t n) { return (n + 63) & ~(int64_t)63; }

size_t ck_packed_block_bytes(int wtype) {
    return wtype == CK_WTYPE_Q8_0 ? 32 + 512 : wtype == CK_WTYPE_Q4_0 ? 32 + 256 : 0;
}

// The layout is chosen once per process from the CPU and the environment only (never from a runtime ISA
// change), so every matrix a process packs has the same layout.
int ck_packed_layout(void) {
    static int cached = -1;  // benign race: every thread computes the same value
    if (cached < 0) {
        const char *env = getenv("NLA_PACK"), *isa = getenv("NLA_C_ISA");
        const int off = env && (!strcmp(env, "0") || !strcmp(env, "off"));
        const int generic = isa && !strcmp(isa, "generic"), avx2 = isa && !strcmp(isa, "avx2");
        int layout = CK_PACK_NONE;
        if (!off && PK_X86 && !generic) {
            if (!avx2 && ck_quant_isa_available(CK_ISA_AVX512VNNI)) layout = CK_PACK_AVX512;
            else if (ck_quant_isa_available(CK_ISA_AVX2)) layout = CK_PACK_AVX2;
        }
        cached = layout;
    }
    return cached;
}

int ck_packed_available(void) { return ck_packed_layout() != CK_PACK_NONE; }

int ck_packed_top2_available(void) { return ck_packed_layout() == CK_PACK_AVX512; }

// Byte offset of quant j (0…31) of tile row i (0…15) inside a packed Q8_0 block.
static inline int q8_offset(int layout, int i, int j) {
    return layout == CK_PACK_AVX2 ? 32 + 32 * (j / 2) + 2 * i + j % 2 : 32 + 64 * (j / 4) + 4 * i + j % 4;
}

int ck_pack(int wtype, const void *src, void *dst, int64_t N, int64_t K, int nthreads) {
    const size_t pbs = ck_packed_block_bytes(wtype), wbs = ck_block_bytes(wtype);
    if (pbs == 0 || N <= 0 || K <= 0 || N % RT || K % QK || !ck_packed_available()) return -1;
    const int64_t nb = K / QK, tiles = N / RT, wrow = nb * (int64_t)wbs;
    const int layout = ck_packed_layout();
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
                if (wtype == CK_WTYPE_Q8_0 && layout == CK_PACK_AVX2) {
                    for (int g = 0; g < 16; g++) memcpy(o + 32 + 32 * g + 2 * i, blk + 2 + 2 * g, 2);
                    continue;
                }
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
    const int layout = ck_packed_layout();
    const uint8_t *p = (const uint8_t *)packed;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *o = p + (size_t)(t * nb + b) * pbs;
        float d = ck_f16_to_f32((uint16_t)(o[2 * i] | (o[2 * i + 1] << 8)));
        float *yb = y + b * QK;
        if (wtype == CK_WTYPE_Q8_0) {
            for (int j = 0; j < QK; j++) yb[j] = (float)(int8_t)o[q8_offset(layout, (int)i, j)] * d;
        } else {
            for (int j = 0; j < 16; j++) {
                uint8_t q = o[32 + 64 * (j / 4) + 4 * i + j % 4];
                yb[j] = (float)((int)(q & 15) - 8) * d;
                yb[j + 16] = (float)((int)(q >> 4) - 8) * d;
            }
        }
    }
}

int ck_packed_q16_value(const void *row, int64_t k, int64_t j) {
    if (ck_packed_layout() != CK_PACK_AVX512) {  // plain int16 quants (the ck_gemv_quantize row)
        int16_t v;
        memcpy(&v, (const uint8_t *)row + 2 * pad64(k / QK * 4) + 2 * j, 2);
        return v;
    }
    const uint8_t *q = (const uint8_t *)row + 2 * pad64(k / QK * 4) + (j / QK) * 2 * QK;
    return (int)q[j % QK] + 256 * ((int)q[QK + j % QK] - 128);
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

// The view of activation row `base` (nb blocks): [f32 d[nb]] [int32 s[nb]] [quants], parts 64-byte padded.
static inline xrow xrow_at(const uint8_t *base, int64_t nb) {
    return (xrow){(const float *)base, (const int32_t *)(base + pad64(nb * 4)), base + 2 * pad64(nb * 4)};
}

// Q4_0 tile × Q8 rows: nibble quants unsigned × int8 activations signed (vpdpbusd); each row lane
// starts at −8·Σx so it ends at Σ (n − 8)·x. Two dependency chains per row (low nibbles, high nibbles),
// added at the end of the block: integer sums, so the block dot is the same exact int32 whatever the
// split (|lane| < 2^17). Measured in a standalone harness on this machine (one thread, m = 16, outputs
// bit-identical): 8 rows and two chains 1.24–1.32× the 4-row single-chain kernel (27B gate shape
// 21504 × 5376: 128 → 169 GMAC/s).
INL T_512 void q4_tile(const uint8_t *w, int64_t nb, const xrow *x, int mr, __m512 acc[MR4]) {
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
            __m512i s = _mm512_set1_epi32(-8 * x[r].s[b]), t = _mm512_setzero_si512();
            for (int h = 0; h < 4; h++) {
                s = _mm512_dpbusd_epi32(s, lo[h], _mm512_set1_epi32(xq[h]));
                t = _mm512_dpbusd_epi32(t, hi[h], _mm512_set1_epi32(xq[h + 4]));
            }
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s, t)), _mm512_mul_ps(dw, _mm512_set1_ps(x[r].d[b])), acc[r]);
        }
    }
}

// Q8_0 tile × Q16 rows without widening the weights: each int16 activation is split into its low
// byte l (unsigned, 0..255) and its high byte h (signed) stored as h + 128 (ck_packed_quantize), so
// q = 256·h + l and, per weight row, Σ q·w = 256·(Σ (h+128)·w − 128·Σ w) + Σ l·w: two vpdpbusd (unsigned
// activation bytes × signed weight bytes, 64 products each) per 4 values × 16 rows, the same count as
// vpdpwssd on widened weights but with no widening and no lane folding. The −128·Σ w start of the high
// sum is one vpdpbusd with ones per weight vector, shared by the mr rows. Every partial sum is exact in
// int32 (|256·Σ(h+128)w| <= 256·32·255·128 < 2^28, |Σ l·w| < 2^20, |128·256·Σ w| < 2^28), so the block
// dot is the exact Σ q·w the int16 pair product gives, bit for bit. Two accumulators per byte half
// halve the dependency chains.
INL T_512 void q8_tile(const uint8_t *w, int64_t nb, const xrow *x, int mr, __m512 acc[MR]) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t b = 0; b < nb; b++, w += 544) {
        for (int l = 0; l < 544; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
        __m512i wv[8];
        for (int g = 0; g < 8; g++) wv[g] = _mm512_loadu_si512((const void *)(w + 32 + 64 * g));
        __m512i sw0 = _mm512_setzero_si512(), sw1 = _mm512_setzero_si512();
        for (int g = 0; g < 8; g += 2) {
            sw0 = _mm512_dpbusd_epi32(sw0, ones, wv[g]);
            sw1 = _mm512_dpbusd_epi32(sw1, ones, wv[g + 1]);
        }
        const __m512i hinit = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(_mm512_add_epi32(sw0, sw1), 7));
        for (int r = 0; r < mr; r++) {
            const int32_t *lq = (const int32_t *)(x[r].q + b * QK * 2), *hq = lq + 8;
            __m512i l0 = _mm512_setzero_si512(), l1 = l0, h0 = hinit, h1 = l0;
            for (int g = 0; g < 8; g += 2) {
                l0 = _mm512_dpbusd_epi32(l0, _mm512_set1_epi32(lq[g]), wv[g]);
                h0 = _mm512_dpbusd_epi32(h0, _mm512_set1_epi32(hq[g]), wv[g]);
                l1 = _mm512_dpbusd_epi32(l1, _mm512_set1_epi32(lq[g + 1]), wv[g + 1]);
                h1 = _mm512_dpbusd_epi32(h1, _mm512_set1_epi32(hq[g + 1]), wv[g + 1]);
            }
            const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(h0, h1), 8), _mm512_add_epi32(l0, l1));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(x[r].d[b])), acc[r]);
        }
    }
}

// Q8_0 tile × Q8 rows (the int8 screen of ck_packed_top2_q8, also ck_packed_matmul's (Q8_0, Q8) pair):
// vpdpbusd multiplies unsigned by signed bytes, so the weights become u = w XOR 0x80 = w + 128 (one xor
// per weight vector per block, shared by the mr activation rows) and the activation int8 is the signed
// operand; each row lane starts at −128·Σq (the Q8 row stores s = Σq per block), so it ends at Σ w·q
// exactly (|lane| <= 32·255·127 + 128·32·127 < 2^21: no overflow, no saturation).
INL T_512 void q8b_tile(const uint8_t *w, int64_t nb, const xrow *x, int mr, __m512 *acc) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int64_t b = 0; b < nb; b++, w += 544) {
        for (int l = 0; l < 544; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
        __m512i u[8];
        for (int g = 0; g < 8; g++) u[g] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(w + 32 + 64 * g)), flip);
        for (int r = 0; r < mr; r++) {
            const int32_t *xq = (const int32_t *)(x[r].q + b * QK);
            __m512i s = _mm512_set1_epi32(-128 * x[r].s[b]);
            for (int g = 0; g < 8; g++) s = _mm512_dpbusd_epi32(s, u[g], _mm512_set1_epi32(xq[g]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(x[r].d[b])), acc[r]);
        }
    }
}

// The screen's activation rows, 16 at a time, interleaved per block so that one base pointer and
// immediate offsets reach every operand (no per-row pointer juggling in general registers): per block b,
// q[b][r][32] (int8 quants of row r), init[b][r] = −128·Σq (the lane start of q8b_tile) and d[b][r].
// Rows past the last real one repeat row 0 (computed, never read).
typedef struct {
    const int8_t *q;
    const int32_t *init;
    const float *d;
} xgrp;

static inline size_t xgrp_bytes(int64_t nb) { return (size_t)(nb * SMR * (QK + 8)); }

// The group stored at `buf` (xgrp_bytes(nb) bytes): quants, then lane starts, then scales.
static inline xgrp xgrp_at(const uint8_t *buf, int64_t nb) {
    return (xgrp){(const int8_t *)buf, (const int32_t *)(buf + nb * SMR * QK), (const float *)(buf + nb * SMR * (QK + 4))};
}

// Writes the group of Q8 rows xa8[0 ..< min(rows, SMR)] (row stride rb8) to `buf`.
static void xgrp_fill(uint8_t *buf, const uint8_t *xa8, int64_t rb8, int64_t rows, int64_t nb) {
    const xgrp g = xgrp_at(buf, nb);
    int8_t *q = (int8_t *)g.q;
    int32_t *init = (int32_t *)g.init;
    float *d = (float *)g.d;
    for (int r = 0; r < SMR; r++) {
        const xrow x = xrow_at(xa8 + (r < rows ? r : 0) * rb8, nb);
        for (int64_t b = 0; b < nb; b++) {
            memcpy(q + (b * SMR + r) * QK, x.q + b * QK, QK);
            init[b * SMR + r] = -128 * x.s[b];
            d[b * SMR + r] = x.d[b];
        }
    }
}

// q8b_tile over an interleaved group (the same integer sums and the same fma per block, so the same
// f32 values bit for bit); two dependency chains per row.
INL T_512 void q8g_tile(const uint8_t *w, int64_t nb, xgrp x, int mr, __m512 *acc) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int64_t b = 0; b < nb; b++, w += 544, x.q += SMR * QK, x.init += SMR, x.d += SMR) {
        for (int l = 0; l < 544; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w));
        __m512i u[8];
        for (int g = 0; g < 8; g++) u[g] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(w + 32 + 64 * g)), flip);
#pragma clang loop unroll(full)
        for (int r = 0; r < mr; r++) {
            const int32_t *xq = (const int32_t *)(x.q + r * QK);
            __m512i s = _mm512_set1_epi32(x.init[r]), t = _mm512_setzero_si512();
            for (int g = 0; g < 8; g += 2) {
                s = _mm512_dpbusd_epi32(s, u[g], _mm512_set1_epi32(xq[g]));
                t = _mm512_dpbusd_epi32(t, u[g + 1], _mm512_set1_epi32(xq[g + 1]));
            }
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s, t)), _mm512_mul_ps(dw, _mm512_set1_ps(x.d[r])), acc[r]);
        }
    }
}

// A micro-kernel call for mr (1…MRV) activation rows: the tile code specialized per row count.
#define DEFINE_RUN(NAME, TILE, MRV)                                                                    \
    static T_512 void NAME(const uint8_t *w, size_t pbs, const xrow *xr, int mr, int64_t nb, float *y, \
                           int64_t ldy, int64_t n0) {                                                  \
        __m512 acc[MRV];                                                                               \
        for (int r = 0; r < MRV; r++) acc[r] = _mm512_setzero_ps();                                    \
        switch (mr) {                                                                                  \
        case 1: TILE(w, nb, xr, 1, acc); break;                                                        \
        case 2: TILE(w, nb, xr, 2, acc); break;                                                        \
        case 3: TILE(w, nb, xr, 3, acc); break;                                                        \
        case 4: TILE(w, nb, xr, 4, acc); break;                                                        \
        case 5: TILE(w, nb, xr, 5 <= MRV ? 5 : MRV, acc); break;                                       \
        case 6: TILE(w, nb, xr, 6 <= MRV ? 6 : MRV, acc); break;                                       \
        case 7: TILE(w, nb, xr, 7 <= MRV ? 7 : MRV, acc); break;                                       \
        default: TILE(w, nb, xr, MRV, acc); break;                                                     \
        }                                                                                              \
        for (int r = 0; r < mr; r++) _mm512_storeu_ps(y + r * ldy + n0, acc[r]);                       \
        (void)pbs;                                                                                     \
    }
DEFINE_RUN(run_q4, q4_tile, MR4)
DEFINE_RUN(run_q8, q8_tile, MR)
DEFINE_RUN(run_q8b, q8b_tile, MR)

typedef void (*run_fn)(const uint8_t *w, size_t pbs, const xrow *xr, int mr, int64_t nb, float *y, int64_t ldy, int64_t n0);

// --- AVX2 (CK_PACK_AVX2): the same 16-row tiles, taken as two 8-row halves (one int32 lane per row) ---
// No byte dot product with int32 accumulation here, so the int16 products of vpmaddwd and vpmaddubsw
// are summed with separate adds; the block dots stay the exact int32 values and each block is applied as
// fma(f32(isum), f32(dw·dx), acc) from acc = +0, as in the AVX-512 kernels: the outputs are bit-identical
// to theirs. Measured standalone on an AVX2 AMD EPYC Zen 3 (one thread, 65536 × 640, 16 rows, quiet
// machine): ~29 GMAC/s for a half-tile Q8_0 kernel (one 8-row half per pass; removed), ~35 for the whole-tile one used below (the pair
// broadcast shared by both halves), against 2–4 for the unpacked ck_gemv tiles.
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#ifndef MR2
#define MR2 4   // activation rows per call, Q8_0 weights
#endif
#ifndef MR24
#define MR24 4  // the same, Q4_0 weights
#endif

// Q8_0 tile × Q16 rows: per value pair g the 16 rows' weights widened to int16 (once per block, shared by
// the mr rows), vpmaddwd with the row's pair broadcast, which feeds both 8-row halves; |block dot| <=
// 32·128·32767 < 2^28. acc[2r] / acc[2r + 1]: rows 0–7 / 8–15 of activation row r.
INL T_AVX2 void q8_tile_avx2(const uint8_t *w, int64_t nb, const xrow *x, int mr, __m256 acc[2 * MR2]) {
    for (int64_t b = 0; b < nb; b++, w += 544) {
        for (int l = 0; l < 544; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        __m256i s0[MR2], s1[MR2];
        for (int r = 0; r < mr; r++) s0[r] = s1[r] = _mm256_setzero_si256();
        for (int g = 0; g < 16; g++) {
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 32 + 32 * g)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 48 + 32 * g)));
            for (int r = 0; r < mr; r++) {
                int32_t pair;
                memcpy(&pair, x[r].q + b * QK * 2 + 4 * g, 4);
                const __m256i xb = _mm256_set1_epi32(pair);
                s0[r] = _mm256_add_epi32(s0[r], _mm256_madd_epi16(w0, xb));
                s1[r] = _mm256_add_epi32(s1[r], _mm256_madd_epi16(w1, xb));
            }
        }
        const __m256 d0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w));
        const __m256 d1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 16)));
        for (int r = 0; r < mr; r++) {
            const __m256 dx = _mm256_set1_ps(x[r].d[b]);
            acc[2 * r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0[r]), _mm256_mul_ps(d0, dx), acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1[r]), _mm256_mul_ps(d1, dx), acc[2 * r + 1]);
        }
    }
}

// Q4_0 half-tile × Q8 rows (the AVX-512 layout: 4 values × 8 rows per 32 bytes): vpmaddubsw of the
// unsigned nibbles and the row's 4 int8 values broadcast gives per row two int16 sums of 2 products, each
// |.| <= 2·15·127 = 3810; the 8 of a block add up in int16 without overflow (<= 30480), then one vpmaddwd
// with ones makes the row's int32 Σ n·x, minus 8·Σx.
INL T_AVX2 void q4_half_avx2(const uint8_t *w, int h, int64_t nb, const xrow *x, int mr, __m256 acc[MR24]) {
    const __m256i low = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++, w += 288) {
        for (int l = 0; l < 288; l += 64) _mm_prefetch((const char *)(w + PF_DIST + l), _MM_HINT_T0);
        __m256i lo[4], hi[4];
        for (int q = 0; q < 4; q++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(w + 32 + 64 * q + 32 * h));
            lo[q] = _mm256_and_si256(v, low);
            hi[q] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 16 * h)));
        for (int r = 0; r < mr; r++) {
            const int32_t *xq = (const int32_t *)(x[r].q + b * QK);
            __m256i t = _mm256_maddubs_epi16(lo[0], _mm256_set1_epi32(xq[0]));
            t = _mm256_add_epi16(t, _mm256_maddubs_epi16(hi[0], _mm256_set1_epi32(xq[4])));
            for (int q = 1; q < 4; q++) {
                t = _mm256_add_epi16(t, _mm256_maddubs_epi16(lo[q], _mm256_set1_epi32(xq[q])));
                t = _mm256_add_epi16(t, _mm256_maddubs_epi16(hi[q], _mm256_set1_epi32(xq[q + 4])));
            }
            const __m256i s = _mm256_sub_epi32(_mm256_madd_epi16(t, ones), _mm256_set1_epi32(8 * x[r].s[b]));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(x[r].d[b])), acc[r]);
        }
    }
}

// A call for mr (1…MRV) activation rows: both halves, each specialized per row count.
#define DEFINE_RUN2(NAME, HALF, MRV)                                                                   \
    static T_AVX2 void NAME(const uint8_t *w, size_t pbs, const xrow *xr, int mr, int64_t nb, float *y, \
                            int64_t ldy, int64_t n0) {                                                 \
        for (int h = 0; h < 2; h++) {                                                                  \
            __m256 acc[MRV];                                                                           \
            for (int r = 0; r < MRV; r++) acc[r] = _mm256_setzero_ps();                                \
            switch (mr) {                                                                              \
            case 1: HALF(w, h, nb, xr, 1, acc); break;                                                 \
            case 2: HALF(w, h, nb, xr, 2 <= MRV ? 2 : MRV, acc); break;                                \
            case 3: HALF(w, h, nb, xr, 3 <= MRV ? 3 : MRV, acc); break;                                \
            case 4: HALF(w, h, nb, xr, 4 <= MRV ? 4 : MRV, acc); break;                                \
            case 5: HALF(w, h, nb, xr, 5 <= MRV ? 5 : MRV, acc); break;                                \
            case 6: HALF(w, h, nb, xr, 6 <= MRV ? 6 : MRV, acc); break;                                \
            case 7: HALF(w, h, nb, xr, 7 <= MRV ? 7 : MRV, acc); break;                                \
            default: HALF(w, h, nb, xr, MRV, acc); break;                                              \
            }                                                                                          \
            for (int r = 0; r < mr; r++) _mm256_storeu_ps(y + r * ldy + n0 + 8 * h, acc[r]);            \
        }                                                                                              \
        (void)pbs;                                                                                     \
    }
#define DEFINE_RUN2T(NAME, TILE, MRV)                                                                  \
    static T_AVX2 void NAME(const uint8_t *w, size_t pbs, const xrow *xr, int mr, int64_t nb, float *y, \
                            int64_t ldy, int64_t n0) {                                                 \
        __m256 acc[2 * MRV];                                                                           \
        for (int r = 0; r < 2 * MRV; r++) acc[r] = _mm256_setzero_ps();                                \
        switch (mr) {                                                                                  \
        case 1: TILE(w, nb, xr, 1, acc); break;                                                        \
        case 2: TILE(w, nb, xr, 2 <= MRV ? 2 : MRV, acc); break;                                       \
        case 3: TILE(w, nb, xr, 3 <= MRV ? 3 : MRV, acc); break;                                       \
        case 4: TILE(w, nb, xr, 4 <= MRV ? 4 : MRV, acc); break;                                       \
        case 5: TILE(w, nb, xr, 5 <= MRV ? 5 : MRV, acc); break;                                       \
        default: TILE(w, nb, xr, MRV, acc); break;                                                     \
        }                                                                                              \
        for (int r = 0; r < mr; r++) {                                                                 \
            _mm256_storeu_ps(y + r * ldy + n0, acc[2 * r]);                                            \
            _mm256_storeu_ps(y + r * ldy + n0 + 8, acc[2 * r + 1]);                                    \
        }                                                                                              \
        (void)pbs;                                                                                     \
    }
DEFINE_RUN2T(run_q8_avx2, q8_tile_avx2, MR2)
DEFINE_RUN2(run_q4_avx2, q4_half_avx2, MR24)
#endif  // PK_X86

int ck_packed_matmul(int wtype, int act, const void *w, const void *xa, float *y, int64_t ldy,
                     int64_t M, int64_t N, int64_t K, int nthreads) {
    return ck_packed_matmul_multi(wtype, act, 1, &w, &N, &y, &ldy, xa, M, K, nthreads);
}

int ck_packed_matmul_multi(int wtype, int act, int nparts, const void *const *w, const int64_t *N,
                           float *const *y, const int64_t *ldy, const void *xa, int64_t M, int64_t K, int nthreads) {
    const size_t pbs = ck_packed_block_bytes(wtype);
    const int layout = ck_packed_layout();
    // The int8-activation Q8_0 kernel (the top-2 screen) exists for the AVX-512 layout only.
    const int ok = (wtype == CK_WTYPE_Q8_0 && (act == CK_ACT_Q16 || (act == CK_ACT_Q8 && layout == CK_PACK_AVX512))) ||
                   (wtype == CK_WTYPE_Q4_0 && act == CK_ACT_Q8);
    if (!ok || layout == CK_PACK_NONE || K % QK || K <= 0 || nparts < 1 || nparts > CK_PACKED_MAX_PARTS) return -1;
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
    const run_fn fn = layout == CK_PACK_AVX2 ? (wtype == CK_WTYPE_Q4_0 ? run_q4_avx2 : run_q8_avx2)
                      : wtype == CK_WTYPE_Q4_0 ? run_q4 : act == CK_ACT_Q16 ? run_q8 : run_q8b;
    const int mrk = layout == CK_PACK_AVX2 ? (wtype == CK_WTYPE_Q4_0 ? MR24 : MR2)
                    : wtype == CK_WTYPE_Q4_0 ? MR4 : MR;  // activation rows per call
    int nt = nthreads > 0 ? nthreads : ck_get_threads();
    if (nt < 1) nt = 1;
    if (tiles * RT * K * (M < 4 ? M : 4) < (int64_t)1 << 16) nt = 1;  // not worth waking the other threads
    const uint8_t *xp = (const uint8_t *)xa;
    // Activation rows in chunks that stay in L2 while the weight tiles stream past; the tiles of all
    // parts form one list, handed out in runs of `run` tiles from a shared counter (the chunks in order),
    // so a thread that runs faster (VM cores often do not run alike) takes more runs instead of waiting
    // at the join. Each output is still written by one thread, by the same code from the same inputs:
    // which thread takes a run never changes a bit (the same computation as a static split or a call
    // per part).
    const int64_t MC = 64, nmc = (M + MC - 1) / MC;
    const int64_t run = tiles / (8 * (int64_t)nt) > 1 ? tiles / (8 * (int64_t)nt) : 1, nruns = (tiles + run - 1) / run;
    int64_t next = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    for (;;) {
        const int64_t u = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
        if (u >= nmc * nruns) break;
        const int64_t m0 = u / nruns * MC, m1 = m0 + MC < M ? m0 + MC : M;
        const int64_t g0 = u % nruns * run, g1 = g0 + run < tiles ? g0 + run : tiles;
        int p = 0;
        for (int64_t g = g0; g < g1; g++) {
            while (g >= first[p + 1]) p++;
            const int64_t t = g - first[p];
            const uint8_t *wt = (const uint8_t *)w[p] + (size_t)(t * nb) * pbs;
            for (int64_t m = m0; m < m1; m += mrk) {
                const int mr = (int)(m1 - m < mrk ? m1 - m : mrk);
                xrow xr[MR4 > MR ? MR4 : MR];
                for (int r = 0; r < mrk; r++) xr[r] = xrow_at(xp + (m + (r < mr ? r : 0)) * xrb, nb);
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

// ---------------------------------------------------------------------------------------------------
// Screened exact top-2 over a packed Q8_0 matrix (contract in include/packed_kernels.h).
//
// Notation for one activation row x and weight row j. x16, x8 are the dequantized CK_ACT_Q16 / CK_ACT_Q8
// rows (dx·q per value, exact in double), w_j the dequantized weight row (dw·q, exact). The packed
// kernels compute, per 32-value block b, t_b = dw_b·dx_b·isum_b with isum_b the exact int32 block dot,
// as fma(f32(isum_b), f32(dw_b·dx_b), acc) starting from acc = +0:
//   exact_j  = the int16 kernel's f32 value (what ck_packed_matmul gives; the logit we must reproduce),
//   screen_j = the int8 kernel's f32 value.
// Rounding (u = 2^-24, no overflow, see the guards below): term b picks up at most nb + 2 relative
// roundings (int32 → f32, the dw·dx product, and the fma of steps b … nb), so with γ = (nb+2)u/(1−(nb+2)u)
//   |exact_j − <w_j, x16>| <= γ·Σ_b |t_b| + A',   |screen_j − <w_j, x8>| <= γ·Σ_b |t_b^(8)| + A',
// where A' collects subnormal (absolute, <= 2^-150 per rounding) errors: the product dw·dx feeds
// |isum| < 2^27 (Q16; 2^19 for Q8) and each fma adds 2^-150, so A' <= nb·(2^27 + 1)·2^-150·2 < nb·2^-121.
// By Cauchy–Schwarz Σ_b |t_b| <= Σ_k |w_k·x_k| <= ||w_j||·||x||, and |<w_j, x16> − <w_j, x8>| <=
// ||w_j||·||x16 − x8||. Hence, with E = ||x16 − x8||,
//   |screen_j − exact_j| <= ||w_j||·(E + γ·(||x16|| + ||x8||)) + 2A'  <=  B_j = row_norms[j]·β + A,
//   β = E + c·(||x16|| + ||x8||),  c = (nb+4)·2^-24·1.25 >= γ (as long as (nb+2)u <= 0.2),
//   A = (nb+1)·2^-119 >= 2A'.
// The norms are double sums of exact squares (relative error <= (K+3)·2^-53, then sqrt), inflated by
// 1 + (K+4)·2^-52; β is inflated by 2^-48 for the roundings of its own formula.
//
// Guards (any fails → the row takes the full exact path): every x finite (so every dx is finite);
// every row norm and weight scale finite; max_j row_norms[j]·max(||x16||, ||x8||) <= 2^100 (every
// partial sum of every row stays far below FLT_MAX, so no f32 overflow and no inf); max|dw|·max|dx| <= 2^100
// (the dw·dx product cannot overflow, so a zero block cannot give inf·0 = NaN).
//
// Selection: with lo_j <= screen_j − B_j <= exact_j and hi_j >= screen_j + B_j >= exact_j (f32 with
// outward slack, see screen_run), let L2 be the second largest lo_j (counting repeats) and p ≠ q two
// rows with lo_p, lo_q >= L2, so exact_p, exact_q >= L2. Every row j with hi_j < L2 has
// exact_j < L2 <= min(exact_p, exact_q): it is strictly below two other rows, so it is neither the
// first index of the maximum nor the value `second` (the largest value at another index than the
// argmax, which is >= L2 because p or q is not the argmax). So ck_top2 over any subset S of rows in
// index order that holds every row with hi_j >= L2 gives exactly ck_top2 over all N rows: the same
// first index on ties, the same values (all finite here; an exact value is never −0, the fma
// accumulation from +0 cannot produce it). S = every row of every 16-row tile whose max hi_j >= L2;
// those tiles are recomputed with the int16 tile code (run_q8, one activation row), whose per-(row,
// weight row) arithmetic does not depend on mr or the neighbouring rows: bit-identical to ck_packed_matmul.
// Too many candidate tiles (> tiles/8 + 1) → the full exact row (correct always, fast usually).

static float round_up_f32(double v) {
    float f = (float)v;
    if ((double)f < v) f = nextafterf(f, INFINITY);
    return f;
}

#if PK_X86
// Q8_0 row norms of one tile, 16 rows at once: per block the 16 exact integer Σ q² (int8 quants widened to
// int16, vpmaddwd pairs; lanes 2i and 2i+1 of the low / high half hold row i / 8+i and are folded into row
// order with two permutes), then per row in double
// ss += (Σq²·d)·d — the scalar loop's terms, summed in the same block order. Returns 1 if a scale is not
// finite; *ms gets the largest finite |scale|.
static T_512 int row_norms_q8_tile(const uint8_t *o, int64_t nb, double infl, float *norms, double *ms) {
    const __m512i idx_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i idx_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512d ss0 = _mm512_setzero_pd(), ss1 = _mm512_setzero_pd();
    __m512 mx = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    for (int64_t b = 0; b < nb; b++, o += 544) {
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)o));
        nonfinite |= _mm512_cmp_ps_mask(_mm512_abs_ps(d), _mm512_set1_ps(INFINITY), _CMP_NLT_UQ);  // inf or NaN
        mx = _mm512_max_ps(mx, _mm512_abs_ps(d));
        __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512();
        for (int g = 0; g < 8; g++) {
            const __m512i lo = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(o + 32 + 64 * g)));
            const __m512i hi = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(o + 32 + 64 * g + 32)));
            a = _mm512_add_epi32(a, _mm512_madd_epi16(lo, lo));
            c = _mm512_add_epi32(c, _mm512_madd_epi16(hi, hi));
        }
        const __m512i bs = _mm512_add_epi32(_mm512_permutex2var_epi32(a, idx_even, c), _mm512_permutex2var_epi32(a, idx_odd, c));
        const __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d)), d1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
        const __m512d b0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(bs)), b1 = _mm512_cvtepi32_pd(_mm512_extracti32x8_epi32(bs, 1));
        ss0 = _mm512_add_pd(ss0, _mm512_mul_pd(_mm512_mul_pd(b0, d0), d0));
        ss1 = _mm512_add_pd(ss1, _mm512_mul_pd(_mm512_mul_pd(b1, d1), d1));
    }
    double ss[RT];
    _mm512_storeu_pd(ss, ss0);
    _mm512_storeu_pd(ss + 8, ss1);
    float m16[RT];
    _mm512_storeu_ps(m16, _mm512_maskz_mov_ps((__mmask16)~nonfinite, mx));
    for (int i = 0; i < RT; i++) {
        if (!(nonfinite >> i & 1) && m16[i] > *ms) *ms = m16[i];
        const double n = sqrt(ss[i]) * infl;
        norms[i] = isfinite(n) ? round_up_f32(n) : (float)n;
    }
    return nonfinite != 0;
}
#endif

int ck_packed_row_norms(int wtype, const void *packed, int64_t N, int64_t K, float *norms, float *stats, int nthreads) {
    const size_t pbs = ck_packed_block_bytes(wtype);
    if (pbs == 0 || N <= 0 || K <= 0 || N % RT || K % QK) return -1;
    const int64_t nb = K / QK;
    const double infl = 1 + (double)(K + 4) * 0x1p-52;
    int nt = nthreads > 0 ? nthreads : ck_get_threads();
    if (nt < 1) nt = 1;
    const uint8_t *p = (const uint8_t *)packed;
    double maxscale = 0;
    int bad = 0;
    const int layout = ck_packed_layout();
#if PK_X86
    if (wtype == CK_WTYPE_Q8_0 && layout == CK_PACK_AVX512) {
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            double ms = 0;
            int nf = 0;
#pragma omp for schedule(static)
            for (int64_t t = 0; t < N / RT; t++) nf |= row_norms_q8_tile(p + (size_t)(t * nb) * pbs, nb, infl, norms + t * RT, &ms);
#pragma omp critical
            {
                if (ms > maxscale) maxscale = ms;
                bad |= nf;
            }
        }
    } else
#endif
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double ms = 0;
        int nf = 0;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            const int64_t t = r / RT, i = r % RT;
            double ss = 0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *o = p + (size_t)(t * nb + b) * pbs;
                const double d = ck_f16_to_f32((uint16_t)(o[2 * i] | (o[2 * i + 1] << 8)));
                if (!isfinite(d)) nf = 1;
                else if (fabs(d) > ms) ms = fabs(d);
                double bs = 0;
                if (wtype == CK_WTYPE_Q8_0) {
                    for (int j = 0; j < QK; j++) {
                        const double q = (int8_t)o[q8_offset(layout, (int)i, j)];
                        bs += q * q;
                    }
                } else {
                    for (int j = 0; j < 16; j++) {
                        const uint8_t q = o[32 + 64 * (j / 4) + 4 * i + j % 4];
                        const double lo = (int)(q & 15) - 8, hi = (int)(q >> 4) - 8;
                        bs += lo * lo + hi * hi;
                    }
                }
                ss += bs * d * d;  // bs is an exact integer; (dw·q)² summed per block
            }
            const double n = sqrt(ss) * infl;
            norms[r] = isfinite(n) ? round_up_f32(n) : (float)n;
        }
#pragma omp critical
        {
            if (ms > maxscale) maxscale = ms;
            bad |= nf;
        }
    }
    float mn = 0;
    for (int64_t r = 0; r < N; r++) {
        if (!isfinite(norms[r])) { bad = 1; break; }
        if (norms[r] > mn) mn = norms[r];
    }
    stats[0] = bad ? INFINITY : mn;
    stats[1] = bad ? INFINITY : (float)maxscale;
    return 0;
}

// Per activation row: the bound parameters, and whether the screened path may be used at all.
typedef struct {
    double beta, abs_term;  // B_j = row_norms[j]·beta + abs_term (the rigorous bound)
    float betaf, absf;      // f32 versions used by the screen epilogue, rounded up with margin
    float l2;               // second largest lower bound
    int ok;                 // guards passed
    int fallback;           // full exact row
    int64_t ntiles;         // candidate tiles
} top2_row;

static void top2_row_bound(const uint8_t *r16, const uint8_t *r8, const float *x, int64_t K, const float *stats,
                           top2_row *p) {
    const int64_t nb = K / QK, pad = pad64(nb * 4);
    const float *d16 = (const float *)r16, *d8 = (const float *)r8;
    const int8_t *q8 = (const int8_t *)(r8 + 2 * pad);
    memset(p, 0, sizeof *p);
    if (!isfinite(stats[0]) || !isfinite(stats[1])) return;
    for (int64_t k = 0; k < K; k++)
        if (!isfinite(x[k])) return;
    double s16 = 0, s8 = 0, e = 0, dmax = 0;
    for (int64_t b = 0; b < nb; b++) {
        const double a16 = d16[b], a8 = d8[b];
        if (!isfinite(a16) || !isfinite(a8)) return;
        dmax = fmax(dmax, fmax(fabs(a16), fabs(a8)));
        for (int j = 0; j < QK; j++) {
            const double u = a16 * ck_packed_q16_value(r16, K, b * QK + j), v = a8 * q8[b * QK + j];  // exact
            s16 += u * u;
            s8 += v * v;
            e += (u - v) * (u - v);
        }
    }
    const double infl = 1 + (double)(K + 4) * 0x1p-52;
    const double n16 = sqrt(s16) * infl, n8 = sqrt(s8) * infl, E = sqrt(e) * infl;
    if ((double)stats[0] * fmax(n16, n8) > 0x1p100 || (double)stats[1] * dmax > 0x1p100) return;
    const double c = (double)(nb + 4) * 0x1p-24 * 1.25;
    p->beta = (E + c * (n16 + n8)) * (1 + 0x1p-48);
    p->abs_term = (double)(nb + 1) * 0x1p-119;
    p->betaf = round_up_f32(p->beta * (1 + 0x1p-20));
    p->absf = round_up_f32(2 * p->abs_term);
    p->ok = 1;
}

double ck_packed_top2_q8_bound(const float *x, int64_t K, const float *norm_stats, double *abs_term) {
    if (K <= 0 || K % QK) return NAN;
    const size_t rb16 = ck_gemv_act_row_bytes(CK_ACT_Q16, K), rb8 = ck_gemv_act_row_bytes(CK_ACT_Q8, K);
    uint8_t *buf = (uint8_t *)aligned_alloc(64, rb16 + rb8);
    if (!buf) return NAN;
    ck_packed_quantize(CK_ACT_Q16, x, K, buf, 1, K);
    ck_gemv_quantize(CK_ACT_Q8, x, K, buf + rb16, 1, K);
    top2_row p;
    top2_row_bound(buf, buf + rb16, x, K, norm_stats, &p);
    free(buf);
    if (abs_term) *abs_term = p.ok ? p.abs_term : NAN;
    return p.ok ? p.beta : NAN;
}

size_t ck_packed_top2_q8_scratch_bytes(int64_t M, int64_t N, int64_t K) {
    if (M < 0 || N <= 0 || K <= 0 || K % QK || N % RT) return 0;
    const int64_t tiles = N / RT;
    const int64_t groups = (M + SMR - 1) / SMR;
    return (size_t)(M * (int64_t)ck_gemv_act_row_bytes(CK_ACT_Q16, K) + M * (int64_t)ck_gemv_act_row_bytes(CK_ACT_Q8, K) +
                    pad64(M * tiles * 4) + pad64(M * 32 * 4) + pad64(M * (int64_t)sizeof(top2_row)) + pad64(N * 4) +
                    groups * pad64((int64_t)xgrp_bytes(K / QK)));
}

#if PK_X86
// Most candidate tiles per activation row before the row takes the full exact path.
static inline int64_t top2_tiles_cap(int64_t tiles) { return tiles / 8 + 1; }

// One tile × mr Q8 rows, then per row: optional screen store; lo = s − B − slack, hi = s + B + slack
// (B = fma(norm, betaf, absf) >= (norm·betaf + absf)(1 − 2^-24) >= norm·β + A, since betaf >= β(1+2^-20)
// and absf >= 2A; the slack |v|·2^-22 + 2^-125 exceeds the rounding of s ± B and of the slack step
// itself, subnormals included, so lo <= s − B and hi >= s + B as real numbers); the tile's max hi; and
// the lane-wise top-2 of lo.
static T_512 void screen_run(const uint8_t *wt, xgrp xg, int mr, int64_t nb, const float *norms,
                             const top2_row *rp, float *himax, int64_t tiles, int64_t t, __m512 *lo1, __m512 *lo2,
                             float *screen, int64_t ldsc, int64_t n0) {
    __m512 acc[SMR];
    for (int r = 0; r < SMR; r++) acc[r] = _mm512_setzero_ps();
    switch (mr) {
    case 1: q8g_tile(wt, nb, xg, 1, acc); break;
    case 2: q8g_tile(wt, nb, xg, 2, acc); break;
    case 3: q8g_tile(wt, nb, xg, 3, acc); break;
    case 4: q8g_tile(wt, nb, xg, 4, acc); break;
    case 5: q8g_tile(wt, nb, xg, 5, acc); break;
    case 6: q8g_tile(wt, nb, xg, 6, acc); break;
    case 7: q8g_tile(wt, nb, xg, 7, acc); break;
    case 8: q8g_tile(wt, nb, xg, 8, acc); break;
    case 9: q8g_tile(wt, nb, xg, 9, acc); break;
    case 10: q8g_tile(wt, nb, xg, 10, acc); break;
    case 11: q8g_tile(wt, nb, xg, 11, acc); break;
    case 12: q8g_tile(wt, nb, xg, 12, acc); break;
    case 13: q8g_tile(wt, nb, xg, 13, acc); break;
    case 14: q8g_tile(wt, nb, xg, 14, acc); break;
    case 15: q8g_tile(wt, nb, xg, 15, acc); break;
    default: q8g_tile(wt, nb, xg, 16, acc); break;
    }
    const __m512 nv = _mm512_loadu_ps(norms), rel = _mm512_set1_ps(0x1p-22f), tiny = _mm512_set1_ps(0x1p-125f);
    for (int r = 0; r < mr; r++) {
        if (screen) _mm512_storeu_ps(screen + r * ldsc + n0, acc[r]);
        const __m512 B = _mm512_fmadd_ps(nv, _mm512_set1_ps(rp[r].betaf), _mm512_set1_ps(rp[r].absf));
        __m512 lo = _mm512_sub_ps(acc[r], B), hi = _mm512_add_ps(acc[r], B);
        lo = _mm512_sub_ps(lo, _mm512_fmadd_ps(_mm512_abs_ps(lo), rel, tiny));
        hi = _mm512_add_ps(hi, _mm512_fmadd_ps(_mm512_abs_ps(hi), rel, tiny));
        himax[r * tiles + t] = _mm512_reduce_max_ps(hi);
        const __mmask16 gt1 = _mm512_cmp_ps_mask(lo, lo1[r], _CMP_GT_OQ);
        const __mmask16 gt2 = (__mmask16)(~gt1 & _mm512_cmp_ps_mask(lo, lo2[r], _CMP_GT_OQ));
        lo2[r] = _mm512_mask_mov_ps(lo2[r], gt1, lo1[r]);
        lo2[r] = _mm512_mask_mov_ps(lo2[r], gt2, lo);
        lo1[r] = _mm512_mask_mov_ps(lo1[r], gt1, lo);
    }
}

static T_512 void lanes_init(__m512 *a, __m512 *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = b[i] = _mm512_set1_ps(-INFINITY);
}

static T_512 void lanes_store(const __m512 *a, const __m512 *b, float *o1, float *o2) {
    _mm512_storeu_ps(o1, *a);
    _mm512_storeu_ps(o2, *b);
}

// Scan of one row's candidate tiles with the exact int16 tile code; top-2 in index order with
// ck_top2's semantics (values are finite here).
static void top2_exact_tiles(const uint8_t *w, size_t pbs, int64_t nb, const xrow *x16, const float *himax, int64_t tiles,
                             float l2, int64_t *index, float *first, float *second) {
    float a = -INFINITY, b = -INFINITY;
    int64_t best = 0;
    for (int64_t t = 0; t < tiles; t++) {
        if (!(himax[t] >= l2)) continue;
        float y[RT];
        run_q8(w + (size_t)(t * nb) * pbs, pbs, x16, 1, nb, y, 0, 0);
        for (int i = 0; i < RT; i++) {
            const float v = y[i];
            if (v > a) { b = a; a = v; best = t * RT + i; }
            else if (v > b) b = v;
        }
    }
    *index = best; *first = a; *second = b;
}
#endif

int ck_packed_top2_q8(const void *w, const float *row_norms, const float *norm_stats, const float *x, int64_t ldx,
                      int64_t M, int64_t N, int64_t K, void *scratch, size_t scratch_bytes, float *screen,
                      int64_t *index, float *first, float *second, int64_t *candidates, int nthreads) {
    const size_t need = ck_packed_top2_q8_scratch_bytes(M, N, K);
    if (!ck_packed_top2_available() || need == 0 || scratch_bytes < need || ((uintptr_t)scratch & 63) || ldx < K) return -1;
    if (M == 0) return 0;
#if PK_X86
    const int64_t nb = K / QK, tiles = N / RT, cap = top2_tiles_cap(tiles);
    const size_t pbs = ck_packed_block_bytes(CK_WTYPE_Q8_0);
    const int64_t rb16 = (int64_t)ck_gemv_act_row_bytes(CK_ACT_Q16, K), rb8 = (int64_t)ck_gemv_act_row_bytes(CK_ACT_Q8, K);
    uint8_t *sp = (uint8_t *)scratch;
    uint8_t *xa16 = sp;
    uint8_t *xa8 = xa16 + M * rb16;
    float *himax = (float *)(xa8 + M * rb8);
    float *lanes = (float *)((uint8_t *)himax + pad64(M * tiles * 4));   // per row: lo1[16], lo2[16]
    top2_row *rp = (top2_row *)((uint8_t *)lanes + pad64(M * 32 * 4));
    float *full = (float *)((uint8_t *)rp + pad64(M * (int64_t)sizeof(top2_row)));
    uint8_t *groups = (uint8_t *)full + pad64(N * 4);
    const int64_t gbytes = pad64((int64_t)xgrp_bytes(nb));
    const uint8_t *wp = (const uint8_t *)w;
    int nt = nthreads > 0 ? nthreads : ck_get_threads();
    if (nt < 1) nt = 1;

    ck_packed_quantize(CK_ACT_Q16, x, ldx, xa16, M, K);
    ck_gemv_quantize(CK_ACT_Q8, x, ldx, xa8, M, K);
    for (int64_t m = 0; m < M; m++) top2_row_bound(xa16 + m * rb16, xa8 + m * rb8, x + m * ldx, K, norm_stats, &rp[m]);
    for (int64_t i = 0; i < M * 32; i++) lanes[i] = -INFINITY;
    for (int64_t m = 0; m < M; m += SMR) xgrp_fill(groups + m / SMR * gbytes, xa8 + m * rb8, rb8, M - m, nb);

    // Screen: the int8 product of every row, bounds and per-tile maxima in the epilogue.
    int sn = nt;
    if (tiles * RT * K * (M < 4 ? M : 4) < (int64_t)1 << 16) sn = 1;
#pragma omp parallel num_threads(sn) if (sn > 1)
    {
        __m512 l1[SMC], l2[SMC];
        for (int64_t m0 = 0; m0 < M; m0 += SMC) {
            const int64_t m1 = m0 + SMC < M ? m0 + SMC : M;
            lanes_init(l1, l2, m1 - m0);
#pragma omp for schedule(static) nowait
            for (int64_t t = 0; t < tiles; t++) {
                const uint8_t *wt = wp + (size_t)(t * nb) * pbs;
                for (int64_t m = m0; m < m1; m += SMR) {
                    const int mr = (int)(m1 - m < SMR ? m1 - m : SMR);
                    screen_run(wt, xgrp_at(groups + m / SMR * gbytes, nb), mr, nb, row_norms + t * RT, rp + m, himax + m * tiles, tiles, t, l1 + (m - m0),
                               l2 + (m - m0), screen ? screen + m * N : NULL, N, t * RT);
                }
            }
#pragma omp critical
            for (int64_t m = m0; m < m1; m++) {
                float b1[16], b2[16];
                lanes_store(&l1[m - m0], &l2[m - m0], b1, b2);
                float *a1 = lanes + m * 32, *a2 = a1 + 16;
                for (int l = 0; l < 16; l++) {  // top-2 of {a1, a2, b1, b2} (a1 >= a2, b1 >= b2)
                    const float n1 = fmaxf(a1[l], b1[l]), n2 = fmaxf(fminf(a1[l], b1[l]), fmaxf(a2[l], b2[l]));
                    a1[l] = n1; a2[l] = n2;
                }
            }
        }
    }

    // L2 per row, candidate tiles, and the decision.
    int64_t nwork = 0;
    for (int64_t m = 0; m < M; m++) {
        top2_row *p = &rp[m];
        p->fallback = 1;
        if (!p->ok) continue;
        const float *a1 = lanes + m * 32, *a2 = a1 + 16;
        int lane = 0;
        for (int l = 1; l < 16; l++)
            if (a1[l] > a1[lane]) lane = l;
        float l2 = -INFINITY;
        for (int l = 0; l < 16; l++) {
            if (l != lane && a1[l] > l2) l2 = a1[l];
            if (a2[l] > l2) l2 = a2[l];
        }
        if (!(l2 > -INFINITY)) continue;
        p->l2 = l2;
        int64_t n = 0;
        const float *hm = himax + m * tiles;
        for (int64_t t = 0; t < tiles; t++) n += hm[t] >= l2;
        p->ntiles = n;
        if (n > cap) continue;
        p->fallback = 0;
        nwork++;
    }

    // Rows that take the full exact path: all N int16 values (threaded), then ck_top2.
    for (int64_t m = 0; m < M; m++) {
        if (!rp[m].fallback) continue;
        const void *wv = w;
        float *yv = full;
        const int64_t ldy = N;
        ck_packed_matmul_multi(CK_WTYPE_Q8_0, CK_ACT_Q16, 1, &wv, &N, &yv, &ldy, xa16 + m * rb16, 1, K, nt);
        ck_top2(full, N, &index[m], &first[m], &second[m]);
        if (candidates) candidates[m] = N;
    }

    // The other rows: exact values of the candidate tiles only.
    const int en = nwork < 1 ? 1 : nt < nwork ? nt : (int)nwork;
#pragma omp parallel for schedule(static, 1) num_threads(en) if (en > 1)
    for (int64_t m = 0; m < M; m++) {
        if (rp[m].fallback) continue;
        const xrow xr = xrow_at(xa16 + m * rb16, nb);
        top2_exact_tiles(wp, pbs, nb, &xr, himax + m * tiles, tiles, rp[m].l2, &index[m], &first[m], &second[m]);
        if (candidates) candidates[m] = rp[m].ntiles * RT;
    }
    return 0;
#else
    (void)row_norms; (void)norm_stats; (void)x; (void)N; (void)screen; (void)index; (void)first; (void)second;
    (void)candidates; (void)nthreads; (void)w;
    return -1;
#endif
}
