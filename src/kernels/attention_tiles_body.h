// attention_tiles_body.h: the vectorised pieces of self-attention (softmax rows and the fused
// (flash) tile kernels of one head), compiled once per instruction set by tiles_<isa>.c, which
// defines TILE(name) (name_<isa>) and the target. attention_tiles.c dispatches to them.
#include "kernels/attention_tiles.h"

#include <math.h>
#include <string.h>

#include "kernels/vec.h"


// P[i][j] <- exp(P[i][j] - m) for j < n; returns sum_j (16 lanes, fixed order)
float TILE(exp_row_sum)(float *s, int n, float m) {
    v8f a = {0}, b = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        v8f x = load8(s + j) - m, y = load8(s + j + 8) - m;
        exp8_neg(&x);
        exp8_neg(&y);
        store8(s + j, x);
        store8(s + j + 8, y);
        a += x;
        b += y;
    }
    a += b;
    float sum = hsum8(&a);
    for (; j < n; j++) { s[j] = exp_approx(s[j] - m); sum += s[j]; }
    return sum;
}

// max_j s[j] for j < n (8 lanes, then the tail)
float TILE(max_row)(const float *s, int n) {
    v8f mx = V8(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f v = load8(s + j);
        mx = VSEL(v > mx, v, mx);
    }
    float m = -INFINITY;
    for (int k = 0; k < 8; k++) m = mx[k] > m ? mx[k] : m;
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    return m;
}

// one query row of the backward from its scores s and dP: p_j = exp(scale s_j - l),
// ds_j = scale p_j (dP_j - di), in place (s <- p, dp <- ds)
void TILE(p_ds_row)(float *s, float *dp, int n, float scale, float l, float di) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f p = load8(s + j) * scale - l;
        exp8_neg(&p);
        store8(s + j, p);
        store8(dp + j, p * (load8(dp + j) - di) * scale);
    }
    for (; j < n; j++) {
        s[j] = exp_approx(s[j] * scale - l);
        dp[j] = s[j] * (dp[j] - di) * scale;
    }
}

// Fused ("flash") kernels, for heads whose width D is a multiple of 16 or at most NARROW_D: a
// tile of queries x 16 keys of scores lives in registers, is exponentiated there and multiplied
// into O (or, in the backward, into dQ, dK, dV) at once, so S and P never exist beyond one tile.
// - Wide heads (D % 16 == 0) take FLASH_R queries per tile; the products over d run in 16-wide
//   chunks (a FLASH_R x 16 register tile each).
// - Narrow heads (D <= NARROW_D) have too few d for that: a product over d would load and store
//   more than it multiplies. Their kernels keep the 16 keys of a panel in the vector lanes
//   throughout, and the products over keys (O, dQ) accumulate per (query, d) in 8-lane registers
//   that are summed across lanes once per tile of NARROW_RF (forward) or NARROW_RB queries.
// Both shift the softmax by the Cauchy-Schwarz bound m_i = |q_i| max_j |k_j| >= s_ij instead of
// the row max (which would need a pass over S first): exp(s - m) / sum_j exp(s_j - m) is the same
// softmax. A row whose sum would underflow (m_i - max_j s_ij > ~57) is redone with its true max.
// queries per narrow tile, forward and backward (measured: 1 is 25% slower in the backward; 1 or
// 3-4 no better in the forward)
#define NARROW_RF 2
#define NARROW_RB 2
static int tile_rows(int D, int fwd) { return D <= NARROW_D ? (fwd ? NARROW_RF : NARROW_RB) : FLASH_R; }
#define AI inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))

// The 16 keys of a panel as one vector (p16). With AVX-512 (and in the build's own target) it is
// a 16-float vector; the AVX2 copy defines TILE_SPLIT16 and holds it as two 8-float halves, which
// GCC keeps in ymm registers (a 16-float vector without AVX-512 it keeps in memory). Lane for lane
// the same operations, so the same values.
#ifdef TILE_SPLIT16
typedef struct { v8f lo, hi; } p16;
static inline __attribute__((always_inline)) p16 p16_set1(float x) { return (p16){V8(x), V8(x)}; }
static inline __attribute__((always_inline)) p16 p16_load(const float *p) { return (p16){load8(p), load8(p + 8)}; }
static inline __attribute__((always_inline)) void p16_store(float *p, p16 v) { store8(p, v.lo); store8(p + 8, v.hi); }
static inline __attribute__((always_inline)) p16 p16_add(p16 a, p16 b) { return (p16){a.lo + b.lo, a.hi + b.hi}; }
static inline __attribute__((always_inline)) p16 p16_mul(p16 a, p16 b) { return (p16){a.lo * b.lo, a.hi * b.hi}; }
static inline __attribute__((always_inline)) p16 p16_scale(p16 a, float x) { return (p16){a.lo * x, a.hi * x}; }
// acc + a b; acc + x b (x a scalar)
static inline __attribute__((always_inline)) p16 p16_fma(p16 acc, p16 a, p16 b) {
    return (p16){acc.lo + a.lo * b.lo, acc.hi + a.hi * b.hi};
}
static inline __attribute__((always_inline)) p16 p16_fmas(p16 acc, float x, p16 b) {
    return (p16){acc.lo + V8(x) * b.lo, acc.hi + V8(x) * b.hi};
}
static inline __attribute__((always_inline)) void p16_exp2_neg(p16 *x) { exp2_8_neg(&x->lo); exp2_8_neg(&x->hi); }
static inline __attribute__((always_inline)) p16 p16_keep_first(p16 x, int n) {
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    v8i n0 = {n, n, n, n, n, n, n, n}, n1 = n0 - 8;
    return (p16){(v8f)((v8i)x.lo & (lane < n0)), (v8f)((v8i)x.hi & (lane < n1))};
}
// lane k + lane k + 8 first, then the 8 sums in order (as hsum16)
static inline __attribute__((always_inline)) float p16_hsum(const p16 *v) {
    float s = 0.0f;
    for (int k = 0; k < 8; k++) s += v->lo[k] + v->hi[k];
    return s;
}
#else
typedef v16f p16; // macros: a 64-byte vector argument would change the ABI of builds without AVX-512
#define p16_set1(x) V16(x)
#define p16_load(p) load16(p)
#define p16_store(p, v) store16(p, v)
#define p16_add(a, b) ((a) + (b))
#define p16_mul(a, b) ((a) * (b))
#define p16_scale(a, x) ((a) * (x))
#define p16_fma(acc, a, b) ((acc) + (a) * (b))
#define p16_fmas(acc, x, b) ((acc) + V16(x) * (b))
#define p16_exp2_neg(x) exp2_16_neg(x)
#define p16_keep_first(x, n) keep_first16(x, n)
#define p16_hsum(v) hsum16(v)
#endif

// x (the 16 keys of a panel, arguments <= 0) <- 2^x, keys from n on (past N) zeroed
static AI void exp_panel(p16 *x, int n) {
    p16_exp2_neg(x);
    if (n < 16) *x = p16_keep_first(*x, n);
}

// The products of the flash kernels on a tile of R queries x 16 keys (one 16-lane register per
// query), inlined into the kernels:
// s[r] = c[r] + sum_d a[r D + d] panel[d][0..16): R rows of scores against one key panel
static AI void flash_scores(p16 *s, const float *c, const float *a, const float *panel, int D, int R) {
    for (int r = 0; r < R; r++) s[r] = p16_set1(c[r]);
    for (int d = 0; d < D; d++) {
        p16 b = p16_load(panel + d * 16);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) s[r] = p16_fmas(s[r], a[r * D + d], b);
    }
}

// acc[r][0..16) (rows ld apart) += sum_j t[r][j] x[j][0..16) (rows ldx apart): over 16 keys
static AI void flash_keys_product(float *acc, int ld, const float *t, const float *x, int ldx) {
    p16 a[FLASH_R];
    for (int r = 0; r < FLASH_R; r++) a[r] = p16_load(acc + r * ld);
    for (int j = 0; j < 16; j++) {
        p16 xj = p16_load(x + j * ldx);
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) a[r] = p16_fmas(a[r], t[r * 16 + j], xj);
    }
    for (int r = 0; r < FLASH_R; r++) p16_store(acc + r * ld, a[r]);
}

// acc[j][0..16) (rows ld apart) += sum_r t[r][j] x[r][0..16) (rows ld apart): over the FLASH_R
// queries, with the x rows in registers
static AI void flash_queries_product(float *acc, const float *t, const float *x, int ld) {
    p16 xr[FLASH_R];
    for (int r = 0; r < FLASH_R; r++) xr[r] = p16_load(x + r * ld);
    for (int j = 0; j < 16; j++) {
        p16 a = p16_load(acc + j * ld);
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) a = p16_fmas(a, t[r * 16 + j], xr[r]);
        p16_store(acc + j * ld, a);
    }
}

// One tile row of the flash forward: for the FLASH_R queries q ([r][D], scaled so that s_rj =
// q_r . k_j is in log2 units) with shifts m_r = -nm[r], ob[r][d] = sum_j 2^(s_rj - m_r) v_j[d] and
// l[r] = sum_j 2^(s_rj - m_r) over the keys of the np panels of kp (key_panels) and vt
// (V^T [16 np][D]); the last panel holds nt valid keys.
static AI void flash_tile_forward(float *ob, float *l, const float *q, const float *nm, const float *kp,
                                  const float *vt, int D, int np, int nt, float *pt) {
    p16 sum[FLASH_R];
    for (int r = 0; r < FLASH_R; r++) sum[r] = p16_set1(0.0f);
    for (int i = 0; i < FLASH_R * D; i++) ob[i] = 0.0f;
    for (int p = 0; p < np; p++) {
        const float *k = kp + (size_t)p * 16 * D, *v = vt + (size_t)p * 16 * D;
        p16 s[FLASH_R];
        flash_scores(s, nm, q, k, D, FLASH_R); // s[r][j] - m_r
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) { // p = 2^(s - m)
            exp_panel(&s[r], p == np - 1 ? nt : 16);
            sum[r] = p16_add(sum[r], s[r]);
            p16_store(pt + r * 16, s[r]);
        }
        // ob[r][c..c+16) += sum_j p[r][j] v_j[c..c+16)
        for (int c = 0; c < D; c += 16) flash_keys_product(ob + c, D, pt, v + c, D);
    }
    for (int r = 0; r < FLASH_R; r++) l[r] = p16_hsum(&sum[r]);
}

// The narrow forward tile: as flash_tile_forward for NARROW_RF queries, with V as key panels vp
static AI void narrow_tile_forward(float *ob, float *l, const float *q, const float *nm, const float *kp,
                                   const float *vp, int D, int np, int nt) {
    p16 acc[NARROW_RF][NARROW_D], sum[NARROW_RF]; // acc[r][d]: lanes of sum_j p_rj v_j[d]
    for (int r = 0; r < NARROW_RF; r++) {
        sum[r] = p16_set1(0.0f);
        for (int d = 0; d < D; d++) acc[r][d] = p16_set1(0.0f);
    }
    for (int p = 0; p < np; p++) {
        const float *k = kp + (size_t)p * 16 * D, *v = vp + (size_t)p * 16 * D;
        p16 s[NARROW_RF];
        flash_scores(s, nm, q, k, D, NARROW_RF);
        for (int r = 0; r < NARROW_RF; r++) {
            exp_panel(&s[r], p == np - 1 ? nt : 16);
            sum[r] = p16_add(sum[r], s[r]);
            for (int d = 0; d < D; d++) acc[r][d] = p16_fma(acc[r][d], s[r], p16_load(v + d * 16));
        }
    }
    for (int r = 0; r < NARROW_RF; r++) {
        l[r] = p16_hsum(&sum[r]);
        for (int d = 0; d < D; d++) ob[r * D + d] = p16_hsum(&acc[r][d]);
    }
}

// the tile kernels compiled for D = 4, 8, 16, 32, 64 (constant trip counts) and for any other D;
// vx: V^T (wide heads) or key_panels(V) (narrow)
#define TILE_FWD_ARGS float *ob, float *l, const float *q, const float *nm, const float *kp, const float *vx, int np, int nt, float *pt
#define FLASH_FWD(D) flash_tile_forward(ob, l, q, nm, kp, vx, D, np, nt, pt)
#define NARROW_FWD(D) narrow_tile_forward(ob, l, q, nm, kp, vx, D, np, nt)
#define TILE_FWD_PASS ob, l, q, nm, kp, vx, np, nt, pt
// The specialised kernels name4 .. name64 and the dispatcher name(D, ...) over them; widths not
// listed run the generic kernel. One list for the forward and the backward, so they cannot differ.
#define TILE_KERNELS(name, ARGS, PASS, NARROW, FLASH, UNUSED_NARROW)                                 \
    static NOINLINE void name##4(ARGS) { UNUSED_NARROW; NARROW(4); }                                \
    static NOINLINE void name##8(ARGS) { UNUSED_NARROW; NARROW(8); }                                \
    static NOINLINE void name##16(ARGS) { FLASH(16); }                                              \
    static NOINLINE void name##32(ARGS) { FLASH(32); }                                              \
    static NOINLINE void name##64(ARGS) { FLASH(64); }                                              \
    static NOINLINE void name(int D, ARGS) {                                                        \
        switch (D) {                                                                                \
        case 4: name##4(PASS); break;                                                               \
        case 8: name##8(PASS); break;                                                               \
        case 16: name##16(PASS); break;                                                             \
        case 32: name##32(PASS); break;                                                             \
        case 64: name##64(PASS); break;                                                             \
        default: if (D <= NARROW_D) NARROW(D); else FLASH(D);                                       \
        }                                                                                           \
    }
TILE_KERNELS(tile_forward, TILE_FWD_ARGS, TILE_FWD_PASS, NARROW_FWD, FLASH_FWD, (void)pt)

// Flash forward of one head (is_flash(D)): O[d][i] = sum_j P_ij V[d][j] with
// P = softmax_j(scale q_i . k_j), lse[i] = log sum_j exp(scale q_i . k_j), computed in base 2
// (exp2_8_neg). kp = key_panels(K);
// vx = V^T [16 np][D] with rows past N zero (wide heads) or key_panels(V) (narrow);
// fl: flash_ws_floats scratch.
void TILE(flash_forward)(float *O, float *lse, const float *Q, const float *kp, const float *vx, int D, int N,
                          float scale, float *fl) {
    int R = tile_rows(D, 1), np = (N + 15) / 16, nt = N - (np - 1) * 16;
    float *pt = fl, *q = fl + 2 * FLASH_R * 16, *ob = q + 2 * FLASH_R * D;
    float kmax = 0.0f; // max_j |k_j|
    for (int j = 0; j < N; j++) {
        const float *k = kp + (size_t)(j / 16) * 16 * D + j % 16;
        float n2 = 0.0f;
        for (int d = 0; d < D; d++) n2 += k[d * 16] * k[d * 16];
        kmax = n2 > kmax ? n2 : kmax;
    }
    kmax = sqrtf(kmax);
    float qscale = scale * LOG2E; // scores in log2 units: exp(x) = 2^(x log2 e)
    for (int i = 0; i < N; i += R) {
        float m[FLASH_R], nm[FLASH_R], l[FLASH_R];
        for (int r = 0; r < R; r++) { // rows past N repeat row N - 1 (not stored)
            int ir = i + r < N ? i + r : N - 1;
            float n2 = 0.0f;
            for (int d = 0; d < D; d++) {
                float x = Q[(size_t)d * N + ir] * qscale;
                q[r * D + d] = x;
                n2 += x * x;
            }
            m[r] = sqrtf(n2) * kmax;
            nm[r] = -m[r];
        }
        tile_forward(D, ob, l, q, nm, kp, vx, np, nt, pt);
        int redo = 0;
        for (int r = 0; r < R; r++)
            if (!(l[r] >= 1e-25f)) { // underflow (or NaN): shift by the true row max
                float mx = -INFINITY;
                for (int j = 0; j < N; j++) {
                    const float *k = kp + (size_t)(j / 16) * 16 * D + j % 16;
                    float sj = 0.0f;
                    for (int d = 0; d < D; d++) sj += q[r * D + d] * k[d * 16];
                    mx = sj > mx ? sj : mx;
                }
                if (mx == mx && mx != m[r]) { m[r] = mx; nm[r] = -mx; redo = 1; }
            }
        if (redo) tile_forward(D, ob, l, q, nm, kp, vx, np, nt, pt);
        flash_write_rows(O, lse, ob, l, m, D, N, i, N - i < R ? N - i : R);
    }
}

// One query tile of the flash backward (flash_backward) against all np key panels: with
// p_rj = exp(scale q_r . k_j - lse_r) = 2^(qs_r . k_j + nl_r) and ds_rj = scale p_rj (g_r . v_j - dd_r)
// (zero for keys past N and rows r >= rows): dq[r] = sum_j ds_rj k_j, dkt[j] += sum_r ds_rj q_r,
// dvt[j] += sum_r p_rj g_r. q, qs, g: [FLASH_R][D] rows of Q, of Q scaled by scale log2(e), and of
// dO; nl_r = -lse_r log2(e); ndd_r = -dd_r; kp, vp: key panels of K and V; kt: K^T [16 np][D];
// pt, dst: FLASH_R x 16 tiles of scratch.
static AI void flash_tile_backward(float *dq, float *dkt, float *dvt, const float *q, const float *qs,
                                   const float *g, const float *nl, const float *ndd, int rows, const float *kp,
                                   const float *vp, const float *kt, int D, int np, int nt, float scale, float *pt,
                                   float *dst) {
    for (int i = 0; i < FLASH_R * D; i++) dq[i] = 0.0f;
    for (int p = 0; p < np; p++) {
        size_t po = (size_t)p * 16 * D;
        const float *k = kp + po, *v = vp + po, *ktp = kt + po;
        float *dkp = dkt + po, *dvp = dvt + po;
        p16 s[FLASH_R];
        flash_scores(s, nl, qs, k, D, FLASH_R); // p = 2^(qs . k + nl)
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) {
            exp_panel(&s[r], p == np - 1 ? nt : 16);
            if (r >= rows) s[r] = p16_set1(0.0f);
            p16_store(pt + r * 16, s[r]);
        }
        flash_scores(s, ndd, g, v, D, FLASH_R); // ds = scale p (g . v - dd)
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) p16_store(dst + r * 16, p16_scale(p16_mul(p16_load(pt + r * 16), s[r]), scale));
        for (int c = 0; c < D; c += 16) {
            flash_keys_product(dq + c, D, dst, ktp + c, D); // dq[r] += sum_j ds_rj k_j (rows of K^T)
            flash_queries_product(dvp + c, pt, g + c, D);   // dvt[j] += sum_r p_rj g_r
            flash_queries_product(dkp + c, dst, q + c, D);  // dkt[j] += sum_r ds_rj q_r
        }
    }
}

// The narrow backward tile: as flash_tile_backward for NARROW_RB queries, with dK and dV
// accumulated in key-panel layout (dkp, dvp: [np][D][16])
static AI void narrow_tile_backward(float *dq, float *dkp, float *dvp, const float *q, const float *qs,
                                    const float *g, const float *nl, const float *ndd, int rows, const float *kp,
                                    const float *vp, int D, int np, int nt, float scale) {
    p16 acc[NARROW_RB][NARROW_D]; // acc[r][d]: lanes of sum_j ds_rj k_j[d]
    for (int r = 0; r < NARROW_RB; r++)
        for (int d = 0; d < D; d++) acc[r][d] = p16_set1(0.0f);
    for (int p = 0; p < np; p++) {
        size_t po = (size_t)p * 16 * D;
        const float *k = kp + po, *v = vp + po;
        float *dk = dkp + po, *dv = dvp + po;
        p16 pr[NARROW_RB], sr[NARROW_RB];
        flash_scores(pr, nl, qs, k, D, NARROW_RB); // p = 2^(qs . k + nl)
        for (int r = 0; r < NARROW_RB; r++) {
            exp_panel(&pr[r], p == np - 1 ? nt : 16);
            if (r >= rows) pr[r] = p16_set1(0.0f);
        }
        flash_scores(sr, ndd, g, v, D, NARROW_RB); // ds = scale p (g . v - dd)
        for (int r = 0; r < NARROW_RB; r++) sr[r] = p16_scale(p16_mul(pr[r], sr[r]), scale);
        for (int d = 0; d < D; d++) {
            p16 kd = p16_load(k + d * 16), dkd = p16_load(dk + d * 16), dvd = p16_load(dv + d * 16);
            for (int r = 0; r < NARROW_RB; r++) {
                acc[r][d] = p16_fma(acc[r][d], sr[r], kd);
                dkd = p16_fmas(dkd, q[r * D + d], sr[r]);
                dvd = p16_fmas(dvd, g[r * D + d], pr[r]);
            }
            p16_store(dk + d * 16, dkd);
            p16_store(dv + d * 16, dvd);
        }
    }
    for (int r = 0; r < NARROW_RB; r++)
        for (int d = 0; d < D; d++) dq[r * D + d] = p16_hsum(&acc[r][d]);
}

#define TILE_BWD_ARGS float *dq, float *dkt, float *dvt, const float *q, const float *qs, const float *g, \
        const float *nl, const float *ndd, int rows, const float *kp, const float *vp, const float *kt, int np, int nt, float scale, \
        float *pt, float *dst
#define FLASH_BWD(D) flash_tile_backward(dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, kt, D, np, nt, scale, pt, dst)
#define NARROW_BWD(D) narrow_tile_backward(dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, D, np, nt, scale)
#define TILE_BWD_PASS dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, kt, np, nt, scale, pt, dst
TILE_KERNELS(tile_backward, TILE_BWD_ARGS, TILE_BWD_PASS, NARROW_BWD, FLASH_BWD, ((void)kt, (void)pt, (void)dst))

// Flash backward of one head (is_flash(D); see attention_backward): dQ, dK, dV [D, N] written
// from Q, K, dO [D, N], lse and di = rowsum(dO o O) per query. kp, vp: key panels of K and V;
// fl: flash_ws_floats scratch (tiles; K^T, dK^T, dV^T, or dK, dV as key panels when narrow).
void TILE(flash_backward)(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *dO,
                           const float *lse, const float *di, const float *kp, const float *vp, int D, int N,
                           float scale, float *fl) {
    int R = tile_rows(D, 0), narrow = D <= NARROW_D, np = (N + 15) / 16, nt = N - (np - 1) * 16;
    size_t n16 = (size_t)np * 16 * D;
    float *pt = fl, *dst = pt + FLASH_R * 16, *q = dst + FLASH_R * 16, *qs = q + FLASH_R * D, *g = qs + FLASH_R * D;
    float *dq = g + FLASH_R * D, *kt = dq + FLASH_R * D, *dkt = kt + n16, *dvt = dkt + n16;
    float qscale = scale * LOG2E;
    if (!narrow) {
        transpose_scaled(kt, K, D, N, 1.0f);
        memset(kt + (size_t)N * D, 0, (n16 - (size_t)N * D) * sizeof(float));
    }
    memset(dkt, 0, 2 * n16 * sizeof(float));
    for (int i = 0; i < N; i += R) {
        int rows = N - i < R ? N - i : R;
        float nl[FLASH_R], ndd[FLASH_R];
        for (int r = 0; r < R; r++) { // rows past N repeat row i (masked in the tile)
            int ir = r < rows ? i + r : i;
            nl[r] = -lse[ir] * LOG2E;
            ndd[r] = -di[ir];
            for (int d = 0; d < D; d++) {
                q[r * D + d] = Q[(size_t)d * N + ir];
                qs[r * D + d] = q[r * D + d] * qscale;
                g[r * D + d] = dO[(size_t)d * N + ir];
            }
        }
        tile_backward(D, dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, kt, np, nt, scale, pt, dst);
        for (int r = 0; r < rows; r++)
            for (int d = 0; d < D; d++) dQ[(size_t)d * N + i + r] = dq[r * D + d];
    }
    for (int d = 0; d < D; d++)
        for (int j = 0; j < N; j++) { // from [j][d] (wide) or [j / 16][d][j % 16] (narrow)
            size_t at = narrow ? (size_t)(j / 16) * 16 * D + (size_t)d * 16 + j % 16 : (size_t)j * D + d;
            dK[(size_t)d * N + j] = dkt[at];
            dV[(size_t)d * N + j] = dvt[at];
        }
}

// Per-thread workspace layout: dO[C,N] | dqkv[3C,N] | S[R,N] | dP[R,N] | T[R,C] | inv[R] | mx[R] |
// di[N] | kp, vp (key panels of one head, <= C (N + ATT_J)) | fl (flash_ws_floats) |
// grp (grouped projections) | chunk partials of the parameter grads (w_in, b_in, w_out, b_out).
// The forward uses S, T, inv, mx, kp and vp, and keeps (scale Q)^T and V^T of a wide head
// (2 N D <= 4 C N floats) where the backward has dO and dqkv; flash heads keep V (V^T or panels) in vp.
