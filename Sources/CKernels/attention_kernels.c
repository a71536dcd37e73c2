// Causal multi-head attention over a KV cache: contract in include/attention_kernels.h.
// One work item = one (query row, head): scores over exactly its visible keys, softmax, weighted sum
// of values. The items never share partial sums, so the result of a row does not depend on the rows
// computed with it (batch invariance) nor on the thread count.

#include "attention_kernels.h"
#include "quant_kernels.h"
#include "ckernels.h"
#include <math.h>
#include <stdlib.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define AT_X86 1
#include <immintrin.h>
#else
#define AT_X86 0
#endif

int omp_get_thread_num(void);

typedef struct {
    int64_t lo, n;  // first visible key, number of visible keys
} span;

static inline span visible(const ck_attn_params *p, int64_t r) {
    const int64_t i = p->pos0 + r;
    const int64_t lo = p->window > 0 && i - p->window + 1 > 0 ? i - p->window + 1 : 0;
    return (span){lo, i - lo + 1};
}

// The visible keys of one row as at most two runs of consecutive positions: the shared prefix's (rows
// j % sring of sk / sv) and then the sequence's own (rows (j − shared) % ring of kc / vc).
typedef struct {
    const float *k, *v;  // buffers of the run (head offset not applied)
    int64_t idx, n;      // ring row of its first key, number of keys
    int64_t ring;        // rows of its buffers
} run;

static inline int key_runs(const ck_attn_params *p, const float *kc, const float *vc, span sp, run out[2]) {
    int c = 0;
    const int64_t end = sp.lo + sp.n;  // one past the last visible key
    if (p->shared > 0 && sp.lo < p->shared) {
        const int64_t e = end < p->shared ? end : p->shared;
        out[c++] = (run){p->sk, p->sv, sp.lo % p->sring, e - sp.lo, p->sring};
    }
    const int64_t b = sp.lo > p->shared ? sp.lo : p->shared;
    if (end > b) out[c++] = (run){kc, vc, (b - p->shared) % p->ring, end - b, p->ring};
    return c;
}

static int64_t max_span(const ck_attn_params *p) {
    const int64_t last = p->pos0 + p->rows;  // keys 0..<last exist
    return p->window > 0 && p->window < last ? p->window : last;
}

// Score rows an item needs: the query heads of one KV head (the grouped AVX-512 item scores them all
// before its softmaxes), capped at CK_ATTN_GROUP_MAX (larger groups run head by head).
static inline int64_t group_rows(const ck_attn_params *p) {
    const int64_t per = p->kv_heads > 0 ? p->heads / p->kv_heads : 1;
    return per >= 1 && per <= CK_ATTN_GROUP_MAX ? per : 1;
}

int64_t ck_attention_scratch_floats(const ck_attn_params *p, int nthreads) {
    const int nt = nthreads > 0 ? nthreads : ck_get_threads();
    // one score row per query head of a KV group per thread, rounded to 16 floats so rows never share a
    // cache line
    return (int64_t)nt * group_rows(p) * ((max_span(p) + 15) & ~(int64_t)15);
}

static inline float capped(float v, float softcap) { return softcap > 0 ? tanhf(v / softcap) * softcap : v; }

// MARK: - portable C

static void item_generic(const ck_attn_params *p, const float *q, const float *kc, const float *vc, float *out,
                         float *s, int64_t r, int64_t h) {
    const int64_t hd = p->head_dim, g = h / (p->heads / p->kv_heads);
    const span sp = visible(p, r);
    run runs[2];
    const int nr = key_runs(p, kc, vc, sp, runs);
    const float *qv = q + r * p->ldq + h * hd;
    float mx = -INFINITY;
    int64_t j = 0;
    for (int u = 0; u < nr; u++) {
        int64_t idx = runs[u].idx;
        for (int64_t t = 0; t < runs[u].n; t++, j++) {
            const float *kj = runs[u].k + idx * p->ldkv + g * hd;
            float acc = 0;
            for (int64_t d = 0; d < hd; d++) acc += qv[d] * kj[d];
            const float v = capped(acc * p->scale, p->softcap);
            s[j] = v;
            if (v > mx) mx = v;
            if (++idx == runs[u].ring) idx = 0;
        }
    }
    float sum = 0;
    for (j = 0; j < sp.n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    const float inv = 1 / sum;
    float *o = out + r * p->ldo + h * hd;
    for (int64_t d = 0; d < hd; d++) o[d] = 0;
    j = 0;
    for (int u = 0; u < nr; u++) {
        int64_t idx = runs[u].idx;
        for (int64_t t = 0; t < runs[u].n; t++, j++) {
            const float w = s[j] * inv;
            const float *vj = runs[u].v + idx * p->ldkv + g * hd;
            for (int64_t d = 0; d < hd; d++) o[d] += w * vj[d];
            if (++idx == runs[u].ring) idx = 0;
        }
    }
}

// MARK: - AVX-512F

#if AT_X86
// The exp reduction and polynomial both vector paths use: ln 2 split in two, then degree 6 around 0.
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

#define T512 __attribute__((target("avx512f,avx512dq,fma")))

// e^x for x ≤ 0 (softmax arguments), Cephes-style: x = n·ln2 + f, |f| ≤ ln2/2, degree-6 polynomial,
// scaled by 2^n. ≤ 2 ulp on [-87, 0]; x < -87.3 (results below 2^-126) and -inf give 0; NaN stays NaN.
T512 static inline __m512 exp_neg512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f);
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    const __m512 xc = _mm512_max_ps(x, lo);  // NaN in x: max returns the second operand; fixed below
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), xc);
    f = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), f);
    __m512 y = _mm512_set1_ps(exp_poly[0]);
    for (int c = 1; c < 6; c++) y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(exp_poly[c]));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(f, f), _mm512_add_ps(f, _mm512_set1_ps(1.0f)));
    y = _mm512_scalef_ps(y, n);
    y = _mm512_maskz_mov_ps((__mmask16)~tiny, y);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(y, nan, x);
}

T512 static inline float dot512(const float *a, const float *b, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 64 <= n; d += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 16), _mm512_loadu_ps(b + d + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 32), _mm512_loadu_ps(b + d + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 48), _mm512_loadu_ps(b + d + 48), a3);
    }
    for (; d < n; d += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), a0);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// Sum of each of 8 vectors, as the 8 lanes of one 256-bit vector (lane k = Σ lanes of a[k]).
T512 static inline __m256 sum8(const __m512 a[8]) {
    __m256 h[8];
    for (int k = 0; k < 8; k++) h[k] = _mm256_add_ps(_mm512_castps512_ps256(a[k]), _mm512_extractf32x8_ps(a[k], 1));
    const __m256 t0 = _mm256_hadd_ps(h[0], h[1]), t1 = _mm256_hadd_ps(h[2], h[3]);
    const __m256 t2 = _mm256_hadd_ps(h[4], h[5]), t3 = _mm256_hadd_ps(h[6], h[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    // u0 = [k0 k1 k2 k3 | k0 k1 k2 k3] partial sums of the low / high 128-bit halves; u1 the same for k4…k7.
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Scores of n keys (ring row idx on, in a ring of `ring` rows of stride ldkv from k0) against q,
// hd ≤ 256 (hd % 16 == 0):
// q stays in registers, 8 keys at a time with one accumulator each, reduced together (sum8). Every
// score is computed the same way whatever n is (tail keys: one at a time with the same per-key order
// of products, then a full reduction), so a row's result does not depend on the rows around it.
T512 static void scores_q_in_registers(const ck_attn_params *p, const float *qv, const float *k0, float *s, int64_t n,
                                       int64_t idx, int64_t ring) {
    const int64_t hd = p->head_dim;
    const int c = (int)(hd / 16);
    __m512 qr[16];
    for (int i = 0; i < c; i++) qr[i] = _mm512_loadu_ps(qv + 16 * i);
    const __m256 scale = _mm256_set1_ps(p->scale);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float *kr[8];
        for (int k = 0; k < 8; k++) {
            kr[k] = k0 + idx * p->ldkv;
            if (++idx == ring) idx = 0;
        }
        __m512 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm512_mul_ps(qr[0], _mm512_loadu_ps(kr[k]));
        for (int i = 1; i < c; i++)
            for (int k = 0; k < 8; k++) acc[k] = _mm512_fmadd_ps(qr[i], _mm512_loadu_ps(kr[k] + 16 * i), acc[k]);
        _mm256_storeu_ps(s + j, _mm256_mul_ps(sum8(acc), scale));
    }
    for (; j < n; j++) {
        const float *kr = k0 + idx * p->ldkv;
        if (++idx == ring) idx = 0;
        __m512 acc[8];
        acc[0] = _mm512_mul_ps(qr[0], _mm512_loadu_ps(kr));
        for (int i = 1; i < c; i++) acc[0] = _mm512_fmadd_ps(qr[i], _mm512_loadu_ps(kr + 16 * i), acc[0]);
        for (int k = 1; k < 8; k++) acc[k] = _mm512_setzero_ps();
        s[j] = _mm256_cvtss_f32(_mm256_mul_ps(sum8(acc), scale));
    }
    if (p->softcap > 0)
        for (int64_t i = 0; i < n; i++) s[i] = capped(s[i], p->softcap);
}

// s[0..<n] ← e^(s_j − max s) in place; returns 1 / Σ e.
T512 static inline float softmax512(float *s, int64_t n) {
    // max, then exp and sum in 16 lanes (lane = j % 16), padding lanes -inf → 0
    __m512 mv = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(s + j));
    __mmask16 tail = (__mmask16)((1u << (n - j)) - 1);
    if (j < n) mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, s + j));
    const float mx = _mm512_reduce_max_ps(mv);
    const __m512 m = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 e = exp_neg512(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
        _mm512_storeu_ps(s + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (j < n) {
        const __m512 e = exp_neg512(_mm512_sub_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, s + j), m));
        _mm512_mask_storeu_ps(s + j, tail, e);
        acc = _mm512_add_ps(acc, e);
    }
    return 1 / _mm512_reduce_add_ps(acc);
}

// o[0 ..< 16·nr] += Σ_t (s[t]·inv) · v_t[d0 ..< d0 + 16·nr] for the n keys of a run from ring row idx, in
// position order, nr ≤ 8. The accumulators stay in registers: with a constant register count (8, the
// common 128-value slice; any other count through a masked copy of the same code) — a loop bound the
// compiler cannot see kept them on the stack, a store and a reload on every product's dependency chain.
T512 static inline void values_acc512(__m512 o8[8], int nr, const float *s, float inv, const run *ru, int64_t idx,
                                      int64_t n, int64_t ldkv, int64_t off) {
    if (nr == 8) {
        __m512 a0 = o8[0], a1 = o8[1], a2 = o8[2], a3 = o8[3], a4 = o8[4], a5 = o8[5], a6 = o8[6], a7 = o8[7];
        for (int64_t t = 0; t < n; t++) {
            const __m512 pj = _mm512_set1_ps(s[t] * inv);
            const float *vj = ru->v + idx * ldkv + off;
            a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj), a0);
            a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16), a1);
            a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 32), a2);
            a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 48), a3);
            a4 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 64), a4);
            a5 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 80), a5);
            a6 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 96), a6);
            a7 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 112), a7);
            if (++idx == ru->ring) idx = 0;
        }
        o8[0] = a0; o8[1] = a1; o8[2] = a2; o8[3] = a3; o8[4] = a4; o8[5] = a5; o8[6] = a6; o8[7] = a7;
        return;
    }
    for (int64_t t = 0; t < n; t++) {
        const __m512 pj = _mm512_set1_ps(s[t] * inv);
        const float *vj = ru->v + idx * ldkv + off;
        for (int k = 0; k < nr; k++) o8[k] = _mm512_fmadd_ps(pj, _mm512_loadu_ps(vj + 16 * k), o8[k]);
        if (++idx == ru->ring) idx = 0;
    }
}

T512 static void item_512(const ck_attn_params *p, const float *q, const float *kc, const float *vc, float *out,
                          float *s, int64_t r, int64_t h) {
    const int64_t hd = p->head_dim, g = h / (p->heads / p->kv_heads);
    const span sp = visible(p, r);
    run runs[2];
    const int nruns = key_runs(p, kc, vc, sp, runs);
    const float *qv = q + r * p->ldq + h * hd;
    int64_t j0 = 0;
    for (int u = 0; u < nruns; j0 += runs[u].n, u++) {
        int64_t idx = runs[u].idx;
        if (hd <= 256) {
            scores_q_in_registers(p, qv, runs[u].k + g * hd, s + j0, runs[u].n, idx, runs[u].ring);
        } else {
            for (int64_t t = 0; t < runs[u].n; t++) {
                s[j0 + t] = capped(dot512(qv, runs[u].k + idx * p->ldkv + g * hd, hd) * p->scale, p->softcap);
                if (++idx == runs[u].ring) idx = 0;
            }
        }
    }
    const float inv = softmax512(s, sp.n);
    float *o = out + r * p->ldo + h * hd;
    // out = Σ_j (e_j · inv) · v_j in position order (the shared run, then the own run), 128 values
    // (8 registers) at a time
    for (int64_t d0 = 0; d0 < hd; d0 += 128) {
        const int64_t w = hd - d0 < 128 ? hd - d0 : 128;
        const int nr = (int)(w / 16);
        __m512 o8[8];
        for (int k = 0; k < 8; k++) o8[k] = _mm512_setzero_ps();
        int64_t j = 0;
        for (int u = 0; u < nruns; j += runs[u].n, u++)
            values_acc512(o8, nr, s + j, inv, &runs[u], runs[u].idx, runs[u].n, p->ldkv, g * hd + d0);
        for (int k = 0; k < nr; k++) _mm512_storeu_ps(o + d0 + 16 * k, o8[k]);
    }
}

// All `per` query heads of one (row, KV head) item, as item_512 computes each of them, with the keys and
// values visited in chunks of CH positions shared by the heads: a chunk's keys (CH·hd floats) are read
// from L2 once and from L1 for the other heads, where item_512 per head streamed the whole span from L2
// `per` times. Chunks start at multiples of 8 within a run, so scores_q_in_registers groups the keys 8 by
// 8 exactly as one call over the run; every head's values are still accumulated in position order (the
// partial sums wait in `out` between chunks). Bit-identical to item_512 per head. hd ≤ 256; `s` holds
// per score rows of `stride` floats.
#define CH 32
// The chunk of run `ru` starting c positions in: its length and the ring row of its first key.
static inline int64_t chunk_keys(const run *ru, int64_t c, int64_t *idx) {
    const int64_t i = ru->idx + c;
    *idx = i >= ru->ring ? i - ru->ring : i;
    return ru->n - c < CH ? ru->n - c : CH;
}

T512 static void item_group_512(const ck_attn_params *p, const float *q, const float *kc, const float *vc, float *out,
                                float *s, int64_t stride, int64_t r, int64_t h0, int64_t per) {
    const int64_t hd = p->head_dim, g = h0 / (p->heads / p->kv_heads);
    const span sp = visible(p, r);
    run runs[2];
    const int nruns = key_runs(p, kc, vc, sp, runs);
    int64_t j0 = 0;
    for (int u = 0; u < nruns; j0 += runs[u].n, u++) {
        for (int64_t c = 0; c < runs[u].n; c += CH) {
            int64_t idx;
            const int64_t n = chunk_keys(&runs[u], c, &idx);
            for (int64_t h = 0; h < per; h++)
                scores_q_in_registers(p, q + r * p->ldq + (h0 + h) * hd, runs[u].k + g * hd, s + h * stride + j0 + c, n, idx,
                                      runs[u].ring);
        }
    }
    float inv[CK_ATTN_GROUP_MAX];
    for (int64_t h = 0; h < per; h++) inv[h] = softmax512(s + h * stride, sp.n);
    for (int64_t d0 = 0; d0 < hd; d0 += 128) {
        const int64_t w = hd - d0 < 128 ? hd - d0 : 128;
        const int nr = (int)(w / 16);
        for (int64_t h = 0; h < per; h++) {
            float *o = out + r * p->ldo + (h0 + h) * hd + d0;
            for (int k = 0; k < nr; k++) _mm512_storeu_ps(o + 16 * k, _mm512_setzero_ps());
        }
        int64_t j = 0;
        for (int u = 0; u < nruns; u++) {
            for (int64_t c = 0; c < runs[u].n; c += CH) {
                int64_t idx0;
                const int64_t n = chunk_keys(&runs[u], c, &idx0);
                for (int64_t h = 0; h < per; h++) {
                    float *o = out + r * p->ldo + (h0 + h) * hd + d0;
                    const float *sh = s + h * stride + j;
                    __m512 o8[8];
                    for (int k = 0; k < nr; k++) o8[k] = _mm512_loadu_ps(o + 16 * k);
                    values_acc512(o8, nr, sh, inv[h], &runs[u], idx0, n, p->ldkv, g * hd + d0);
                    for (int k = 0; k < nr; k++) _mm512_storeu_ps(o + 16 * k, o8[k]);
                }
                j += n;
            }
        }
    }
}
#undef CH
#endif

// MARK: - AVX2 + FMA

#if AT_X86
#define T256 __attribute__((target("avx2,fma")))

// exp_neg512 on 8 lanes: the same reduction and polynomial; 2^n built in the exponent bits (n in
// [-126, 0] after the clamp, so 2^n is a normal number) instead of vscalefps.
T256 static inline __m256 exp_neg256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    const __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    const __m256 xc = _mm256_max_ps(x, lo);  // NaN in x: max returns the second operand; fixed below
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), xc);
    f = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), f);
    __m256 y = _mm256_set1_ps(exp_poly[0]);
    for (int c = 1; c < 6; c++) y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(exp_poly[c]));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(f, f), _mm256_add_ps(f, _mm256_set1_ps(1.0f)));
    const __m256 two_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    y = _mm256_andnot_ps(tiny, _mm256_mul_ps(y, two_n));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// Lane k = the sum of the 8 lanes of a[k] (a fixed tree per lane: lane k depends on a[k] only).
T256 static inline __m256 sum8_256(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Scores of n keys (as scores_q_in_registers; hd % 8 == 0): 8 keys at a time with one accumulator each,
// q read from L1; a tail key takes the same per-key product order and the same reduction tree.
T256 static void scores_256(const ck_attn_params *p, const float *qv, const float *k0, float *s, int64_t n, int64_t idx,
                            int64_t ring) {
    const int64_t hd = p->head_dim;
    const __m256 scale = _mm256_set1_ps(p->scale);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float *kr[8];
        for (int k = 0; k < 8; k++) {
            kr[k] = k0 + idx * p->ldkv;
            if (++idx == ring) idx = 0;
        }
        __m256 acc[8];
        const __m256 q0 = _mm256_loadu_ps(qv);
        for (int k = 0; k < 8; k++) acc[k] = _mm256_mul_ps(q0, _mm256_loadu_ps(kr[k]));
        for (int64_t d = 8; d < hd; d += 8) {
            const __m256 qd = _mm256_loadu_ps(qv + d);
            for (int k = 0; k < 8; k++) acc[k] = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr[k] + d), acc[k]);
        }
        _mm256_storeu_ps(s + j, _mm256_mul_ps(sum8_256(acc), scale));
    }
    for (; j < n; j++) {
        const float *kr = k0 + idx * p->ldkv;
        if (++idx == ring) idx = 0;
        __m256 acc[8];
        acc[0] = _mm256_mul_ps(_mm256_loadu_ps(qv), _mm256_loadu_ps(kr));
        for (int64_t d = 8; d < hd; d += 8) acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(qv + d), _mm256_loadu_ps(kr + d), acc[0]);
        for (int k = 1; k < 8; k++) acc[k] = _mm256_setzero_ps();
        s[j] = _mm256_cvtss_f32(_mm256_mul_ps(sum8_256(acc), scale));
    }
    if (p->softcap > 0)
        for (int64_t i = 0; i < n; i++) s[i] = capped(s[i], p->softcap);
}

T256 static void item_avx2(const ck_attn_params *p, const float *q, const float *kc, const float *vc, float *out,
                           float *s, int64_t r, int64_t h) {
    const int64_t hd = p->head_dim, g = h / (p->heads / p->kv_heads);
    const span sp = visible(p, r);
    run runs[2];
    const int nruns = key_runs(p, kc, vc, sp, runs);
    const float *qv = q + r * p->ldq + h * hd;
    int64_t j0 = 0;
    for (int u = 0; u < nruns; j0 += runs[u].n, u++) scores_256(p, qv, runs[u].k + g * hd, s + j0, runs[u].n, runs[u].idx, runs[u].ring);
    // max, then exp and sum in 8 lanes (lane = j % 8); the tail goes through a copy padded with -inf (→ 0)
    const int64_t full = sp.n & ~(int64_t)7, rest = sp.n - full;
    float tail[8];
    for (int k = 0; k < 8; k++) tail[k] = k < rest ? s[full + k] : -INFINITY;
    __m256 mv = _mm256_loadu_ps(tail);
    for (int64_t j = 0; j < full; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    float m8[8];
    _mm256_storeu_ps(m8, mv);
    float mx = m8[0];
    for (int k = 1; k < 8; k++) mx = m8[k] > mx ? m8[k] : mx;
    const __m256 m = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < full; j += 8) {
        const __m256 e = exp_neg256(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (rest) {
        const __m256 e = exp_neg256(_mm256_sub_ps(_mm256_loadu_ps(tail), m));
        _mm256_storeu_ps(tail, e);
        for (int k = 0; k < rest; k++) s[full + k] = tail[k];
        acc = _mm256_add_ps(acc, e);
    }
    float a8[8];
    _mm256_storeu_ps(a8, acc);
    const float inv = 1 / (((a8[0] + a8[1]) + (a8[2] + a8[3])) + ((a8[4] + a8[5]) + (a8[6] + a8[7])));
    float *o = out + r * p->ldo + h * hd;
    // out = Σ_j (e_j · inv) · v_j in position order, 64 values (8 registers) at a time
    for (int64_t d0 = 0; d0 < hd; d0 += 64) {
        const int64_t w = hd - d0 < 64 ? hd - d0 : 64;
        const int nr = (int)(w / 8);
        __m256 o8[8];
        for (int k = 0; k < 8; k++) o8[k] = _mm256_setzero_ps();
        int64_t j = 0;
        for (int u = 0; u < nruns; u++) {
            int64_t idx = runs[u].idx;
            for (int64_t t = 0; t < runs[u].n; t++, j++) {
                const __m256 pj = _mm256_set1_ps(s[j] * inv);
                const float *vj = runs[u].v + idx * p->ldkv + g * hd + d0;
                if (nr == 8) {
                    for (int k = 0; k < 8; k++) o8[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * k), o8[k]);
                } else {
                    for (int k = 0; k < nr; k++) o8[k] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * k), o8[k]);
                }
                if (++idx == runs[u].ring) idx = 0;
            }
        }
        for (int k = 0; k < nr; k++) _mm256_storeu_ps(o + d0 + 8 * k, o8[k]);
    }
}
#endif

// MARK: - entry points

static int valid_params(const ck_attn_params *p) {
    if (!(p && p->rows >= 0 && p->pos0 >= 0 && p->heads > 0 && p->kv_heads > 0 && p->heads % p->kv_heads == 0 &&
          p->head_dim > 0 && p->window >= 0 && p->ring > 0 && p->shared >= 0 && p->ldq >= p->heads * p->head_dim &&
          p->ldo >= p->heads * p->head_dim && p->ldkv >= p->kv_heads * p->head_dim))
        return 0;
    if (p->shared == 0) return p->ring >= max_span(p);
    // Rows start after the shared prefix; the own ring holds a row's own visible keys (at most
    // min(span, last − shared)), the shared ring the prefix keys any row still sees (at most
    // min(shared, window − 1) on a sliding layer).
    const int64_t last = p->pos0 + p->rows, span = max_span(p);
    const int64_t own = last - p->shared < span ? last - p->shared : span;
    const int64_t pre = p->window > 0 && p->window - 1 < p->shared ? p->window - 1 : p->shared;
    return p->pos0 >= p->shared && p->sk && p->sv && p->sring > 0 && p->sring >= pre && p->ring >= own;
}

int64_t ck_attention_multi_scratch_floats(int64_t n, const ck_attn_params *const *p, int nthreads) {
    int64_t most = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t f = ck_attention_scratch_floats(p[i], nthreads);
        if (f > most) most = f;
    }
    return most;
}

int ck_attention(const ck_attn_params *p, const float *q, const float *kc, const float *vc, float *out,
                 float *scratch, int64_t scratch_floats, int isa, int nthreads) {
    return ck_attention_multi(1, &p, &q, &kc, &vc, &out, scratch, scratch_floats, isa, nthreads);
}

int ck_attention_multi(int64_t n, const ck_attn_params *const *ps, const float *const *qs, const float *const *kcs,
                       const float *const *vcs, float *const *outs, float *scratch, int64_t scratch_floats, int isa,
                       int nthreads) {
    if (n < 1 || n > CK_ATTN_MAX_PIECES || !ps) return -1;
    const int nt = nthreads > 0 ? nthreads : ck_get_threads();
    int64_t stride = 0, work = 0, groupItems = 0, rowsPerThread = 1;
    for (int64_t i = 0; i < n; i++) {
        const ck_attn_params *p = ps[i];
        if (!valid_params(p)) return -1;
        const int64_t st = (max_span(p) + 15) & ~(int64_t)15;
        if (st > stride) stride = st;
        if (group_rows(p) > rowsPerThread) rowsPerThread = group_rows(p);
        work += p->rows * p->heads * max_span(p) * p->head_dim;
        groupItems += p->rows * p->kv_heads;
    }
    if (scratch_floats < (int64_t)nt * rowsPerThread * stride) return -1;
    if (isa == CK_ISA_AUTO) isa = ck_quant_isa_selected();
#if AT_X86
    int use512 = 1;
    for (int64_t i = 0; i < n; i++) use512 &= ps[i]->head_dim % 16 == 0;
    use512 = use512 && isa >= CK_ISA_AVX512VNNI && ck_quant_isa_available(CK_ISA_AVX512VNNI);
    int use256 = !use512;
    for (int64_t i = 0; i < n; i++) use256 &= ps[i]->head_dim % 8 == 0;
    use256 = use256 && isa >= CK_ISA_AVX2 && ck_quant_isa_available(CK_ISA_AVX2);
#else
    const int use512 = 0, use256 = 0;
#endif
    // An item is one (piece, row, KV head) with all the query heads that share it, run one after the
    // other on one thread, so the group's keys and values come from memory once and from L2 for the
    // other heads — when there are enough such items to keep every thread busy; otherwise (a single
    // decode row) one item per (row, query head). Either way each (row, head) is computed by the same
    // code from the same inputs: the grouping changes which thread runs it, never its result.
    const int grouped = groupItems >= 2 * (int64_t)nt;
    int64_t first[CK_ATTN_MAX_PIECES + 1];  // first item of each piece
    first[0] = 0;
    for (int64_t i = 0; i < n; i++) first[i + 1] = first[i] + ps[i]->rows * (grouped ? ps[i]->kv_heads : ps[i]->heads);
    const int64_t items = first[n];
    if (items == 0) return 0;
    // Threads only when there is enough work to pay for waking them (visible keys × head_dim × items).
    const int par = nt > 1 && work >= 65536;
    // Items are taken one at a time from a shared counter: that balances the causal triangle and cores
    // that do not run alike (OpenMP's dynamic schedule would need a newer libomp than Debian ships).
    int64_t next = 0;
#pragma omp parallel num_threads(nt) if (par)
    for (;;) {
        const int64_t it = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
        if (it >= items) break;
        int64_t lo = 0, hi = n - 1;  // the piece holding item it: first[lo] <= it < first[lo + 1]
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (first[mid] <= it) lo = mid; else hi = mid - 1;
        }
        const ck_attn_params *p = ps[lo];
        const int64_t local = it - first[lo];
        const int64_t per = grouped ? p->heads / p->kv_heads : 1;  // query heads per item
        const int64_t units = p->heads / per;                      // items per row
        const int64_t r = local / units, h0 = (local % units) * per;
        float *s = scratch + (par ? omp_get_thread_num() : 0) * rowsPerThread * stride;
#if AT_X86
        if (use512 && per > 1 && per == group_rows(p) && p->head_dim <= 256) {
            item_group_512(p, qs[lo], kcs[lo], vcs[lo], outs[lo], s, stride, r, h0, per);
            continue;
        }
#endif
        for (int64_t h = h0; h < h0 + per; h++) {
#if AT_X86
            if (use512) { item_512(p, qs[lo], kcs[lo], vcs[lo], outs[lo], s, r, h); continue; }
            if (use256) { item_avx2(p, qs[lo], kcs[lo], vcs[lo], outs[lo], s, r, h); continue; }
#endif
            item_generic(p, qs[lo], kcs[lo], vcs[lo], outs[lo], s, r, h);
        }
    }
    return 0;
}
