#include "ckernels.h"
#include <cblas.h>
#include <math.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define CK_X86_TOP2 1
#endif

// Declared here rather than through <omp.h>, whose location depends on the compiler install.
int omp_get_num_procs(void);
void omp_set_num_threads(int);
int omp_get_max_threads(void);
void openblas_set_num_threads(int);

static int g_threads = 0;

void ck_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int ck_get_threads(void) { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

int ck_set_malloc_mmap_threshold(long bytes) {
#if defined(__GLIBC__)
    return mallopt(M_MMAP_THRESHOLD, (int)bytes);
#else
    (void)bytes;
    return 0;
#endif
}

void ck_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float *C, int ldc, float beta) {
    if (M == 1) {  // one row (decode): gemv streams B once; OpenBLAS's gemm does not special-case it
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, B, ldb, A, 1, beta, C, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void ck_sgemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float *C, int ldc, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

void ck_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    uint32_t *d = (uint32_t *)dst;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) d[i] = ((uint32_t)src[i]) << 16;
}

static void top2_scalar(const float *x, int64_t n, int64_t *index, float *first, float *second) {
    float a = -INFINITY, b = -INFINITY;
    int64_t best = 0;
    for (int64_t j = 0; j < n; j++) {
        const float v = x[j];
        if (v > a) { b = a; a = v; best = j; }
        else if (v > b) b = v;
    }
    *index = best; *first = a; *second = b;
}

#ifdef CK_X86_TOP2
// The vector paths' last step: per lane l the scalar loop's a[l] >= b[l] and the index ia[l] of a[l] over
// the positions of that lane; the row's result is the largest a with the smallest index among the lanes
// holding it, and the largest other value.
static void top2_merge_lanes(const float *a, const float *b, const int32_t *ia, int lanes, int64_t *index, float *first,
                             float *second) {
    float m = -INFINITY;
    for (int l = 0; l < lanes; l++) m = a[l] > m ? a[l] : m;
    int64_t best = 0;
    int lane = -1;
    if (m > -INFINITY) {
        for (int l = 0; l < lanes; l++)
            if (a[l] == m && (lane < 0 || ia[l] < best)) { best = ia[l]; lane = l; }
    }
    float sec = -INFINITY;
    for (int l = 0; l < lanes; l++) {
        if (l != lane && a[l] > sec) sec = a[l];
        if (b[l] > sec) sec = b[l];
    }
    *index = best; *first = m; *second = sec;
}

// Per lane (position j in lane j % 16): the scalar loop's a, b and index; then merged. The first global
// position of the maximum is the smallest lane index among the lanes holding it.
__attribute__((target("avx512f"))) static void top2_512(const float *x, int64_t n, int64_t *index, float *first,
                                                        float *second) {
    __m512 t1 = _mm512_set1_ps(-INFINITY), t2 = t1;
    __m512i i1 = _mm512_setzero_si512(), idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 live = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
        const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), live, x + j);
        const __mmask16 gt1 = _mm512_cmp_ps_mask(v, t1, _CMP_GT_OQ);
        const __mmask16 gt2 = (__mmask16)(~gt1 & _mm512_cmp_ps_mask(v, t2, _CMP_GT_OQ));
        t2 = _mm512_mask_mov_ps(t2, gt1, t1);
        t2 = _mm512_mask_mov_ps(t2, gt2, v);
        t1 = _mm512_mask_mov_ps(t1, gt1, v);
        i1 = _mm512_mask_mov_epi32(i1, gt1, idx);
        idx = _mm512_add_epi32(idx, step);
    }
    float a[16], b[16];
    int32_t ia[16];
    _mm512_storeu_ps(a, t1);
    _mm512_storeu_ps(b, t2);
    _mm512_storeu_si512(ia, i1);
    top2_merge_lanes(a, b, ia, 16, index, first, second);
}
#endif

#ifdef CK_X86_TOP2
// top2_512 in 8 lanes (position j in lane j % 8); the tail through a copy padded with -inf.
__attribute__((target("avx2"))) static void top2_256(const float *x, int64_t n, int64_t *index, float *first,
                                                     float *second) {
    __m256 t1 = _mm256_set1_ps(-INFINITY), t2 = t1;
    __m256i i1 = _mm256_setzero_si256(), idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step = _mm256_set1_epi32(8);
    float pad[8];
    for (int64_t j = 0; j < n; j += 8) {
        const float *src = x + j;
        if (n - j < 8) {
            for (int l = 0; l < 8; l++) pad[l] = l < n - j ? x[j + l] : -INFINITY;
            src = pad;
        }
        const __m256 v = _mm256_loadu_ps(src);
        const __m256 gt1 = _mm256_cmp_ps(v, t1, _CMP_GT_OQ);
        const __m256 gt2 = _mm256_andnot_ps(gt1, _mm256_cmp_ps(v, t2, _CMP_GT_OQ));
        t2 = _mm256_blendv_ps(t2, t1, gt1);
        t2 = _mm256_blendv_ps(t2, v, gt2);
        t1 = _mm256_blendv_ps(t1, v, gt1);
        i1 = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(i1), _mm256_castsi256_ps(idx), gt1));
        idx = _mm256_add_epi32(idx, step);
    }
    float a[8], b[8];
    int32_t ia[8];
    _mm256_storeu_ps(a, t1);
    _mm256_storeu_ps(b, t2);
    _mm256_storeu_si256((__m256i *)ia, i1);
    top2_merge_lanes(a, b, ia, 8, index, first, second);
}
#endif

void ck_top2(const float *x, int64_t n, int64_t *index, float *first, float *second) {
#ifdef CK_X86_TOP2
    if (n >= 64 && __builtin_cpu_supports("avx512f")) { top2_512(x, n, index, first, second); return; }
    if (n >= 64 && n < ((int64_t)1 << 31) && __builtin_cpu_supports("avx2")) { top2_256(x, n, index, first, second); return; }
#endif
    top2_scalar(x, n, index, first, second);
}
