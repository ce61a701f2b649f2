// gemm.c: a packed, register-blocked SGEMM in portable C with GCC/Clang vector extensions.
// C[M,N] (+)= op(A)[M,K] op(B)[K,N]. The BLIS scheme: B is packed into KC x NR panels,
// A into MR x KC panels, and a MR x NR micro-kernel keeps its C tile in vector registers.
// The vector width follows the build target (-march=native: AVX-512 -> 16 floats,
// AVX2 -> 8, otherwise 4), so `make PORTABLE=1` gets the same code with narrower vectors.
// The summation order depends only on the shapes, never on threads: results are deterministic.
#include "kernels/gemm.h"

#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#if defined(__AVX2__) && defined(__FMA__)
#define VL 8 // also on AVX-512 CPUs: the hand-written 6x16 kernel beats 16-float generic code 5x
#elif defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

#define MR 6
#define NR (2 * VL)
#define KC 256
#define MC 96
#define NC 1024

// Pack buffers: per-thread scratch (never state carried between calls).
static _Thread_local float packA[MC * KC] __attribute__((aligned(64)));
static _Thread_local float packB[KC * (NC + NR)] __attribute__((aligned(64)));


// row r of a stored matrix: at M + off[r] with a row table, else at M + r ld
static inline const float *row_at(const float *M, int ld, const long *off, long r) {
    return off ? M + off[r] : M + (size_t)r * ld;
}

// p[ir/MR][k][MR]: rows i0..i0+mc, cols k0..k0+kc; zero-padded to MR
static void pack_a(float *p, int transA, const float *A, int lda, const long *aoff, int i0, int mc, int k0, int kc) {
    for (int ir = 0; ir < mc; ir += MR) {
        int mr = mc - ir < MR ? mc - ir : MR;
        if (!transA && mr == MR) { // k outer: contiguous writes, MR sequential read streams
            const float *src[MR];
            for (int i = 0; i < MR; i++) src[i] = row_at(A, lda, aoff, i0 + ir + i) + k0;
            for (int k = 0; k < kc; k++)
                for (int i = 0; i < MR; i++) p[k * MR + i] = src[i][k];
        } else if (!transA) {
            for (int i = 0; i < MR; i++) {
                if (i < mr) {
                    const float *src = row_at(A, lda, aoff, i0 + ir + i) + k0;
                    for (int k = 0; k < kc; k++) p[k * MR + i] = src[k];
                } else {
                    for (int k = 0; k < kc; k++) p[k * MR + i] = 0.0f;
                }
            }
        } else if (mr == MR) { // A^T: MR contiguous floats per k, one fixed-size copy
            for (int k = 0; k < kc; k++) memcpy(p + k * MR, row_at(A, lda, aoff, k0 + k) + i0 + ir, MR * sizeof(float));
        } else {
            for (int k = 0; k < kc; k++) {
                const float *src = row_at(A, lda, aoff, k0 + k) + i0 + ir;
                int i = 0;
                for (; i < mr; i++) p[k * MR + i] = src[i];
                for (; i < MR; i++) p[k * MR + i] = 0.0f;
            }
        }
        p += MR * kc;
    }
}

// packB[jr/NR][k][NR]: rows k0..k0+kc, cols j0..j0+nc; zero-padded to NR
static void pack_b(int transB, const float *B, int ldb, const long *boff, int k0, int kc, int j0, int nc) {
    float *p = packB;
    for (int jr = 0; jr < nc; jr += NR) {
        int nr = nc - jr < NR ? nc - jr : NR;
        if (!transB) {
            for (int k = 0; k < kc; k++) {
                const float *src = row_at(B, ldb, boff, k0 + k) + j0 + jr;
                float *dst = p + k * NR;
                if (nr == NR) memcpy(dst, src, NR * sizeof(float));
                else {
                    int j = 0;
                    for (; j < nr; j++) dst[j] = src[j];
                    for (; j < NR; j++) dst[j] = 0.0f;
                }
            }
        } else {
            for (int j = 0; j < NR; j++) {
                if (j < nr) {
                    const float *src = row_at(B, ldb, boff, j0 + jr + j) + k0;
                    for (int k = 0; k < kc; k++) p[k * NR + j] = src[k];
                } else {
                    for (int k = 0; k < kc; k++) p[k * NR + j] = 0.0f;
                }
            }
        }
        p += NR * kc;
    }
}

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
#if defined(__AVX2__) && defined(__FMA__) && VL == 8
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
#else
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
#endif
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            vf t0, t1;
            if (acc) {
                memcpy(&t0, ci, sizeof(vf));
                memcpy(&t1, ci + VL, sizeof(vf));
                c0[i] += t0;
                c1[i] += t1;
            }
            memcpy(ci, &c0[i], sizeof(vf));
            memcpy(ci + VL, &c1[i], sizeof(vf));
        }
    } else {
        float tile[MR][NR] __attribute__((aligned(64)));
        for (int i = 0; i < MR; i++) {
            memcpy(&tile[i][0], &c0[i], sizeof(vf));
            memcpy(&tile[i][VL], &c1[i], sizeof(vf));
        }
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++)
                c[(size_t)i * ldc + j] = acc ? c[(size_t)i * ldc + j] + tile[i][j] : tile[i][j];
    }
}

// Reading B in place (no packing) pays off when each B panel is used by few rows of A: the
// copy would cost as much as the arithmetic it feeds.
#define DIRECT_B_MAX_M 1000000
#define DIRECT_A_MAX_N (4 * NR)

// K in equal chunks of at most KC (288 = 2 x 144, not 256 + 32): a short last chunk would pay a
// whole C tile load/store for a few FMAs
static int k_step(int K) {
    int nk = (K + KC - 1) / KC;
    return (K + nk - 1) / nk;
}

// Pre-packed A: for each K chunk [pc, pc + kc), the MR-row panels of all M rows, at Ap + pc Mr
// (Mr = M rounded up to MR), panel i at + i kc: what gemm_rows would pack block by block.
size_t gemm_packed_a_floats(int M, int K) { return (size_t)((M + MR - 1) / MR * MR) * (K > 0 ? K : 0); }

void gemm_pack_a(int transA, int M, int K, const float *A, int lda, float *Ap) {
    int Mr = (M + MR - 1) / MR * MR, kc_step = k_step(K);
    for (int pc = 0; pc < K; pc += kc_step) {
        int kc = K - pc < kc_step ? K - pc : kc_step;
        pack_a(Ap + (size_t)pc * Mr, transA, A, lda, NULL, 0, M, pc, kc);
    }
}

static void gemm_core(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
                      const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate);

void gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, float *C, int ldc, int accumulate) {
    gemm_core(transA, transB, M, N, K, A, lda, NULL, NULL, B, ldb, NULL, C, ldc, accumulate);
}

void gemm_rows(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
               const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate) {
    gemm_core(transA, transB, M, N, K, A, lda, aoff, NULL, B, ldb, boff, C, ldc, accumulate);
}

void gemm_packed(int M, int N, int K, const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc,
                 int accumulate) {
    gemm_core(0, 0, M, N, K, NULL, 0, NULL, Ap, B, ldb, boff, C, ldc, accumulate);
}

// A is packed block by block into packA, or was packed whole by gemm_pack_a (Ap != NULL)
static void gemm_core(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
                      const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, N * sizeof(float));
        return;
    }
    int direct = !transB && M <= DIRECT_B_MAX_M;
    // A read in place too when few column panels would reuse a packed copy (e.g. a convolution's
    // weight gradient, N = Co): not with B read through a row table (no such kernel)
    int direct_a = !Ap && !transA && N <= DIRECT_A_MAX_N && !(direct && boff);
    int kc_step = k_step(K), Mr = (M + MR - 1) / MR * MR;
    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        int nfull = direct ? nc / NR * NR : 0; // columns read in place; the rest is packed
        for (int pc = 0; pc < K; pc += kc_step) {
            int kc = K - pc < kc_step ? K - pc : kc_step;
            int acc = accumulate || pc > 0;
            if (nfull < nc) pack_b(transB, B, ldb, boff, pc, kc, jc + nfull, nc - nfull);
            for (int ic = 0; ic < M; ic += MC) {
                int mc = M - ic < MC ? M - ic : MC;
                const float *ablock = Ap ? Ap + (size_t)pc * Mr + (size_t)ic * kc : packA;
                if (!direct_a && !Ap) pack_a(packA, transA, A, lda, aoff, ic, mc, pc, kc);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    int in_place = jr < nfull;
                    const float *bp = !in_place ? packB + (size_t)(jr - nfull) * kc
                                      : boff ? B + jc + jr : B + (size_t)pc * ldb + jc + jr;
                    const long *bo = in_place && boff ? boff + pc : NULL;
                    int bs = in_place ? ldb : NR;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        const float *arows[MR];
                        if (direct_a) // rows past mr repeat row 0: their results are not stored
                            for (int i = 0; i < MR; i++) arows[i] = row_at(A, lda, aoff, ic + ir + (i < mr ? i : 0)) + pc;
                        micro_kernel(kc, ablock + (size_t)ir * kc, direct_a ? arows : NULL, bp, bs, bo,
                                     C + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, acc);
                    }
                }
            }
        }
    }
}
