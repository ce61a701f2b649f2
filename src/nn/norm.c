// norm.c: GroupNorm and SiLU (every GroupNorm of the U-Net is followed by SiLU: fused).
#define DDPM_NN_IMPL // defines the fast layers (see layers.h)
#include "nn/layers.h"

#include <math.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/norm_rows.h"
#include "nn/reduce.h"

// ---------------------------------------------------------------------------------------
// GroupNorm: for each (b, g) over its C/G channels x HW positions:
// xhat = (x - mean) rstd, rstd = 1/sqrt(var + 1e-5) (biased var); y = xhat gamma[c] + beta[c]

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
        gn_mean_rstd(x, n, &mf, &r);
        mean[bg] = mf;
        rstd[bg] = r;
        int g = bg % G;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c]; // y = x a + (beta - mean a)
            gn_affine_silu(y ? y + (size_t)cc * HW : NULL, act ? act + (size_t)bg * n + (size_t)cc * HW : NULL,
                           x + (size_t)cc * HW, HW, a, beta[c] - mf * a);
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
                gn_dy_sums(dy + (size_t)cc * HW, x + (size_t)cc * HW, m, HW, &s_dy, &s_dyx);
                sd += (double)gm * s_dy;
                sdx += (double)gm * s_dyx * r;
            }
            float md = (float)(sd / n), mdx = (float)(sdx / n);
            for (int cc = 0; cc < Cg; cc++) { // dx += r (dy gamma - md - xhat mdx)
                size_t o = (size_t)cc * HW;
                gn_dx_add(dx + o, dy + o, x + o, HW, r, gamma[g * Cg + cc], m, md, mdx);
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
            gn_dy_sums(dout + ((size_t)b * C + c) * HW, in + ((size_t)b * C + c) * HW, mean[b * G + g], HW, &s_dy, &s_dyx);
            sg += s_dyx * rstd[b * G + g];
            sb += s_dy;
        }
        dgamma[c] += sg;
        dbeta[c] += sb;
    }
}

// silu_backward_groupnorm into dgn (overwritten: scratch), then groupnorm_backward of it, with passes
// over dgn fewer: the per-(b, c) sums are taken row by row right after dgn is written, and dgamma,
// dbeta come from them
void groupnorm_silu_backward(float *din, float *dgamma, float *dbeta, float *dgn, float *sums, const float *dact,
                             const float *in, const float *mean, const float *rstd, const float *gamma,
                             const float *beta, int B, int C, int HW, int G) {
    int Cg = C / G;
    long n = (long)Cg * HW;
#pragma omp parallel for schedule(dynamic, 4)
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        const float *x = in + (size_t)bg * n, *da = dact + (size_t)bg * n;
        float *dy = dgn + (size_t)bg * n, m = mean[bg], r = rstd[bg];
        double sd = 0.0, sdx = 0.0;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c], *s = sums + 2 * ((size_t)b * C + c);
            size_t o = (size_t)cc * HW;
            silu_affine_backward(dy + o, da + o, x + o, HW, a, beta[c] - m * a, 0); // the row stays in L1 for
            gn_dy_sums(dy + o, x + o, m, HW, &s[0], &s[1]);                     // its sums
            sd += (double)gamma[c] * s[0];
            sdx += (double)gamma[c] * s[1] * r;
        }
        if (!din) continue;
        float md = (float)(sd / n), mdx = (float)(sdx / n);
        for (int cc = 0; cc < Cg; cc++) { // dx += r (dy gamma - md - xhat mdx)
            size_t o = (size_t)cc * HW;
            gn_dx_add(din + (size_t)bg * n + o, dy + o, x + o, HW, r, gamma[g * Cg + cc], m, md, mdx);
        }
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) { // as groupnorm_backward: b in order
        float sg = 0.0f, sb = 0.0f;
        int g = c / Cg;
        for (int b = 0; b < B; b++) {
            float s_dy = sums[2 * ((size_t)b * C + c)], s_dyx = sums[2 * ((size_t)b * C + c) + 1];
            sg = fmaf(s_dyx, rstd[b * G + g], sg); // one rounding
            sb += s_dy;
        }
        dgamma[c] += sg;
        dbeta[c] += sb;
    }
}

// ---------------------------------------------------------------------------------------
// SiLU: y = x s(x), s = 1/(1+e^-x); dy/dx = s (1 + x (1 - s))

#define SILU_CHUNK 4096 // elements per parallel task (elementwise: any split gives the same values)
void silu_forward(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i += SILU_CHUNK) silu_rows(out + i, in + i, n - i < SILU_CHUNK ? n - i : SILU_CHUNK);
}

void silu_backward(float *din, const float *dout, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i += SILU_CHUNK)
        silu_backward_rows(din + i, dout + i, in + i, n - i < SILU_CHUNK ? n - i : SILU_CHUNK);
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
        size_t o = (size_t)bc * HW;
        silu_affine_backward(dgn + o, dact + o, in + o, HW, a, b0, 1);
    }
}
