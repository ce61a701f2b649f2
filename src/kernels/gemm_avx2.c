// gemm_avx2.c: the GEMM for CPUs with AVX2 + FMA: a 6 x 16 micro-kernel on 256-bit registers
// (12 accumulators, 2 B vectors and a broadcast: 15 of the 16 ymm registers).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#include "kernels/gemm_variants.h"

#include <string.h>

#include <immintrin.h>

#define VL 8
#define MR 6
#define NR 16
#define DIRECT_A_MAX_N (4 * NR)
#define GEMM_NAME(x) x##_avx2
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
#include "kernels/gemm_store.h"

// C tile[mr, nr] (+)= A[MR, kc] B[kc, NR]. Row k of B at b + k bs (bs = NR when packed, ldb when
// B is read in place), or at b + boff[k] when B is read in place through a row table.
// A is packed (a[k MR + i]) or, when arows != NULL, read in place: A[i][k] = arows[i][k].
static void micro_kernel(int kc, const float *restrict a, const float *const *arows, const float *restrict b, int bs,
                         const long *boff, float *c, int ldc, int mr, int nr, int acc) {
    vf c0[MR], c1[MR];
    // AVX2 + FMA: 12 accumulators, 2 B vectors, 1 broadcast = 15 ymm registers
    if (acc) // the C tile is read at the end: start fetching it now (it is often far, e.g. a gradient)
        for (int i = 0; i < mr; i++) {
            _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + (size_t)i * ldc + NR - 1), _MM_HINT_T0);
        }
    __m256 r00 = _mm256_setzero_ps(), r01 = r00, r10 = r00, r11 = r00, r20 = r00, r21 = r00,
           r30 = r00, r31 = r00, r40 = r00, r41 = r00, r50 = r00, r51 = r00;
// one row i of the tile: r_i0 += a[k][i] b0, r_i1 += a[k][i] b1 (b0, b1 and ak in scope)
#define FMA_ROW(i, x0, x1)                                                                                       \
    { __m256 ai = _mm256_broadcast_ss(ak + (i)); x0 = _mm256_fmadd_ps(ai, b0, x0); x1 = _mm256_fmadd_ps(ai, b1, x1); }
// step k of the first `rows` tile rows (4 or 6); `rows` is a constant, so the branch folds away
#define FMA_ROWS_K(bk, rows)                                                                                      \
    {                                                                                                             \
        __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps((bk) + 8);                                          \
        const float *ak = a + k * MR;                                                                             \
        FMA_ROW(0, r00, r01) FMA_ROW(1, r10, r11) FMA_ROW(2, r20, r21) FMA_ROW(3, r30, r31)                      \
        if ((rows) > 4) { FMA_ROW(4, r40, r41) FMA_ROW(5, r50, r51) }                                             \
    }
#define FMA_ROW_K(bk) FMA_ROWS_K(bk, 6)
#define FMA_ROW_K4(bk) FMA_ROWS_K(bk, 4)
#define FMA_ROW_K_HALF(bk)                                                                                       \
    {                                                                                                             \
        __m256 b0 = _mm256_loadu_ps(bk);                                                                          \
        const float *ak = a + k * MR;                                                                             \
        r00 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 0), b0, r00);                                              \
        r10 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 1), b0, r10);                                              \
        r20 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 2), b0, r20);                                              \
        r30 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 3), b0, r30);                                              \
        r40 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 4), b0, r40);                                              \
        r50 = _mm256_fmadd_ps(_mm256_broadcast_ss(ak + 5), b0, r50);                                              \
    }
    if (nr <= 8 && !arows) { // a last panel of at most 8 columns: the right half would be discarded
        if (boff) for (int k = 0; k < kc; k++) FMA_ROW_K_HALF(b + boff[k])
        else for (int k = 0; k < kc; k++) FMA_ROW_K_HALF(b + (size_t)k * bs)
    } else if (mr <= 4 && !arows) { // a last tile of at most 4 rows (e.g. M = 4, 16, 64): rows 4, 5 would be discarded
        if (boff) for (int k = 0; k < kc; k++) FMA_ROW_K4(b + boff[k])
        else for (int k = 0; k < kc; k++) FMA_ROW_K4(b + (size_t)k * bs)
    } else if (arows) { // A in place: six sequential streams of broadcasts
        const float *a0 = arows[0], *a1 = arows[1], *a2 = arows[2], *a3 = arows[3], *a4 = arows[4], *a5 = arows[5];
        for (int k = 0; k < kc; k++) {
            const float *bk = b + (size_t)k * bs;
            __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8), ai;
            ai = _mm256_broadcast_ss(a0 + k); r00 = _mm256_fmadd_ps(ai, b0, r00); r01 = _mm256_fmadd_ps(ai, b1, r01);
            ai = _mm256_broadcast_ss(a1 + k); r10 = _mm256_fmadd_ps(ai, b0, r10); r11 = _mm256_fmadd_ps(ai, b1, r11);
            ai = _mm256_broadcast_ss(a2 + k); r20 = _mm256_fmadd_ps(ai, b0, r20); r21 = _mm256_fmadd_ps(ai, b1, r21);
            ai = _mm256_broadcast_ss(a3 + k); r30 = _mm256_fmadd_ps(ai, b0, r30); r31 = _mm256_fmadd_ps(ai, b1, r31);
            ai = _mm256_broadcast_ss(a4 + k); r40 = _mm256_fmadd_ps(ai, b0, r40); r41 = _mm256_fmadd_ps(ai, b1, r41);
            ai = _mm256_broadcast_ss(a5 + k); r50 = _mm256_fmadd_ps(ai, b0, r50); r51 = _mm256_fmadd_ps(ai, b1, r51);
        }
    } else if (boff) for (int k = 0; k < kc; k++) FMA_ROW_K(b + boff[k])
    else for (int k = 0; k < kc; k++) FMA_ROW_K(b + (size_t)k * bs)
#undef FMA_ROW
#undef FMA_ROWS_K
#undef FMA_ROW_K
#undef FMA_ROW_K4
#undef FMA_ROW_K_HALF
    if (mr == MR && nr == NR) { // full tile: store straight from the registers
#define STORE_ROW(i, x0, x1)                                                                                     \
    {                                                                                                             \
        float *ci = c + (size_t)(i) * ldc;                                                                        \
        if (acc) { x0 = _mm256_add_ps(x0, _mm256_loadu_ps(ci)); x1 = _mm256_add_ps(x1, _mm256_loadu_ps(ci + 8)); } \
        _mm256_storeu_ps(ci, x0); _mm256_storeu_ps(ci + 8, x1);                                                   \
    }
        STORE_ROW(0, r00, r01) STORE_ROW(1, r10, r11) STORE_ROW(2, r20, r21)
        STORE_ROW(3, r30, r31) STORE_ROW(4, r40, r41) STORE_ROW(5, r50, r51)
#undef STORE_ROW
        return;
    }
    c0[0] = (vf)r00; c1[0] = (vf)r01; c0[1] = (vf)r10; c1[1] = (vf)r11; c0[2] = (vf)r20; c1[2] = (vf)r21;
    c0[3] = (vf)r30; c1[3] = (vf)r31; c0[4] = (vf)r40; c1[4] = (vf)r41; c0[5] = (vf)r50; c1[5] = (vf)r51;
    store_tile_vf(c, ldc, c0, c1, mr, nr, acc);
}


#include "kernels/gemm_body.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
