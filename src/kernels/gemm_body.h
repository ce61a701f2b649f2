// gemm_body.h: the BLIS-style driver of the packed SGEMM, included once per instruction set by
// gemm_<isa>.c after it defines VL, MR, NR, DIRECT_A_MAX_N, GEMM_NAME(x) and micro_kernel().
// C[M,N] (+)= op(A)[M,K] op(B)[K,N]: B is packed into KC x NR panels (or read in place), A into
// MR x KC panels (or read in place), and the MR x NR micro-kernel keeps its C tile in registers.
// Every C element is summed over k in order, one FMA per k, per chunk of at most KC: the result
// depends only on the shapes (never on threads, nor on the instruction set when FMAs are used).
#include <string.h>

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

// Reading B in place (no packing) pays off when each B panel is used by few rows of A: the
// copy would cost as much as the arithmetic it feeds.
#define DIRECT_B_MAX_M 1000000

// K in equal chunks of at most KC (288 = 2 x 144, not 256 + 32): a short last chunk would pay a
// whole C tile load/store for a few FMAs
static int k_step(int K) {
    int nk = (K + KC - 1) / KC;
    return (K + nk - 1) / nk;
}

// Pre-packed A: for each K chunk [pc, pc + kc), the MR-row panels of all M rows, at Ap + pc Mr
// (Mr = M rounded up to MR), panel i at + i kc: what gemm_rows would pack block by block.
size_t GEMM_NAME(gemm_packed_a_floats)(int M, int K) { return (size_t)((M + MR - 1) / MR * MR) * (K > 0 ? K : 0); }

void GEMM_NAME(gemm_pack_a)(int transA, int M, int K, const float *A, int lda, float *Ap) {
    int Mr = (M + MR - 1) / MR * MR, kc_step = k_step(K);
    for (int pc = 0; pc < K; pc += kc_step) {
        int kc = K - pc < kc_step ? K - pc : kc_step;
        pack_a(Ap + (size_t)pc * Mr, transA, A, lda, NULL, 0, M, pc, kc);
    }
}

// A is packed block by block into packA, or was packed whole by gemm_pack_a (Ap != NULL)
void GEMM_NAME(gemm_core)(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
                             const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate) {
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
