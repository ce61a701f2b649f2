// gemm_generic.c: the GEMM in portable C (GCC/Clang vector extensions): a 6 x 2VL micro-kernel
// whose vectors the compiler maps onto the build target's registers (VL = 8 floats with AVX,
// else 4). It runs on every CPU; the AVX2 and AVX-512 variants replace it where they can.
#include "kernels/gemm_variants.h"

#include <string.h>

#if defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
#define MR 6
#define NR (2 * VL)
#define DIRECT_A_MAX_N (4 * NR)
#define GEMM_NAME(x) x##_generic
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
#include "kernels/gemm_store.h"

static inline vf broadcast(float x) {
    vf v;
    for (int i = 0; i < VL; i++) v[i] = x;
    return v;
}

// C tile[mr, nr] (+)= A[MR, kc] B[kc, NR]. Row k of B at b + k bs (bs = NR when packed, ldb when
// B is read in place), or at b + boff[k] when B is read in place through a row table.
// A is packed (a[k MR + i]) or, when arows != NULL, read in place: A[i][k] = arows[i][k].
static void micro_kernel(int kc, const float *restrict a, const float *const *arows, const float *restrict b, int bs,
                         const long *boff, float *c, int ldc, int mr, int nr, int acc) {
    vf c0[MR], c1[MR];
    // portable: the compiler maps vf onto whatever vector registers the target has
    for (int i = 0; i < MR; i++) { c0[i] = (vf){0}; c1[i] = (vf){0}; }
    for (int k = 0; k < kc; k++) {
        vf b0, b1;
        const float *bk = boff ? b + boff[k] : b + (size_t)k * bs;
        memcpy(&b0, bk, sizeof(vf));
        memcpy(&b1, bk + VL, sizeof(vf));
        const float *ak = a + k * MR;
        for (int i = 0; i < MR; i++) {
            vf ai = broadcast(arows ? arows[i][k] : ak[i]);
            c0[i] += ai * b0;
            c1[i] += ai * b1;
        }
    }
    store_tile_vf(c, ldc, c0, c1, mr, nr, acc);
}


#include "kernels/gemm_body.h"
