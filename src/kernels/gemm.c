// gemm.c: the GEMM entry points, dispatched to the fastest variant this CPU runs (cpuid at
// start-up), or to the one DDPM_ISA names (avx512, avx2, generic).
#include "kernels/gemm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_variants.h"

typedef struct {
    const char *name;
    int (*supported)(void);
    size_t (*packed_a_floats)(int M, int K);
    void (*pack_a)(int transA, int M, int K, const float *A, int lda, float *Ap);
    void (*core)(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
                 const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate);
} GemmVariant;

static int has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}
static int has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
static int always(void) { return 1; }
static int has_avx512bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

#define VARIANT(isa, sup) {#isa, sup, gemm_packed_a_floats_##isa, gemm_pack_a_##isa, gemm_core_##isa}
static const GemmVariant variants[] = {VARIANT(avx512, has_avx512), VARIANT(avx2, has_avx2), VARIANT(generic, always)};
#define N_VARIANTS (int)(sizeof variants / sizeof variants[0])
static const GemmVariant bf16_variant = VARIANT(avx512bf16, has_avx512bf16);
static const GemmVariant *fp32 = &variants[N_VARIANTS - 1], *active = &variants[N_VARIANTS - 1];

int gemm_variant_count(void) { return N_VARIANTS; }
const char *gemm_variant_name(int i) { return i >= 0 && i < N_VARIANTS ? variants[i].name : NULL; }
int gemm_variant_supported(int i) { return i >= 0 && i < N_VARIANTS && variants[i].supported(); }
const char *gemm_isa(void) { return active->name; }

int gemm_set_isa(const char *name) {
    for (int i = 0; i < N_VARIANTS; i++)
        if (!strcmp(name, variants[i].name)) {
            if (!variants[i].supported()) return -1;
            if (active == fp32) active = &variants[i];
            fp32 = &variants[i];
            return 0;
        }
    return -2;
}

// at start-up: DDPM_ISA if set (a bad one is a one-line error, exit 2), else the best supported
__attribute__((constructor)) static void gemm_choose(void) {
    __builtin_cpu_init();
    const char *want = getenv("DDPM_ISA");
    if (want && *want) {
        int rc = gemm_set_isa(want);
        if (rc == 0) return;
        fprintf(stderr, "ddpm: DDPM_ISA=%s: %s (this CPU runs:", want, rc == -1 ? "this CPU lacks it" : "unknown instruction set");
        for (int i = 0; i < N_VARIANTS; i++)
            if (variants[i].supported()) fprintf(stderr, " %s", variants[i].name);
        fprintf(stderr, ")\n");
        exit(2);
    }
    for (int i = 0; i < N_VARIANTS; i++)
        if (variants[i].supported()) { active = fp32 = &variants[i]; return; }
}

int gemm_bf16_supported(void) { return bf16_variant.supported(); }

int gemm_set_precision(GemmPrecision p) {
    if (p == GEMM_BF16) {
        if (!bf16_variant.supported()) return -1;
        active = &bf16_variant;
    } else {
        active = fp32;
    }
    return 0;
}

GemmPrecision gemm_precision(void) { return active == &bf16_variant ? GEMM_BF16 : GEMM_FP32; }

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
    active->core(transA, transB, M, N, K, A, lda, NULL, NULL, B, ldb, NULL, C, ldc, accumulate);
}

void gemm_rows(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff, const float *B,
               int ldb, const long *boff, float *C, int ldc, int accumulate) {
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    active->core(transA, transB, M, N, K, A, lda, aoff, NULL, B, ldb, boff, C, ldc, accumulate);
}

size_t gemm_packed_a_floats(int M, int K) { return active->packed_a_floats(M, K); }

void gemm_pack_a(int transA, int M, int K, const float *A, int lda, float *Ap) { active->pack_a(transA, M, K, A, lda, Ap); }

void gemm_packed(int M, int N, int K, const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc,
                 int accumulate) {
    if (empty_product(M, N, K, C, ldc, accumulate)) return;
    active->core(0, 0, M, N, K, NULL, 0, NULL, Ap, B, ldb, boff, C, ldc, accumulate);
}
