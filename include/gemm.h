// gemm.h: single-threaded packed SGEMM (callers parallelise over images).
#ifndef DDPM_GEMM_H
#define DDPM_GEMM_H

// C[M,N] = (accumulate ? C : 0) + op(A)[M,K] op(B)[K,N], row-major.
// op(A) = A[M,K] (lda >= K) if !transA, else A^T with A stored [K,M] (lda >= M); same for B.
void gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, float *C, int ldc, int accumulate);

#endif
