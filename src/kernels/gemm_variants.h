// gemm_variants.h: the per-instruction-set GEMMs behind gemm.h (gemm_<isa>.c), chosen at run time
// by gemm.c. Each variant has its own micro-kernel tile (MR x NR) and so its own packed-A layout.
// gemm.c handles empty products: the cores see M, N, K >= 1.
#ifndef DDPM_GEMM_VARIANTS_H
#define DDPM_GEMM_VARIANTS_H

#include <stddef.h>

#define GEMM_VARIANT_DECL(isa)                                                                                   \
    size_t gemm_packed_a_floats_##isa(int M, int K);                                                             \
    void gemm_pack_a_##isa(int transA, int M, int K, const float *A, int lda, float *Ap);                        \
    void gemm_core_##isa(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff, \
                         const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate);
GEMM_VARIANT_DECL(avx512)
GEMM_VARIANT_DECL(avx2)
GEMM_VARIANT_DECL(generic)
GEMM_VARIANT_DECL(avx512bf16) // bf16 inputs, fp32 accumulation (gemm_set_precision)

#endif
