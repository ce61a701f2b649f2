// gemm_variants.h: the per-instruction-set GEMMs behind gemm.h (gemm_<isa>.c), chosen at run time
// by gemm.c. Each variant has its own micro-kernel tile (MR x NR) and so its own packed-A layout.
// gemm.c handles empty products: the cores see M, N, K >= 1.
#ifndef DDPM_GEMM_VARIANTS_H
#define DDPM_GEMM_VARIANTS_H

#include <stddef.h>
#include <stdint.h>

#define GEMM_VARIANT_DECL(isa)                                                                                   \
    size_t gemm_packed_a_floats_##isa(int M, int K);                                                             \
    void gemm_pack_a_##isa(int transA, int M, int K, const float *A, int lda, float *Ap);                        \
    void gemm_core_##isa(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff, \
                         const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate);
GEMM_VARIANT_DECL(avx512)
GEMM_VARIANT_DECL(avx2)
GEMM_VARIANT_DECL(generic)
GEMM_VARIANT_DECL(avx512bf16) // bf16 inputs, fp32 accumulation (gemm_set_precision)
// bf16 only: B as bf16 pair rows (gemm_packed_pairs) and the pairs themselves (gemm_bf16_pairs); A
// in bf16 (gemm_rows_a16, B as floats or, when Bq is not NULL, as its pair image: gemm_rows_a16_q)
// and its rounding (gemm_bf16_round)
void gemm_pairs_core_avx512bf16(int M, int N, int K, const float *Ap, const uint32_t *B, const long *boff, float *C,
                                int ldc, int accumulate);
void gemm_bf16_pairs_avx512bf16(uint32_t *dst, size_t ldd, const float *lo, const float *hi, size_t lds, int rows,
                                size_t n);
void gemm_a16_core_avx512bf16(int transB, int M, int N, int K, const uint16_t *A, int lda, const long *aoff,
                              const float *B, int ldb, const long *boff, const uint32_t *Bq, int ldq, float *C, int ldc,
                              int accumulate);
void gemm_bf16_round_avx512bf16(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, size_t n);

#endif
