// test_layers.c: every fast layer of layers.h against its plain reference twin (nn/ref/ref.h),
// and the reference layers against finite differences and naive double-precision forwards.
//
// The reference layers are the definition. For each of them: random inputs/parameters,
// L = sum_i out_i R_i (double) with a fixed random R. Analytic gradients come from
// backward(dout = R) into zeroed buffers; numeric gradients are central differences
// (L(x+h) - L(x-h)) / (2h) for every element of the input and of every parameter (above FD_MAX
// entries, every step-th). A tensor passes if max |analytic - numeric| <= tol * max |numeric|
// (the tolerance is relative to the gradient's own scale, so a 1% error anywhere fails). Their
// forwards are also compared with naive double-precision implementations written here (conv2d,
// conv_transpose2d, groupnorm, attention incl. the saved qkv/o/lse, ...), independent of the
// reference's own code.
// Each fast layer is then run on the same inputs and compared with its twin on every element:
// every forward output (incl. the saved mean/rstd, qkv/o/lse) and every backward gradient must
// agree within float rounding, max |fast - ref| <= TOL_TWIN max |ref| (TOL_TWIN_ATT for attention).
// The shapes are chosen for the fast layers: each exercises one of their code paths (the
// reference has a single path for all).
// For both twins: accumulation semantics (backward adds to pre-filled gradients; conv2d
// accumulate=1 and attention add to `out`), NULL din paths, and bitwise determinism of
// forward+backward. Scratch `ws` is exactly nthreads * <layer>_ws_floats (the fast layer's
// size; the twin gets the same buffer), NaN-filled, so reading uninitialised scratch or
// overrunning it (under ASan) is caught.
#undef DDPM_REF // this test names both twins itself (make REF=1 would alias the fast names to the twins)
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"
#include "kernels/attention_tiles.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "nn/layers.h"
#include "nn/ref/ref.h"
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

enum { FAST = 0, REF = 1 };
static const char *const IMPL[2] = {"fast", "ref"};

static Rng g_rng;
static int g_verbose = 1;
static long g_nchecks = 0; // checks run (each CHECKN below)
#define CHECKN(cond, ...) do { g_nchecks++; CHECK(cond, __VA_ARGS__); } while (0)

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
static double fmax3(double a, double b, double c) { return fmax(a, fmax(b, c)); }

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
    CHECKN(maxe <= rtol * scale, "%s: max |got - want| = %.3g at [%ld] (got %.9g, want %.9g), scale %.3g, rtol %.2g",
           what, maxe, wi, (double)got[wi], want[wi], scale, rtol);
    return maxe / scale;
}

// bitwise equality
static void same_bits(const char *what, const float *a, const float *b, long n) {
    long bad = -1;
    for (long i = 0; i < n && bad < 0; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0) bad = i;
    CHECKN(bad < 0, "%s: not bitwise identical at [%ld] (%.9g vs %.9g)", what, bad, bad >= 0 ? (double)a[bad] : 0.0,
           bad >= 0 ? (double)b[bad] : 0.0);
}

// res must equal pre + g (backward accumulates into pre-filled gradients)
static void check_accum(const char *what, const float *res, const float *pre, const float *g, long n) {
    double *want = alloc_d(n);
    for (long i = 0; i < n; i++) want[i] = (double)pre[i] + g[i];
    char buf[320];
    snprintf(buf, sizeof buf, "%.256s (accumulate into pre-filled buffer)", what);
    cmp(buf, res, want, n, 1e-5);
    free(want);
}

// worst relative errors per layer kind, for the summary: the reference's forward vs double,
// fast vs reference (forwards and gradients), the reference's gradients vs finite differences
typedef struct {
    const char *name;
    double fwd, twin, fd;
} Stat;
static Stat g_stats[16];
static int g_nstats = 0;
static Stat *stat_for(const char *name) {
    for (int i = 0; i < g_nstats; i++)
        if (!strcmp(g_stats[i].name, name)) return &g_stats[i];
    g_stats[g_nstats].name = name;
    g_stats[g_nstats].fwd = g_stats[g_nstats].twin = g_stats[g_nstats].fd = 0.0;
    return &g_stats[g_nstats++];
}
static void note_fwd(const char *layer, double e) {
    Stat *s = stat_for(layer);
    if (e > s->fwd) s->fwd = e;
}

// Fast vs reference twin: max |fast - ref| <= tol max |ref|. Both are float computations of the
// same quantity in different orders (and exp_approx vs expf), so they differ by rounding only:
// measured up to ~1e-6 for every layer but attention (TOL_TWIN, 10x margin). Attention goes
// through a softmax of logits up to ~1e2 wide (the qk_gain 4 case): a float score carries
// ~1e2 x 6e-8 absolute rounding, which moves P by as much relatively, and its backward amplifies
// that: measured up to 1.6e-5 (TOL_TWIN_ATT, 6x margin). A wrong term, sign or index is O(1).
#define TOL_TWIN 1e-5
#define TOL_TWIN_ATT 1e-4
static double twin(const char *layer, const char *what, const char *tensor, const float *fast, const float *ref,
                   long n) {
    double *want = alloc_d(n);
    for (long i = 0; i < n; i++) want[i] = ref[i];
    char buf[256];
    snprintf(buf, sizeof buf, "%s %s: fast vs ref", what, tensor);
    double e = cmp(buf, fast, want, n, strcmp(layer, "attention") ? TOL_TWIN : TOL_TWIN_ATT);
    free(want);
    Stat *s = stat_for(layer);
    if (e > s->twin) s->twin = e;
    return e;
}

// Finite differences cost a forward of the (single-threaded, plain) reference layer per entry and
// sign: tensors above FD_MAX entries are sampled, every step-th entry. The reference has one code
// path for every shape, and the fast layers are compared with it on every element (TOL_TWIN).
#define FD_MAX 512

// L for the current parameters; `i` is the element being perturbed (a layer whose images are
// independent may evaluate only the image that element belongs to: the other terms cancel).
typedef double (*LossFn)(void *ctx, long i);

// Central differences for every element of x, compared with the analytic gradient `ana`.
// Passes if max |ana - num| <= tol * max |num|. Returns the relative error.
static double fd_check(const char *layer, const char *what, LossFn f, void *ctx, float *x, long n,
                       const float *ana, float h, double tol) {
    double *num = alloc_d(n);
    // the thousands of tiny forwards run on one thread (the reference layers are single-threaded;
    // this also keeps OpenMP out of the loop)
#ifdef _OPENMP
    int nt_saved = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    // tensors above FD_MAX entries: every step-th entry (step coprime to the row lengths seen
    // here: odd); all others are checked in full
    long step = n > FD_MAX ? ((n + FD_MAX - 1) / FD_MAX) | 1 : 1;
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
    CHECKN(maxn > 1e-3, "%s %s: numeric gradient is ~0 (max %.3g): the test is vacuous", layer, what, maxn);
    double scale = fmax(maxn, 1e-3);
    CHECKN(maxe <= tol * scale,
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
// nonlinear ones (silu, groupnorm, attention, softmax) use h = 1e-2: truncation O(h^2) ~ 1e-4
// relative, float rounding of L / (2h) ~ 1e-5 relative, both far below TOL_FD = 3e-3.
#define H_LIN 0.5f
#define H_NL 1e-2f
#define TOL_FD 3e-3
#define TOL_FWD 1e-5

// ---------------------------------------------------------------------------------------------
// conv2d and conv_transpose2d

typedef struct {
    int transpose, B, Ci, H, W, Co, K, s, p, Ho, Wo, slice;
    float *in, *w, *b, *out, *ws, *R, *wco;
    long nout;
    size_t wsper;
} ConvCtx;

// forward of nb images `in` by one twin
static void conv_fwd(const ConvCtx *c, int ref, float *out, const float *in, int nb, int accumulate) {
    if (c->transpose)
        (ref ? conv_transpose2d_forward_ref : conv_transpose2d_forward)(out, in, c->w, c->b, nb, c->Ci, c->H, c->W,
                                                                        c->Co, c->K, c->s, c->p, c->ws);
    else
        (ref ? conv2d_forward_ref : conv2d_forward)(out, in, c->w, c->b, nb, c->Ci, c->H, c->W, c->Co, c->K, c->s,
                                                    c->p, accumulate, c->ws);
}
static void conv_bwd(const ConvCtx *c, int ref, float *din, float *dw, float *db) {
    if (c->transpose)
        (ref ? conv_transpose2d_backward_ref : conv_transpose2d_backward)(din, dw, db, c->R, c->in, c->w, c->B, c->Ci,
                                                                          c->H, c->W, c->Co, c->K, c->s, c->p, c->ws);
    else
        (ref ? conv2d_backward_ref : conv2d_backward)(din, dw, db, c->R, c->in, c->w, c->B, c->Ci, c->H, c->W, c->Co,
                                                      c->K, c->s, c->p, c->ws);
}
// L of the reference layer. Only the part of L that the perturbed element reaches is evaluated
// (the rest is the same at x + h and x - h and cancels): slice 1, an element of `in`: its image;
// slice 2 or 3, an element of w or bias: its output channel co (the layer run with Co = 1).
static double conv_loss(void *ctx, long i) {
    ConvCtx *c = ctx;
    long per_out = c->nout / c->B, P = (long)c->Ho * c->Wo, KK = (long)c->K * c->K;
    if (c->slice == 1) {
        long per_in = (long)c->Ci * c->H * c->W, b = i / per_in;
        conv_fwd(c, REF, c->out, c->in + b * per_in, 1, 0);
        return dotR(c->out, c->R + b * per_out, per_out);
    }
    if (c->slice == 2 || c->slice == 3) {
        int co = (int)(c->slice == 3 ? i : c->transpose ? (i / KK) % c->Co : i / (c->Ci * KK));
        if (c->transpose) { // w[Ci,Co,K,K]: w[:,co] gathered into [Ci,1,K,K]
            for (long ci = 0; ci < c->Ci; ci++)
                memcpy(c->wco + ci * KK, c->w + (ci * c->Co + co) * KK, (size_t)KK * sizeof(float));
            conv_transpose2d_forward_ref(c->out, c->in, c->wco, c->b + co, c->B, c->Ci, c->H, c->W, 1, c->K, c->s,
                                         c->p, c->ws);
        } else {
            conv2d_forward_ref(c->out, c->in, c->w + co * c->Ci * KK, c->b + co, c->B, c->Ci, c->H, c->W, 1, c->K,
                               c->s, c->p, 0, c->ws);
        }
        double L = 0.0;
        for (long b = 0; b < c->B; b++) L += dotR(c->out + b * P, c->R + (b * c->Co + co) * P, P);
        return L;
    }
    conv_fwd(c, REF, c->out, c->in, c->B, 0);
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

typedef struct { float *out, *din, *dw, *db; } ConvRes;

// the checks one twin must pass on its own; its forward output and gradients (dout = R) into r
static void conv_checks(ConvCtx *c, int ref, const double *naive, const char *what0, ConvRes *r) {
    long nin = (long)c->B * c->Ci * c->H * c->W, nw = (long)c->Co * c->Ci * c->K * c->K, nout = c->nout;
    int Co = c->Co;
    char what[200], buf[256];
    snprintf(what, sizeof what, "%s %s", what0, IMPL[ref]);
    fill_nan(c->ws, (long)c->wsper * nthreads());
    // forward (out NaN-filled: every element must be written)
    r->out = alloc_f(nout);
    fill_nan(r->out, nout);
    conv_fwd(c, ref, r->out, c->in, c->B, 0);
    if (!c->transpose) { // accumulate = 1 adds conv + bias to what is there
        float *pre = randn(nout, 1.0f), *acc = copy_f(pre, nout);
        conv_fwd(c, ref, acc, c->in, c->B, 1);
        double *want = alloc_d(nout);
        for (long i = 0; i < nout; i++) want[i] = pre[i] + naive[i];
        snprintf(buf, sizeof buf, "%s forward accumulate=1", what);
        cmp(buf, acc, want, nout, TOL_FWD);
        free(pre); free(acc); free(want);
    }

    // analytic gradients (dout = R) into zeros
    r->din = zeros(nin);
    r->dw = zeros(nw);
    r->db = zeros(Co);
    conv_bwd(c, ref, r->din, r->dw, r->db);

    // NULL din: same dw/db, bit for bit
    {
        float *dw2 = zeros(nw), *db2 = zeros(Co);
        conv_bwd(c, ref, NULL, dw2, db2);
        snprintf(buf, sizeof buf, "%s dw with din=NULL", what);
        same_bits(buf, dw2, r->dw, nw);
        snprintf(buf, sizeof buf, "%s db with din=NULL", what);
        same_bits(buf, db2, r->db, Co);
        free(dw2); free(db2);
    }
    // accumulation into pre-filled gradients
    {
        float *pi = randn(nin, 1.0f), *pw = randn(nw, 1.0f), *pb = randn(Co, 1.0f);
        float *din2 = copy_f(pi, nin), *dw2 = copy_f(pw, nw), *db2 = copy_f(pb, Co);
        conv_bwd(c, ref, din2, dw2, db2);
        snprintf(buf, sizeof buf, "%s din", what);
        check_accum(buf, din2, pi, r->din, nin);
        snprintf(buf, sizeof buf, "%s dw", what);
        check_accum(buf, dw2, pw, r->dw, nw);
        snprintf(buf, sizeof buf, "%s db", what);
        check_accum(buf, db2, pb, r->db, Co);
        free(pi); free(pw); free(pb); free(din2); free(dw2); free(db2);
    }
    // determinism: forward + backward again, bitwise identical
    {
        float *out2 = alloc_f(nout), *din2 = zeros(nin), *dw2 = zeros(nw), *db2 = zeros(Co);
        fill_nan(c->ws, (long)c->wsper * nthreads());
        conv_fwd(c, ref, out2, c->in, c->B, 0);
        conv_bwd(c, ref, din2, dw2, db2);
        snprintf(buf, sizeof buf, "%s determinism out", what);
        same_bits(buf, out2, r->out, nout);
        snprintf(buf, sizeof buf, "%s determinism din", what);
        same_bits(buf, din2, r->din, nin);
        snprintf(buf, sizeof buf, "%s determinism dw", what);
        same_bits(buf, dw2, r->dw, nw);
        snprintf(buf, sizeof buf, "%s determinism db", what);
        same_bits(buf, db2, r->db, Co);
        free(out2); free(din2); free(dw2); free(db2);
    }
}

static void conv_res_free(ConvRes *r) { free(r->out); free(r->din); free(r->dw); free(r->db); }

static void test_conv(int transpose, int B, int Ci, int H, int W, int Co, int K, int s, int p) {
    const char *layer = transpose ? "convT2d" : "conv2d";
    ConvCtx c = {.transpose = transpose, .B = B, .Ci = Ci, .H = H, .W = W, .Co = Co, .K = K, .s = s, .p = p};
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
    c.wco = alloc_f((long)Ci * K * K);
    c.wsper = transpose ? conv_transpose2d_ws_floats(Ci, H, W, Co, K, s, p) : conv2d_ws_floats(Ci, H, W, Co, K, s, p);
    c.ws = ws_alloc(c.wsper);
    char what[160], buf[256];
    snprintf(what, sizeof what, "%s K%d s%d p%d B%d Ci%d %dx%d Co%d -> %dx%d", layer, K, s, p, B, Ci, H, W, Co, c.Ho, c.Wo);

    double *naive = alloc_d(nout);
    transpose ? naive_convT(naive, &c) : naive_conv2d(naive, &c);
    ConvRes f, r;
    conv_checks(&c, FAST, naive, what, &f);
    conv_checks(&c, REF, naive, what, &r);

    // the reference's forward vs the naive double implementation
    snprintf(buf, sizeof buf, "%s ref forward vs double", what);
    note_fwd(layer, cmp(buf, r.out, naive, nout, TOL_FWD));
    // fast vs reference
    double t = fmax(twin(layer, what, "out", f.out, r.out, nout), twin(layer, what, "din", f.din, r.din, nin));
    t = fmax3(t, twin(layer, what, "dw", f.dw, r.dw, nw), twin(layer, what, "db", f.db, r.db, Co));

    // finite differences on the reference (conv is linear in each of in, w, bias)
    c.slice = 1;
    double e1 = fd_check(layer, "din", conv_loss, &c, c.in, nin, r.din, H_LIN, TOL_FD);
    c.slice = 2;
    double e2 = fd_check(layer, "dw", conv_loss, &c, c.w, nw, r.dw, H_LIN, TOL_FD);
    c.slice = 3;
    double e3 = fd_check(layer, "db", conv_loss, &c, c.b, Co, r.db, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) din %.1e dw %.1e db %.1e\n", what, t, e1, e2, e3);

    conv_res_free(&f); conv_res_free(&r);
    free(naive);
    free(c.in); free(c.w); free(c.b); free(c.R); free(c.out); free(c.wco); free(c.ws);
}

// bf16 precision: every GEMM of a conv rounds its two inputs (x, w, dout or copies of them) to
// bf16 and sums in fp32, whatever its lowering (implicit, pair images, grouped, s2d, im2col). So
// the fast layer in bf16 must match the reference twin run on the rounded x, w and dout within
// float rounding (TOL_TWIN); dbias sums the unrounded dout.
static void test_conv_bf16(int transpose, int B, int Ci, int H, int W, int Co, int K, int s, int p) {
    ConvCtx c = {.transpose = transpose, .B = B, .Ci = Ci, .H = H, .W = W, .Co = Co, .K = K, .s = s, .p = p};
    c.Ho = transpose ? (H - 1) * s - 2 * p + K : (H + 2 * p - K) / s + 1;
    c.Wo = transpose ? (W - 1) * s - 2 * p + K : (W + 2 * p - K) / s + 1;
    long nin = (long)B * Ci * H * W, nw = (long)Co * Ci * K * K, P = (long)c.Ho * c.Wo, nout = B * Co * P;
    c.nout = nout;
    c.in = randn(nin, 1.0f);
    c.w = randn(nw, 1.0f / sqrtf((float)(Ci * K * K)));
    c.b = randn(Co, 0.5f);
    c.R = randn(nout, 1.0f);
    c.wsper = transpose ? conv_transpose2d_ws_floats(Ci, H, W, Co, K, s, p) : conv2d_ws_floats(Ci, H, W, Co, K, s, p);
    c.ws = ws_alloc(c.wsper);
    float *f[4] = {alloc_f(nout), zeros(nin), zeros(nw), zeros(Co)}, *r[4] = {alloc_f(nout), zeros(nin), zeros(nw), zeros(Co)};
    gemm_set_precision(GEMM_BF16);
    conv_fwd(&c, FAST, f[0], c.in, B, 0);
    conv_bwd(&c, FAST, f[1], f[2], f[3]);
    gemm_set_precision(GEMM_FP32);
    ConvCtx q = c; // the reference on rounded inputs
    q.in = copy_f(c.in, nin);
    q.w = copy_f(c.w, nw);
    q.R = copy_f(c.R, nout);
    for (long i = 0; i < nin; i++) q.in[i] = tu_bf16(q.in[i]);
    for (long i = 0; i < nw; i++) q.w[i] = tu_bf16(q.w[i]);
    for (long i = 0; i < nout; i++) q.R[i] = tu_bf16(q.R[i]);
    conv_fwd(&q, REF, r[0], q.in, B, 0);
    conv_bwd(&q, REF, r[1], r[2], r[3]);
    double *db = alloc_d(Co);
    for (long co = 0; co < Co; co++) {
        db[co] = 0.0;
        for (long b = 0; b < B; b++)
            for (long i = 0; i < P; i++) db[co] += c.R[(b * Co + co) * P + i];
    }
    char what[160];
    snprintf(what, sizeof what, "%s bf16 K%d s%d p%d B%d Ci%d %dx%d Co%d", transpose ? "convT2d" : "conv2d", K, s, p, B,
             Ci, H, W, Co);
    const char *name[3] = {"out", "din", "dw"};
    long n[3] = {nout, nin, nw};
    double e = 0.0;
    for (int k = 0; k < 3; k++) e = fmax(e, twin("conv bf16", what, name[k], f[k], r[k], n[k]));
    char buf[256];
    snprintf(buf, sizeof buf, "%s db (unrounded dout)", what);
    e = fmax(e, cmp(buf, f[3], db, Co, TOL_TWIN));
    if (g_verbose) printf("  %-50s fast(bf16)-ref(bf16 inputs) %.1e\n", what, e);
    for (int k = 0; k < 4; k++) { free(f[k]); free(r[k]); }
    free(db); free(q.in); free(q.w); free(q.R);
    free(c.in); free(c.w); free(c.b); free(c.R); free(c.ws);
}

// ---------------------------------------------------------------------------------------------
// GroupNorm (and the fused GroupNorm + SiLU)

typedef struct {
    int B, C, HW, G;
    float *in, *gamma, *beta, *out, *mean, *rstd, *R;
} GnCtx;

static void gn_fwd(const GnCtx *c, int ref, float *out, float *mean, float *rstd) {
    (ref ? groupnorm_forward_ref : groupnorm_forward)(out, mean, rstd, c->in, c->gamma, c->beta, c->B, c->C, c->HW, c->G);
}
static void gn_bwd(const GnCtx *c, int ref, float *din, float *dg, float *db, const float *mean, const float *rstd) {
    (ref ? groupnorm_backward_ref : groupnorm_backward)(din, dg, db, c->R, c->in, mean, rstd, c->gamma, c->B, c->C,
                                                        c->HW, c->G);
}
static double gn_loss(void *ctx, long i) {
    (void)i;
    GnCtx *c = ctx;
    gn_fwd(c, REF, c->out, c->mean, c->rstd);
    return dotR(c->out, c->R, (long)c->B * c->C * c->HW);
}

// out, mean, rstd; act of the fused forward and dgn = silu_backward_groupnorm(dact); the gradients
typedef struct { float *out, *mean, *rstd, *act, *dgn, *din, *dg, *db; } GnRes;

static void gn_checks(GnCtx *c, int ref, const double *ry, const float *dact, const char *what0, GnRes *r) {
    int B = c->B, C = c->C, HW = c->HW, G = c->G;
    long n = (long)B * C * HW;
    char what[200], buf[256];
    snprintf(what, sizeof what, "%s %s", what0, IMPL[ref]);
    r->out = alloc_f(n);
    r->mean = alloc_f(B * G);
    r->rstd = alloc_f(B * G);
    fill_nan(r->out, n);
    fill_nan(r->mean, B * G);
    fill_nan(r->rstd, B * G);
    gn_fwd(c, ref, r->out, r->mean, r->rstd);
    { // fused GroupNorm + SiLU: the same GroupNorm bits, and act = silu(out)
        float *o2 = alloc_f(n), *m2 = alloc_f(B * G), *r2 = alloc_f(B * G);
        double *ract = alloc_d(n);
        r->act = alloc_f(n);
        fill_nan(r->act, n);
        (ref ? groupnorm_silu_forward_ref : groupnorm_silu_forward)(o2, r->act, m2, r2, c->in, c->gamma, c->beta, B, C,
                                                                    HW, G);
        snprintf(buf, sizeof buf, "%s fused GN+SiLU: GroupNorm part", what);
        same_bits(buf, o2, r->out, n);
        same_bits(buf, m2, r->mean, B * G);
        same_bits(buf, r2, r->rstd, B * G);
        for (long i = 0; i < n; i++) ract[i] = ry[i] / (1.0 + exp(-ry[i]));
        snprintf(buf, sizeof buf, "%s fused GN+SiLU: SiLU part vs double", what);
        double e = cmp(buf, r->act, ract, n, TOL_FWD);
        if (ref) note_fwd("groupnorm", e);
        // SiLU backward with the GroupNorm output recomputed == silu_backward on the stored output
        float *d1 = zeros(n);
        r->dgn = zeros(n);
        (ref ? silu_backward_ref : silu_backward)(d1, dact, r->out, n);
        (ref ? silu_backward_groupnorm_ref : silu_backward_groupnorm)(r->dgn, dact, c->in, m2, r2, c->gamma, c->beta, B,
                                                                      C, HW, G);
        double worst = 0;
        for (long i = 0; i < n; i++)
            worst = fmax(worst, fabs((double)d1[i] - r->dgn[i]) / (fabs((double)d1[i]) + 1e-3));
        CHECKN(worst < 1e-5, "%s: silu_backward_groupnorm vs silu_backward: rel err %g", what, worst);
        // and act alone (out = NULL) is the same SiLU
        float *act2 = alloc_f(n);
        (ref ? groupnorm_silu_forward_ref : groupnorm_silu_forward)(NULL, act2, m2, r2, c->in, c->gamma, c->beta, B, C,
                                                                    HW, G);
        snprintf(buf, sizeof buf, "%s fused GN+SiLU without out", what);
        same_bits(buf, act2, r->act, n);
        free(act2); free(d1); free(o2); free(m2); free(r2); free(ract);
    }

    r->din = zeros(n);
    r->dg = zeros(C);
    r->db = zeros(C);
    gn_bwd(c, ref, r->din, r->dg, r->db, r->mean, r->rstd);
    {
        float *dg2 = zeros(C), *db2 = zeros(C);
        gn_bwd(c, ref, NULL, dg2, db2, r->mean, r->rstd);
        snprintf(buf, sizeof buf, "%s dgamma with din=NULL", what);
        same_bits(buf, dg2, r->dg, C);
        snprintf(buf, sizeof buf, "%s dbeta with din=NULL", what);
        same_bits(buf, db2, r->db, C);
        free(dg2); free(db2);
    }
    {
        float *pi = randn(n, 1.0f), *pg = randn(C, 1.0f), *pb = randn(C, 1.0f);
        float *d1 = copy_f(pi, n), *d2 = copy_f(pg, C), *d3 = copy_f(pb, C), *d4 = copy_f(pi, n);
        gn_bwd(c, ref, d1, d2, d3, r->mean, r->rstd);
        snprintf(buf, sizeof buf, "%s din", what);
        check_accum(buf, d1, pi, r->din, n);
        snprintf(buf, sizeof buf, "%s dgamma", what);
        check_accum(buf, d2, pg, r->dg, C);
        snprintf(buf, sizeof buf, "%s dbeta", what);
        check_accum(buf, d3, pb, r->db, C);
        (ref ? silu_backward_groupnorm_ref : silu_backward_groupnorm)(d4, dact, c->in, r->mean, r->rstd, c->gamma,
                                                                      c->beta, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s silu_backward_groupnorm dgn", what);
        check_accum(buf, d4, pi, r->dgn, n);
        free(pi); free(pg); free(pb); free(d1); free(d2); free(d3); free(d4);
    }
    { // the fused backward of GroupNorm + SiLU == silu_backward_groupnorm into a zeroed dgn, then
      // groupnorm_backward of it, accumulating into din, dgamma, dbeta, its scratch dgn overwritten (filled
      // with NaN before); dgamma to rounding (its sums over b may contract to FMAs)
        Rng keep = g_rng; // the later tests draw the same inputs with or without this check
        float *pi = randn(n, 1.0f), *pg = randn(C, 1.0f), *pb = randn(C, 1.0f);
        float *d1 = copy_f(pi, n), *d2 = copy_f(pg, C), *d3 = copy_f(pb, C), *d4 = zeros(n);
        float *e1 = copy_f(pi, n), *e2 = copy_f(pg, C), *e3 = copy_f(pb, C), *e4 = alloc_f(n), *sums = alloc_f(2L * B * C);
        fill_nan(e4, n);
        (ref ? silu_backward_groupnorm_ref : silu_backward_groupnorm)(d4, dact, c->in, r->mean, r->rstd, c->gamma,
                                                                      c->beta, B, C, HW, G);
        (ref ? groupnorm_backward_ref : groupnorm_backward)(d1, d2, d3, d4, c->in, r->mean, r->rstd, c->gamma, B, C, HW, G);
        fill_nan(sums, 2L * B * C);
        (ref ? groupnorm_silu_backward_ref : groupnorm_silu_backward)(e1, e2, e3, e4, sums, dact, c->in, r->mean, r->rstd,
                                                                      c->gamma, c->beta, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s groupnorm_silu_backward dgn", what);
        same_bits(buf, e4, d4, n);
        snprintf(buf, sizeof buf, "%s groupnorm_silu_backward din", what);
        same_bits(buf, e1, d1, n);
        snprintf(buf, sizeof buf, "%s groupnorm_silu_backward dbeta", what);
        same_bits(buf, e3, d3, C);
        double worst = 0;
        for (int i = 0; i < C; i++) worst = fmax(worst, fabs((double)e2[i] - d2[i]) / (fabs((double)d2[i] - pg[i]) + 1e-3));
        CHECKN(worst < 1e-5, "%s: groupnorm_silu_backward dgamma vs the two layers: rel err %g", what, worst);
        // and without din: the same parameter gradients
        float *f2 = copy_f(pg, C), *f3 = copy_f(pb, C), *f4 = alloc_f(n);
        fill_nan(f4, n);
        (ref ? groupnorm_silu_backward_ref : groupnorm_silu_backward)(NULL, f2, f3, f4, sums, dact, c->in, r->mean,
                                                                      r->rstd, c->gamma, c->beta, B, C, HW, G);
        snprintf(buf, sizeof buf, "%s groupnorm_silu_backward with din=NULL", what);
        same_bits(buf, f2, e2, C);
        same_bits(buf, f3, e3, C);
        same_bits(buf, f4, e4, n);
        free(pi); free(pg); free(pb); free(d1); free(d2); free(d3); free(d4);
        free(e1); free(e2); free(e3); free(e4); free(f2); free(f3); free(f4); free(sums);
        g_rng = keep;
    }
    {
        float *o2 = alloc_f(n), *m2 = alloc_f(B * G), *r2 = alloc_f(B * G);
        float *d1 = zeros(n), *d2 = zeros(C), *d3 = zeros(C);
        gn_fwd(c, ref, o2, m2, r2);
        gn_bwd(c, ref, d1, d2, d3, m2, r2);
        snprintf(buf, sizeof buf, "%s determinism", what);
        same_bits(buf, o2, r->out, n);
        same_bits(buf, m2, r->mean, B * G);
        same_bits(buf, r2, r->rstd, B * G);
        same_bits(buf, d1, r->din, n);
        same_bits(buf, d2, r->dg, C);
        same_bits(buf, d3, r->db, C);
        free(o2); free(m2); free(r2); free(d1); free(d2); free(d3);
    }
}

static void gn_res_free(GnRes *r) {
    free(r->out); free(r->mean); free(r->rstd); free(r->act); free(r->dgn); free(r->din); free(r->dg); free(r->db);
}

static void test_groupnorm(int B, int C, int HW, int G) {
    const char *layer = "groupnorm";
    long n = (long)B * C * HW;
    int Cg = C / G;
    GnCtx c = {.B = B, .C = C, .HW = HW, .G = G};
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
    float *dact = randn(n, 1.0f);
    char what[160], buf[256];
    snprintf(what, sizeof what, "groupnorm B%d C%d HW%d G%d", B, C, HW, G);

    // forward in double
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
    GnRes f, r;
    gn_checks(&c, FAST, ry, dact, what, &f);
    gn_checks(&c, REF, ry, dact, what, &r);
    snprintf(buf, sizeof buf, "%s ref forward out vs double", what);
    note_fwd(layer, cmp(buf, r.out, ry, n, TOL_FWD));
    snprintf(buf, sizeof buf, "%s ref forward mean vs double", what);
    note_fwd(layer, cmp(buf, r.mean, rm, B * G, TOL_FWD));
    snprintf(buf, sizeof buf, "%s ref forward rstd vs double", what);
    note_fwd(layer, cmp(buf, r.rstd, rr, B * G, TOL_FWD));

    double t = fmax3(twin(layer, what, "out", f.out, r.out, n), twin(layer, what, "mean", f.mean, r.mean, B * G),
                     twin(layer, what, "rstd", f.rstd, r.rstd, B * G));
    t = fmax3(t, twin(layer, what, "act (fused SiLU)", f.act, r.act, n),
              twin(layer, what, "silu_backward_groupnorm", f.dgn, r.dgn, n));
    t = fmax3(t, twin(layer, what, "din", f.din, r.din, n), twin(layer, what, "dgamma", f.dg, r.dg, C));
    t = fmax(t, twin(layer, what, "dbeta", f.db, r.db, C));

    double e1 = fd_check(layer, "din", gn_loss, &c, c.in, n, r.din, H_NL, TOL_FD);
    double e2 = fd_check(layer, "dgamma", gn_loss, &c, c.gamma, C, r.dg, H_LIN, TOL_FD);
    double e3 = fd_check(layer, "dbeta", gn_loss, &c, c.beta, C, r.db, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) din %.1e dgamma %.1e dbeta %.1e\n", what, t, e1, e2, e3);

    gn_res_free(&f); gn_res_free(&r);
    free(ry); free(rm); free(rr); free(dact);
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
    silu_forward_ref(c->out, c->in, c->n);
    return dotR(c->out, c->R, c->n);
}

static void silu_checks(SiluCtx *c, int ref, float **out, float **din) {
    long n = c->n;
    char buf[128];
    *out = alloc_f(n);
    fill_nan(*out, n);
    (ref ? silu_forward_ref : silu_forward)(*out, c->in, n);
    *din = zeros(n);
    (ref ? silu_backward_ref : silu_backward)(*din, c->R, c->in, n);
    float *pre = randn(n, 1.0f), *d2 = copy_f(pre, n);
    (ref ? silu_backward_ref : silu_backward)(d2, c->R, c->in, n);
    snprintf(buf, sizeof buf, "silu %s din", IMPL[ref]);
    check_accum(buf, d2, pre, *din, n);
    float *o3 = alloc_f(n), *d3 = zeros(n);
    (ref ? silu_forward_ref : silu_forward)(o3, c->in, n);
    (ref ? silu_backward_ref : silu_backward)(d3, c->R, c->in, n);
    snprintf(buf, sizeof buf, "silu %s determinism out", IMPL[ref]);
    same_bits(buf, o3, *out, n);
    snprintf(buf, sizeof buf, "silu %s determinism din", IMPL[ref]);
    same_bits(buf, d3, *din, n);
    free(pre); free(d2); free(o3); free(d3);
}

static void test_silu(long n) {
    const char *layer = "silu";
    SiluCtx c = {n, randn(n, 3.0f), alloc_f(n), randn(n, 1.0f)};
    c.in[0] = 0.0f;
    if (n > 3) { c.in[1] = 20.0f; c.in[2] = -20.0f; c.in[3] = -90.0f; }
    double *naive = alloc_d(n);
    for (long i = 0; i < n; i++) naive[i] = c.in[i] / (1.0 + exp(-(double)c.in[i]));
    float *fo, *fd, *ro, *rd;
    silu_checks(&c, FAST, &fo, &fd);
    silu_checks(&c, REF, &ro, &rd);
    note_fwd(layer, cmp("silu ref forward vs double", ro, naive, n, TOL_FWD));
    double t = fmax(twin(layer, "silu", "out", fo, ro, n), twin(layer, "silu", "din", fd, rd, n));
    double e = fd_check(layer, "din", silu_loss, &c, c.in, n, rd, H_NL, TOL_FD);
    char what[64];
    snprintf(what, sizeof what, "silu n=%ld", n);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) din %.1e\n", what, t, e);
    free(naive); free(fo); free(fd); free(ro); free(rd); free(c.in); free(c.out); free(c.R);
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
    linear_forward_ref(c->out, c->in, c->w, c->b, c->B, c->I, c->O);
    return dotR(c->out, c->R, (long)c->B * c->O);
}

typedef struct { float *out, *din, *dw, *db; } LinRes;

static void lin_checks(LinCtx *c, int ref, const char *what0, LinRes *r) {
    int B = c->B, I = c->I, O = c->O;
    long nin = (long)B * I, nw = (long)O * I, nout = (long)B * O;
    void (*fwd)(float *, const float *, const float *, const float *, int, int, int) =
        ref ? linear_forward_ref : linear_forward;
    void (*bwd)(float *, float *, float *, const float *, const float *, const float *, int, int, int) =
        ref ? linear_backward_ref : linear_backward;
    char what[200], buf[256];
    snprintf(what, sizeof what, "%s %s", what0, IMPL[ref]);
    r->out = alloc_f(nout);
    fill_nan(r->out, nout);
    fwd(r->out, c->in, c->w, c->b, B, I, O);
    r->din = zeros(nin);
    r->dw = zeros(nw);
    r->db = zeros(O);
    bwd(r->din, r->dw, r->db, c->R, c->in, c->w, B, I, O);
    {
        float *dw2 = zeros(nw), *db2 = zeros(O), *dw3 = zeros(nw), *din3 = zeros(nin);
        bwd(NULL, dw2, db2, c->R, c->in, c->w, B, I, O);
        snprintf(buf, sizeof buf, "%s din=NULL", what);
        same_bits(buf, dw2, r->dw, nw);
        same_bits(buf, db2, r->db, O);
        bwd(din3, dw3, NULL, c->R, c->in, c->w, B, I, O);
        snprintf(buf, sizeof buf, "%s dbias=NULL", what);
        same_bits(buf, dw3, r->dw, nw);
        same_bits(buf, din3, r->din, nin);
        free(dw2); free(db2); free(dw3); free(din3);
    }
    {
        float *pi = randn(nin, 1.0f), *pw = randn(nw, 1.0f), *pb = randn(O, 1.0f);
        float *d1 = copy_f(pi, nin), *d2 = copy_f(pw, nw), *d3 = copy_f(pb, O);
        bwd(d1, d2, d3, c->R, c->in, c->w, B, I, O);
        snprintf(buf, sizeof buf, "%s din", what);
        check_accum(buf, d1, pi, r->din, nin);
        snprintf(buf, sizeof buf, "%s dw", what);
        check_accum(buf, d2, pw, r->dw, nw);
        snprintf(buf, sizeof buf, "%s db", what);
        check_accum(buf, d3, pb, r->db, O);
        free(pi); free(pw); free(pb); free(d1); free(d2); free(d3);
    }
    {
        float *o2 = alloc_f(nout), *d1 = zeros(nin), *d2 = zeros(nw), *d3 = zeros(O);
        fwd(o2, c->in, c->w, c->b, B, I, O);
        bwd(d1, d2, d3, c->R, c->in, c->w, B, I, O);
        snprintf(buf, sizeof buf, "%s determinism", what);
        same_bits(buf, o2, r->out, nout);
        same_bits(buf, d1, r->din, nin);
        same_bits(buf, d2, r->dw, nw);
        same_bits(buf, d3, r->db, O);
        free(o2); free(d1); free(d2); free(d3);
    }
}

static void test_linear(int B, int I, int O) {
    const char *layer = "linear";
    long nin = (long)B * I, nw = (long)O * I, nout = (long)B * O;
    LinCtx c = {B, I, O, randn(nin, 1.0f), randn(nw, 1.0f / sqrtf((float)I)), randn(O, 0.5f), alloc_f(nout),
                randn(nout, 1.0f)};
    char what[160], buf[256];
    snprintf(what, sizeof what, "linear B%d I%d O%d", B, I, O);
    double *naive = alloc_d(nout);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++) {
            double s = c.b[o];
            for (int i = 0; i < I; i++) s += (double)c.in[b * I + i] * c.w[o * I + i];
            naive[b * O + o] = s;
        }
    LinRes f, r;
    lin_checks(&c, FAST, what, &f);
    lin_checks(&c, REF, what, &r);
    snprintf(buf, sizeof buf, "%s ref forward vs double", what);
    note_fwd(layer, cmp(buf, r.out, naive, nout, TOL_FWD));
    double t = fmax(twin(layer, what, "out", f.out, r.out, nout), twin(layer, what, "din", f.din, r.din, nin));
    t = fmax3(t, twin(layer, what, "dw", f.dw, r.dw, nw), twin(layer, what, "db", f.db, r.db, O));
    double e1 = fd_check(layer, "din", lin_loss, &c, c.in, nin, r.din, H_LIN, TOL_FD);
    double e2 = fd_check(layer, "dw", lin_loss, &c, c.w, nw, r.dw, H_LIN, TOL_FD);
    double e3 = fd_check(layer, "db", lin_loss, &c, c.b, O, r.db, H_LIN, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) din %.1e dw %.1e db %.1e\n", what, t, e1, e2, e3);
    free(naive);
    free(f.out); free(f.din); free(f.dw); free(f.db); free(r.out); free(r.din); free(r.dw); free(r.db);
    free(c.in); free(c.w); free(c.b); free(c.out); free(c.R);
}

// ---------------------------------------------------------------------------------------------
// attention

typedef struct {
    int B, C, N, NH, slice_a;
    float *a, *w_in, *b_in, *w_out, *b_out, *out, *qkv, *o, *lse, *ws, *R;
    size_t wsper;
} AttCtx;

static void att_fwd(const AttCtx *c, int ref, float *out, float *qkv, float *o, float *lse, const float *a, int nb) {
    (ref ? attention_forward_ref : attention_forward)(out, qkv, o, lse, a, c->w_in, c->b_in, c->w_out, c->b_out, nb,
                                                      c->C, c->N, c->NH, c->ws);
}
static void att_bwd(const AttCtx *c, int ref, float *da, float *dwi, float *dbi, float *dwo, float *dbo,
                    const float *qkv, const float *o, const float *lse) {
    (ref ? attention_backward_ref : attention_backward)(da, dwi, dbi, dwo, dbo, c->R, c->a, qkv, o, lse, c->w_in,
                                                        c->w_out, c->B, c->C, c->N, c->NH, c->ws);
}

// L of the reference layer
static double att_loss(void *ctx, long i) {
    AttCtx *c = ctx;
    long per = (long)c->C * c->N;
    if (c->slice_a) { // perturbing a[i] only changes image i / (C N): evaluate that image alone
        long b = i / per;
        memset(c->out, 0, (size_t)per * sizeof(float));
        att_fwd(c, REF, c->out, c->qkv, c->o, c->lse, c->a + b * per, 1);
        return dotR(c->out, c->R + b * per, per);
    }
    long n = (long)c->B * per;
    memset(c->out, 0, (size_t)n * sizeof(float));
    att_fwd(c, REF, c->out, c->qkv, c->o, c->lse, c->a, c->B);
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

// part = out - residual (the attention alone); saved qkv, o, lse; the gradients
typedef struct { float *part, *qkv, *o, *lse, *da, *dwi, *dbi, *dwo, *dbo; } AttRes;

static void att_checks(AttCtx *c, int ref, const float *resid, const double *ry, const char *what0, AttRes *r) {
    int B = c->B, C = c->C, N = c->N, NH = c->NH;
    long n = (long)B * C * N, nq = 3 * n, nl = (long)B * NH * N;
    long nwi = 3L * C * C, nbi = 3L * C, nwo = (long)C * C;
    char what[200], buf[256];
    snprintf(what, sizeof what, "%s %s", what0, IMPL[ref]);
    fill_nan(c->ws, (long)c->wsper * nthreads());
    // forward adds to `out` (the residual)
    float *out = copy_f(resid, n);
    r->qkv = alloc_f(nq);
    r->o = alloc_f(n);
    r->lse = alloc_f(nl);
    fill_nan(r->qkv, nq);
    fill_nan(r->o, n);
    fill_nan(r->lse, nl);
    att_fwd(c, ref, out, r->qkv, r->o, r->lse, c->a, B);
    {
        double *want = alloc_d(n);
        for (long i = 0; i < n; i++) want[i] = resid[i] + ry[i];
        snprintf(buf, sizeof buf, "%s forward out (residual + attention) vs double", what);
        cmp(buf, out, want, n, TOL_FWD);
        // the attention part alone, so a wrong result cannot hide behind the residual
        r->part = alloc_f(n);
        for (long i = 0; i < n; i++) r->part[i] = out[i] - resid[i];
        free(want);
    }

    r->da = zeros(n);
    r->dwi = zeros(nwi);
    r->dbi = zeros(nbi);
    r->dwo = zeros(nwo);
    r->dbo = zeros(C);
    att_bwd(c, ref, r->da, r->dwi, r->dbi, r->dwo, r->dbo, r->qkv, r->o, r->lse);
    {
        float *g2 = zeros(nwi), *g3 = zeros(nbi), *g4 = zeros(nwo), *g5 = zeros(C);
        att_bwd(c, ref, NULL, g2, g3, g4, g5, r->qkv, r->o, r->lse);
        snprintf(buf, sizeof buf, "%s da=NULL", what);
        same_bits(buf, g2, r->dwi, nwi);
        same_bits(buf, g3, r->dbi, nbi);
        same_bits(buf, g4, r->dwo, nwo);
        same_bits(buf, g5, r->dbo, C);
        free(g2); free(g3); free(g4); free(g5);
    }
    {
        float *p1 = randn(n, 1.0f), *p2 = randn(nwi, 1.0f), *p3 = randn(nbi, 1.0f), *p4 = randn(nwo, 1.0f),
              *p5 = randn(C, 1.0f);
        float *g1 = copy_f(p1, n), *g2 = copy_f(p2, nwi), *g3 = copy_f(p3, nbi), *g4 = copy_f(p4, nwo),
              *g5 = copy_f(p5, C);
        att_bwd(c, ref, g1, g2, g3, g4, g5, r->qkv, r->o, r->lse);
        snprintf(buf, sizeof buf, "%s da", what);
        check_accum(buf, g1, p1, r->da, n);
        snprintf(buf, sizeof buf, "%s dw_in", what);
        check_accum(buf, g2, p2, r->dwi, nwi);
        snprintf(buf, sizeof buf, "%s db_in", what);
        check_accum(buf, g3, p3, r->dbi, nbi);
        snprintf(buf, sizeof buf, "%s dw_out", what);
        check_accum(buf, g4, p4, r->dwo, nwo);
        snprintf(buf, sizeof buf, "%s db_out", what);
        check_accum(buf, g5, p5, r->dbo, C);
        free(p1); free(p2); free(p3); free(p4); free(p5); free(g1); free(g2); free(g3); free(g4); free(g5);
    }
    {
        float *out2 = copy_f(resid, n), *q2 = alloc_f(nq), *o2 = alloc_f(n), *l2 = alloc_f(nl);
        float *g1 = zeros(n), *g2 = zeros(nwi), *g3 = zeros(nbi), *g4 = zeros(nwo), *g5 = zeros(C);
        fill_nan(c->ws, (long)c->wsper * nthreads());
        att_fwd(c, ref, out2, q2, o2, l2, c->a, B);
        att_bwd(c, ref, g1, g2, g3, g4, g5, q2, o2, l2);
        snprintf(buf, sizeof buf, "%s determinism", what);
        same_bits(buf, out2, out, n);
        same_bits(buf, q2, r->qkv, nq);
        same_bits(buf, o2, r->o, n);
        same_bits(buf, l2, r->lse, nl);
        same_bits(buf, g1, r->da, n);
        same_bits(buf, g2, r->dwi, nwi);
        same_bits(buf, g3, r->dbi, nbi);
        same_bits(buf, g4, r->dwo, nwo);
        same_bits(buf, g5, r->dbo, C);
        free(out2); free(q2); free(o2); free(l2); free(g1); free(g2); free(g3); free(g4); free(g5);
    }
    free(out);
}

static void att_res_free(AttRes *r) {
    free(r->part); free(r->qkv); free(r->o); free(r->lse);
    free(r->da); free(r->dwi); free(r->dbi); free(r->dwo); free(r->dbo);
}

static void test_attention(int B, int C, int N, int NH, float qk_gain) {
    const char *layer = "attention";
    long n = (long)B * C * N, nq = 3 * n, nl = (long)B * NH * N;
    long nwi = 3L * C * C, nbi = 3L * C, nwo = (long)C * C;
    AttCtx c = {.B = B, .C = C, .N = N, .NH = NH};
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
    c.wsper = attention_ws_floats(C, N, NH);
    c.ws = ws_alloc(c.wsper);
    char what[160], buf[256];
    snprintf(what, sizeof what, "attention B%d C%d N%d NH%d", B, C, N, NH);

    double *ry = alloc_d(n), *rq = alloc_d(nq), *ro = alloc_d(n), *rl = alloc_d(nl);
    naive_attention(ry, rq, ro, rl, &c);
    { // the softmax must not be uniform (else the test would not probe it)
        double lo = INFINITY, hi = -INFINITY;
        for (long i = 0; i < nl; i++) { lo = fmin(lo, rl[i] - log((double)N)); hi = fmax(hi, rl[i] - log((double)N)); }
        CHECKN(hi - lo > 0.5, "%s: softmax too flat for a meaningful test (lse - log N in [%g, %g])", what, lo, hi);
    }
    float *resid = randn(n, 1.0f);
    AttRes f, r;
    att_checks(&c, FAST, resid, ry, what, &f);
    att_checks(&c, REF, resid, ry, what, &r);

    // the reference's forward vs double (the attention part alone: looser, it is a difference)
    snprintf(buf, sizeof buf, "%s ref forward out - residual vs double", what);
    note_fwd(layer, cmp(buf, r.part, ry, n, 1e-4));
    snprintf(buf, sizeof buf, "%s ref forward saved qkv vs double", what);
    note_fwd(layer, cmp(buf, r.qkv, rq, nq, TOL_FWD));
    snprintf(buf, sizeof buf, "%s ref forward saved o vs double", what);
    note_fwd(layer, cmp(buf, r.o, ro, n, TOL_FWD));
    snprintf(buf, sizeof buf, "%s ref forward saved lse vs double", what);
    note_fwd(layer, cmp(buf, r.lse, rl, nl, TOL_FWD));

    double t = fmax(twin(layer, what, "out - residual", f.part, r.part, n), twin(layer, what, "qkv", f.qkv, r.qkv, nq));
    t = fmax3(t, twin(layer, what, "o", f.o, r.o, n), twin(layer, what, "lse", f.lse, r.lse, nl));
    t = fmax3(t, twin(layer, what, "da", f.da, r.da, n), twin(layer, what, "dw_in", f.dwi, r.dwi, nwi));
    t = fmax3(t, twin(layer, what, "db_in", f.dbi, r.dbi, nbi), twin(layer, what, "dw_out", f.dwo, r.dwo, nwo));
    t = fmax(t, twin(layer, what, "db_out", f.dbo, r.dbo, C));

    // finite differences on the reference. da: every image (each evaluated alone). The weights
    // reach every image: their FD runs on the first Bfd = min(B, 2) images (two, so that the sum
    // over images is checked too), against the reference's gradients of those images.
    c.slice_a = 1;
    double e1 = fd_check(layer, "da", att_loss, &c, c.a, n, r.da, H_NL, TOL_FD);
    c.slice_a = 0;
    int Bfd = B < 2 ? B : 2;
    float *gwi = zeros(nwi), *gbi = zeros(nbi), *gwo = zeros(nwo), *gbo = zeros(C);
    attention_backward_ref(NULL, gwi, gbi, gwo, gbo, c.R, c.a, r.qkv, r.o, r.lse, c.w_in, c.w_out, Bfd, C, N, NH, c.ws);
    c.B = Bfd;
    double e2 = fd_check(layer, "dw_in", att_loss, &c, c.w_in, nwi, gwi, H_NL, TOL_FD);
    double e3 = fd_check(layer, "db_in", att_loss, &c, c.b_in, nbi, gbi, H_NL, TOL_FD);
    double e4 = fd_check(layer, "dw_out", att_loss, &c, c.w_out, nwo, gwo, H_LIN, TOL_FD);
    double e5 = fd_check(layer, "db_out", att_loss, &c, c.b_out, C, gbo, H_LIN, TOL_FD);
    c.B = B;
    free(gwi); free(gbi); free(gwo); free(gbo);
    if (g_verbose)
        printf("  %-50s fast-ref %.1e  FD(ref) da %.1e dw_in %.1e db_in %.1e dw_out %.1e db_out %.1e\n", what, t, e1,
               e2, e3, e4, e5);

    att_res_free(&f); att_res_free(&r);
    free(ry); free(rq); free(ro); free(rl); free(resid);
    free(c.a); free(c.w_in); free(c.b_in); free(c.w_out); free(c.b_out); free(c.R);
    free(c.out); free(c.qkv); free(c.o); free(c.lse); free(c.ws);
}

// bf16 flash attention of one head (is_flash_bf16(D); attention_bf16.c): against exact attention, in
// double, on the same bf16-rounded inputs (Q scaled to log2 units, K, V, dO; Q unscaled for dK).
// The kernels also round P and dS to bf16 for the products they feed (relative error <= 2^-9
// each), so every output element is bounded by the magnitudes it sums: |O - O*| <= 2^-7
// sum_j P_ij |v_j| (P's rounding plus a margin for the fp32 sums), the same for dV over P and dO;
// dQ and dK over dS, plus the fp32 error of dS = scale P (dP - di) itself (1e-4 of its terms).
// A wrong pair, key, query or tail is an error of the order of those sums, far outside.
static double within(const char *what, const float *got, const double *want, const double *bound, long n) {
    double worst = 0.0;
    long wi = 0;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / bound[i];
        if (!(e <= worst)) { worst = isnan(e) ? INFINITY : e; wi = i; }
    }
    CHECKN(worst <= 1.0, "%s: |got - want| = %.3g at [%ld] (got %.9g, want %.9g) over its bound %.3g", what,
           fabs((double)got[wi] - want[wi]), wi, (double)got[wi], want[wi], bound[wi]);
    return worst;
}

static void test_flash_bf16(int D, int N, float gain) {
    long n = (long)D * N;
    float scale = 1.0f / sqrtf((float)D), qscale = scale * LOG2E;
    float *Q = randn(n, gain), *K = randn(n, 1.0f), *V = randn(n, 1.0f), *dO = randn(n, 1.0f);
    float *O = alloc_f(n), *lse = alloc_f(N), *dQ = alloc_f(n), *dK = alloc_f(n), *dV = alloc_f(n), *di = alloc_f(N);
    float *fl = alloc_f((long)flash_ws_floats(D, N));
    fill_nan(fl, (long)flash_ws_floats(D, N));
    fill_nan(O, n); fill_nan(dQ, n); fill_nan(dK, n); fill_nan(dV, n);
    flash_forward_bf16(O, lse, Q, K, V, D, N, scale, fl);
    for (int i = 0; i < N; i++) { // di = rowsum(dO o O), in float as the layer computes it
        float s = 0.0f;
        for (int d = 0; d < D; d++) s += dO[(long)d * N + i] * O[(long)d * N + i];
        di[i] = s;
    }
    fill_nan(fl, (long)flash_ws_floats(D, N));
    flash_backward_bf16(dQ, dK, dV, Q, K, V, dO, lse, di, D, N, scale, fl);

    // the rounded inputs, [i][d]
    double *qs = alloc_d(n), *q = alloc_d(n), *k = alloc_d(n), *v = alloc_d(n), *g = alloc_d(n);
    for (int d = 0; d < D; d++)
        for (int i = 0; i < N; i++) {
            long a = (long)d * N + i, t = (long)i * D + d;
            qs[t] = tu_bf16(Q[a] * qscale); q[t] = tu_bf16(Q[a]); k[t] = tu_bf16(K[a]);
            v[t] = tu_bf16(V[a]); g[t] = tu_bf16(dO[a]);
        }
    double *P = alloc_d((long)N * N), *dS = alloc_d((long)N * N), *eS = alloc_d((long)N * N);
    double *wO = alloc_d(n), *bO = alloc_d(n), *wl = alloc_d(N), *bl = alloc_d(N);
    double *wQ = alloc_d(n), *bQ = alloc_d(n), *wK = alloc_d(n), *bK = alloc_d(n), *wV = alloc_d(n), *bV = alloc_d(n);
    double smax = 0.0;
    for (int i = 0; i < N; i++) { // forward: scores in log2 units, softmax
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int d = 0; d < D; d++) s += qs[(long)i * D + d] * k[(long)j * D + d];
            P[(long)i * N + j] = s;
            mx = fmax(mx, s);
        }
        smax = fmax(smax, mx);
        for (int j = 0; j < N; j++) sum += (P[(long)i * N + j] = exp2(P[(long)i * N + j] - mx));
        for (int j = 0; j < N; j++) P[(long)i * N + j] /= sum;
        wl[i] = (mx + log2(sum)) * 0.69314718055994530942;
        bl[i] = 1e-5 * (1.0 + fabs(wl[i]));
        for (int d = 0; d < D; d++) {
            double o = 0.0, a = 0.0;
            for (int j = 0; j < N; j++) { o += P[(long)i * N + j] * v[(long)j * D + d]; a += P[(long)i * N + j] * fabs(v[(long)j * D + d]); }
            wO[(long)d * N + i] = o;
            bO[(long)d * N + i] = 0x1p-7 * a + 1e-6;
        }
    }
    for (int i = 0; i < N; i++) // backward from the kernel's own lse and di, as the layer runs it
        for (int j = 0; j < N; j++) {
            double s = 0.0, dp = 0.0, adp = 0.0;
            for (int d = 0; d < D; d++) {
                s += qs[(long)i * D + d] * k[(long)j * D + d];
                dp += g[(long)i * D + d] * v[(long)j * D + d];
                adp += fabs(g[(long)i * D + d] * v[(long)j * D + d]);
            }
            double p = exp2(s - lse[i] / 0.69314718055994530942);
            P[(long)i * N + j] = p;
            dS[(long)i * N + j] = scale * p * (dp - di[i]);
            eS[(long)i * N + j] = 0x1p-8 * fabs(dS[(long)i * N + j]) + 1e-4 * scale * p * (adp + fabs(di[i]));
        }
    for (int d = 0; d < D; d++) {
        for (int i = 0; i < N; i++) {
            double a = 0.0, b = 0.0;
            for (int j = 0; j < N; j++) {
                a += dS[(long)i * N + j] * k[(long)j * D + d];
                b += eS[(long)i * N + j] * fabs(k[(long)j * D + d]);
            }
            wQ[(long)d * N + i] = a;
            bQ[(long)d * N + i] = b + 1e-6;
        }
        for (int j = 0; j < N; j++) {
            double a = 0.0, b = 0.0, c = 0.0, e = 0.0;
            for (int i = 0; i < N; i++) {
                a += dS[(long)i * N + j] * q[(long)i * D + d];
                b += eS[(long)i * N + j] * fabs(q[(long)i * D + d]);
                c += P[(long)i * N + j] * g[(long)i * D + d];
                e += P[(long)i * N + j] * fabs(g[(long)i * D + d]);
            }
            wK[(long)d * N + j] = a;
            bK[(long)d * N + j] = b + 1e-6;
            wV[(long)d * N + j] = c;
            bV[(long)d * N + j] = 0x1p-7 * e + 1e-6;
        }
    }
    char what[96], buf[160];
    snprintf(what, sizeof what, "flash bf16 D%d N%d gain %g", D, N, gain);
    double e = 0.0;
    snprintf(buf, sizeof buf, "%s O", what); e = fmax(e, within(buf, O, wO, bO, n));
    snprintf(buf, sizeof buf, "%s lse", what); e = fmax(e, within(buf, lse, wl, bl, N));
    snprintf(buf, sizeof buf, "%s dQ", what); e = fmax(e, within(buf, dQ, wQ, bQ, n));
    snprintf(buf, sizeof buf, "%s dK", what); e = fmax(e, within(buf, dK, wK, bK, n));
    snprintf(buf, sizeof buf, "%s dV", what); e = fmax(e, within(buf, dV, wV, bV, n));
    if (g_verbose) printf("  %-50s max error / bound %.2f (largest score %.0f, log2 units)\n", what, e, smax);
    free(Q); free(K); free(V); free(dO); free(O); free(lse); free(dQ); free(dK); free(dV); free(di); free(fl);
    free(qs); free(q); free(k); free(v); free(g); free(P); free(dS); free(eS);
    free(wO); free(bO); free(wl); free(bl); free(wQ); free(bQ); free(wK); free(bK); free(wV); free(bV);
}

// ---------------------------------------------------------------------------------------------
// time embedding: against the formula in double

static void test_timestep_embedding(int D) {
    float ts[] = {0, 1, 2, 3, 17, 100, 250, 499, 500, 731, 998, 999, 0.5f, 417.375f};
    int B = (int)(sizeof ts / sizeof ts[0]), half = D / 2;
    float *out[2];
    for (int ref = 0; ref < 2; ref++) {
        out[ref] = alloc_f((long)B * D);
        fill_nan(out[ref], (long)B * D);
        (ref ? timestep_embedding_ref : timestep_embedding)(out[ref], ts, B, D);
    }
    double *naive = alloc_d((long)B * D);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            double f = pow(10000.0, (double)i / half);
            naive[(long)b * D + i] = sin(ts[b] / f);
            naive[(long)b * D + half + i] = cos(ts[b] / f);
        }
    char buf[128];
    snprintf(buf, sizeof buf, "timestep_embedding D%d", D);
    // float32 throughout (as the reference): |arg| <= 999 so arg carries ~1e-4 absolute rounding
    double e = cmp(buf, out[REF], naive, (long)B * D, 2e-4);
    note_fwd("temb", e);
    double t = twin("temb", buf, "out", out[FAST], out[REF], (long)B * D);
    if (g_verbose) printf("  %-50s fast-ref %.1e  ref vs double %.1e\n", buf, t, e);
    free(out[0]); free(out[1]); free(naive);
}

// ---------------------------------------------------------------------------------------------
// whole arrays: zero, copy, add (exact: bit for bit)

static void test_arrays(long n) {
    float *x = randn(n, 1.0f), *y0 = randn(n, 1.0f), *res[2][3];
    for (int ref = 0; ref < 2; ref++) {
        char buf[128];
        float *z = alloc_f(n), *cp = alloc_f(n), *ad = copy_f(y0, n);
        fill_nan(z, n);
        fill_nan(cp, n);
        (ref ? array_zero_ref : array_zero)(z, n);
        (ref ? array_copy_ref : array_copy)(cp, x, n);
        (ref ? array_add_ref : array_add)(ad, x, n);
        int ok_z = 1, ok_a = 1;
        for (long i = 0; i < n; i++) {
            ok_z &= z[i] == 0.0f && !signbit(z[i]);
            ok_a &= ad[i] == y0[i] + x[i];
        }
        snprintf(buf, sizeof buf, "array_zero %s", IMPL[ref]);
        CHECKN(ok_z, "%s: not all +0", buf);
        snprintf(buf, sizeof buf, "array_copy %s", IMPL[ref]);
        same_bits(buf, cp, x, n);
        snprintf(buf, sizeof buf, "array_add %s", IMPL[ref]);
        CHECKN(ok_a, "%s: y != y + x", buf);
        res[ref][0] = z;
        res[ref][1] = cp;
        res[ref][2] = ad;
    }
    same_bits("array_zero: fast vs ref", res[FAST][0], res[REF][0], n);
    same_bits("array_copy: fast vs ref", res[FAST][1], res[REF][1], n);
    same_bits("array_add: fast vs ref", res[FAST][2], res[REF][2], n);
    stat_for("arrays");
    if (g_verbose) printf("  %-50s fast-ref bitwise equal\n", "array_zero / copy / add");
    for (int ref = 0; ref < 2; ref++)
        for (int k = 0; k < 3; k++) free(res[ref][k]);
    free(x); free(y0);
}

// ---------------------------------------------------------------------------------------------
// concat, add_bias_bc, mse, softmax cross-entropy

typedef struct {
    int B, Ca, Cb, HW;
    float *a, *b, *out, *R;
} CatCtx;
static double cat_loss(void *ctx, long i) {
    (void)i;
    CatCtx *c = ctx;
    concat_channels_forward_ref(c->out, c->a, c->b, c->B, c->Ca, c->Cb, c->HW);
    return dotR(c->out, c->R, (long)c->B * (c->Ca + c->Cb) * c->HW);
}

static void test_concat(int B, int Ca, int Cb, int HW) {
    const char *layer = "concat";
    long na = (long)B * Ca * HW, nb = (long)B * Cb * HW, no = na + nb;
    CatCtx c = {B, Ca, Cb, HW, randn(na, 1.0f), randn(nb, 1.0f), alloc_f(no), randn(no, 1.0f)};
    float *out[2], *da[2], *db[2];
    for (int ref = 0; ref < 2; ref++) {
        char buf[128];
        out[ref] = alloc_f(no);
        fill_nan(out[ref], no);
        (ref ? concat_channels_forward_ref : concat_channels_forward)(out[ref], c.a, c.b, B, Ca, Cb, HW);
        int ok = 1;
        for (int n = 0; n < B; n++)
            for (int ch = 0; ch < Ca + Cb; ch++)
                for (int p = 0; p < HW; p++) {
                    float want = ch < Ca ? c.a[((long)n * Ca + ch) * HW + p] : c.b[((long)n * Cb + ch - Ca) * HW + p];
                    ok &= memcmp(&out[ref][((long)n * (Ca + Cb) + ch) * HW + p], &want, sizeof(float)) == 0;
                }
        CHECKN(ok, "concat %s forward: wrong layout", IMPL[ref]);
        da[ref] = zeros(na);
        db[ref] = zeros(nb);
        (ref ? concat_channels_backward_ref : concat_channels_backward)(da[ref], db[ref], c.R, B, Ca, Cb, HW);
        float *pa = randn(na, 1.0f), *pb = randn(nb, 1.0f), *da2 = copy_f(pa, na), *db2 = copy_f(pb, nb);
        (ref ? concat_channels_backward_ref : concat_channels_backward)(da2, db2, c.R, B, Ca, Cb, HW);
        snprintf(buf, sizeof buf, "concat %s da", IMPL[ref]);
        check_accum(buf, da2, pa, da[ref], na);
        snprintf(buf, sizeof buf, "concat %s db", IMPL[ref]);
        check_accum(buf, db2, pb, db[ref], nb);
        free(pa); free(pb); free(da2); free(db2);
    }
    char what[64];
    snprintf(what, sizeof what, "concat B%d Ca%d Cb%d HW%d", B, Ca, Cb, HW);
    double t = fmax3(twin(layer, what, "out", out[FAST], out[REF], no), twin(layer, what, "da", da[FAST], da[REF], na),
                     twin(layer, what, "db", db[FAST], db[REF], nb));
    double e1 = fd_check(layer, "da", cat_loss, &c, c.a, na, da[REF], H_LIN, TOL_FD);
    double e2 = fd_check(layer, "db", cat_loss, &c, c.b, nb, db[REF], H_LIN, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) da %.1e db %.1e\n", what, t, e1, e2);
    for (int k = 0; k < 2; k++) { free(out[k]); free(da[k]); free(db[k]); }
    free(c.a); free(c.b); free(c.out); free(c.R);
}

// embedding_add: out[b] += table[idx[b]], with repeated indices (their gradients add up)
typedef struct {
    int B, K, D;
    int *idx;
    float *table, *base, *out, *R;
} EmbCtx;
static double emb_loss(void *ctx, long i) {
    (void)i;
    EmbCtx *c = ctx;
    long n = (long)c->B * c->D;
    memcpy(c->out, c->base, (size_t)n * sizeof(float));
    embedding_add_forward_ref(c->out, c->table, c->idx, c->B, c->D);
    return dotR(c->out, c->R, n);
}

static void test_embedding_add(int B, int K, int D) {
    const char *layer = "embedding_add";
    long n = (long)B * D, nt = (long)K * D;
    EmbCtx c = {B, K, D, malloc((size_t)B * sizeof(int)), randn(nt, 1.0f), randn(n, 1.0f), alloc_f(n), randn(n, 1.0f)};
    for (int b = 0; b < B; b++) c.idx[b] = (b * 7 + 1) % K; // B > K: some rows are used twice
    double *want = alloc_d(n), *gwant = alloc_d(nt);
    for (long i = 0; i < nt; i++) gwant[i] = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) {
            want[(long)b * D + i] = (double)c.base[(long)b * D + i] + c.table[(long)c.idx[b] * D + i];
            gwant[(long)c.idx[b] * D + i] += c.R[(long)b * D + i];
        }
    float *out[2] = {0}, *dt[2] = {0};
    for (int ref = 0; ref < 2; ref++) {
        char buf[128];
        out[ref] = copy_f(c.base, n);
        (ref ? embedding_add_forward_ref : embedding_add_forward)(out[ref], c.table, c.idx, B, D);
        snprintf(buf, sizeof buf, "embedding_add %s forward (adds to out) vs double", IMPL[ref]);
        double e = cmp(buf, out[ref], want, n, TOL_FWD);
        if (ref) note_fwd(layer, e);
        dt[ref] = zeros(nt);
        (ref ? embedding_add_backward_ref : embedding_add_backward)(dt[ref], c.R, c.idx, B, D);
        snprintf(buf, sizeof buf, "embedding_add %s dtable vs double", IMPL[ref]);
        cmp(buf, dt[ref], gwant, nt, TOL_FWD);
        float *pre = randn(nt, 1.0f), *d2 = copy_f(pre, nt);
        (ref ? embedding_add_backward_ref : embedding_add_backward)(d2, c.R, c.idx, B, D);
        snprintf(buf, sizeof buf, "embedding_add %s dtable", IMPL[ref]);
        check_accum(buf, d2, pre, dt[ref], nt);
        free(pre); free(d2);
    }
    char what[64];
    snprintf(what, sizeof what, "embedding_add B%d K%d D%d", B, K, D);
    double t = fmax(twin(layer, what, "out", out[FAST], out[REF], n), twin(layer, what, "dtable", dt[FAST], dt[REF], nt));
    double e = fd_check(layer, "dtable", emb_loss, &c, c.table, nt, dt[REF], H_LIN, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) dtable %.1e\n", what, t, e);
    free(want); free(gwant);
    for (int k = 0; k < 2; k++) { free(out[k]); free(dt[k]); }
    free(c.idx); free(c.table); free(c.base); free(c.out); free(c.R);
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
    add_bias_bc_forward_ref(c->out, c->bias, c->B, c->C, c->HW);
    return dotR(c->out, c->R, n);
}

static void test_add_bias_bc(int B, int C, int HW) {
    const char *layer = "add_bias_bc";
    long n = (long)B * C * HW, nbc = (long)B * C;
    BiasCtx c = {B, C, HW, randn(nbc, 1.0f), randn(n, 1.0f), alloc_f(n), randn(n, 1.0f)};
    double *want = alloc_d(n);
    for (long i = 0; i < n; i++) want[i] = (double)c.base[i] + c.bias[i / HW];
    float *out[2], *dbias[2];
    for (int ref = 0; ref < 2; ref++) {
        char buf[128];
        out[ref] = copy_f(c.base, n);
        (ref ? add_bias_bc_forward_ref : add_bias_bc_forward)(out[ref], c.bias, B, C, HW);
        snprintf(buf, sizeof buf, "add_bias_bc %s forward (adds to out) vs double", IMPL[ref]);
        double e = cmp(buf, out[ref], want, n, TOL_FWD);
        if (ref) note_fwd(layer, e);
        dbias[ref] = zeros(nbc);
        float *pre = randn(nbc, 1.0f), *d2 = copy_f(pre, nbc);
        (ref ? add_bias_bc_backward_ref : add_bias_bc_backward)(dbias[ref], c.R, B, C, HW);
        (ref ? add_bias_bc_backward_ref : add_bias_bc_backward)(d2, c.R, B, C, HW);
        snprintf(buf, sizeof buf, "add_bias_bc %s dbias", IMPL[ref]);
        check_accum(buf, d2, pre, dbias[ref], nbc);
        free(pre); free(d2);
    }
    char what[64];
    snprintf(what, sizeof what, "add_bias_bc B%d C%d HW%d", B, C, HW);
    double t = fmax(twin(layer, what, "out", out[FAST], out[REF], n),
                    twin(layer, what, "dbias", dbias[FAST], dbias[REF], nbc));
    double e = fd_check(layer, "dbias", bias_loss, &c, c.bias, nbc, dbias[REF], H_LIN, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) dbias %.1e\n", what, t, e);
    free(want);
    for (int k = 0; k < 2; k++) { free(out[k]); free(dbias[k]); }
    free(c.bias); free(c.base); free(c.out); free(c.R);
}

typedef struct {
    long n;
    float *pred, *target;
} MseCtx;
static double mse_loss(void *ctx, long i) {
    (void)i;
    MseCtx *c = ctx;
    return mse_forward_ref(c->pred, c->target, c->n);
}

static void test_mse(long n) {
    const char *layer = "mse";
    MseCtx c = {n, randn(n, 1.0f), randn(n, 1.0f)};
    double s = 0.0;
    for (long i = 0; i < n; i++) s += ((double)c.pred[i] - c.target[i]) * ((double)c.pred[i] - c.target[i]);
    double want = s / n;
    double *wd = alloc_d(n);
    for (long i = 0; i < n; i++) wd[i] = 2.0 * ((double)c.pred[i] - c.target[i]) / n;
    float loss[2], *d[2] = {NULL, NULL};
    for (int ref = 0; ref < 2; ref++) {
        char buf[128];
        loss[ref] = (ref ? mse_forward_ref : mse_forward)(c.pred, c.target, n);
        CHECKN(fabs(loss[ref] - want) <= 1e-6 * want, "mse %s forward: got %.9g, want %.9g", IMPL[ref],
               (double)loss[ref], want);
        if (ref) note_fwd(layer, fabs(loss[ref] - want) / want);
        d[ref] = zeros(n);
        (ref ? mse_backward_ref : mse_backward)(d[ref], c.pred, c.target, n);
        snprintf(buf, sizeof buf, "mse %s backward vs 2 (pred - target) / n", IMPL[ref]);
        cmp(buf, d[ref], wd, n, TOL_FWD);
        // mse_backward is the root of the backward pass and, as documented ("dpred = ..."), WRITES
        // dpred rather than accumulating (train.c relies on this: it does not zero dout first)
        float *pre = randn(n, 1.0f), *d2 = copy_f(pre, n);
        (ref ? mse_backward_ref : mse_backward)(d2, c.pred, c.target, n);
        snprintf(buf, sizeof buf, "mse %s dpred written (=), independent of its previous contents", IMPL[ref]);
        same_bits(buf, d2, d[ref], n);
        free(pre); free(d2);
    }
    char what[64];
    snprintf(what, sizeof what, "mse n=%ld", n);
    double t = twin(layer, what, "loss", &loss[FAST], &loss[REF], 1);
    t = fmax(t, twin(layer, what, "dpred", d[FAST], d[REF], n));
    // mse is quadratic: central differences are exact up to rounding
    double e = fd_check(layer, "dpred", mse_loss, &c, c.pred, n, d[REF], 1e-2f, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) dpred %.1e\n", what, t, e);
    free(d[0]); free(d[1]); free(wd); free(c.pred); free(c.target);
}

typedef struct {
    int B, C;
    float *logits, *probs;
    int *labels;
} XentCtx;
static double xent_loss(void *ctx, long i) {
    (void)i;
    XentCtx *c = ctx;
    return softmax_cross_entropy_forward_ref(c->probs, c->logits, c->labels, c->B, c->C);
}

// softmax cross-entropy (the judge's classifier head): against double, twins, FD of the loss
static void test_softmax_xent(int B, int C) {
    const char *layer = "softmax_xent";
    long n = (long)B * C;
    XentCtx c = {B, C, randn(n, 3.0f), alloc_f(n), mallocCheck((size_t)B * sizeof(int))};
    for (int b = 0; b < B; b++) c.labels[b] = (int)rng_below(&g_rng, (uint32_t)C);
    c.logits[0] = 80.0f; // a row with a huge logit: the max subtraction must keep exp finite
    double *wp = alloc_d(n), want = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = c.logits + (long)b * C;
        double mx = -INFINITY, sum = 0.0;
        for (int k = 0; k < C; k++) mx = fmax(mx, z[k]);
        for (int k = 0; k < C; k++) sum += exp(z[k] - mx);
        for (int k = 0; k < C; k++) wp[(long)b * C + k] = exp(z[k] - mx) / sum;
        want += mx + log(sum) - z[c.labels[b]];
    }
    want /= B;
    float loss[2], *probs[2], *dl[2];
    for (int ref = 0; ref < 2; ref++) {
        char buf[128];
        float (*fwd)(float *, const float *, const int *, int, int) =
            ref ? softmax_cross_entropy_forward_ref : softmax_cross_entropy_forward;
        void (*bwd)(float *, const float *, const int *, int, int) =
            ref ? softmax_cross_entropy_backward_ref : softmax_cross_entropy_backward;
        probs[ref] = alloc_f(n);
        fill_nan(probs[ref], n);
        loss[ref] = fwd(probs[ref], c.logits, c.labels, B, C);
        snprintf(buf, sizeof buf, "softmax_xent %s probs vs double", IMPL[ref]);
        double e = cmp(buf, probs[ref], wp, n, TOL_FWD);
        CHECKN(fabs(loss[ref] - want) <= 1e-6 * want, "softmax_xent %s loss: got %.9g, want %.9g", IMPL[ref],
               (double)loss[ref], want);
        if (ref) note_fwd(layer, fmax(e, fabs(loss[ref] - want) / want));
        float *p2 = alloc_f(n); // without labels: the softmax alone, loss 0
        float l2 = fwd(p2, c.logits, NULL, B, C);
        snprintf(buf, sizeof buf, "softmax_xent %s labels=NULL probs", IMPL[ref]);
        same_bits(buf, p2, probs[ref], n);
        CHECKN(l2 == 0.0f, "softmax_xent %s labels=NULL: loss %g, want 0", IMPL[ref], (double)l2);
        dl[ref] = zeros(n);
        bwd(dl[ref], probs[ref], c.labels, B, C);
        float *pre = randn(n, 1.0f), *d2 = copy_f(pre, n);
        bwd(d2, probs[ref], c.labels, B, C);
        snprintf(buf, sizeof buf, "softmax_xent %s dlogits", IMPL[ref]);
        check_accum(buf, d2, pre, dl[ref], n);
        free(p2); free(pre); free(d2);
    }
    char what[64];
    snprintf(what, sizeof what, "softmax_xent B%d C%d", B, C);
    double t = fmax3(twin(layer, what, "loss", &loss[FAST], &loss[REF], 1),
                     twin(layer, what, "probs", probs[FAST], probs[REF], n),
                     twin(layer, what, "dlogits", dl[FAST], dl[REF], n));
    double e = fd_check(layer, "dlogits", xent_loss, &c, c.logits, n, dl[REF], H_NL, TOL_FD);
    if (g_verbose) printf("  %-50s fast-ref %.1e  FD(ref) dlogits %.1e\n", what, t, e);
    for (int k = 0; k < 2; k++) { free(probs[k]); free(dl[k]); }
    free(wp); free(c.logits); free(c.probs); free(c.labels);
}

// ---------------------------------------------------------------------------------------------

// run one test, timing it when verbose
#define RUN(call) do { double t_ = now_seconds(); call; \
    if (g_verbose > 1) printf("    (%.2f s)\n", now_seconds() - t_); } while (0)

// NaN and infinite inputs (a diverging run, a damaged checkpoint) give NaN or the limits, never
// undefined behaviour: the sanitizer build of this test aborts on any (-fno-sanitize-recover)
static void test_non_finite(void) {
    float x[19] = {NAN, -NAN, INFINITY, -INFINITY, 1e30f, -1e30f, 0.0f, 1.0f, -1.0f, 88.5f, -88.5f, 3.0f,
                   NAN, 2.0f, -3.0f, 4.0f, NAN, 5.0f, -6.0f}, y[19], d[19];
    for (int i = 0; i < 19; i++) d[i] = 0.0f;
    for (int ref = 0; ref < 2; ref++) {
        if (ref) silu_forward_ref(y, x, 19);
        else silu_forward(y, x, 19);
        CHECK(isnan(y[0]) && isnan(y[12]) && y[2] == INFINITY && y[6] == 0.0f,
              "silu%s of NaN, inf: %g %g", ref ? "_ref" : "", y[0], y[2]);
    }
    silu_backward(d, x, x, 19);
    CHECK(isnan(d[0]) && d[7] > 0.0f, "silu backward of NaN: %g", d[0]);
    float e[3] = {exp_approx(NAN), exp_approx(INFINITY), exp_approx(-INFINITY)};
    CHECK(isnan(e[0]) && e[1] > 1e38f && e[2] < 1e-37f, "exp_approx(NaN, inf, -inf) = %g %g %g", e[0], e[1], e[2]);
}

static void run_suite(void) {
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
    // rows of 16 columns and more (the s2d copies' vectors, 20: the last overlapping the one before)
    RUN(test_conv(0, 2, 3, 12, 20, 4, 4, 2, 1));
    RUN(test_conv(0, 2, 2, 8, 32, 3, 4, 2, 1));
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
    RUN(test_conv(1, 2, 3, 5, 10, 4, 4, 2, 1)); // outputs 20 wide: interleaved in vectors
    RUN(test_conv(1, 2, 2, 4, 8, 3, 4, 2, 1));
    // groupnorm (with the fused GroupNorm + SiLU and its backward)
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
    RUN(test_arrays(1001));
    RUN(test_concat(2, 3, 2, 7));
    RUN(test_add_bias_bc(2, 3, 5));
    RUN(test_embedding_add(6, 4, 8));
    RUN(test_mse(37));
    RUN(test_softmax_xent(5, 10));

}

static void summary(void) {
    printf("  summary (max relative error; %ld checks):\n", g_nchecks);
    printf("    %-12s %14s %14s %14s\n", "layer", "ref vs double", "fast vs ref", "FD (ref)");
    for (int i = 0; i < g_nstats; i++) {
        const Stat *s = &g_stats[i];
        if (!strcmp(s->name, "arrays")) printf("    %-12s %14s %14s %14s\n", s->name, "-", "bitwise", "-");
        else if (!strcmp(s->name, "temb")) printf("    %-12s %14.1e %14.1e %14s\n", s->name, s->fwd, s->twin, "-");
        else printf("    %-12s %14.1e %14.1e %14.1e\n", s->name, s->fwd, s->twin, s->fd);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); // keep PASS lines and FAIL messages in order
    double t0 = now_seconds();
    rng_seed(&g_rng, 12345);
    const char *v = getenv("TEST_VERBOSE");
    if (v) g_verbose = atoi(v);
    printf("test_layers: %d thread(s); fast layers vs their reference twins, reference vs finite differences,\n"
           "  once per instruction set of the kernels (GEMM, attention tiles, GroupNorm/SiLU rows) this CPU runs\n",
           nthreads());
    for (int v = 0; v < gemm_variant_count(); v++) {
        const char *isa = gemm_variant_name(v);
        if (!gemm_variant_supported(v)) { printf("SKIP kernels %s: this CPU lacks it\n", isa); continue; }
        gemm_set_isa(isa);
        printf("  kernels %s:\n", isa);
        g_nstats = 0;
        g_nchecks = 0;
        rng_seed(&g_rng, 12345); // the same inputs for every instruction set
        run_suite();
        summary();
        test_non_finite();
    }
    if (!gemm_bf16_supported()) {
        printf("SKIP conv and flash attention bf16: this CPU lacks AVX512_BF16\n");
    } else { // every conv lowering, with odd channel counts (a pair image's missing last channel), a
             // single input channel, M and N tails, two K chunks of pairs (Ci 64, K 3), odd pixel counts
        for (int v = 0; v < gemm_variant_count(); v++) // the other kernels: the widest this CPU runs
            if (gemm_variant_supported(v)) { gemm_set_isa(gemm_variant_name(v)); break; }
        printf("  conv and flash attention in bf16 precision (bf16 GEMM and tiles, %s kernels otherwise):\n", gemm_isa());
        g_nstats = 0;
        g_nchecks = 0;
        RUN(test_conv_bf16(0, 2, 3, 15, 14, 4, 3, 1, 1));
        RUN(test_conv_bf16(0, 2, 2, 14, 15, 3, 5, 1, 2));
        RUN(test_conv_bf16(0, 2, 7, 9, 8, 17, 3, 1, 1));
        RUN(test_conv_bf16(0, 2, 1, 10, 10, 5, 3, 1, 1));
        RUN(test_conv_bf16(0, 2, 64, 8, 8, 9, 3, 1, 1));
        RUN(test_conv_bf16(0, 9, 3, 7, 7, 5, 3, 1, 1));
        RUN(test_conv_bf16(0, 17, 64, 4, 4, 6, 3, 1, 1)); // grouped in pairs: K of 2 chunks, 17 images side by side
        RUN(test_conv_bf16(0, 3, 3, 6, 5, 4, 1, 1, 0));
        RUN(test_conv_bf16(0, 3, 3, 5, 5, 4, 1, 1, 0)); // odd P: the last pair of x in bf16
        RUN(test_conv_bf16(0, 3, 3, 16, 14, 5, 4, 2, 1));
        RUN(test_conv_bf16(0, 2, 3, 17, 15, 4, 4, 2, 1));
        RUN(test_conv_bf16(0, 2, 40, 8, 8, 70, 4, 2, 1)); // s2d: K of 2 chunks, 35 pairs of dy channels
        RUN(test_conv_bf16(1, 3, 4, 5, 5, 3, 4, 2, 1));
        RUN(test_conv_bf16(0, 2, 3, 12, 20, 4, 4, 2, 1));
        RUN(test_conv_bf16(1, 2, 3, 5, 10, 4, 4, 2, 1));
        RUN(test_conv_bf16(1, 2, 5, 4, 6, 6, 4, 2, 1)); // an odd channel count in the pairs of the transposed conv's input
        // flash attention in bf16: a key tail of 5 and a last query tile of 1 row (N = 37), whole
        // panels (N = 64), one key past a panel (N = 17), a width without its own kernel (D = 48),
        // and scores so wide that the Cauchy-Schwarz shift underflows rows, which are redone
        RUN(test_flash_bf16(16, 37, 1.0f));
        RUN(test_flash_bf16(32, 64, 1.5f));
        RUN(test_flash_bf16(64, 17, 1.0f));
        RUN(test_flash_bf16(48, 50, 1.0f));
        RUN(test_flash_bf16(16, 40, 16.0f));
        // narrow heads: an odd panel count and a key tail (N = 37: the second panel of the last
        // block is zeros), whole blocks (N = 64), a single panel (N = 16), the widths without
        // their own kernel (2, 6), and rows redone after an underflow
        RUN(test_flash_bf16(4, 37, 1.0f));
        RUN(test_flash_bf16(8, 64, 1.5f));
        RUN(test_flash_bf16(8, 16, 1.0f));
        RUN(test_flash_bf16(2, 17, 1.0f));
        RUN(test_flash_bf16(6, 50, 1.0f));
        RUN(test_flash_bf16(4, 40, 16.0f));
        RUN(test_flash_bf16(8, 33, 16.0f));
        summary();
    }
    printf("  %.2f s\n", now_seconds() - t0);
    TEST_DONE("test_layers");
}

