// test_layers.c: every layer of layers.h against finite differences and naive references.
//
// For each layer: random inputs/parameters, L = sum_i out_i R_i (double) with a fixed random R.
// Analytic gradients come from backward(dout = R) into zeroed buffers; numeric gradients are
// central differences (L(x+h) - L(x-h)) / (2h) for EVERY element of the input and of every
// parameter. A tensor passes if max |analytic - numeric| <= tol * max |numeric| (the tolerance
// is relative to the gradient's own scale, so a 1% error anywhere fails).
// Also: forwards against naive double-precision implementations (conv2d, conv_transpose2d,
// groupnorm, attention incl. the saved qkv/o/lse, ...), accumulation semantics (backward adds
// to pre-filled gradients; conv2d accumulate=1 and attention add to `out`), NULL din paths,
// and bitwise determinism of forward+backward. Scratch `ws` is exactly nthreads * ws_floats,
// NaN-filled, so reading uninitialised scratch or overrunning it (under ASan) is caught.
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"
#include "nn/layers.h"
#include "core/rng.h"
#include "testutil.h"

static int nthreads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------------
// helpers

static Rng g_rng;
static int g_verbose = 1;

static float *alloc_f(long n) { return mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(float)); }
static double *alloc_d(long n) { return mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(double)); }
static float *zeros(long n) { return callocCheck((size_t)(n > 0 ? n : 1), sizeof(float)); }
static float *randn(long n, float scale) {
    float *x = alloc_f(n);
    for (long i = 0; i < n; i++) x[i] = scale * rng_normal(&g_rng);
    return x;
}
static float *copy_f(const float *x, long n) {
    float *y = alloc_f(n);
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}
static void fill_nan(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = NAN;
}
// scratch of exactly nthreads * per floats, NaN-filled (a layer must not read stale scratch)
static float *ws_alloc(size_t per) {
    long n = (long)(per * (size_t)nthreads());
    float *w = alloc_f(n);
    fill_nan(w, n);
    return w;
}
static double dotR(const float *y, const float *R, long n) {
    double s = 0.0;
    for (long i = 0; i < n; i++) s += (double)y[i] * R[i];
    return s;
}

// max |got - want| <= rtol * max |want|; NaN counts as infinite error. Returns the relative error.
static double cmp(const char *what, const float *got, const double *want, long n, double rtol) {
    double maxw = 0.0, maxe = 0.0;
    long wi = 0;
    for (long i = 0; i < n; i++) maxw = fmax(maxw, fabs(want[i]));
    for (long i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (isnan(e)) e = INFINITY;
        if (e > maxe || i == 0) { maxe = e; wi = i; }
    }
    double scale = maxw > 0.0 ? maxw : 1.0;
    CHECK(maxe <= rtol * scale, "%s: max |got - want| = %.3g at [%ld] (got %.9g, want %.9g), scale %.3g, rtol %.2g",
          what, maxe, wi, (double)got[wi], want[wi], scale, rtol);
    return maxe / scale;
}

// bitwise equality
static void same_bits(const char *what, const float *a, const float *b, long n) {
    long bad = -1;
    for (long i = 0; i < n && bad < 0; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0) bad = i;
    CHECK(bad < 0, "%s: not bitwise identical at [%ld] (%.9g vs %.9g)", what, bad, bad >= 0 ? (double)a[bad] : 0.0,
          bad >= 0 ? (double)b[bad] : 0.0);
}

// res must equal pre + g (backward accumulates into pre-filled gradients)
static void check_accum(const char *what, const float *res, const float *pre, const float *g, long n) {
    double *want = alloc_d(n);
    for (long i = 0; i < n; i++) want[i] = (double)pre[i] + g[i];
    char buf[256];
    snprintf(buf, sizeof buf, "%s (accumulate into pre-filled buffer)", what);
    cmp(buf, res, want, n, 1e-5);
    free(want);
}

// worst relative FD error per layer kind, for the summary
typedef struct {
    const char *name;
    double fd, fwd;
} Stat;
static Stat g_stats[16];
static int g_nstats = 0;
static Stat *stat_for(const char *name) {
    for (int i = 0; i < g_nstats; i++)
        if (!strcmp(g_stats[i].name, name)) return &g_stats[i];
    g_stats[g_nstats].name = name;
    g_stats[g_nstats].fd = g_stats[g_nstats].fwd = 0.0;
    return &g_stats[g_nstats++];
}
static void note_fwd(const char *layer, double e) {
    Stat *s = stat_for(layer);
    if (e > s->fwd) s->fwd = e;
}

// L for the current parameters; `i` is the element being perturbed (a layer whose images are
// independent may evaluate only the image that element belongs to: the other terms cancel).
typedef double (*LossFn)(void *ctx, long i);

// Central differences for every element of x, compared with the analytic gradient `ana`.
// Passes if max |ana - num| <= tol * max |num|. Returns the relative error.
static double fd_check(const char *layer, const char *what, LossFn f, void *ctx, float *x, long n,
                       const float *ana, float h, double tol) {
    double *num = alloc_d(n);
    // the thousands of tiny forwards run on one thread: OpenMP fork/join per call would dominate
    // (and stall on a loaded machine); the analytic side already ran on the full team
#ifdef _OPENMP
    int nt_saved = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    // tensors above 4096 entries: every step-th entry (step coprime to the row lengths seen
    // here: odd), so the sanitizer run stays short; all others are checked in full
    long step = n > 4096 ? ((n + 4095) / 4096) | 1 : 1;
    for (long i = 0; i < n; i++) num[i] = NAN;
    for (long i = 0; i < n; i += step) {
        float x0 = x[i], xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        double lp = f(ctx, i);
        x[i] = xm;
        double lm = f(ctx, i);
        x[i] = x0;
        num[i] = (lp - lm) / ((double)xp - (double)xm);
    }
#ifdef _OPENMP
    omp_set_num_threads(nt_saved);
#endif
    double maxn = 0.0, maxe = 0.0;
    long wi = 0;
    for (long i = 0; i < n; i += step) maxn = fmax(maxn, fabs(num[i]));
    for (long i = 0; i < n; i += step) {
        double e = fabs((double)ana[i] - num[i]);
        if (isnan(e)) e = INFINITY;
        if (e > maxe || i == 0) { maxe = e; wi = i; }
    }
    // the check must be meaningful: the gradient is not identically zero
    CHECK(maxn > 1e-3, "%s %s: numeric gradient is ~0 (max %.3g): the test is vacuous", layer, what, maxn);
    double scale = fmax(maxn, 1e-3);
    CHECK(maxe <= tol * scale,
          "%s %s: max |analytic - numeric| = %.3g at [%ld] (analytic %.7g, numeric %.7g), gradient scale %.3g, tol %.2g",
          layer, what, maxe, wi, (double)ana[wi], num[wi], scale, tol);
    free(num);
    double rel = maxe / scale;
    Stat *s = stat_for(layer);
    if (rel > s->fd) s->fd = rel;
    if (g_verbose > 1) printf("    %-8s %-6s n=%-5ld max rel err %.2e (scale %.3g)\n", layer, what, n, rel, scale);
    return rel;
}

// FD step and tolerance. Linear-in-the-variable cases are exact up to rounding for any h;
// nonlinear ones (silu, groupnorm, attention) use h = 1e-2: truncation O(h^2) ~ 1e-4 relative,
// float rounding of L / (2h) ~ 1e-5 relative, both far below TOL_FD = 3e-3.
#define H_LIN 0.5f
#define H_NL 1e-2f
#define TOL_FD 3e-3
#define TOL_FWD 1e-5

// ---------------------------------------------------------------------------------------------
// conv2d and conv_transpose2d

typedef struct {
    int transpose, B, Ci, H, W, Co, K, s, p, Ho, Wo;
    float *in, *w, *b, *out, *ws, *R;
    long nout;
} ConvCtx;

static void conv_fwd(ConvCtx *c, float *out, int accumulate) {
    if (c->transpose)
        conv_transpose2d_forward(out, c->in, c->w, c->b, c->B, c->Ci, c->H, c->W, c->Co, c->K, c->s, c->p, c->ws);
    else
        conv2d_forward(out, c->in, c->w, c->b, c->B, c->Ci, c->H, c->W, c->Co, c->K, c->s, c->p, accumulate, c->ws);
}
static void conv_bwd(ConvCtx *c, float *din, float *dw, float *db) {
    if (c->transpose)
        conv_transpose2d_backward(din, dw, db, c->R, c->in, c->w, c->B, c->Ci, c->H, c->W, c->Co, c->K, c->s, c->p, c->ws);
    else
        conv2d_backward(din, dw, db, c->R, c->in, c->w, c->B, c->Ci, c->H, c->W, c->Co, c->K, c->s, c->p, c->ws);
}
static double conv_loss(void *ctx, long i) {
    (void)i;
    ConvCtx *c = ctx;
    conv_fwd(c, c->out, 0);
    return dotR(c->out, c->R, c->nout);
}

// direct convolution in double: out[b][co][oh][ow] = bias[co] + sum in[b][ci][oh s - p + kh][ow s - p + kw] w[co][ci][kh][kw]
static void naive_conv2d(double *y, const ConvCtx *c) {
    for (int b = 0; b < c->B; b++)
        for (int co = 0; co < c->Co; co++)
            for (int oh = 0; oh < c->Ho; oh++)
                for (int ow = 0; ow < c->Wo; ow++) {
                    double acc = c->b[co];
                    for (int ci = 0; ci < c->Ci; ci++)
                        for (int kh = 0; kh < c->K; kh++)
                            for (int kw = 0; kw < c->K; kw++) {
                                int ih = oh * c->s - c->p + kh, iw = ow * c->s - c->p + kw;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                acc += (double)c->in[((b * c->Ci + ci) * c->H + ih) * c->W + iw] *
                                       c->w[((co * c->Ci + ci) * c->K + kh) * c->K + kw];
                            }
                    y[((b * c->Co + co) * c->Ho + oh) * c->Wo + ow] = acc;
                }
}

// direct transposed convolution: out[co][oh][ow] += in[ci][ih][iw] w[ci][co][kh][kw], oh = ih s - p + kh
static void naive_convT(double *y, const ConvCtx *c) {
    for (int b = 0; b < c->B; b++)
        for (int co = 0; co < c->Co; co++)
            for (int i = 0; i < c->Ho * c->Wo; i++) y[(b * c->Co + co) * c->Ho * c->Wo + i] = c->b[co];
    for (int b = 0; b < c->B; b++)
        for (int ci = 0; ci < c->Ci; ci++)
            for (int ih = 0; ih < c->H; ih++)
                for (int iw = 0; iw < c->W; iw++)
                    for (int co = 0; co < c->Co; co++)
                        for (int kh = 0; kh < c->K; kh++)
                            for (int kw = 0; kw < c->K; kw++) {
                                int oh = ih * c->s - c->p + kh, ow = iw * c->s - c->p + kw;
                                if (oh < 0 || oh >= c->Ho || ow < 0 || ow >= c->Wo) continue;
                                y[((b * c->Co + co) * c->Ho + oh) * c->Wo + ow] +=
                                    (double)c->in[((b * c->Ci + ci) * c->H + ih) * c->W + iw] *
                                    c->w[((ci * c->Co + co) * c->K + kh) * c->K + kw];
                            }
}

static void test_conv(int transpose, int B, int Ci, int H, int W, int Co, int K, int s, int p) {
    const char *layer = transpose ? "convT2d" : "conv2d";
    ConvCtx c = {transpose, B, Ci, H, W, Co, K, s, p, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (transpose) {
        c.Ho = (H - 1) * s - 2 * p + K;
        c.Wo = (W - 1) * s - 2 * p + K;
    } else {
        c.Ho = (H + 2 * p - K) / s + 1;
        c.Wo = (W + 2 * p - K) / s + 1;
    }
    long nin = (long)B * Ci * H * W, nw = (long)Co * Ci * K * K, nout = (long)B * Co * c.Ho * c.Wo;
    c.nout = nout;
    c.in = randn(nin, 1.0f);
    c.w = randn(nw, 1.0f / sqrtf((float)(Ci * K * K)));
    c.b = randn(Co, 0.5f);
    c.R = randn(nout, 1.0f);
    c.out = alloc_f(nout);
    c.ws = ws_alloc(transpose ? conv_transpose2d_ws_floats(Ci, H, W, Co, K, s, p)
                              : conv2d_ws_floats(Ci, H, W, Co, K, s, p));
    char what[160];
    snprintf(what, sizeof what, "%s K%d s%d p%d B%d Ci%d %dx%d Co%d -> %dx%d", layer, K, s, p, B, Ci, H, W, Co, c.Ho, c.Wo);

    // forward vs the naive direct implementation (out NaN-filled: every element must be written)
    double *ref = alloc_d(nout);
    transpose ? naive_convT(ref, &c) : naive_conv2d(ref, &c);
    fill_nan(c.out, nout);
    conv_fwd(&c, c.out, 0);
    char buf[256];
    snprintf(buf, sizeof buf, "%s forward", what);
    note_fwd(layer, cmp(buf, c.out, ref, nout, TOL_FWD));
    if (!transpose) { // accumulate = 1 adds conv + bias to what is there
        float *pre = randn(nout, 1.0f), *acc = copy_f(pre, nout);
        conv_fwd(&c, acc, 1);
        double *want = alloc_d(nout);
        for (long i = 0; i < nout; i++) want[i] = pre[i] + ref[i];
        snprintf(buf, sizeof buf, "%s forward accumulate=1", what);
        cmp(buf, acc, want, nout, TOL_FWD);
        free(pre); free(acc); free(want);
    }

    // analytic gradients (dout = R) into zeros
    float *din = zeros(nin), *dw = zeros(nw), *db = zeros(Co);
    conv_bwd(&c, din, dw, db);

    // NULL din: same dw/db, bit for bit
    {
        float *dw2 = zeros(nw), *db2 = zeros(Co);
        conv_bwd(&c, NULL, dw2, db2);
        snprintf(buf, sizeof buf, "%s dw with din=NULL", what);
        same_bits(buf, dw2, dw, nw);
        snprintf(buf, sizeof buf, "%s db with din=NULL", what);
        same_bits(buf, db2, db, Co);
        free(dw2); free(db2);
    }
    // accumulation into pre-filled gradients
    {
        float *pi = randn(nin, 1.0f), *pw = randn(nw, 1.0f), *pb = randn(Co, 1.0f);
        float *din2 = copy_f(pi, nin), *dw2 = copy_f(pw, nw), *db2 = copy_f(pb, Co);
        conv_bwd(&c, din2, dw2, db2);
        snprintf(buf, sizeof buf, "%s din", what);
        check_accum(buf, din2, pi, din, nin);
        snprintf(buf, sizeof buf, "%s dw", what);
        check_accum(buf, dw2, pw, dw, nw);
        snprintf(buf, sizeof buf, "%s db", what);
        check_accum(buf, db2, pb, db, Co);
        free(pi); free(pw); free(pb); free(din2); free(dw2); free(db2);
    }
    // determinism: forward + backward again, bitwise identical
    {
        float *out2 = alloc_f(nout), *din2 = zeros(nin), *dw2 = zeros(nw), *db2 = zeros(Co);
        float *out1 = copy_f(c.out, nout);
        fill_nan(c.ws, (long)(transpose ? conv_transpose2d_ws_floats(Ci, H, W, Co, K, s, p)
                                        : conv2d_ws_floats(Ci, H, W, Co, K, s, p)) * nthreads());
        conv_fwd(&c, out2, 0);
        conv_bwd(&c, din2, dw2, db2);
        snprintf(buf, sizeof buf, "%s determinism out", what);
        same_bits(buf, out2, out1, nout);
        snprintf(buf, sizeof buf, "%s determinism din", what);
        same_bits(buf, din2, din, nin);
        snprintf(buf, sizeof buf, "%s determinism dw", what);
        same_bits(buf, dw2, dw, nw);
        snprintf(buf, sizeof buf, "%s determinism db", what);
        same_bits(buf, db2, db, Co);
        free(out1); free(out2); free(din2); free(dw2); free(db2);
    }

    // finite differences (conv is linear in each of in, w, bias)
    double e1 = fd_check(layer, "din", conv_loss, &c, c.in, nin, din, H_LIN, TOL_FD);
    double e2 = fd_check(layer, "dw", conv_loss, &c, c.w, nw, dw, H_LIN, TOL_FD);
    double e3 = fd_check(layer, "db", conv_loss, &c, c.b, Co, db, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err din %.1e dw %.1e db %.1e\n", what, e1, e2, e3);

    free(ref); free(din); free(dw); free(db);
    free(c.in); free(c.w); free(c.b); free(c.R); free(c.out); free(c.ws);
}

// ---------------------------------------------------------------------------------------------
// GroupNorm

typedef struct {
    int B, C, HW, G;
    float *in, *gamma, *beta, *out, *mean, *rstd, *R;
} GnCtx;

static double gn_loss(void *ctx, long i) {
    (void)i;
    GnCtx *c = ctx;
    groupnorm_forward(c->out, c->mean, c->rstd, c->in, c->gamma, c->beta, c->B, c->C, c->HW, c->G);
    return dotR(c->out, c->R, (long)c->B * c->C * c->HW);
}

static void test_groupnorm(int B, int C, int HW, int G) {
    const char *layer = "groupnorm";
    long n = (long)B * C * HW;
    int Cg = C / G;
    GnCtx c = {B, C, HW, G, 0, 0, 0, 0, 0, 0, 0};
    // per-channel offsets and scales so the group mean is far from 0 and rstd != 1
    c.in = alloc_f(n);
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++) {
            float off = 2.0f * rng_normal(&g_rng), sc = 0.5f + rng_uniform(&g_rng) * 1.5f;
            for (int p = 0; p < HW; p++) c.in[((long)b * C + ch) * HW + p] = off + sc * rng_normal(&g_rng);
        }
    c.gamma = randn(C, 1.0f);
    for (int ch = 0; ch < C; ch++) c.gamma[ch] += 1.0f;
    c.beta = randn(C, 0.5f);
    c.R = randn(n, 1.0f);
    c.out = alloc_f(n);
    c.mean = alloc_f(B * G);
    c.rstd = alloc_f(B * G);
    char what[160], buf[256];
    snprintf(what, sizeof what, "groupnorm B%d C%d HW%d G%d", B, C, HW, G);

    // forward vs double
    double *ry = alloc_d(n), *rm = alloc_d(B * G), *rr = alloc_d(B * G);
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            const float *x = c.in + ((long)b * C + g * Cg) * HW;
            long m = (long)Cg * HW;
            double s = 0.0, ss = 0.0;
            for (long i = 0; i < m; i++) s += x[i];
            double mu = s / m;
            for (long i = 0; i < m; i++) ss += (x[i] - mu) * (x[i] - mu);
            double r = 1.0 / sqrt(ss / m + 1e-5);
            rm[b * G + g] = mu;
            rr[b * G + g] = r;
            for (int cc = 0; cc < Cg; cc++)
                for (int p = 0; p < HW; p++) {
                    int ch = g * Cg + cc;
                    long i = ((long)b * C + ch) * HW + p;
                    ry[i] = (c.in[i] - mu) * r * c.gamma[ch] + c.beta[ch];
                }
        }
    fill_nan(c.out, n);
    fill_nan(c.mean, B * G);
    fill_nan(c.rstd, B * G);
    groupnorm_forward(c.out, c.mean, c.rstd, c.in, c.gamma, c.beta, B, C, HW, G);
    snprintf(buf, sizeof buf, "%s forward out", what);
    note_fwd(layer, cmp(buf, c.out, ry, n, TOL_FWD));
    snprintf(buf, sizeof buf, "%s forward mean", what);
    note_fwd(layer, cmp(buf, c.mean, rm, B * G, TOL_FWD));
    snprintf(buf, sizeof buf, "%s forward rstd", what);
    note_fwd(layer, cmp(buf, c.rstd, rr, B * G, TOL_FWD));
    float *mean0 = copy_f(c.mean, B * G), *rstd0 = copy_f(c.rstd, B * G), *out0 = copy_f(c.out, n);
    { // fused GroupNorm + SiLU: the same GroupNorm bits, and act = silu(out)
        float *o2 = alloc_f(n), *act = alloc_f(n), *m2 = alloc_f(B * G), *r2 = alloc_f(B * G);
        double *ract = alloc_d(n);
        fill_nan(act, n);
        groupnorm_silu_forward(o2, act, m2, r2, c.in, c.gamma, c.beta, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s fused GN+SiLU: GroupNorm part", what);
        same_bits(buf, o2, out0, n);
        for (long i = 0; i < n; i++) ract[i] = ry[i] / (1.0 + exp(-ry[i]));
        snprintf(buf, sizeof buf, "%s fused GN+SiLU: SiLU part", what);
        note_fwd(layer, cmp(buf, act, ract, n, TOL_FWD));
        // SiLU backward with the GroupNorm output recomputed == silu_backward on the stored output
        float *dact = randn(n, 1.0f), *d1 = zeros(n), *d2 = zeros(n);
        silu_backward(d1, dact, out0, n);
        silu_backward_groupnorm(d2, dact, c.in, m2, r2, c.gamma, c.beta, B, C, HW, G);
        double worst = 0;
        for (long i = 0; i < n; i++) worst = fmax(worst, fabs((double)d1[i] - d2[i]) / (fabs((double)d1[i]) + 1e-3));
        CHECK(worst < 1e-5, "%s: silu_backward_groupnorm vs silu_backward: rel err %g", what, worst);
        // and act alone (out = NULL) is the same SiLU
        float *act2 = alloc_f(n);
        groupnorm_silu_forward(NULL, act2, m2, r2, c.in, c.gamma, c.beta, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s fused GN+SiLU without out", what);
        same_bits(buf, act2, act, n);
        free(act2); free(dact); free(d1); free(d2);
        free(o2); free(act); free(m2); free(r2); free(ract);
    }

    float *din = zeros(n), *dg = zeros(C), *dbt = zeros(C);
    groupnorm_backward(din, dg, dbt, c.R, c.in, mean0, rstd0, c.gamma, B, C, HW, G);
    {
        float *dg2 = zeros(C), *db2 = zeros(C);
        groupnorm_backward(NULL, dg2, db2, c.R, c.in, mean0, rstd0, c.gamma, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s dgamma with din=NULL", what);
        same_bits(buf, dg2, dg, C);
        snprintf(buf, sizeof buf, "%s dbeta with din=NULL", what);
        same_bits(buf, db2, dbt, C);
        free(dg2); free(db2);
    }
    {
        float *pi = randn(n, 1.0f), *pg = randn(C, 1.0f), *pb = randn(C, 1.0f);
        float *d1 = copy_f(pi, n), *d2 = copy_f(pg, C), *d3 = copy_f(pb, C);
        groupnorm_backward(d1, d2, d3, c.R, c.in, mean0, rstd0, c.gamma, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s din", what);
        check_accum(buf, d1, pi, din, n);
        snprintf(buf, sizeof buf, "%s dgamma", what);
        check_accum(buf, d2, pg, dg, C);
        snprintf(buf, sizeof buf, "%s dbeta", what);
        check_accum(buf, d3, pb, dbt, C);
        free(pi); free(pg); free(pb); free(d1); free(d2); free(d3);
    }
    {
        float *o2 = alloc_f(n), *m2 = alloc_f(B * G), *r2 = alloc_f(B * G);
        float *d1 = zeros(n), *d2 = zeros(C), *d3 = zeros(C);
        groupnorm_forward(o2, m2, r2, c.in, c.gamma, c.beta, B, C, HW, G);
        groupnorm_backward(d1, d2, d3, c.R, c.in, m2, r2, c.gamma, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s determinism", what);
        same_bits(buf, o2, out0, n);
        same_bits(buf, m2, mean0, B * G);
        same_bits(buf, r2, rstd0, B * G);
        same_bits(buf, d1, din, n);
        same_bits(buf, d2, dg, C);
        same_bits(buf, d3, dbt, C);
        free(o2); free(m2); free(r2); free(d1); free(d2); free(d3);
    }

    double e1 = fd_check(layer, "din", gn_loss, &c, c.in, n, din, H_NL, TOL_FD);
    double e2 = fd_check(layer, "dgamma", gn_loss, &c, c.gamma, C, dg, H_LIN, TOL_FD);
    double e3 = fd_check(layer, "dbeta", gn_loss, &c, c.beta, C, dbt, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err din %.1e dgamma %.1e dbeta %.1e\n", what, e1, e2, e3);

    free(ry); free(rm); free(rr); free(mean0); free(rstd0); free(out0); free(din); free(dg); free(dbt);
    free(c.in); free(c.gamma); free(c.beta); free(c.R); free(c.out); free(c.mean); free(c.rstd);
}

// ---------------------------------------------------------------------------------------------
// SiLU

typedef struct {
    long n;
    float *in, *out, *R;
} SiluCtx;
static double silu_loss(void *ctx, long i) {
    (void)i;
    SiluCtx *c = ctx;
    silu_forward(c->out, c->in, c->n);
    return dotR(c->out, c->R, c->n);
}

static void test_silu(long n) {
    const char *layer = "silu";
    SiluCtx c = {n, randn(n, 3.0f), alloc_f(n), randn(n, 1.0f)};
    c.in[0] = 0.0f;
    if (n > 3) { c.in[1] = 20.0f; c.in[2] = -20.0f; c.in[3] = -90.0f; }
    double *ref = alloc_d(n);
    for (long i = 0; i < n; i++) ref[i] = c.in[i] / (1.0 + exp(-(double)c.in[i]));
    fill_nan(c.out, n);
    silu_forward(c.out, c.in, n);
    note_fwd(layer, cmp("silu forward", c.out, ref, n, TOL_FWD));
    float *out0 = copy_f(c.out, n);
    float *din = zeros(n);
    silu_backward(din, c.R, c.in, n);
    float *pre = randn(n, 1.0f), *d2 = copy_f(pre, n);
    silu_backward(d2, c.R, c.in, n);
    check_accum("silu din", d2, pre, din, n);
    float *d3 = zeros(n);
    silu_forward(c.out, c.in, n);
    silu_backward(d3, c.R, c.in, n);
    same_bits("silu determinism out", c.out, out0, n);
    same_bits("silu determinism din", d3, din, n);
    double e = fd_check(layer, "din", silu_loss, &c, c.in, n, din, H_NL, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err din %.1e\n", "silu n=301", e);
    free(ref); free(out0); free(din); free(pre); free(d2); free(d3); free(c.in); free(c.out); free(c.R);
}

// ---------------------------------------------------------------------------------------------
// Linear

typedef struct {
    int B, I, O;
    float *in, *w, *b, *out, *R;
} LinCtx;
static double lin_loss(void *ctx, long i) {
    (void)i;
    LinCtx *c = ctx;
    linear_forward(c->out, c->in, c->w, c->b, c->B, c->I, c->O);
    return dotR(c->out, c->R, (long)c->B * c->O);
}

static void test_linear(int B, int I, int O) {
    const char *layer = "linear";
    long nin = (long)B * I, nw = (long)O * I, nout = (long)B * O;
    LinCtx c = {B, I, O, randn(nin, 1.0f), randn(nw, 1.0f / sqrtf((float)I)), randn(O, 0.5f), alloc_f(nout),
                randn(nout, 1.0f)};
    char what[160], buf[256];
    snprintf(what, sizeof what, "linear B%d I%d O%d", B, I, O);
    double *ref = alloc_d(nout);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++) {
            double s = c.b[o];
            for (int i = 0; i < I; i++) s += (double)c.in[b * I + i] * c.w[o * I + i];
            ref[b * O + o] = s;
        }
    fill_nan(c.out, nout);
    linear_forward(c.out, c.in, c.w, c.b, B, I, O);
    snprintf(buf, sizeof buf, "%s forward", what);
    note_fwd(layer, cmp(buf, c.out, ref, nout, TOL_FWD));
    float *out0 = copy_f(c.out, nout);

    float *din = zeros(nin), *dw = zeros(nw), *db = zeros(O);
    linear_backward(din, dw, db, c.R, c.in, c.w, B, I, O);
    {
        float *dw2 = zeros(nw), *db2 = zeros(O), *dw3 = zeros(nw), *din3 = zeros(nin);
        linear_backward(NULL, dw2, db2, c.R, c.in, c.w, B, I, O);
        snprintf(buf, sizeof buf, "%s din=NULL", what);
        same_bits(buf, dw2, dw, nw);
        same_bits(buf, db2, db, O);
        linear_backward(din3, dw3, NULL, c.R, c.in, c.w, B, I, O);
        snprintf(buf, sizeof buf, "%s dbias=NULL", what);
        same_bits(buf, dw3, dw, nw);
        same_bits(buf, din3, din, nin);
        free(dw2); free(db2); free(dw3); free(din3);
    }
    {
        float *pi = randn(nin, 1.0f), *pw = randn(nw, 1.0f), *pb = randn(O, 1.0f);
        float *d1 = copy_f(pi, nin), *d2 = copy_f(pw, nw), *d3 = copy_f(pb, O);
        linear_backward(d1, d2, d3, c.R, c.in, c.w, B, I, O);
        snprintf(buf, sizeof buf, "%s din", what);
        check_accum(buf, d1, pi, din, nin);
        snprintf(buf, sizeof buf, "%s dw", what);
        check_accum(buf, d2, pw, dw, nw);
        snprintf(buf, sizeof buf, "%s db", what);
        check_accum(buf, d3, pb, db, O);
        free(pi); free(pw); free(pb); free(d1); free(d2); free(d3);
    }
    {
        float *d1 = zeros(nin), *d2 = zeros(nw), *d3 = zeros(O);
        linear_forward(c.out, c.in, c.w, c.b, B, I, O);
        linear_backward(d1, d2, d3, c.R, c.in, c.w, B, I, O);
        snprintf(buf, sizeof buf, "%s determinism", what);
        same_bits(buf, c.out, out0, nout);
        same_bits(buf, d1, din, nin);
        same_bits(buf, d2, dw, nw);
        same_bits(buf, d3, db, O);
        free(d1); free(d2); free(d3);
    }
    double e1 = fd_check(layer, "din", lin_loss, &c, c.in, nin, din, H_LIN, TOL_FD);
    double e2 = fd_check(layer, "dw", lin_loss, &c, c.w, nw, dw, H_LIN, TOL_FD);
    double e3 = fd_check(layer, "db", lin_loss, &c, c.b, O, db, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err din %.1e dw %.1e db %.1e\n", what, e1, e2, e3);
    free(ref); free(out0); free(din); free(dw); free(db);
    free(c.in); free(c.w); free(c.b); free(c.out); free(c.R);
}

// ---------------------------------------------------------------------------------------------
// attention

typedef struct {
    int B, C, N, NH, slice_a;
    float *a, *w_in, *b_in, *w_out, *b_out, *out, *qkv, *o, *lse, *ws, *R;
} AttCtx;

static double att_loss(void *ctx, long i) {
    AttCtx *c = ctx;
    long per = (long)c->C * c->N;
    if (c->slice_a) { // perturbing a[i] only changes image i / (C N): evaluate that image alone
        long b = i / per;
        memset(c->out, 0, (size_t)per * sizeof(float));
        attention_forward(c->out, c->qkv, c->o, c->lse, c->a + b * per, c->w_in, c->b_in, c->w_out, c->b_out, 1,
                          c->C, c->N, c->NH, c->ws);
        return dotR(c->out, c->R + b * per, per);
    }
    long n = (long)c->B * per;
    memset(c->out, 0, (size_t)n * sizeof(float));
    attention_forward(c->out, c->qkv, c->o, c->lse, c->a, c->w_in, c->b_in, c->w_out, c->b_out, c->B, c->C, c->N,
                      c->NH, c->ws);
    return dotR(c->out, c->R, n);
}

// materialised-softmax attention in double: y = w_out MHA(a) + b_out (no residual)
static void naive_attention(double *y, double *qkv, double *o, double *lse, const AttCtx *c) {
    int B = c->B, C = c->C, N = c->N, NH = c->NH, D = C / NH;
    double scale = 1.0 / sqrt((double)D);
    double *p = alloc_d(N);
    for (int b = 0; b < B; b++) {
        const float *a = c->a + (long)b * C * N;
        double *q = qkv + (long)b * 3 * C * N, *ob = o + (long)b * C * N;
        for (int r = 0; r < 3 * C; r++)
            for (int n = 0; n < N; n++) {
                double s = c->b_in[r];
                for (int k = 0; k < C; k++) s += (double)c->w_in[r * C + k] * a[(long)k * N + n];
                q[(long)r * N + n] = s;
            }
        for (int h = 0; h < NH; h++) {
            const double *Q = q + (long)h * D * N, *K = q + (long)(C + h * D) * N, *V = q + (long)(2 * C + h * D) * N;
            for (int i = 0; i < N; i++) {
                double mx = -INFINITY;
                for (int j = 0; j < N; j++) {
                    double s = 0.0;
                    for (int d = 0; d < D; d++) s += Q[(long)d * N + i] * K[(long)d * N + j];
                    p[j] = s * scale;
                    mx = fmax(mx, p[j]);
                }
                double sum = 0.0;
                for (int j = 0; j < N; j++) sum += exp(p[j] - mx);
                lse[((long)b * NH + h) * N + i] = mx + log(sum);
                for (int j = 0; j < N; j++) p[j] = exp(p[j] - mx) / sum;
                for (int d = 0; d < D; d++) {
                    double s = 0.0;
                    for (int j = 0; j < N; j++) s += p[j] * V[(long)d * N + j];
                    ob[(long)(h * D + d) * N + i] = s;
                }
            }
        }
        for (int ch = 0; ch < C; ch++)
            for (int n = 0; n < N; n++) {
                double s = c->b_out[ch];
                for (int k = 0; k < C; k++) s += (double)c->w_out[ch * C + k] * ob[(long)k * N + n];
                y[((long)b * C + ch) * N + n] = s;
            }
    }
    free(p);
}

static void test_attention(int B, int C, int N, int NH, float qk_gain) {
    const char *layer = "attention";
    long n = (long)B * C * N, nq = 3 * n, nl = (long)B * NH * N;
    AttCtx c = {B, C, N, NH, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    c.a = randn(n, 1.0f);
    c.w_in = randn(3L * C * C, 1.0f / sqrtf((float)C));
    for (long i = 0; i < 2L * C * C; i++) c.w_in[i] *= qk_gain; // sharper softmax: more nonlinear
    c.b_in = randn(3L * C, 0.3f);
    c.w_out = randn((long)C * C, 1.0f / sqrtf((float)C));
    c.b_out = randn(C, 0.5f);
    c.R = randn(n, 1.0f);
    c.out = alloc_f(n);
    c.qkv = alloc_f(nq);
    c.o = alloc_f(n);
    c.lse = alloc_f(nl);
    size_t wsper = attention_ws_floats(C, N, NH);
    c.ws = ws_alloc(wsper);
    char what[160], buf[256];
    snprintf(what, sizeof what, "attention B%d C%d N%d NH%d", B, C, N, NH);

    double *ry = alloc_d(n), *rq = alloc_d(nq), *ro = alloc_d(n), *rl = alloc_d(nl);
    naive_attention(ry, rq, ro, rl, &c);
    // forward adds to `out` (the residual)
    float *resid = randn(n, 1.0f), *out = copy_f(resid, n);
    float *qkv = alloc_f(nq), *o = alloc_f(n), *lse = alloc_f(nl);
    fill_nan(qkv, nq);
    fill_nan(o, n);
    fill_nan(lse, nl);
    attention_forward(out, qkv, o, lse, c.a, c.w_in, c.b_in, c.w_out, c.b_out, B, C, N, NH, c.ws);
    {
        double *want = alloc_d(n);
        for (long i = 0; i < n; i++) want[i] = resid[i] + ry[i];
        snprintf(buf, sizeof buf, "%s forward out (residual + attention)", what);
        note_fwd(layer, cmp(buf, out, want, n, TOL_FWD));
        // the attention part alone, so a wrong result cannot hide behind the residual
        float *part = alloc_f(n);
        for (long i = 0; i < n; i++) part[i] = out[i] - resid[i];
        snprintf(buf, sizeof buf, "%s forward out - residual", what);
        note_fwd(layer, cmp(buf, part, ry, n, 1e-4));
        free(part);
        free(want);
    }
    snprintf(buf, sizeof buf, "%s forward saved qkv", what);
    note_fwd(layer, cmp(buf, qkv, rq, nq, TOL_FWD));
    snprintf(buf, sizeof buf, "%s forward saved o", what);
    note_fwd(layer, cmp(buf, o, ro, n, TOL_FWD));
    snprintf(buf, sizeof buf, "%s forward saved lse", what);
    note_fwd(layer, cmp(buf, lse, rl, nl, TOL_FWD));
    { // the softmax must not be uniform (else the test would not probe it)
        double lo = INFINITY, hi = -INFINITY;
        for (long i = 0; i < nl; i++) { lo = fmin(lo, rl[i] - log((double)N)); hi = fmax(hi, rl[i] - log((double)N)); }
        CHECK(hi - lo > 0.5, "%s: softmax too flat for a meaningful test (lse - log N in [%g, %g])", what, lo, hi);
    }

    long nwi = 3L * C * C, nbi = 3L * C, nwo = (long)C * C;
    float *da = zeros(n), *dwi = zeros(nwi), *dbi = zeros(nbi), *dwo = zeros(nwo), *dbo = zeros(C);
    attention_backward(da, dwi, dbi, dwo, dbo, c.R, c.a, qkv, o, lse, c.w_in, c.w_out, B, C, N, NH, c.ws);
    {
        float *g2 = zeros(nwi), *g3 = zeros(nbi), *g4 = zeros(nwo), *g5 = zeros(C);
        attention_backward(NULL, g2, g3, g4, g5, c.R, c.a, qkv, o, lse, c.w_in, c.w_out, B, C, N, NH, c.ws);
        snprintf(buf, sizeof buf, "%s da=NULL", what);
        same_bits(buf, g2, dwi, nwi);
        same_bits(buf, g3, dbi, nbi);
        same_bits(buf, g4, dwo, nwo);
        same_bits(buf, g5, dbo, C);
        free(g2); free(g3); free(g4); free(g5);
    }
    {
        float *p1 = randn(n, 1.0f), *p2 = randn(nwi, 1.0f), *p3 = randn(nbi, 1.0f), *p4 = randn(nwo, 1.0f),
              *p5 = randn(C, 1.0f);
        float *g1 = copy_f(p1, n), *g2 = copy_f(p2, nwi), *g3 = copy_f(p3, nbi), *g4 = copy_f(p4, nwo),
              *g5 = copy_f(p5, C);
        attention_backward(g1, g2, g3, g4, g5, c.R, c.a, qkv, o, lse, c.w_in, c.w_out, B, C, N, NH, c.ws);
        snprintf(buf, sizeof buf, "%s da", what);
        check_accum(buf, g1, p1, da, n);
        snprintf(buf, sizeof buf, "%s dw_in", what);
        check_accum(buf, g2, p2, dwi, nwi);
        snprintf(buf, sizeof buf, "%s db_in", what);
        check_accum(buf, g3, p3, dbi, nbi);
        snprintf(buf, sizeof buf, "%s dw_out", what);
        check_accum(buf, g4, p4, dwo, nwo);
        snprintf(buf, sizeof buf, "%s db_out", what);
        check_accum(buf, g5, p5, dbo, C);
        free(p1); free(p2); free(p3); free(p4); free(p5); free(g1); free(g2); free(g3); free(g4); free(g5);
    }
    {
        float *out2 = copy_f(resid, n), *q2 = alloc_f(nq), *o2 = alloc_f(n), *l2 = alloc_f(nl);
        float *g1 = zeros(n), *g2 = zeros(nwi), *g3 = zeros(nbi), *g4 = zeros(nwo), *g5 = zeros(C);
        fill_nan(c.ws, (long)wsper * nthreads());
        attention_forward(out2, q2, o2, l2, c.a, c.w_in, c.b_in, c.w_out, c.b_out, B, C, N, NH, c.ws);
        attention_backward(g1, g2, g3, g4, g5, c.R, c.a, q2, o2, l2, c.w_in, c.w_out, B, C, N, NH, c.ws);
        snprintf(buf, sizeof buf, "%s determinism", what);
        same_bits(buf, out2, out, n);
        same_bits(buf, q2, qkv, nq);
        same_bits(buf, o2, o, n);
        same_bits(buf, l2, lse, nl);
        same_bits(buf, g1, da, n);
        same_bits(buf, g2, dwi, nwi);
        same_bits(buf, g3, dbi, nbi);
        same_bits(buf, g4, dwo, nwo);
        same_bits(buf, g5, dbo, C);
        free(out2); free(q2); free(o2); free(l2); free(g1); free(g2); free(g3); free(g4); free(g5);
    }

    c.slice_a = 1;
    double e1 = fd_check(layer, "da", att_loss, &c, c.a, n, da, H_NL, TOL_FD);
    c.slice_a = 0;
    double e2 = fd_check(layer, "dw_in", att_loss, &c, c.w_in, nwi, dwi, H_NL, TOL_FD);
    double e3 = fd_check(layer, "db_in", att_loss, &c, c.b_in, nbi, dbi, H_NL, TOL_FD);
    double e4 = fd_check(layer, "dw_out", att_loss, &c, c.w_out, nwo, dwo, H_LIN, TOL_FD);
    double e5 = fd_check(layer, "db_out", att_loss, &c, c.b_out, C, dbo, H_LIN, TOL_FD);
    if (g_verbose)
        printf("  %-52s FD rel err da %.1e dw_in %.1e db_in %.1e dw_out %.1e db_out %.1e\n", what, e1, e2, e3, e4, e5);

    free(ry); free(rq); free(ro); free(rl); free(resid); free(out); free(qkv); free(o); free(lse);
    free(da); free(dwi); free(dbi); free(dwo); free(dbo);
    free(c.a); free(c.w_in); free(c.b_in); free(c.w_out); free(c.b_out); free(c.R);
    free(c.out); free(c.qkv); free(c.o); free(c.lse); free(c.ws);
}

// ---------------------------------------------------------------------------------------------
// time embedding: against the formula in double

static void test_timestep_embedding(int D) {
    int ts[] = {0, 1, 2, 3, 17, 100, 250, 499, 500, 731, 998, 999};
    int B = (int)(sizeof ts / sizeof ts[0]), half = D / 2;
    float *out = alloc_f((long)B * D);
    fill_nan(out, (long)B * D);
    timestep_embedding(out, ts, B, D);
    double *ref = alloc_d((long)B * D);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            double f = pow(10000.0, (double)i / half);
            ref[(long)b * D + i] = sin(ts[b] / f);
            ref[(long)b * D + half + i] = cos(ts[b] / f);
        }
    char buf[128];
    snprintf(buf, sizeof buf, "timestep_embedding D%d", D);
    // float32 throughout (as the reference): |arg| <= 999 so arg carries ~1e-4 absolute rounding
    double e = cmp(buf, out, ref, (long)B * D, 2e-4);
    note_fwd("temb", e);
    if (g_verbose) printf("  %-52s max abs err vs double %.1e\n", buf, e);
    free(out); free(ref);
}

// ---------------------------------------------------------------------------------------------
// concat, add_bias_bc, mse

typedef struct {
    int B, Ca, Cb, HW;
    float *a, *b, *out, *R;
} CatCtx;
static double cat_loss(void *ctx, long i) {
    (void)i;
    CatCtx *c = ctx;
    concat_channels_forward(c->out, c->a, c->b, c->B, c->Ca, c->Cb, c->HW);
    return dotR(c->out, c->R, (long)c->B * (c->Ca + c->Cb) * c->HW);
}

static void test_concat(int B, int Ca, int Cb, int HW) {
    const char *layer = "concat";
    long na = (long)B * Ca * HW, nb = (long)B * Cb * HW, no = na + nb;
    CatCtx c = {B, Ca, Cb, HW, randn(na, 1.0f), randn(nb, 1.0f), alloc_f(no), randn(no, 1.0f)};
    fill_nan(c.out, no);
    concat_channels_forward(c.out, c.a, c.b, B, Ca, Cb, HW);
    int ok = 1;
    for (int n = 0; n < B; n++)
        for (int ch = 0; ch < Ca + Cb; ch++)
            for (int p = 0; p < HW; p++) {
                float want = ch < Ca ? c.a[((long)n * Ca + ch) * HW + p] : c.b[((long)n * Cb + ch - Ca) * HW + p];
                ok &= memcmp(&c.out[((long)n * (Ca + Cb) + ch) * HW + p], &want, sizeof(float)) == 0;
            }
    CHECK(ok, "concat forward: wrong layout");
    float *da = zeros(na), *db = zeros(nb);
    concat_channels_backward(da, db, c.R, B, Ca, Cb, HW);
    float *pa = randn(na, 1.0f), *pb = randn(nb, 1.0f), *da2 = copy_f(pa, na), *db2 = copy_f(pb, nb);
    concat_channels_backward(da2, db2, c.R, B, Ca, Cb, HW);
    check_accum("concat da", da2, pa, da, na);
    check_accum("concat db", db2, pb, db, nb);
    double e1 = fd_check(layer, "da", cat_loss, &c, c.a, na, da, H_LIN, TOL_FD);
    double e2 = fd_check(layer, "db", cat_loss, &c, c.b, nb, db, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err da %.1e db %.1e\n", "concat B2 Ca3 Cb2 HW7", e1, e2);
    free(da); free(db); free(pa); free(pb); free(da2); free(db2); free(c.a); free(c.b); free(c.out); free(c.R);
}

typedef struct {
    int B, C, HW;
    float *bias, *base, *out, *R;
} BiasCtx;
static double bias_loss(void *ctx, long i) {
    (void)i;
    BiasCtx *c = ctx;
    long n = (long)c->B * c->C * c->HW;
    memcpy(c->out, c->base, (size_t)n * sizeof(float));
    add_bias_bc_forward(c->out, c->bias, c->B, c->C, c->HW);
    return dotR(c->out, c->R, n);
}

static void test_add_bias_bc(int B, int C, int HW) {
    const char *layer = "add_bias_bc";
    long n = (long)B * C * HW;
    BiasCtx c = {B, C, HW, randn((long)B * C, 1.0f), randn(n, 1.0f), alloc_f(n), randn(n, 1.0f)};
    memcpy(c.out, c.base, (size_t)n * sizeof(float));
    add_bias_bc_forward(c.out, c.bias, B, C, HW);
    double *want = alloc_d(n);
    for (long i = 0; i < n; i++) want[i] = (double)c.base[i] + c.bias[i / HW];
    note_fwd(layer, cmp("add_bias_bc forward (adds to out)", c.out, want, n, TOL_FWD));
    float *dbias = zeros((long)B * C), *pre = randn((long)B * C, 1.0f), *d2 = copy_f(pre, (long)B * C);
    add_bias_bc_backward(dbias, c.R, B, C, HW);
    add_bias_bc_backward(d2, c.R, B, C, HW);
    check_accum("add_bias_bc dbias", d2, pre, dbias, (long)B * C);
    double e = fd_check(layer, "dbias", bias_loss, &c, c.bias, (long)B * C, dbias, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err dbias %.1e\n", "add_bias_bc B2 C3 HW5", e);
    free(want); free(dbias); free(pre); free(d2); free(c.bias); free(c.base); free(c.out); free(c.R);
}

typedef struct {
    long n;
    float *pred, *target;
} MseCtx;
static double mse_loss(void *ctx, long i) {
    (void)i;
    MseCtx *c = ctx;
    return mse_forward(c->pred, c->target, c->n);
}

static void test_mse(long n) {
    const char *layer = "mse";
    MseCtx c = {n, randn(n, 1.0f), randn(n, 1.0f)};
    double s = 0.0;
    for (long i = 0; i < n; i++) s += ((double)c.pred[i] - c.target[i]) * ((double)c.pred[i] - c.target[i]);
    double want = s / n;
    float got = mse_forward(c.pred, c.target, n);
    CHECK(fabs(got - want) <= 1e-6 * want, "mse forward: got %.9g, want %.9g", (double)got, want);
    note_fwd(layer, fabs(got - want) / want);
    float *d = zeros(n);
    mse_backward(d, c.pred, c.target, n);
    double *wd = alloc_d(n);
    for (long i = 0; i < n; i++) wd[i] = 2.0 * ((double)c.pred[i] - c.target[i]) / n;
    cmp("mse backward vs 2 (pred - target) / n", d, wd, n, TOL_FWD);
    // mse_backward is the root of the backward pass and, as documented ("dpred = ..."), WRITES
    // dpred rather than accumulating (train.c relies on this: it does not zero dout first)
    float *pre = randn(n, 1.0f), *d2 = copy_f(pre, n);
    mse_backward(d2, c.pred, c.target, n);
    same_bits("mse dpred written (=), independent of its previous contents", d2, d, n);
    // mse is quadratic: central differences are exact up to rounding
    double e = fd_check(layer, "dpred", mse_loss, &c, c.pred, n, d, 1e-2f, TOL_FD);
    if (g_verbose) printf("  %-52s FD rel err dpred %.1e\n", "mse n=37", e);
    free(d); free(wd); free(pre); free(d2); free(c.pred); free(c.target);
}

// ---------------------------------------------------------------------------------------------

// run one test, timing it when verbose
#define RUN(call) do { double t_ = now_seconds(); call; \
    if (g_verbose > 1) printf("    (%.2f s)\n", now_seconds() - t_); } while (0)

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); // keep PASS lines and FAIL messages in order
    double t0 = now_seconds();
    rng_seed(&g_rng, 12345);
    const char *v = getenv("TEST_VERBOSE");
    if (v) g_verbose = atoi(v);
    printf("test_layers: %d thread(s)\n", nthreads());

    // conv2d (forward, FD and NaN-filled workspace): 3x3 pad 1, 1x1, 4x4 stride 2 pad 1 (even and odd sizes), 3x3 pad 0; non-square images
    RUN(test_conv(0, 2, 3, 5, 6, 4, 3, 1, 1));
    RUN(test_conv(0, 3, 3, 6, 5, 4, 3, 1, 1));
    RUN(test_conv(0, 3, 3, 6, 5, 4, 1, 1, 0));
    RUN(test_conv(0, 3, 3, 6, 6, 4, 4, 2, 1));
    RUN(test_conv(0, 2, 3, 5, 7, 4, 4, 2, 1));
    RUN(test_conv(0, 2, 3, 5, 6, 4, 3, 1, 0));
    // small outputs (<= 49 positions) are grouped im2col GEMMs: 5x5 pad 2, channel counts past the
    // 6 x 16 GEMM tile, and batches of several groups with a partial last one (G = 13 at 5x6,
    // G = 8 at 7x7; at B = 33 the backward's chunks of 2-3 images are groups too)
    RUN(test_conv(0, 2, 2, 7, 6, 3, 5, 1, 2));
    RUN(test_conv(0, 2, 7, 6, 7, 17, 3, 1, 1));
    RUN(test_conv(0, 33, 2, 5, 6, 3, 3, 1, 1));
    RUN(test_conv(0, 9, 2, 14, 14, 3, 4, 2, 1));
    // 4x4 stride 2 with even sizes and outputs over 49 pixels: the space-to-depth implicit GEMM
    RUN(test_conv(0, 3, 3, 16, 14, 5, 4, 2, 1));
    RUN(test_conv(0, 2, 5, 20, 12, 17, 4, 2, 1));
    RUN(test_conv(0, 2, 3, 17, 15, 4, 4, 2, 1)); // odd sizes: explicit im2col
    // grouped 7x7 and 6x8 (Wo = 8: the row vector has no spare lane) through the padded im2col
    RUN(test_conv(0, 9, 3, 7, 7, 5, 3, 1, 1));
    RUN(test_conv(0, 3, 2, 6, 8, 3, 3, 1, 1));
    // larger same convs are implicit GEMMs (3x3, 5x5, 17 output channels)
    RUN(test_conv(0, 2, 3, 15, 14, 4, 3, 1, 1));
    RUN(test_conv(0, 2, 2, 14, 15, 3, 5, 1, 2));
    RUN(test_conv(0, 2, 7, 9, 8, 17, 3, 1, 1));
    RUN(test_conv(0, 5, 3, 10, 10, 4, 3, 1, 1));
    // conv_transpose2d: 4x4 stride 2 pad 1
    RUN(test_conv(1, 2, 3, 3, 4, 4, 4, 2, 1));
    RUN(test_conv(1, 3, 4, 5, 5, 3, 4, 2, 1));
    RUN(test_conv(1, 2, 17, 7, 6, 5, 4, 2, 1));
    // groupnorm
    RUN(test_groupnorm(2, 8, 30, 2));
    RUN(test_groupnorm(3, 16, 25, 8));
    RUN(test_groupnorm(2, 8, 9, 8));
    RUN(test_silu(301));
    RUN(test_linear(3, 7, 5));
    // attention: one query block, and N = 130 crossing query-block boundaries (ATT_R = 32)
    RUN(test_attention(2, 8, 5, 2, 1.5f));
    RUN(test_attention(1, 8, 7, 1, 1.5f));
    RUN(test_attention(3, 8, 130, 2, 2.0f));
    RUN(test_attention(2, 16, 130, 2, 2.0f));
    // narrow heads (D <= 8, flash kernels with keys in the lanes): 2-query tiles with a short
    // last tile, key tails of 1 and 4 columns, odd head widths (D = 3, 5), and logits so wide
    // that the Cauchy-Schwarz shift underflows the row sum and rows are redone (gain 3)
    RUN(test_attention(2, 12, 49, 4, 1.5f));
    RUN(test_attention(3, 20, 36, 4, 1.5f));
    RUN(test_attention(2, 16, 67, 1, 1.0f));
    RUN(test_attention(2, 32, 20, 1, 1.0f));
    RUN(test_attention(2, 4, 37, 1, 3.0f));
    // heads 16, 32, 64 wide (flash kernels): two heads with a key tail of 6 and a last query
    // tile of 2 rows, whole panels only, one key past a panel (N = 17, D = 64), and logits ~ 1e2
    // wide, where the Cauchy-Schwarz shift would underflow the row sum and rows are redone;
    // D = 24 takes the GEMM path (sizes kept small for the sanitizer run)
    RUN(test_attention(1, 32, 38, 2, 1.5f));
    RUN(test_attention(1, 16, 32, 1, 1.0f));
    RUN(test_attention(2, 16, 23, 1, 4.0f));
    RUN(test_attention(1, 64, 17, 1, 1.0f));
    RUN(test_attention(1, 24, 40, 1, 1.5f));
    // images side by side in the projections (N <= 49): groups of 8 and a last one of 1 (B = 9),
    // and backward chunks of 2-3 images (B = 33)
    RUN(test_attention(9, 16, 49, 1, 1.0f));
    RUN(test_attention(33, 8, 10, 2, 1.5f));
    RUN(test_timestep_embedding(128));
    RUN(test_timestep_embedding(16));
    RUN(test_concat(2, 3, 2, 7));
    RUN(test_add_bias_bc(2, 3, 5));
    RUN(test_mse(37));

    printf("  summary (max relative error):\n");
    for (int i = 0; i < g_nstats; i++)
        if (!strcmp(g_stats[i].name, "temb")) printf("    %-12s forward vs double %.1e   (no gradient)\n", g_stats[i].name, g_stats[i].fwd);
        else printf("    %-12s forward vs double %.1e   FD gradients %.1e\n", g_stats[i].name, g_stats[i].fwd, g_stats[i].fd);
    printf("  %.2f s\n", now_seconds() - t0);
    TEST_DONE("test_layers");
}
