// attention_bf16.c: the flash-attention tiles in bf16 mixed precision (CPUs with AVX512_BF16), for
// heads whose width D is a multiple of 16 (wide) or even and at most NARROW_D (narrow). The tiles, the Cauchy-Schwarz shift and the fp32
// softmax are those of the fp32 kernels (attention_tiles_body.h); the products take bf16 inputs
// (rounded to nearest even, as VCVTNE2PS2BF16 does) and VDPBF16PS sums two of them per fp32 lane:
//   forward   s = q . k over pairs of d, O += P V over pairs of keys;
//   backward  s and dP = dO . v over pairs of d, dQ += dS K over pairs of keys,
//             dV += P^T dO and dK += dS^T Q over pairs of queries.
// P and dS are rounded to bf16 for the products they feed; their sums (l, dS itself) stay fp32.
// Narrow heads keep the 16 keys of a panel in the lanes throughout (as the fp32 narrow tiles do):
//   O += P V and dQ += dS K over pairs of neighbouring keys, a block of two panels at a time,
//   dV += P^T dO and dK += dS^T Q over the pair of queries of a tile.
// A pair holds two bf16 values, the first in the low half of 32 bits; one broadcast pair meets a
// 512-bit row of 16 pairs.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")
#endif
#include "kernels/attention_tiles.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#include "kernels/vec.h"

#define R FLASH_R // queries per tile (even: the products over queries take them in pairs)
#define RN 2       // queries per narrow forward tile
#define RN_MAX 4   // queries per narrow backward tile (pairs): 4 for heads up to 4 wide, else 2
static int narrow_rows_bwd(int D) { return D <= 4 ? 4 : 2; }
#define AI inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))
typedef uint32_t pair;

// word 2j <- word j, word 2j + 1 <- word 16 + j: two rows of 16 bf16 into 16 pairs
static const uint16_t interleave_words[32] __attribute__((aligned(64))) = {
    0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// the 16 pairs (lo[j], hi[j])
static AI __m512i pairs16(__m512 lo, __m512 hi) {
    return _mm512_permutexvar_epi16(_mm512_load_si512(interleave_words), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

static AI __m512 dp(__m512 acc, pair a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_set1_epi32((int)a), (__m512bh)b);
}

// after the stores of a tile's bf16 copies: read them back from memory as broadcasts, not (as
// GCC would) as lanes shuffled out of the registers that were stored
#define RELOAD() __asm__ volatile("" ::: "memory")

static AI __mmask16 first(int n) { return (__mmask16)((1u << n) - 1); }

static AI float bf16_float(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

// zeros past N in the panel starting at key j0 (none at all from N on)
static AI __mmask16 keys_from(int j0, int N) { return j0 >= N ? 0 : first(N - j0 < 16 ? N - j0 : 16); }

// t[p][e][j] = (a X[2e][16p + j], a X[2e + 1][16p + j]) for e < D/2 and p < np: X [D, N] in
// panels of 16 keys (or queries), pairs over d (D/2 x 16 pairs per panel), zeros from N on;
// n2 (if not NULL) [16 np]: n2[j] = |t[.][j]|^2, of the rounded values
static void pairs_over_d(pair *t, float *n2, const float *X, int D, int N, int np, float a) {
    __m512 va = _mm512_set1_ps(a);
    const __m512i hi16 = _mm512_set1_epi32((int)0xffff0000u);
    for (int j0 = 0; j0 < 16 * np; j0 += 16) {
        __mmask16 m = keys_from(j0, N);
        __m512 s2 = _mm512_setzero_ps();
        for (int e = 0; e < D / 2; e++, t += 16) {
            __m512 lo = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, X + (size_t)2 * e * N + j0));
            __m512 hi = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, X + (size_t)(2 * e + 1) * N + j0));
            __m512i w = pairs16(lo, hi);
            _mm512_storeu_si512(t, w);
            lo = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
            hi = _mm512_castsi512_ps(_mm512_and_si512(w, hi16));
            s2 = _mm512_fmadd_ps(lo, lo, _mm512_fmadd_ps(hi, hi, s2));
        }
        if (n2) _mm512_storeu_ps(n2 + j0, s2);
    }
}

// t[p][e][d] = (X[d][16p + 2e], X[d][16p + 2e + 1]) for e < 8 and p < np: X [D, N] in panels of
// 16 keys, pairs over keys (8 x D pairs per panel), zeros from N on
static void pairs_over_keys(pair *t, const float *X, int D, int N, int np) {
    pair rows[16][8]; // 16 rows of d, each 8 pairs of keys
    for (int j0 = 0; j0 < 16 * np; j0 += 16, t += 8 * (size_t)D) {
        __mmask16 m = keys_from(j0, N);
        for (int d0 = 0; d0 < D; d0 += 16) {
            int nd = D - d0 < 16 ? D - d0 : 16;
            for (int k = 0; k < nd; k++)
                _mm256_storeu_si256((__m256i *)rows[k], (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, X + (size_t)(d0 + k) * N + j0)));
            for (int e = 0; e < 8; e++)
                for (int k = 0; k < nd; k++) t[e * D + d0 + k] = rows[k][e];
        }
    }
}

// t[b][d][w] = X[d][32 b + w] for w < 32 and b < nb: X [D, N] in blocks of 32 keys, as the 16
// pairs of neighbouring keys (2w', 2w' + 1) that a VDPBF16PS lane sums; zeros from N on
static void key_blocks(pair *t, const float *X, int D, int N, int nb) {
    for (int j0 = 0; j0 < 32 * nb; j0 += 32)
        for (int d = 0; d < D; d++, t += 16) {
            const float *x = X + (size_t)d * N + j0;
            __m512 lo = _mm512_maskz_loadu_ps(keys_from(j0, N), x), hi = _mm512_maskz_loadu_ps(keys_from(j0 + 16, N), x + 16);
            _mm512_storeu_si512(t, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
}

// s[r] = c[r] + sum_e a[r][16 e] . panel[e][0..16) over D/2 pairs of d: R rows of scores; a[r]:
// query r's column in a panel of pairs_over_d
static AI void scores_rows(__m512 *s, const float *c, const pair *const *a, const pair *panel, int D, int rows) {
    for (int r = 0; r < rows; r++) s[r] = _mm512_set1_ps(c[r]);
    for (int e = 0; e < D / 2; e++) {
        __m512i b = _mm512_loadu_si512(panel + e * 16);
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++) s[r] = dp(s[r], a[r][16 * e], b);
    }
}
#define scores(s, c, a, panel, D) scores_rows(s, c, a, panel, D, R)

// the columns of queries i .. i + rows - 1 in pairs_over_d panels
static AI void query_columns(const pair **a, const pair *t, int i, int D, int rows) {
    for (int r = 0; r < rows; r++) a[r] = t + (size_t)((i + r) / 16) * 8 * D + (i + r) % 16;
}

// valid keys in panel p of np (the last holds nt; none past it)
static AI int panel_keys(int p, int np, int nt) { return p < np - 1 ? 16 : p == np - 1 ? nt : 0; }

// x <- 2^x (arguments <= 0), keys from n on (past N) zeroed
static AI void exp_keys(__m512 *x, int n) {
    v16f v = (v16f)*x;
    exp2_16_neg(&v);
    *x = n < 16 ? _mm512_maskz_mov_ps(first(n), (__m512)v) : (__m512)v;
}

// a[r] += sum_e t[r][e] x[e][0..16) (x rows ldx pairs apart): 16 columns of R rows, over 16 keys
// in 8 pairs; t: [R][8] pairs of keys per query
static AI void keys_product_regs(__m512 *a, const pair *t, const pair *x, int ldx) {
    for (int e = 0; e < 8; e++) {
        __m512i xe = _mm512_loadu_si512(x + e * ldx);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) a[r] = dp(a[r], t[r * 8 + e], xe);
    }
}

// the same on acc[r][0..16) in memory (rows ld apart)
static AI void keys_product(float *acc, int ld, const pair *t, const pair *x, int ldx) {
    __m512 a[R];
    for (int r = 0; r < R; r++) a[r] = _mm512_loadu_ps(acc + r * ld);
    keys_product_regs(a, t, x, ldx);
    for (int r = 0; r < R; r++) _mm512_storeu_ps(acc + r * ld, a[r]);
}

// acc[d][0..16) += sum_rp x[rp][d] t[rp] for d < D (the 16 keys of a panel in the lanes), over
// R/2 pairs of queries: t[rp] the 16 pairs (t_2rp,j, t_2rp+1,j), x [R/2][D] pairs of queries
static AI void queries_product(float *acc, const __m512i *t, const pair *x, int D) {
    for (int d = 0; d < D; d++) {
        __m512 a = _mm512_loadu_ps(acc + d * 16);
        for (int q = 0; q < R / 2; q++) a = dp(a, x[q * D + d], t[q]);
        _mm512_storeu_ps(acc + d * 16, a);
    }
}

// One forward tile: R queries q2 (columns of pairs_over_d panels, scaled to log2 units) with shifts
// -nm[r], against np panels of k2 (pairs_over_d) and v2 (pairs_over_keys), the last with nt keys:
// ob[r][d] = sum_j p_rj v_j[d], l[r] = sum_j p_rj, p_rj = 2^(q_r . k_j - m_r).
static AI void tile_forward_at(float *ob, float *l, const pair *const *q2, const float *nm, const pair *k2, const pair *v2,
                               int D, int np, int nt, uint16_t *pt) {
    __m512 sum[R], o16[R]; // o16: ob of heads 16 wide, in registers across the panels
    for (int r = 0; r < R; r++) sum[r] = o16[r] = _mm512_setzero_ps();
    if (D != 16)
        for (int i = 0; i < R * D; i++) ob[i] = 0.0f;
    for (int p = 0; p < np; p++) {
        const pair *k = k2 + (size_t)p * 8 * D, *v = v2 + (size_t)p * 8 * D;
        __m512 s[R];
        scores(s, nm, q2, k, D);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            exp_keys(&s[r], p == np - 1 ? nt : 16);
            sum[r] = _mm512_add_ps(sum[r], s[r]);
        }
        for (int r = 0; r < R; r += 2) _mm512_storeu_si512(pt + r * 16, (__m512i)_mm512_cvtne2ps_pbh(s[r + 1], s[r]));
        RELOAD();
        if (D == 16) keys_product_regs(o16, (const pair *)pt, v, 16);
        else for (int c = 0; c < D; c += 16) keys_product(ob + c, D, (const pair *)pt, v + c, D);
    }
    if (D == 16) for (int r = 0; r < R; r++) _mm512_storeu_ps(ob + r * 16, o16[r]);
    for (int r = 0; r < R; r++) { v16f x = (v16f)sum[r]; l[r] = hsum16(&x); }
}

#define FWD_ARGS float *ob, float *l, const pair *const *q2, const float *nm, const pair *k2, const pair *v2, int np, int nt, uint16_t *pt
#define FWD_PASS ob, l, q2, nm, k2, v2, np, nt, pt
static NOINLINE void tile_forward16(FWD_ARGS) { tile_forward_at(ob, l, q2, nm, k2, v2, 16, np, nt, pt); }
static NOINLINE void tile_forward32(FWD_ARGS) { tile_forward_at(ob, l, q2, nm, k2, v2, 32, np, nt, pt); }
static NOINLINE void tile_forward64(FWD_ARGS) { tile_forward_at(ob, l, q2, nm, k2, v2, 64, np, nt, pt); }
static void tile_forward(int D, FWD_ARGS) {
    switch (D) {
    case 16: tile_forward16(FWD_PASS); break;
    case 32: tile_forward32(FWD_PASS); break;
    case 64: tile_forward64(FWD_PASS); break;
    default: tile_forward_at(ob, l, q2, nm, k2, v2, D, np, nt, pt);
    }
}

// The narrow forward tile: RN queries q2 against the np panels of k2 (pairs_over_d, a panel of
// zeros past the last if np is odd) and the blocks of v32 (key_blocks), as tile_forward_at:
// o[r][d] (16 lanes) += p_r . v_d over the pairs of a block, P rounded to bf16 two panels at once.
static AI void narrow_forward_at(float *ob, float *l, const pair *const *q2, const float *nm, const pair *k2,
                                 const pair *v32, int D, int np, int nt) {
    __m512 acc[RN][NARROW_D], sum[RN];
    for (int r = 0; r < RN; r++) {
        sum[r] = _mm512_setzero_ps();
        for (int d = 0; d < D; d++) acc[r][d] = _mm512_setzero_ps();
    }
    for (int p = 0; p < np; p += 2) {
        __m512 s0[RN], s1[RN];
        __m512i pb[RN];
        scores_rows(s0, nm, q2, k2 + (size_t)p * 8 * D, D, RN);
        scores_rows(s1, nm, q2, k2 + (size_t)(p + 1) * 8 * D, D, RN);
        for (int r = 0; r < RN; r++) {
            exp_keys(&s0[r], panel_keys(p, np, nt));
            exp_keys(&s1[r], panel_keys(p + 1, np, nt));
            sum[r] = _mm512_add_ps(_mm512_add_ps(sum[r], s0[r]), s1[r]);
            pb[r] = (__m512i)_mm512_cvtne2ps_pbh(s1[r], s0[r]); // word w: key w of the block
        }
        const pair *v = v32 + (size_t)(p / 2) * 16 * D;
        for (int d = 0; d < D; d++) {
            __m512i vd = _mm512_loadu_si512(v + d * 16);
            for (int r = 0; r < RN; r++) acc[r][d] = _mm512_dpbf16_ps(acc[r][d], (__m512bh)pb[r], (__m512bh)vd);
        }
    }
    for (int r = 0; r < RN; r++) {
        v16f x = (v16f)sum[r];
        l[r] = hsum16(&x);
        for (int d = 0; d < D; d++) { x = (v16f)acc[r][d]; ob[r * D + d] = hsum16(&x); }
    }
}

static NOINLINE void narrow_forward4(FWD_ARGS) { (void)pt; narrow_forward_at(ob, l, q2, nm, k2, v2, 4, np, nt); }
static NOINLINE void narrow_forward8(FWD_ARGS) { (void)pt; narrow_forward_at(ob, l, q2, nm, k2, v2, 8, np, nt); }
static void narrow_forward(int D, FWD_ARGS) {
    switch (D) {
    case 4: narrow_forward4(FWD_PASS); break;
    case 8: narrow_forward8(FWD_PASS); break;
    default: narrow_forward_at(ob, l, q2, nm, k2, v2, D, np, nt);
    }
}

int is_flash_bf16(int D) { return D % 16 == 0 || (D <= NARROW_D && D % 2 == 0); }

size_t flash_bf16_ws_floats(int C, int N) {
    size_t np = (size_t)(N + 15) / 16;
    return 32 * R + (size_t)R * C + 32 * (np + 1) + 88 * (np + 1) * C;
}

void flash_forward_bf16(float *O, float *lse, const float *Q, const float *K, const float *V, int D, int N, float scale,
                        float *fl) {
    int np = (N + 15) / 16, nt = N - (np - 1) * 16, narrow = D <= NARROW_D, Rt = narrow ? RN : R;
    int npk = narrow ? np + (np & 1) : np; // narrow: whole blocks of two panels
    size_t n8 = (size_t)np * 8 * D;
    uint16_t *pt = (uint16_t *)fl;                       // [R][16] bf16
    float *ob = fl + 8 * R, *qn2 = ob + R * D, *kn2 = qn2 + 16 * (np + 1); // [R][D]; norms
    pair *qt = (pair *)(kn2 + 16 * (np + 1)), *k2 = qt + n8 + 8 * D, *v2 = k2 + n8 + 8 * D;
    // the queries in panels like the keys, with a panel of zeros for the last tile to overrun;
    // scores in log2 units: exp(x) = 2^(x log2 e)
    pairs_over_d(qt, qn2, Q, D, N, np + 1, scale * LOG2E);
    pairs_over_d(k2, kn2, K, D, N, npk, 1.0f);
    if (narrow) key_blocks(v2, V, D, N, npk / 2);
    else pairs_over_keys(v2, V, D, N, np);
    float kmax = 0.0f; // max_j |k_j| (zero keys past N)
    for (int j = 0; j < 16 * np; j++) kmax = kn2[j] > kmax ? kn2[j] : kmax;
    kmax = sqrtf(kmax);
    for (int i = 0; i < N; i += Rt) {
        float m[R], nm[R], l[R];
        const pair *q2[R]; // rows past N: zeros (not stored)
        query_columns(q2, qt, i, D, Rt);
        for (int r = 0; r < Rt; r++) {
            m[r] = sqrtf(qn2[i + r]) * kmax;
            nm[r] = -m[r];
        }
        if (narrow) narrow_forward(D, ob, l, q2, nm, k2, v2, np, nt, pt);
        else tile_forward(D, ob, l, q2, nm, k2, v2, np, nt, pt);
        int redo = 0;
        for (int r = 0; r < Rt && i + r < N; r++)
            if (!(l[r] >= 1e-25f)) { // underflow (or NaN): shift by the true row max
                const uint16_t *q = (const uint16_t *)q2[r];
                float mx = -INFINITY;
                for (int j = 0; j < N; j++) {
                    const uint16_t *k = (const uint16_t *)(k2 + (size_t)(j / 16) * 8 * D + j % 16);
                    float sj = 0.0f;
                    for (int d = 0; d < D; d++) sj += bf16_float(q[(d / 2) * 32 + d % 2]) * bf16_float(k[(d / 2) * 32 + d % 2]);
                    mx = sj > mx ? sj : mx;
                }
                if (mx == mx && mx != m[r]) { m[r] = mx; nm[r] = -mx; redo = 1; }
            }
        if (redo) {
            if (narrow) narrow_forward(D, ob, l, q2, nm, k2, v2, np, nt, pt);
            else tile_forward(D, ob, l, q2, nm, k2, v2, np, nt, pt);
        }
        flash_write_rows(O, lse, ob, l, m, D, N, i, N - i < Rt ? N - i : Rt);
    }
}

// One backward tile against all np key panels: p_rj = 2^(qs_r . k_j + nl_r) and
// ds_rj = scale p_rj (g_r . v_j - dd_r), zero for keys past N; dq[r] =
// sum_j ds_rj k_j, dk_j += sum_r ds_rj q_r, dv_j += sum_r p_rj g_r, dk and dv in key panels
// ([np][D][16], as key_panels). qs2, g2: the columns of q scaled by scale log2(e) and of dO in
// pairs_over_d panels; qr, gr: [R/2][D] pairs over queries of q and dO; k2, v2: pairs_over_d of K
// and V; kt2: pairs_over_keys of K; pt, dt: [R][16] bf16 of p and ds. Rows past N have q and dO
// zero and nl = dd = 0: p = 1 and ds = 0, which add nothing to dk and dv (and no overflow).
static AI void tile_backward_at(float *dq, float *dkt, float *dvt, const pair *const *qs2, const pair *const *g2, const pair *qr,
                                const pair *gr, const float *nl, const float *ndd, const pair *k2,
                                const pair *v2, const pair *kt2, int D, int np, int nt, float scale, uint16_t *pt,
                                uint16_t *dt) {
    for (int i = 0; i < R * D; i++) dq[i] = 0.0f;
    for (int p = 0; p < np; p++) {
        size_t po = (size_t)p * 8 * D;
        float *dkp = dkt + 2 * po, *dvp = dvt + 2 * po;
        __m512i pr[R / 2], dr[R / 2]; // p and ds in pairs of queries
        __m512 s[R], t[R];
        scores(s, nl, qs2, k2 + po, D); // p = 2^(qs . k + nl)
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) exp_keys(&s[r], p == np - 1 ? nt : 16);
        scores(t, ndd, g2, v2 + po, D); // ds = scale p (g . v - dd)
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) t[r] = _mm512_mul_ps(_mm512_mul_ps(s[r], t[r]), _mm512_set1_ps(scale));
        for (int r = 0; r < R; r += 2) {
            _mm512_storeu_si512(pt + r * 16, (__m512i)_mm512_cvtne2ps_pbh(s[r + 1], s[r]));
            _mm512_storeu_si512(dt + r * 16, (__m512i)_mm512_cvtne2ps_pbh(t[r + 1], t[r]));
            pr[r / 2] = pairs16(s[r], s[r + 1]);
            dr[r / 2] = pairs16(t[r], t[r + 1]);
        }
        RELOAD();
        for (int c = 0; c < D; c += 16) keys_product(dq + c, D, (const pair *)dt, kt2 + po + c, D); // dq[r] += sum_j ds_rj k_j
        queries_product(dvp, pr, gr, D); // dv_j += sum_r p_rj g_r
        queries_product(dkp, dr, qr, D); // dk_j += sum_r ds_rj q_r
    }
}

#define BWD_ARGS float *dq, float *dkt, float *dvt, const pair *const *qs2, const pair *const *g2, const pair *qr, const pair *gr, \
        const float *nl, const float *ndd, const pair *k2, const pair *v2, const pair *kt2, int np, int nt, \
        float scale, uint16_t *pt, uint16_t *dt
#define BWD_PASS(D) dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, D, np, nt, scale, pt, dt
static NOINLINE void tile_backward16(BWD_ARGS) { tile_backward_at(BWD_PASS(16)); }
static NOINLINE void tile_backward32(BWD_ARGS) { tile_backward_at(BWD_PASS(32)); }
static NOINLINE void tile_backward64(BWD_ARGS) { tile_backward_at(BWD_PASS(64)); }
static void tile_backward(int D, BWD_ARGS) {
    switch (D) {
    case 16: tile_backward16(dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt); break;
    case 32: tile_backward32(dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt); break;
    case 64: tile_backward64(dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt); break;
    default: tile_backward_at(BWD_PASS(D));
    }
}

// The narrow backward tile: rn queries (pairs) qs2, g2 (columns of pairs_over_d panels; qr, gr:
// [rn/2][D] pairs over queries of q and dO) against the np panels of k2 and v2 (pairs_over_d, a
// panel of zeros past the last if np is odd) and the blocks of kt32 (key_blocks of K), as
// tile_backward_at: dk and dv (key panels, [np][D][16]) += over the query pairs per panel, dq[r][d]
// (16 lanes) += ds_r . k_d over the pairs of a block, dS rounded to bf16 two panels at once.
static AI void narrow_backward_at(float *dq, float *dkt, float *dvt, const pair *const *qs2, const pair *const *g2,
                                  const pair *qr, const pair *gr, const float *nl, const float *ndd, const pair *k2,
                                  const pair *v2, const pair *kt32, int D, int np, int nt, float scale, int rn) {
    __m512 acc[RN_MAX][NARROW_D];
    for (int r = 0; r < rn; r++)
        for (int d = 0; d < D; d++) acc[r][d] = _mm512_setzero_ps();
    for (int p = 0; p < np; p += 2) {
        __m512 t[2][RN_MAX];
        for (int h = 0; h < 2; h++) {
            size_t po = (size_t)(p + h) * 8 * D;
            __m512 s[RN_MAX];
            scores_rows(s, nl, qs2, k2 + po, D, rn); // p = 2^(qs . k + nl)
            for (int r = 0; r < rn; r++) exp_keys(&s[r], panel_keys(p + h, np, nt));
            scores_rows(t[h], ndd, g2, v2 + po, D, rn); // ds = scale p (g . v - dd)
            for (int r = 0; r < rn; r++) t[h][r] = _mm512_mul_ps(_mm512_mul_ps(s[r], t[h][r]), _mm512_set1_ps(scale));
            if (p + h < np) { // dv_j += sum_r p_rj g_r, dk_j += sum_r ds_rj q_r
                __m512i pp[RN_MAX / 2], dd[RN_MAX / 2];
                for (int q = 0; q < rn / 2; q++) {
                    pp[q] = pairs16(s[2 * q], s[2 * q + 1]);
                    dd[q] = pairs16(t[h][2 * q], t[h][2 * q + 1]);
                }
                float *dk = dkt + 2 * po, *dv = dvt + 2 * po;
                for (int d = 0; d < D; d++) {
                    __m512 a = _mm512_loadu_ps(dv + d * 16), b = _mm512_loadu_ps(dk + d * 16);
                    for (int q = 0; q < rn / 2; q++) {
                        a = dp(a, gr[q * D + d], pp[q]);
                        b = dp(b, qr[q * D + d], dd[q]);
                    }
                    _mm512_storeu_ps(dv + d * 16, a);
                    _mm512_storeu_ps(dk + d * 16, b);
                }
            }
        }
        __m512i db[RN_MAX]; // ds of the block, word w: key w
        for (int r = 0; r < rn; r++) db[r] = (__m512i)_mm512_cvtne2ps_pbh(t[1][r], t[0][r]);
        const pair *k = kt32 + (size_t)(p / 2) * 16 * D;
        for (int d = 0; d < D; d++) { // dq[r] += sum_j ds_rj k_j
            __m512i kd = _mm512_loadu_si512(k + d * 16);
            for (int r = 0; r < rn; r++) acc[r][d] = _mm512_dpbf16_ps(acc[r][d], (__m512bh)db[r], (__m512bh)kd);
        }
    }
    for (int r = 0; r < rn; r++)
        for (int d = 0; d < D; d++) { v16f x = (v16f)acc[r][d]; dq[r * D + d] = hsum16(&x); }
}

#define NBWD_PASS(D) dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, D, np, nt, scale, narrow_rows_bwd(D)
static NOINLINE void narrow_backward4(BWD_ARGS) { (void)pt; (void)dt; narrow_backward_at(NBWD_PASS(4)); }
static NOINLINE void narrow_backward8(BWD_ARGS) { (void)pt; (void)dt; narrow_backward_at(NBWD_PASS(8)); }
static void narrow_backward(int D, BWD_ARGS) {
    switch (D) {
    case 4: narrow_backward4(dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt); break;
    case 8: narrow_backward8(dq, dkt, dvt, qs2, g2, qr, gr, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt); break;
    default: narrow_backward_at(NBWD_PASS(D));
    }
}

void flash_backward_bf16(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *V,
                         const float *dO, const float *lse, const float *di, int D, int N, float scale, float *fl) {
    int np = (N + 15) / 16, nt = N - (np - 1) * 16, narrow = D <= NARROW_D, Rt = narrow ? narrow_rows_bwd(D) : R;
    int npk = narrow ? np + (np & 1) : np; // narrow: whole blocks of two panels
    size_t n8 = (size_t)np * 8 * D;
    uint16_t *pt = (uint16_t *)fl, *dt = pt + 16 * R;   // [R][16] bf16 each
    float *dq = fl + 32 * R;                            // [R][D]
    // the queries and dO with a panel of zeros for the last tile to overrun: in panels like the
    // keys (Q scaled, dO) and in pairs of queries ([8 (np + 1)][D])
    size_t nq = n8 + 8 * D;
    pair *qs2 = (pair *)(dq + R * D), *g2 = qs2 + nq, *qk = g2 + nq, *gk = qk + nq;
    pair *k2 = gk + nq, *v2 = k2 + nq, *kt2 = v2 + nq;
    float *dkt = (float *)(kt2 + nq), *dvt = dkt + 2 * n8;
    pairs_over_d(qs2, NULL, Q, D, N, np + 1, scale * LOG2E);
    pairs_over_d(g2, NULL, dO, D, N, np + 1, 1.0f);
    pairs_over_keys(qk, Q, D, N, np + 1);
    pairs_over_keys(gk, dO, D, N, np + 1);
    pairs_over_d(k2, NULL, K, D, N, npk, 1.0f);
    pairs_over_d(v2, NULL, V, D, N, npk, 1.0f);
    if (narrow) key_blocks(kt2, K, D, N, npk / 2);
    else pairs_over_keys(kt2, K, D, N, np);
    memset(dkt, 0, 4 * n8 * sizeof(float));
    for (int i = 0; i < N; i += Rt) {
        int rows = N - i < Rt ? N - i : Rt;
        float nl[R], ndd[R];
        for (int r = 0; r < Rt; r++) { // rows past N (zero q, dO): p = 1, ds = 0
            nl[r] = r < rows ? -lse[i + r] * LOG2E : 0.0f;
            ndd[r] = r < rows ? -di[i + r] : 0.0f;
        }
        const pair *qc[R], *gc[R];
        query_columns(qc, qs2, i, D, Rt);
        query_columns(gc, g2, i, D, Rt);
        size_t o2 = (size_t)i * (D / 2); // Rt/2 pairs of queries
        if (narrow) narrow_backward(D, dq, dkt, dvt, qc, gc, qk + o2, gk + o2, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt);
        else tile_backward(D, dq, dkt, dvt, qc, gc, qk + o2, gk + o2, nl, ndd, k2, v2, kt2, np, nt, scale, pt, dt);
        for (int r = 0; r < rows; r++)
            for (int d = 0; d < D; d++) dQ[(size_t)d * N + i + r] = dq[r * D + d];
    }
    for (int j0 = 0; j0 < N; j0 += 16) { // from key panels
        __mmask16 m = keys_from(j0, N);
        const float *dkp = dkt + (size_t)j0 * D, *dvp = dvt + (size_t)j0 * D;
        for (int d = 0; d < D; d++) {
            _mm512_mask_storeu_ps(dK + (size_t)d * N + j0, m, _mm512_loadu_ps(dkp + d * 16));
            _mm512_mask_storeu_ps(dV + (size_t)d * N + j0, m, _mm512_loadu_ps(dvp + d * 16));
        }
    }
}
#if defined(__clang__)
#pragma clang attribute pop
#endif
