// ref/norm.c: the reference GroupNorm and SiLU, from their definitions (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

#include <math.h>
#include <string.h>

// ---------------------------------------------------------------------------------------
// GroupNorm with G groups: the C channels of an image split into G groups of Cg = C / G
// consecutive channels; each group (b, g) is the n = Cg HW contiguous values x of in[b, g Cg ..].
//   mean = (1/n) sum x,   var = (1/n) sum (x - mean)^2 (biased),   rstd = 1 / sqrt(var + 1e-5)
//   xhat = (x - mean) rstd,   out[b,c,p] = xhat gamma[c] + beta[c]
// The sums run in double; mean and rstd are saved (as floats) for the backward.

// the GroupNorm output of x = in[b,c,p] from the saved statistics of its group (the forward,
// the fused SiLU and its backward all evaluate this same expression)
static inline float gn_value(float x, float mean, float rstd, float gamma, float beta) {
    return (x - mean) * rstd * gamma + beta;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// out = GroupNorm(in) (if out), act = SiLU(out) (if act)
static void groupnorm_silu(float *out, float *act, float *mean, float *rstd, const float *in,
                           const float *gamma, const float *beta, int B, int C, int HW, int G) {
    int Cg = C / G;
    size_t n = (size_t)Cg * HW;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            size_t off = ((size_t)b * C + (size_t)g * Cg) * HW; // the group's first value
            const float *x = in + off;
            double sum = 0.0;
            for (size_t i = 0; i < n; i++) sum += x[i];
            double m = sum / n, ss = 0.0;
            for (size_t i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
            float mf = (float)m, rf = (float)(1.0 / sqrt(ss / n + 1e-5));
            mean[b * G + g] = mf;
            rstd[b * G + g] = rf;
            for (int cc = 0; cc < Cg; cc++) {
                int c = g * Cg + cc;
                for (int p = 0; p < HW; p++) {
                    size_t i = (size_t)cc * HW + p;
                    float y = gn_value(x[i], mf, rf, gamma[c], beta[c]);
                    if (out) out[off + i] = y;
                    if (act) act[off + i] = y * sigmoid(y);
                }
            }
        }
}

void groupnorm_forward_ref(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                           const float *beta, int B, int C, int HW, int G) {
    groupnorm_silu(out, NULL, mean, rstd, in, gamma, beta, B, C, HW, G);
}

// out may be NULL (only act, mean and rstd are written)
void groupnorm_silu_forward_ref(float *out, float *act, float *mean, float *rstd, const float *in,
                                const float *gamma, const float *beta, int B, int C, int HW, int G) {
    groupnorm_silu(out, act, mean, rstd, in, gamma, beta, B, C, HW, G);
}

// With dy = dout and, per group, dxhat = dy gamma[c] (the gradient of xhat):
//   din    += rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))    (means over the group's n values)
//   dgamma[c] += sum_{b,p} dy xhat,   dbeta[c] += sum_{b,p} dy
// din may be NULL (not needed). No scratch.
void groupnorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *mean, const float *rstd,
                            const float *gamma, int B, int C, int HW, int G) {
    int Cg = C / G;
    size_t n = (size_t)Cg * HW;
    if (din)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++) {
                size_t off = ((size_t)b * C + (size_t)g * Cg) * HW;
                const float *x = in + off, *dy = dout + off;
                float m = mean[b * G + g], r = rstd[b * G + g];
                double s_dxhat = 0.0, s_dxhat_xhat = 0.0;
                for (int cc = 0; cc < Cg; cc++)
                    for (int p = 0; p < HW; p++) {
                        size_t i = (size_t)cc * HW + p;
                        float dxhat = dy[i] * gamma[g * Cg + cc], xhat = (x[i] - m) * r;
                        s_dxhat += dxhat;
                        s_dxhat_xhat += dxhat * xhat;
                    }
                float mean_dxhat = (float)(s_dxhat / n), mean_dxhat_xhat = (float)(s_dxhat_xhat / n);
                for (int cc = 0; cc < Cg; cc++)
                    for (int p = 0; p < HW; p++) {
                        size_t i = (size_t)cc * HW + p;
                        float dxhat = dy[i] * gamma[g * Cg + cc], xhat = (x[i] - m) * r;
                        din[off + i] += r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
                    }
            }
    for (int c = 0; c < C; c++) {
        int g = c / Cg;
        double s_dy_xhat = 0.0, s_dy = 0.0;
        for (int b = 0; b < B; b++) {
            const float *x = in + ((size_t)b * C + c) * HW, *dy = dout + ((size_t)b * C + c) * HW;
            float m = mean[b * G + g], r = rstd[b * G + g];
            for (int p = 0; p < HW; p++) {
                s_dy_xhat += dy[p] * ((x[p] - m) * r);
                s_dy += dy[p];
            }
        }
        dgamma[c] += (float)s_dy_xhat;
        dbeta[c] += (float)s_dy;
    }
}

// ---------------------------------------------------------------------------------------
// SiLU: y = x s(x), s(x) = 1 / (1 + e^-x);  dy/dx = s + x s (1 - s) = s (1 + x (1 - s))

void silu_forward_ref(float *out, const float *in, long n) {
    for (long i = 0; i < n; i++) out[i] = in[i] * sigmoid(in[i]);
}

void silu_backward_ref(float *din, const float *dout, const float *in, long n) {
    for (long i = 0; i < n; i++) {
        float s = sigmoid(in[i]);
        din[i] += dout[i] * s * (1.0f + in[i] * (1.0f - s));
    }
}

// dgn += dact silu'(v), v = GroupNorm(in) recomputed from the saved mean / rstd and gamma / beta
// (so that a fused GroupNorm + SiLU need not store its GroupNorm output)
void silu_backward_groupnorm_ref(float *dgn, const float *dact, const float *in, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta, int B, int C,
                                 int HW, int G) {
    int Cg = C / G;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            int bg = b * G + c / Cg;
            size_t off = ((size_t)b * C + c) * HW;
            for (int p = 0; p < HW; p++) {
                float v = gn_value(in[off + p], mean[bg], rstd[bg], gamma[c], beta[c]), s = sigmoid(v);
                dgn[off + p] += dact[off + p] * s * (1.0f + v * (1.0f - s));
            }
        }
}

// the two backwards of GroupNorm + SiLU one after the other (the fast layer fuses their passes);
// dgn is overwritten; sums is not needed here
void groupnorm_silu_backward_ref(float *din, float *dgamma, float *dbeta, float *dgn, float *sums, const float *dact,
                                 const float *in, const float *mean, const float *rstd, const float *gamma,
                                 const float *beta, int B, int C, int HW, int G) {
    (void)sums;
    memset(dgn, 0, (size_t)B * C * HW * sizeof(float));
    silu_backward_groupnorm_ref(dgn, dact, in, mean, rstd, gamma, beta, B, C, HW, G);
    groupnorm_backward_ref(din, dgamma, dbeta, dgn, in, mean, rstd, gamma, B, C, HW, G);
}
