// Hot C kernels: the OpenBLAS bridge for the f32 path and OpenMP-threaded loops.
// Model knowledge never enters here; every function states its shapes and contract.
#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Threads used by OpenBLAS and by the OpenMP loops (n <= 0: all cores).
void ck_set_threads(int n);
int ck_get_threads(void);

/// Fix glibc's mmap threshold at `bytes` (which also stops its dynamic raising); returns 1 when set,
/// 0 where the C library has no such setting.
int ck_set_malloc_mmap_threshold(long bytes);

/// C[M,N] = A[M,K] · B[N,K]^T (+ beta·C), row-major, f32, via OpenBLAS cblas_sgemm.
/// B is the usual [out, in] weight layout, so this is y = x·Wᵀ for M rows of x.
void ck_sgemm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float *C, int ldc, float beta);

/// C[M,N] = A[M,K] · B[K,N] (+ beta·C), row-major, f32, via OpenBLAS.
void ck_sgemm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 float *C, int ldc, float beta);

/// Over x[0..<n] (n < 2^31): *index = the first position of the largest value, *first = that value,
/// *second = the largest value among the other positions (equal to *first when the maximum repeats).
/// NaNs never win; with no value above -inf: index 0, both -inf. Same result as the scalar loop
/// `if v > a { b = a; a = v; i = j } else if v > b { b = v }`, on every instruction-set path.
void ck_top2(const float *x, int64_t n, int64_t *index, float *first, float *second);

/// dst[i] = f32(src[i]) for bf16 bits, threaded with OpenMP (exact: bf16 is the top half of f32).
void ck_bf16_to_f32(const uint16_t *src, float *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif
