// norm.c: GroupNorm and SiLU (every GroupNorm of the U-Net is followed by SiLU: fused).
#define DDPM_NN_IMPL // defines the fast layers (see layers.h)
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "nn/reduce.h"

// ---------------------------------------------------------------------------------------
// GroupNorm: for each (b, g) over its C/G channels x HW positions:
// xhat = (x - mean) rstd, rstd = 1/sqrt(var + 1e-5) (biased var); y = xhat gamma[c] + beta[c]

// mean and 1/sqrt(var + 1e-5) of x[n]: two passes with 16 float partial sums each (they
// vectorise), combined in double
static void mean_rstd(const float *x, long n, float *mean, float *rstd) {
    v8f a = {0}, b = {0}; // lanes 0-7 and 8-15
    long i = 0;
    for (; i + 16 <= n; i += 16) { a += load8(x + i); b += load8(x + i + 8); }
    double s = 0.0;
    for (; i < n; i++) s += x[i];
    for (int j = 0; j < 8; j++) s += a[j];
    for (int j = 0; j < 8; j++) s += b[j];
    float m = (float)(s / n);
    a = (v8f){0};
    b = (v8f){0};
    for (i = 0; i + 16 <= n; i += 16) {
        v8f d0 = load8(x + i) - m, d1 = load8(x + i + 8) - m;
        a += d0 * d0;
        b += d1 * d1;
    }
    double ss = 0.0;
    for (; i < n; i++) { double d = x[i] - m; ss += d * d; }
    for (int j = 0; j < 8; j++) ss += a[j];
    for (int j = 0; j < 8; j++) ss += b[j];
    *mean = m;
    *rstd = (float)(1.0 / sqrt(ss / n + 1e-5));
}

// out = GroupNorm(in); if act: act = SiLU(out) in the same pass, while the group is in cache
static void groupnorm_forward_impl(float *out, float *act, float *mean, float *rstd, const float *in,
                                   const float *gamma, const float *beta, int B, int C, int HW, int G) {
    int Cg = C / G;
    long n = (long)Cg * HW;
#pragma omp parallel for schedule(dynamic, 4)
    for (int bg = 0; bg < B * G; bg++) {
        const float *x = in + (size_t)bg * n;
        float *y = out ? out + (size_t)bg * n : NULL;
        float mf, r;
        mean_rstd(x, n, &mf, &r);
        mean[bg] = mf;
        rstd[bg] = r;
        int g = bg % G;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c], b0 = beta[c] - mf * a; // y = x a + (beta - mean a)
            const float *xc = x + (size_t)cc * HW;
            if (out) {
                float *yc = y + (size_t)cc * HW;
                for (int p = 0; p < HW; p++) yc[p] = xc[p] * a + b0;
            }
            if (act) {
                float *ac = act + (size_t)bg * n + (size_t)cc * HW;
                int p = 0;
                for (; p + 8 <= HW; p += 8) {
                    v8f v = load8(xc + p) * a + b0, e = -v;
                    exp8(&e);
                    store8(ac + p, v / (1.0f + e));
                }
                for (; p < HW; p++) {
                    float v = xc[p] * a + b0;
                    ac[p] = v / (1.0f + exp_approx(-v));
                }
            }
        }
    }
}

void groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                       const float *beta, int B, int C, int HW, int G) {
    groupnorm_forward_impl(out, NULL, mean, rstd, in, gamma, beta, B, C, HW, G);
}

void groupnorm_silu_forward(float *out, float *act, float *mean, float *rstd, const float *in,
                            const float *gamma, const float *beta, int B, int C, int HW, int G) {
    groupnorm_forward_impl(out, act, mean, rstd, in, gamma, beta, B, C, HW, G);
}

// din = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy gamma[c] (means over the group)
// sum_p dy[p] and sum_p dy[p] (x[p] - m) over n positions, on 16 float lanes (they vectorise)
static void dy_sums(const float *dy, const float *x, float m, int n, float *s_dy, float *s_dyx) {
    v8f a0 = {0}, a1 = {0}, c0 = {0}, c1 = {0};
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        v8f d0 = load8(dy + p), d1 = load8(dy + p + 8);
        a0 += d0;
        a1 += d1;
        c0 += d0 * (load8(x + p) - m);
        c1 += d1 * (load8(x + p + 8) - m);
    }
    a0 += a1;
    c0 += c1;
    float sa = hsum8(&a0), sc = hsum8(&c0);
    for (; p < n; p++) { sa += dy[p]; sc += dy[p] * (x[p] - m); }
    *s_dy = sa;
    *s_dyx = sc;
}

void groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *gamma, int B, int C, int HW, int G) {
    int Cg = C / G;
    long n = (long)Cg * HW;
    if (din) {
#pragma omp parallel for schedule(dynamic, 4)
        for (int bg = 0; bg < B * G; bg++) {
            const float *x = in + (size_t)bg * n, *dy = dout + (size_t)bg * n;
            float *dx = din + (size_t)bg * n;
            float m = mean[bg], r = rstd[bg];
            int g = bg % G;
            // md = mean(dy gamma), mdx = mean(dy gamma xhat), from per-channel sums
            double sd = 0.0, sdx = 0.0;
            for (int cc = 0; cc < Cg; cc++) {
                float gm = gamma[g * Cg + cc], s_dy, s_dyx;
                dy_sums(dy + (size_t)cc * HW, x + (size_t)cc * HW, m, HW, &s_dy, &s_dyx);
                sd += (double)gm * s_dy;
                sdx += (double)gm * s_dyx * r;
            }
            float md = (float)(sd / n), mdx = (float)(sdx / n);
            for (int cc = 0; cc < Cg; cc++) { // dx += r (dy gamma - md - xhat mdx)
                float gm = gamma[g * Cg + cc];
                const float *xc = x + (size_t)cc * HW, *dyc = dy + (size_t)cc * HW;
                float *dxc = dx + (size_t)cc * HW;
                for (int p = 0; p < HW; p++) dxc[p] += r * (dyc[p] * gm - md - (xc[p] - m) * r * mdx);
            }
        }
    }
    // dgamma[c] += sum_{b,p} dy xhat, dbeta[c] += sum_{b,p} dy (loop over b inside: deterministic)
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        float sg = 0.0f, sb = 0.0f;
        int g = c / Cg;
        for (int b = 0; b < B; b++) {
            float s_dy, s_dyx;
            dy_sums(dout + ((size_t)b * C + c) * HW, in + ((size_t)b * C + c) * HW, mean[b * G + g], HW, &s_dy, &s_dyx);
            sg += s_dyx * rstd[b * G + g];
            sb += s_dy;
        }
        dgamma[c] += sg;
        dbeta[c] += sb;
    }
}

// ---------------------------------------------------------------------------------------
// SiLU: y = x s(x), s = 1/(1+e^-x); dy/dx = s (1 + x (1 - s))

void silu_forward(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) out[i] = in[i] / (1.0f + exp_approx(-in[i]));
}

void silu_backward(float *din, const float *dout, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_approx(-in[i]));
        din[i] += dout[i] * s * (1.0f + in[i] * (1.0f - s));
    }
}

// dgn += dact s (1 + v (1 - s)), s = sigmoid(v), where v = GroupNorm(x) is recomputed from x and
// the saved mean / rstd (so the GroupNorm output of a fused GN+SiLU need not be stored)
void silu_backward_groupnorm(float *dgn, const float *dact, const float *in, const float *mean, const float *rstd,
                             const float *gamma, const float *beta, int B, int C, int HW, int G) {
    int Cg = C / G;
#pragma omp parallel for schedule(dynamic, 8)
    for (int bc = 0; bc < B * C; bc++) {
        int c = bc % C, bg = (bc / C) * G + c / Cg;
        float a = rstd[bg] * gamma[c], b0 = beta[c] - mean[bg] * a;
        const float *x = in + (size_t)bc * HW, *da = dact + (size_t)bc * HW;
        float *dg = dgn + (size_t)bc * HW;
        int p = 0;
        for (; p + 8 <= HW; p += 8) {
            v8f v = load8(x + p) * a + b0, e = -v;
            exp8(&e);
            v8f sg = 1.0f / (1.0f + e);
            store8(dg + p, load8(dg + p) + load8(da + p) * sg * (1.0f + v * (1.0f - sg)));
        }
        for (; p < HW; p++) {
            float v = x[p] * a + b0, sg = 1.0f / (1.0f + exp_approx(-v));
            dg[p] += da[p] * sg * (1.0f + v * (1.0f - sg));
        }
    }
}
