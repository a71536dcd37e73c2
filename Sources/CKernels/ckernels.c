#include "ckernels.h"
#include <cblas.h>

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
