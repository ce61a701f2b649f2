// gemm.c: the GEMM entry points, dispatched to the variant of the active instruction set (isa.h:
// the widest this CPU runs, or the one DDPM_ISA names), or to the bf16 one in bf16 precision.
#include "kernels/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_variants.h"
#include "kernels/isa.h"

typedef struct {
    const char *name;
    size_t (*packed_a_floats)(int M, int K);
    void (*pack_a)(int transA, int M, int K, const float *A, int lda, float *Ap);
    void (*core)(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
                 const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate);
} GemmVariant;

#define VARIANT(isa) {#isa, gemm_packed_a_floats_##isa, gemm_pack_a_##isa, gemm_core_##isa}
// in the order of the Isa enum
static const GemmVariant variants[ISA_COUNT] = {VARIANT(avx512), VARIANT(avx2), VARIANT(generic)};
static const GemmVariant bf16_variant = VARIANT(avx512bf16);
static int bf16 = 0; // the precision: products of bf16 inputs

static const GemmVariant *active(void) { return bf16 ? &bf16_variant : &variants[isa_active()]; }

int gemm_variant_count(void) { return ISA_COUNT; }
const char *gemm_variant_name(int i) { return isa_name((Isa)i); }
int gemm_variant_supported(int i) { return i >= 0 && i < ISA_COUNT && isa_supported((Isa)i); }
const char *gemm_isa(void) { return active()->name; }
int gemm_set_isa(const char *name) { return isa_set(name); }

int gemm_bf16_supported(void) { return isa_bf16_supported(); }

int gemm_set_precision(GemmPrecision p) {
    if (p == GEMM_BF16 && !isa_bf16_supported()) return -1;
    bf16 = p == GEMM_BF16;
    return 0;
}

GemmPrecision gemm_precision(void) { return bf16 ? GEMM_BF16 : GEMM_FP32; }

// empty products, the same for every variant (which then see M, N, K >= 1): C = 0 when K = 0
// and not accumulating; returns 1 if nothing is left to compute
static int empty_product(int M, int N, int K, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return 1;
    if (K > 0) return 0;
    if (!accumulate)
        for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, N * sizeof(float));
    return 1;
}

void gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
          int ldc, int accumulate) {
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    active()->core(transA, transB, M, N, K, A, lda, NULL, NULL, B, ldb, NULL, C, ldc, accumulate);
}

void gemm_rows(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff, const float *B,
               int ldb, const long *boff, float *C, int ldc, int accumulate) {
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    active()->core(transA, transB, M, N, K, A, lda, aoff, NULL, B, ldb, boff, C, ldc, accumulate);
}

size_t gemm_packed_a_floats(int M, int K) { return active()->packed_a_floats(M, K); }

void gemm_pack_a(int transA, int M, int K, const float *A, int lda, float *Ap) { active()->pack_a(transA, M, K, A, lda, Ap); }

void gemm_packed(int M, int N, int K, const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc,
                 int accumulate) {
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    active()->core(0, 0, M, N, K, NULL, 0, NULL, Ap, B, ldb, boff, C, ldc, accumulate);
}

// a caller's bug, not the user's: stop at once
static void misuse(const char *what) {
    fprintf(stderr, "ddpm: internal error: %s\n", what);
    abort();
}

void gemm_bf16_pairs(uint32_t *dst, size_t ldd, const float *lo, const float *hi, size_t lds, int rows, size_t n) {
    if (!bf16 || ldd < n) misuse("gemm_bf16_pairs: not in bf16 precision, or ldd < n");
    gemm_bf16_pairs_avx512bf16(dst, ldd, lo, hi, lds, rows, n);
}

void gemm_packed_pairs(int M, int N, int K, const float *Ap, const uint32_t *B, const long *boff, float *C, int ldc,
                       int accumulate) {
    if (!bf16 || K % 2) misuse("gemm_packed_pairs: not in bf16 precision, or K odd");
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    gemm_pairs_core_avx512bf16(M, N, K, Ap, B, boff, C, ldc, accumulate);
}

void gemm_bf16_round(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, size_t n) {
    if (!bf16 || ldd < n) misuse("gemm_bf16_round: not in bf16 precision, or ldd < n");
    gemm_bf16_round_avx512bf16(dst, ldd, src, lds, rows, n);
}

void gemm_rows_a16(int transB, int M, int N, int K, const uint16_t *A, int lda, const long *aoff, const float *B,
                   int ldb, const long *boff, float *C, int ldc, int accumulate) {
    if (!bf16) misuse("gemm_rows_a16: not in bf16 precision");
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    gemm_a16_core_avx512bf16(transB, M, N, K, A, lda, aoff, B, ldb, boff, NULL, 0, C, ldc, accumulate);
}

void gemm_rows_a16_q(int M, int N, int K, const uint16_t *A, int lda, const long *aoff, const uint32_t *Bq, int ldq,
                     float *C, int ldc, int accumulate) {
    if (!bf16) misuse("gemm_rows_a16_q: not in bf16 precision");
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    gemm_a16_core_avx512bf16(1, M, N, K, A, lda, aoff, NULL, 0, NULL, Bq, ldq, C, ldc, accumulate);
}
