// gemm_avx512.c: the GEMM for CPUs with AVX-512: an 8 x 32 micro-kernel on 512-bit registers
// (16 accumulators, 2 B vectors, broadcasts of A; 32 zmm registers leave room to spare), with
// masked stores for the last rows and columns of C.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx2,fma")
#endif
#include "kernels/gemm_variants.h"

#include <string.h>

#include <immintrin.h>

#define GEMM_STORE_ZMM
#include "kernels/gemm_store.h"

#define VL 16
#define MR 8
#define NR 32
#define DIRECT_A_MAX_N (4 * NR)
#define GEMM_NAME(x) x##_avx512

#define AI static inline __attribute__((always_inline))

// r[i][0..1] += A[i][k] (b0, b1) for the first ROWS rows and the first COLS vectors of step k
#define STEP(ROWS, COLS, AK)                                                                                     \
    {                                                                                                             \
        __m512 b0 = _mm512_loadu_ps(bk), b1 = COLS > 1 ? _mm512_loadu_ps(bk + 16) : b0;                          \
        for (int i = 0; i < ROWS; i++) {                                                                          \
            __m512 ai = _mm512_set1_ps(AK);                                                                       \
            r[i][0] = _mm512_fmadd_ps(ai, b0, r[i][0]);                                                           \
            if (COLS > 1) r[i][1] = _mm512_fmadd_ps(ai, b1, r[i][1]);                                             \
        }                                                                                                         \
    }

// the k loop for a ROWS x (16 COLS) tile (constants: each call is compiled for its own shape)
AI void tile_loop(__m512 r[MR][2], int ROWS, int COLS, int kc, const float *restrict a, const float *const *arows,
                  const float *restrict b, int bs, const long *boff) {
    for (int i = 0; i < MR; i++) r[i][0] = r[i][1] = _mm512_setzero_ps();
    if (arows) {
        for (int k = 0; k < kc; k++) {
            const float *bk = b + (size_t)k * bs;
            STEP(ROWS, COLS, arows[i][k])
        }
    } else if (boff) {
        for (int k = 0; k < kc; k++) {
            const float *bk = b + boff[k], *ak = a + k * MR;
            STEP(ROWS, COLS, ak[i])
        }
    } else {
        for (int k = 0; k < kc; k++) {
            const float *bk = b + (size_t)k * bs, *ak = a + k * MR;
            STEP(ROWS, COLS, ak[i])
        }
    }
}

// C tile[mr, nr] (+)= A[MR, kc] B[kc, NR]. Row k of B at b + k bs (bs = NR when packed, ldb when
// B is read in place), or at b + boff[k] when B is read in place through a row table.
// A is packed (a[k MR + i]) or, when arows != NULL, read in place: A[i][k] = arows[i][k].
static void micro_kernel(int kc, const float *restrict a, const float *const *arows, const float *restrict b, int bs,
                         const long *boff, float *c, int ldc, int mr, int nr, int acc) {
    __m512 r[MR][2];
    if (acc) // the C tile is read at the end: start fetching it now (it is often far, e.g. a gradient)
        for (int i = 0; i < mr; i++) {
            _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + (size_t)i * ldc + NR - 1), _MM_HINT_T0);
        }
    // last tiles: at most 4 rows (M = 4, 12, 20, ...) or at most 16 columns take narrower kernels
    if (nr <= 16) {
        if (mr <= 4) tile_loop(r, 4, 1, kc, a, arows, b, bs, boff);
        else tile_loop(r, MR, 1, kc, a, arows, b, bs, boff);
    } else if (mr <= 4) tile_loop(r, 4, 2, kc, a, arows, b, bs, boff);
    else tile_loop(r, MR, 2, kc, a, arows, b, bs, boff);
    store_tile_zmm(r, c, ldc, mr, nr, acc);
}

#include "kernels/gemm_body.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
