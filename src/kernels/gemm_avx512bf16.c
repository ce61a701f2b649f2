// gemm_avx512bf16.c: the GEMM in bf16 mixed precision for CPUs with AVX512_BF16: A and B are
// rounded to bf16 (round to nearest even, as VCVTNE2PS2BF16 does: subnormal inputs count as 0)
// while they are packed, and VDPBF16PS multiplies two k at a time into fp32 accumulators:
// c += a[k] b[k] + a[k+1] b[k+1]. The packed panels hold (k, k+1) pairs: A [k/2][MR][2],
// B [k/2][NR][2], a 32-bit pair per row or column, so one broadcast of an A pair meets one
// 512-bit load of 16 B pairs. An 8 x 32 tile, like the fp32 AVX-512 kernel. The floats of gemm.h's
// fp32 entry points are always packed; the bf16-only entry points read operands rounded once by
// the caller in place (B as pair rows, A in bf16). Deterministic: the order of the sums depends
// only on the shapes.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")
#endif
#include "kernels/gemm_variants.h"

#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#define GEMM_STORE_ZMM
#include "kernels/gemm_store.h"

#define MR 8
#define NR 32
#define KC 512 // even: every K chunk but the last holds whole pairs (512 bf16: as many bytes as 256 floats)
#define MC 96
#define NC 1024

// pack buffers (per thread, never state between calls), in bf16 elements
static _Thread_local uint16_t packA[MC * (KC + 2)] __attribute__((aligned(64)));
static _Thread_local uint16_t packB[(KC + 2) * (NC + NR)] __attribute__((aligned(64)));
// the k pairs of 8 rows of A or 8 columns of B^T on their way into a panel (pairs_of_row)
static _Thread_local uint32_t pair_rows[8][KC / 2 + 8] __attribute__((aligned(64)));

static inline const float *row_at(const float *M, int ld, const long *off, long r) {
    return off ? M + off[r] : M + (size_t)r * ld;
}

// dst[0..n) = bf16(src[0..n)), n >= 0, through the vector conversion (masked tail)
static void to_bf16(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m256i h = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

// rows[kp] = the bf16 pair (x[2 kp], x[2 kp + 1]) for kp < ceil(kc / 2), zeros past x[kc - 1] up to
// the next multiple of 8 pairs; all zeros when x is NULL
static void pairs_of_row(uint32_t *row, const float *x, int kc) {
    int kc2 = (kc + 1) / 2, kc8 = (kc2 + 7) / 8 * 8;
    uint16_t *h = (uint16_t *)row;
    if (x) {
        to_bf16(h, x, kc);
        for (int k = kc; k < 2 * kc8; k++) h[k] = 0;
    } else {
        memset(row, 0, (size_t)kc8 * sizeof *row);
    }
}

// dst[kp ld + i] = rows[i][kp] for i < 8, kp < kc2: 8 x 8 blocks of 32-bit pairs transposed in
// registers (unpack 32, unpack 64, swap 128-bit halves), instead of one 4-byte store per pair
static void transpose_pairs(uint32_t *dst, int ld, uint32_t (*rows)[KC / 2 + 8], int kc2) {
    for (int k0 = 0; k0 < kc2; k0 += 8) {
        __m256i r[8], t[8], u[8];
        for (int i = 0; i < 8; i++) r[i] = _mm256_load_si256((const __m256i *)(rows[i] + k0));
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
            u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
            u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
            u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
        }
        int n = kc2 - k0 < 8 ? kc2 - k0 : 8;
        for (int k = 0; k < n; k++) { // k = 0..3: low halves of u[k], u[k + 4]; 4..7: high halves
            __m256i v = k < 4 ? _mm256_permute2x128_si256(u[k], u[k + 4], 0x20)
                              : _mm256_permute2x128_si256(u[k - 4], u[k], 0x31);
            _mm256_storeu_si256((__m256i *)(dst + (size_t)(k0 + k) * ld), v);
        }
    }
}

// the even K chunk size: K in equal chunks of at most KC, rounded up to a pair
static int k_step(int K) {
    int nk = (K + KC - 1) / KC, s = (K + nk - 1) / nk;
    return (s + 1) / 2 * 2;
}

// cvtne2ps(hi, lo) holds bf16(lo[0..16)) in words 0..15 and bf16(hi[0..16)) in 16..31; this index
// interleaves them into 16 pairs: word 2j <- j, word 2j + 1 <- 16 + j
static inline __m512i pair_interleave(void) {
    return _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19,
                            3, 18, 2, 17, 1, 16, 0);
}

// A panels p[ir/MR][kc2][MR][2] (kc2 = ceil(kc / 2)): rows i0..i0+mc, k0..k0+kc; zeros past them
static void pack_a(uint16_t *p, int transA, const float *A, int lda, const long *aoff, int i0, int mc, int k0, int kc) {
    int kc2 = (kc + 1) / 2;
    if (transA) { // A stored [K][M]: rows k and k + 1 give the pairs of 16 rows i (two panels) at once
        const __m512i inter = pair_interleave();
        for (int kp = 0; kp < kc2; kp++) {
            const float *r0 = row_at(A, lda, aoff, k0 + 2 * kp) + i0;
            const float *r1 = 2 * kp + 1 < kc ? row_at(A, lda, aoff, k0 + 2 * kp + 1) + i0 : NULL;
            for (int ir = 0; ir < mc; ir += 2 * MR) {
                int n = mc - ir;
                __mmask16 m = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
                __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + ir), x1 = r1 ? _mm512_maskz_loadu_ps(m, r1 + ir) : _mm512_setzero_ps();
                __m512i w = _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
                uint32_t *p32 = (uint32_t *)(p + (size_t)ir * kc2 * 2) + (size_t)kp * MR; // panel ir / MR, pair row kp
                _mm256_storeu_si256((__m256i *)p32, _mm512_castsi512_si256(w));
                if (n > MR) _mm256_storeu_si256((__m256i *)(p32 + (size_t)kc2 * MR), _mm512_extracti64x4_epi64(w, 1));
            }
        }
        return;
    }
    for (int ir = 0; ir < mc; ir += MR, p += (size_t)kc2 * MR * 2) { // row i of A: k contiguous; its pairs go to p32[kp MR + i]
        int mr = mc - ir < MR ? mc - ir : MR;
        for (int i = 0; i < MR; i++)
            pairs_of_row(pair_rows[i], i < mr ? row_at(A, lda, aoff, i0 + ir + i) + k0 : NULL, kc);
        transpose_pairs((uint32_t *)p, MR, pair_rows, kc2);
    }
}

// B panels packB[jr/NR][kc2][NR][2]: rows k0..k0+kc, columns j0..j0+nc; zeros past them
static void pack_b(int transB, const float *B, int ldb, const long *boff, int k0, int kc, int j0, int nc) {
    int kc2 = (kc + 1) / 2;
    uint16_t *p = packB;
    const __m512i inter = pair_interleave(); // (row k, row k+1) -> 16 interleaved pairs
    if (!transB) { // row pair by row pair, across all panels: B is read along its rows
        for (int kp = 0; kp < kc2; kp++) {
            int k = 2 * kp;
            const float *r0 = row_at(B, ldb, boff, k0 + k) + j0;
            const float *r1 = k + 1 < kc ? row_at(B, ldb, boff, k0 + k + 1) + j0 : NULL;
            for (int jr = 0; jr < nc; jr += NR) {
                uint16_t *pk = p + (size_t)jr * kc2 * 2 + (size_t)kp * NR * 2;
                for (int h = 0; h < 2; h++) { // columns jr + 16 h .. jr + 16 h + 16
                    int n = nc - jr - 16 * h;
                    __mmask16 m = n >= 16 ? 0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1) : 0;
                    const float *s0 = r0 + jr + 16 * h, *s1 = r1 ? r1 + jr + 16 * h : NULL;
                    __m512 x0 = n >= 16 ? _mm512_loadu_ps(s0) : _mm512_maskz_loadu_ps(m, s0);
                    __m512 x1 = !s1 ? _mm512_setzero_ps() : n >= 16 ? _mm512_loadu_ps(s1) : _mm512_maskz_loadu_ps(m, s1);
                    __m512i v = _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
                    _mm512_storeu_si512((void *)(pk + 16 * h * 2), v);
                }
            }
        }
        return;
    }
    for (int jr = 0; jr < nc; jr += NR, p += (size_t)kc2 * NR * 2) { // B stored [N][K]: column j of op(B) is row j,
        int nr = nc - jr < NR ? nc - jr : NR;                        // its k pairs contiguous
        uint32_t *p32 = (uint32_t *)p;
        for (int jj = 0; jj < NR; jj += 8) { // 8 columns at a time
            for (int j = 0; j < 8; j++)
                pairs_of_row(pair_rows[j], jj + j < nr ? row_at(B, ldb, boff, j0 + jr + jj + j) + k0 : NULL, kc);
            transpose_pairs(p32 + jj, NR, pair_rows, kc2);
        }
    }
}

// the lanes of a 16-float vector at i that lie below n (none when i >= n)
static inline __mmask16 first_lanes(size_t n, size_t i) {
    return n <= i ? 0 : n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
}

// r[c].q[k] -> r[k].q[c]: an 8 x 8 transpose of 64-bit elements (unpack 64, then two rounds of
// 128-bit lane shuffles)
static inline void transpose_q8(__m512i r[8]) {
    __m512i a[8], b[4];
    for (int i = 0; i < 8; i += 2) { // lane L of a[i]: q 2L of rows i, i + 1; of a[i + 1]: q 2L + 1
        a[i] = _mm512_unpacklo_epi64(r[i], r[i + 1]);
        a[i + 1] = _mm512_unpackhi_epi64(r[i], r[i + 1]);
    }
    for (int h = 0; h < 2; h++) {
        b[0] = _mm512_shuffle_i64x2(a[h], a[2 + h], 0x88); // q h, 4 + h of rows 0-3
        b[1] = _mm512_shuffle_i64x2(a[4 + h], a[6 + h], 0x88);
        b[2] = _mm512_shuffle_i64x2(a[h], a[2 + h], 0xDD); // q 2 + h, 6 + h
        b[3] = _mm512_shuffle_i64x2(a[4 + h], a[6 + h], 0xDD);
        r[h] = _mm512_shuffle_i64x2(b[0], b[1], 0x88);
        r[4 + h] = _mm512_shuffle_i64x2(b[0], b[1], 0xDD);
        r[2 + h] = _mm512_shuffle_i64x2(b[2], b[3], 0x88);
        r[6 + h] = _mm512_shuffle_i64x2(b[2], b[3], 0xDD);
    }
}

// pack_b(1, ..) from B's pair image: word k of pair row c at Bq + c ldq + k holds (B[2c][k],
// B[2c + 1][k]), k0 and j0 even. The words (lo k, hi k, lo k+1, hi k+1) of a 64-bit element,
// reordered to (lo k, lo k+1, hi k, hi k+1), are the pairs of columns 2c and 2c + 1 at pair row
// k/2: 16 pair rows c by 8 pair rows kp, transposed as 64-bit elements, fill 8 panel rows.
static void pack_b_q(const uint32_t *Bq, int ldq, int k0, int kc, int j0, int nc) {
    int kc2 = (kc + 1) / 2;
    uint16_t *p = packB;
    const __m512i order = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15));
    for (int jr = 0; jr < nc; jr += NR, p += (size_t)kc2 * NR * 2) {
        int np = (nc - jr < NR ? nc - jr + 1 : NR) / 2; // pair rows in this panel
        const uint32_t *b0 = Bq + (size_t)((j0 + jr) / 2) * ldq + k0;
        for (int kp0 = 0; kp0 < kc2; kp0 += 8) {
            size_t nw = (size_t)(kc - 2 * kp0); // words left in the chunk: zeros past them
            __m512i r[2][8];
            for (int c = 0; c < 16; c++) {
                const uint32_t *src = b0 + (size_t)c * ldq + 2 * kp0;
                __m512i v = c >= np  ? _mm512_setzero_si512()
                            : nw >= 16 ? _mm512_loadu_si512((const void *)src)
                                       : _mm512_maskz_loadu_epi32(first_lanes(nw, 0), src);
                r[c / 8][c % 8] = _mm512_shuffle_epi8(v, order);
            }
            transpose_q8(r[0]);
            transpose_q8(r[1]);
            int n = kc2 - kp0 < 8 ? kc2 - kp0 : 8;
            for (int k = 0; k < n; k++) {
                _mm512_storeu_si512((void *)(p + (size_t)(kp0 + k) * NR * 2), r[0][k]);
                _mm512_storeu_si512((void *)(p + (size_t)(kp0 + k) * NR * 2 + 32), r[1][k]);
            }
        }
    }
}

#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
// the register tile r00 .. r71 (row i: ri0, ri1) into C: whole tiles straight from the named registers,
// the last rows and columns through store_tile_zmm (an array indexed at run time would keep the
// accumulators in memory around every tile)
#define DECL(i) __m512 r##i##0 = _mm512_setzero_ps(), r##i##1 = _mm512_setzero_ps();
#define STI(i)                                                                                                         \
    {                                                                                                                  \
        float *ci = c_ + (size_t)i * ldc_;                                                                             \
        __m512 x0 = r##i##0, x1 = r##i##1;                                                                             \
        if (acc_) {                                                                                                    \
            x0 = _mm512_add_ps(x0, _mm512_loadu_ps(ci));                                                               \
            x1 = _mm512_add_ps(x1, _mm512_loadu_ps(ci + 16));                                                          \
        }                                                                                                              \
        _mm512_storeu_ps(ci, x0);                                                                                      \
        _mm512_storeu_ps(ci + 16, x1);                                                                                 \
    }
#define STORE_TILE(c, ldc, mr, nr, acc)                                                                                \
    do {                                                                                                               \
        float *c_ = (c);                                                                                               \
        int ldc_ = (ldc), acc_ = (acc);                                                                                \
        if ((mr) == MR && (nr) == NR) {                                                                                \
            ROWS8(STI)                                                                                                 \
        } else {                                                                                                       \
            __m512 r_[MR][2] = {{r00, r01}, {r10, r11}, {r20, r21}, {r30, r31},                                        \
                                {r40, r41}, {r50, r51}, {r60, r61}, {r70, r71}};                                       \
            store_tile_zmm(r_, c_, ldc_, mr, nr, acc_);                                                                \
        }                                                                                                              \
    } while (0)

// C tile[mr, nr] (+)= A[MR, 2 kc2] B[2 kc2, NR]: A a packed pair panel, pair row kp of B at
// B + boff[kp] (read in place: whole 32-column panels are read, columns past nr not stored), or
// at B + kp NR (a packed panel) when boff is NULL; inlined into both, so neither tests boff
static inline __attribute__((always_inline)) void tile_pairs(int kc2, const uint16_t *restrict a, const uint32_t *B,
                                                             const long *boff, float *c, int ldc, int mr, int nr,
                                                             int acc) {
    ROWS8(DECL)
    const uint32_t *a32 = (const uint32_t *)a;
    for (int kp = 0; kp < kc2; kp++) {
        const uint32_t *b = boff ? B + boff[kp] : B + (size_t)kp * NR;
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + 16));
#define STEPI(i)                                                                                                       \
    {                                                                                                                  \
        __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a32[kp * MR + i]);                                             \
        r##i##0 = _mm512_dpbf16_ps(r##i##0, ai, b0);                                                                   \
        r##i##1 = _mm512_dpbf16_ps(r##i##1, ai, b1);                                                                   \
    }
        ROWS8(STEPI)
    }
    STORE_TILE(c, ldc, mr, nr, acc);
}

static void micro_kernel(int kc2, const uint16_t *restrict a, const uint16_t *restrict b, float *c, int ldc, int mr,
                         int nr, int acc) {
    tile_pairs(kc2, a, (const uint32_t *)b, NULL, c, ldc, mr, nr, acc);
}

static void micro_kernel_rows(int kc2, const uint16_t *restrict a, const uint32_t *B, const long *boff, float *c,
                              int ldc, int mr, int nr, int acc) {
    tile_pairs(kc2, a, B, boff, c, ldc, mr, nr, acc);
}

// C tile[mr, nr] (+)= A[MR, 2 kc2] B[2 kc2, NR] with A read in place in bf16: the pairs of row i
// from a[i] (any 2-byte alignment; rows past mr repeat row 0, their results are not stored)
static void micro_kernel_a16(int kc2, const uint16_t *const *a, const uint16_t *restrict b, float *c, int ldc, int mr,
                             int nr, int acc) {
    ROWS8(DECL)
    for (int kp = 0; kp < kc2; kp++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(b + (size_t)kp * NR * 2));
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + (size_t)kp * NR * 2 + 32));
#define STEPA(i)                                                                                                       \
    {                                                                                                                  \
        int32_t pair;                                                                                                  \
        memcpy(&pair, a[i] + 2 * kp, 4);                                                                               \
        __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);                                                               \
        r##i##0 = _mm512_dpbf16_ps(r##i##0, ai, b0);                                                                   \
        r##i##1 = _mm512_dpbf16_ps(r##i##1, ai, b1);                                                                   \
    }
        ROWS8(STEPA)
    }
    STORE_TILE(c, ldc, mr, nr, acc);
}

// Rows whose whole vectors stay inside the source span [0, (rows - 1) lds + n) and the destination
// [0, rows ldd) are converted with unmasked vectors only: the lanes past n spill into the gap and
// the rows below, which the zero fill and the next rows then overwrite (rows in order). The last
// rows take masked tails (on Zen 5 a masked load or store of a partial vector costs about as much as
// the conversion of a whole row of 28).
// Returns where row r's unmasked vectors end: n rounded up to 16 when they may spill, else down.
static inline size_t unmasked_end(int r, int rows, size_t lds, size_t ldd, size_t n) {
    size_t nv = (n + 15) / 16 * 16;
    int spill = (size_t)r * lds + nv <= (size_t)(rows - 1) * lds + n && (size_t)r * ldd + nv <= (size_t)rows * ldd;
    return spill ? nv : n / 16 * 16;
}

// The lanes of a row's last unmasked vector (ending at e) to keep: when it spilled (e >= n) and covers
// the zero fill (ldd <= e), only those below n, the rest zeroed in the register (a fill loop would
// cost a memset call per row); else all
static inline __mmask16 spill_zeroes(size_t e, size_t n, size_t ldd) {
    return e >= n && ldd <= e && e > 0 ? first_lanes(n, e - 16) : 0xFFFF;
}

void gemm_bf16_round_avx512bf16(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, size_t n) {
    for (int r = 0; r < rows; r++, dst += ldd, src += lds) {
        size_t i = 0, e = unmasked_end(r, rows, lds, ldd, n);
        __mmask16 last = spill_zeroes(e, n, ldd);
        for (; i < e; i += 16) // whole vectors unmasked (full-mask loads measured slower on Zen 5)
            _mm256_storeu_si256((__m256i *)(dst + i),
                                (__m256i)_mm512_maskz_cvtneps_pbh(i + 16 < e ? 0xFFFF : last, _mm512_loadu_ps(src + i)));
        if (e >= n) { // all of the row stored (lanes past n spilled): the zero fill after them, if not done
            for (i = e < ldd ? n : ldd; i < ldd; i++) dst[i] = 0;
            continue;
        }
        for (; i < ldd; i += 16) { // lanes past n: zeros; past ldd: not stored
            __mmask16 ml = first_lanes(n, i), ms = first_lanes(ldd, i);
            _mm256_mask_storeu_epi16(dst + i, ms, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(ml, src + i)));
        }
    }
}

void gemm_a16_core_avx512bf16(int transB, int M, int N, int K, const uint16_t *A, int lda, const long *aoff,
                              const float *B, int ldb, const long *boff, const uint32_t *Bq, int ldq, float *C, int ldc,
                              int accumulate) {
    int kc_step = k_step(K);
    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += kc_step) {
            int kc = K - pc < kc_step ? K - pc : kc_step, kc2 = (kc + 1) / 2;
            int acc = accumulate || pc > 0;
            if (Bq) pack_b_q(Bq, ldq, pc, kc, jc, nc); // zero pairs past kc: an odd K's extra A value meets 0
            else pack_b(transB, B, ldb, boff, pc, kc, jc, nc);
            for (int ir = 0; ir < M; ir += MR) {
                int mr = M - ir < MR ? M - ir : MR;
                const uint16_t *arows[MR];
                for (int i = 0; i < MR; i++) {
                    long r = ir + (i < mr ? i : 0);
                    arows[i] = (aoff ? A + aoff[r] : A + (size_t)r * lda) + pc;
                }
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    micro_kernel_a16(kc2, arows, packB + (size_t)jr * kc2 * 2, C + (size_t)ir * ldc + jc + jr, ldc, mr,
                                     nr, acc);
                }
            }
        }
    }
}

void gemm_bf16_pairs_avx512bf16(uint32_t *dst, size_t ldd, const float *lo, const float *hi, size_t lds, int rows,
                                size_t n) {
    const __m512i inter = pair_interleave();
    for (int r = 0; r < rows; r++, dst += ldd, lo += lds, hi = hi ? hi + lds : NULL) {
        size_t i = 0, e = unmasked_end(r, rows, lds, ldd, n); // as in gemm_bf16_round
        __mmask16 last = spill_zeroes(e, n, ldd);
        for (; i < e; i += 16) {
            __mmask16 k = i + 16 < e ? 0xFFFF : last;
            __m512 x1 = hi ? _mm512_loadu_ps(hi + i) : _mm512_setzero_ps();
            __m512bh h = _mm512_maskz_cvtne2ps_pbh((__mmask32)k << 16 | k, x1, _mm512_loadu_ps(lo + i));
            _mm512_storeu_si512((void *)(dst + i), _mm512_permutexvar_epi16(inter, (__m512i)h));
        }
        if (e >= n) {
            for (i = e < ldd ? n : ldd; i < ldd; i++) dst[i] = 0;
            continue;
        }
        for (; i < ldd; i += 16) { // lanes past n: zero pairs; past ldd: not stored
            __mmask16 ml = first_lanes(n, i), ms = first_lanes(ldd, i);
            __m512 x0 = _mm512_maskz_loadu_ps(ml, lo + i);
            __m512 x1 = hi ? _mm512_maskz_loadu_ps(ml, hi + i) : _mm512_setzero_ps();
            __m512i v = _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
            _mm512_mask_storeu_epi32(dst + i, ms, v);
        }
    }
}

void gemm_pairs_core_avx512bf16(int M, int N, int K, const float *Ap, const uint32_t *B, const long *boff, float *C,
                                int ldc, int accumulate) {
    int kc_step = k_step(K), Mr = (M + MR - 1) / MR * MR;
    for (int pc = 0; pc < K; pc += kc_step) { // K even: every chunk holds whole pairs
        int kc = K - pc < kc_step ? K - pc : kc_step, kc2 = kc / 2;
        int acc = accumulate || pc > 0;
        for (int ic = 0; ic < M; ic += MC) {
            int mc = M - ic < MC ? M - ic : MC;
            const uint16_t *ablock = (const uint16_t *)Ap + (size_t)pc * Mr + (size_t)ic * kc2 * 2;
            for (int jr = 0; jr < N; jr += NR) {
                int nr = N - jr < NR ? N - jr : NR;
                for (int ir = 0; ir < mc; ir += MR) {
                    int mr = mc - ir < MR ? mc - ir : MR;
                    micro_kernel_rows(kc2, ablock + (size_t)ir * kc2 * 2, B + jr, boff + pc / 2,
                                      C + (size_t)(ic + ir) * ldc + jr, ldc, mr, nr, acc);
                }
            }
        }
    }
}

// Pre-packed A (gemm_pack_a): for each K chunk [pc, pc + kc), the pair panels of all M rows at
// Ap + pc Mr bf16 (Mr = M rounded up to MR; every chunk but the last has an even kc).
size_t gemm_packed_a_floats_avx512bf16(int M, int K) {
    size_t Mr = (size_t)(M + MR - 1) / MR * MR, Kp = (size_t)(K > 0 ? K + 1 : 0) / 2 * 2;
    return (Mr * Kp + 1) / 2 + 16;
}

void gemm_pack_a_avx512bf16(int transA, int M, int K, const float *A, int lda, float *Ap) {
    int Mr = (M + MR - 1) / MR * MR, kc_step = k_step(K);
    for (int pc = 0; pc < K; pc += kc_step) {
        int kc = K - pc < kc_step ? K - pc : kc_step;
        pack_a((uint16_t *)Ap + (size_t)pc * Mr, transA, A, lda, NULL, 0, M, pc, kc);
    }
}

void gemm_core_avx512bf16(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
                          const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate) {
    int kc_step = k_step(K), Mr = (M + MR - 1) / MR * MR;
    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += kc_step) {
            int kc = K - pc < kc_step ? K - pc : kc_step, kc2 = (kc + 1) / 2;
            int acc = accumulate || pc > 0;
            pack_b(transB, B, ldb, boff, pc, kc, jc, nc);
            for (int ic = 0; ic < M; ic += MC) {
                int mc = M - ic < MC ? M - ic : MC;
                const uint16_t *ablock = Ap ? (const uint16_t *)Ap + (size_t)pc * Mr + (size_t)ic * kc2 * 2 : packA;
                if (!Ap) pack_a(packA, transA, A, lda, aoff, ic, mc, pc, kc);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = nc - jr < NR ? nc - jr : NR;
                    const uint16_t *bp = packB + (size_t)jr * kc2 * 2;
                    for (int ir = 0; ir < mc; ir += MR) {
                        int mr = mc - ir < MR ? mc - ir : MR;
                        if (acc) { // the next tile's C rows, one tile ahead: C is often an activation out of cache
                            int nir = ir + MR < mc ? ir + MR : 0, njr = ir + MR < mc ? jr : jr + NR;
                            if (njr < nc)
                                for (int i = 0; i < MR && nir + i < mc; i++) {
                                    const float *cn = C + (size_t)(ic + nir + i) * ldc + jc + njr;
                                    _mm_prefetch((const char *)cn, _MM_HINT_T0);
                                    _mm_prefetch((const char *)(cn + 16), _MM_HINT_T0);
                                }
                        }
                        micro_kernel(kc2, ablock + (size_t)ir * kc2 * 2, bp, C + (size_t)(ic + ir) * ldc + jc + jr, ldc,
                                     mr, nr, acc);
                    }
                }
            }
        }
    }
}
#if defined(__clang__)
#pragma clang attribute pop
#endif
