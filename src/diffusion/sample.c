// sample.c: DDPM, DDIM, Heun and DPM++ 2M sampling loops over a network, in batches, with
// classifier-free guidance for class-conditional models.
#include "diffusion/sample.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/torch_rng.h"
#include "diffusion/objective.h"

static void progress_line(const char *what, long done, long total, double t0) {
    double el = now_seconds() - t0;
    double eta = done > 0 ? el * (double)(total - done) / (double)done : 0.0;
    fprintf(stderr, "\r%s: %ld/%ld steps | %.1f s elapsed | ETA %.0f s   ", what, done, total, el, eta);
    fflush(stderr);
}

static int guided(const SampleOptions *o) { return o->num_classes > 0 && o->labels && o->guidance != 1.0f; }

int sample_nfe(const SampleOptions *o, int T) {
    int K = o->steps < T ? o->steps : T, per = guided(o) ? 2 : 1;
    switch (o->sampler) {
    case SAMPLER_DDIM: case SAMPLER_DPMPP2M: return per * K;
    case SAMPLER_HEUN: return per * (2 * o->steps - 1);
    default: return per * T;
    }
}

int sample_max_batch(const SampleOptions *o) {
    int B = o->batch < o->n ? o->batch : o->n;
    if (B < 1) B = 1;
    return guided(o) ? 2 * B : B;
}

void karras_sigmas(double *sig, int K, double smin, double smax, double rho) {
    double a = pow(smax, 1.0 / rho), b = pow(smin, 1.0 / rho);
    for (int i = 0; i < K; i++) sig[i] = K == 1 ? smax : pow(a + (double)i / (K - 1) * (b - a), rho);
    sig[K] = 0.0;
}

// ---- the network as a denoiser, for one batch of nb images
typedef struct {
    Network net;
    void *ctx;
    const SampleOptions *o;
    const Schedule *s;
    int D, nb;
    const int *labels;   // [nb] of this batch, or NULL
    float *xin, *tin;    // [2B, D], [2B] network inputs
    int *yin;            // [2B]
    float *f;            // [B, D] the (guided) network output
} Den;

// f = F(xin, t) for the nb images, guided: the null-label half runs in the same call
static void den_eval(Den *k, float t) {
    int nb = k->nb, D = k->D, g = guided(k->o) && k->labels;
    const int *y = NULL;
    for (int b = 0; b < (g ? 2 : 1) * nb; b++) k->tin[b] = t;
    if (k->o->num_classes > 0 && k->labels) {
        for (int b = 0; b < nb; b++) k->yin[b] = k->labels[b];
        if (g) {
            memcpy(k->xin + (size_t)nb * D, k->xin, (size_t)nb * D * sizeof(float));
            for (int b = 0; b < nb; b++) k->yin[nb + b] = k->o->num_classes;
        }
        y = k->yin;
    }
    const float *F = k->net(k->ctx, k->xin, k->tin, y, g ? 2 * nb : nb);
    if (!g) { memcpy(k->f, F, (size_t)nb * D * sizeof(float)); return; }
    double w = k->o->guidance;
    const float *Fu = F + (size_t)nb * D;
    for (size_t i = 0; i < (size_t)nb * D; i++) k->f[i] = (float)(Fu[i] + w * ((double)F[i] - Fu[i])); // F_u + w (F_c - F_u)
}

static double clip1(double v, int clip) { return clip ? (v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v) : v; }

// eps at integer t of VP samples x_t (DDPM, DDIM): F itself for eps models, else through D:
// x = x_t / sqrt(ab_t), eps = (x - D(x))/sigma_t
static const float *den_eps(Den *k, const float *xt, int t) {
    size_t n = (size_t)k->nb * k->D;
    if (k->o->objective == OBJECTIVE_EPS) {
        memcpy(k->xin, xt, n * sizeof(float));
        den_eval(k, (float)t);
        return k->f;
    }
    double sg = schedule_sigma(k->s, t), sab = sqrt(k->s->alpha_bar64[t]);
    Precond p = precond(k->o->objective, sg, k->o->sigma_data);
    for (size_t i = 0; i < n; i++) k->xin[i] = (float)(p.c_in * (xt[i] / sab));
    den_eval(k, (float)t);
    for (size_t i = 0; i < n; i++) {
        double x = xt[i] / sab, d = p.c_skip * x + p.c_out * k->f[i];
        k->f[i] = (float)((x - d) / sg);
    }
    return k->f;
}

// d[i] = D(x; sigma), clipped to [-1, 1] if asked (x in the VE view, x = x0 + sigma n)
static void den_x0(Den *k, const float *x, double sg, double *d) {
    size_t n = (size_t)k->nb * k->D;
    Precond p = precond(k->o->objective, sg, k->o->sigma_data);
    for (size_t i = 0; i < n; i++) k->xin[i] = (float)(p.c_in * x[i]);
    den_eval(k, (float)sigma_to_t(k->s, sg));
    for (size_t i = 0; i < n; i++) d[i] = clip1(p.c_skip * x[i] + p.c_out * k->f[i], k->o->clip);
}

void sample_images(Network net, void *ctx, int D, const Schedule *s, const SampleOptions *opt, float *x,
                   float *strip) {
    int T = s->T;
    int B = opt->batch < opt->n ? opt->batch : opt->n;
    if (B < 1) B = 1;
    int sigma_space = opt->sampler == SAMPLER_HEUN || opt->sampler == SAMPLER_DPMPP2M;
    // the sequence of timesteps (ascending, DDPM/DDIM) or of sigmas (descending, Heun/DPM++)
    int K = opt->steps < 1 ? 1 : opt->steps;
    int n_steps = T;
    int *ts = mallocCheck((size_t)T * sizeof(int));
    double *sig = mallocCheck((size_t)(K + 1) * sizeof(double));
    if (opt->sampler == SAMPLER_DDIM) {
        n_steps = ddim_timesteps(ts, K, T);
    } else if (sigma_space) {
        karras_sigmas(sig, K, schedule_sigma(s, 0), schedule_sigma(s, T - 1), opt->rho > 0 ? opt->rho : 7.0);
        n_steps = K;
    } else {
        for (int i = 0; i < T; i++) ts[i] = i;
    }
    int k = opt->strip_k;
    size_t nD = (size_t)B * D;
    float *tmp = mallocCheck((size_t)D * sizeof(float));
    float *xb = alignedCalloc(nD * sizeof(float)), *x2 = alignedCalloc(nD * sizeof(float));
    double *d0 = mallocCheck(nD * sizeof(double)), *d1 = mallocCheck(nD * sizeof(double));
    double *dprev = mallocCheck(nD * sizeof(double));
    Den den = {.net = net, .ctx = ctx, .o = opt, .s = s, .D = D};
    den.xin = alignedCalloc(2 * nD * sizeof(float));
    den.tin = mallocCheck(2 * (size_t)B * sizeof(float));
    den.yin = mallocCheck(2 * (size_t)B * sizeof(int));
    den.f = alignedCalloc(nD * sizeof(float));
    Rng *rngs = mallocCheck((size_t)B * sizeof(Rng));
    int torch = opt->noise == NOISE_TORCH;
    TorchGen *tg = torch ? mallocCheck(sizeof(TorchGen)) : NULL;
    float *zb = torch ? alignedCalloc(nD * sizeof(float)) : NULL; // a step's z for the batch
    if (torch) torch_manual_seed(tg, opt->seed);
    long total = (long)n_steps * ((opt->n + B - 1) / B), done = 0;
    double t0 = now_seconds(), last = 0;
    int tty = opt->progress && isatty(2);
    for (int i0 = 0; i0 < opt->n; i0 += B) {
        int nb = opt->n - i0 < B ? opt->n - i0 : B;
        size_t n = (size_t)nb * D;
        den.nb = nb;
        den.labels = opt->labels ? opt->labels + i0 : NULL;
        // z ~ N(0, I), one stream per image (or torch.randn(nb, C, H, W)); x_T = z (VP) or sigma_max z (VE)
        if (torch) torch_randn(tg, xb, (long)nb * D);
        else for (int b = 0; b < nb; b++) {
            rng_seed(&rngs[b], opt->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)(opt->first + i0 + b) + 1);
            rng_fill_normal(&rngs[b], xb + (size_t)b * D, D);
        }
        if (sigma_space)
            for (size_t i = 0; i < n; i++) xb[i] = (float)(sig[0] * xb[i]);
        int next_strip = 0, g0 = opt->first + i0; // the image index of xb[0]
        for (int step = 0; step < n_steps; step++) {
            int record = strip && g0 < opt->strip_n && k > 0 && next_strip < k &&
                         step == (int)lround((double)next_strip * (n_steps - 1) / (k > 1 ? k - 1 : 1));
            if (!sigma_space) {
                int si = n_steps - 1 - step, t = ts[si];
                const float *eps = den_eps(&den, xb, t);
                if (record) {
                    for (int b = 0; b < nb && g0 + b < opt->strip_n; b++)
                        predict_x0(strip + ((size_t)(g0 + b) * k + next_strip) * D, xb + (size_t)b * D, eps + (size_t)b * D, t, s, D);
                    next_strip++;
                }
                int t_prev = opt->sampler == SAMPLER_DDIM ? (si > 0 ? ts[si - 1] : -1) : t - 1;
                int noisy = opt->sampler == SAMPLER_DDIM ? opt->eta > 0 && t_prev >= 0 : t > 0;
                if (torch && noisy) torch_randn(tg, zb, (long)nb * D); // z = torch.randn(nb, C, H, W)
                for (int b = 0; b < nb; b++) {
                    float *xi = xb + (size_t)b * D;
                    const float *ei = eps + (size_t)b * D, *zi = torch ? zb + (size_t)b * D : NULL;
                    if (torch && opt->sampler == SAMPLER_DDIM)
                        ddim_step_z(tmp, xi, ei, t, t_prev, opt->eta, opt->clip, s, zi, D);
                    else if (torch && opt->clip)
                        ddpm_step_clipped_z(tmp, xi, ei, t, s, opt->sigma, zi, D);
                    else if (torch)
                        ddpm_step_z(tmp, xi, ei, t, s, opt->sigma, zi, D);
                    else if (opt->sampler == SAMPLER_DDIM)
                        ddim_step(tmp, xi, ei, t, si > 0 ? ts[si - 1] : -1, opt->eta, opt->clip, s, &rngs[b], D);
                    else if (opt->clip)
                        ddpm_step_clipped(tmp, xi, ei, t, s, opt->sigma, &rngs[b], D);
                    else
                        ddpm_step(tmp, xi, ei, t, s, opt->sigma, &rngs[b], D);
                    memcpy(xi, tmp, (size_t)D * sizeof(float));
                }
            } else {
                double sc = sig[step], sn = sig[step + 1];
                den_x0(&den, xb, sc, d0);
                if (record) {
                    for (int b = 0; b < nb && g0 + b < opt->strip_n; b++)
                        for (int i = 0; i < D; i++)
                            strip[((size_t)(g0 + b) * k + next_strip) * D + i] = (float)clip1(d0[(size_t)b * D + i], 1);
                    next_strip++;
                }
                if (opt->sampler == SAMPLER_HEUN) {
                    // Euler: x' = x + (sn - sc) d, d = (x - D(x; sc))/sc; then the trapezoid with d' at sn
                    for (size_t i = 0; i < n; i++) x2[i] = (float)(xb[i] + (sn - sc) * (xb[i] - d0[i]) / sc);
                    if (sn > 0) {
                        den_x0(&den, x2, sn, d1);
                        for (size_t i = 0; i < n; i++) {
                            double dd = (xb[i] - d0[i]) / sc, dd2 = (x2[i] - d1[i]) / sn;
                            x2[i] = (float)(xb[i] + (sn - sc) * 0.5 * (dd + dd2));
                        }
                    }
                    memcpy(xb, x2, n * sizeof(float));
                } else {
                    // DPM++ 2M, lambda = -ln sigma, h = lambda_next - lambda:
                    // x' = (sn/sc) x - (e^-h - 1) D~, D~ = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_prev/h
                    // (first step and the last one to sigma = 0: D~ = D_i)
                    if (sn == 0) {
                        for (size_t i = 0; i < n; i++) xb[i] = (float)d0[i];
                    } else {
                        double h = log(sc) - log(sn), em1 = expm1(-h);
                        int second = step > 0;
                        double r = second ? (log(sig[step - 1]) - log(sc)) / h : 1.0;
                        double a = 1.0 + 1.0 / (2.0 * r), bcoef = 1.0 / (2.0 * r);
                        for (size_t i = 0; i < n; i++) {
                            double dt = second ? a * d0[i] - bcoef * dprev[i] : d0[i];
                            xb[i] = (float)(sn / sc * xb[i] - em1 * dt);
                        }
                    }
                    memcpy(dprev, d0, n * sizeof(double));
                }
            }
            done++;
            if (opt->progress) {
                double now = now_seconds();
                if (tty ? now - last > 0.25 : now - last > 30.0) {
                    progress_line("sampling", done, total, t0);
                    if (!tty) fputc('\n', stderr);
                    last = now;
                }
            }
        }
        for (size_t i = 0; i < n; i++) x[(size_t)i0 * D + i] = (float)clip1(xb[i], 1);
    }
    if (opt->progress) {
        progress_line("sampling", done, total, t0);
        fputc('\n', stderr);
    }
    free(tg); free(zb);
    free(ts); free(sig); free(tmp); free(xb); free(x2); free(d0); free(d1); free(dprev); free(rngs);
    free(den.xin); free(den.tin); free(den.yin); free(den.f);
}

static const char *NAMES[] = {"ddpm", "ddim", "heun", "dpm++"};

const char *sampler_name(SamplerKind k) { return (unsigned)k < 4 ? NAMES[k] : "?"; }

SamplerKind sampler_from_name(const char *name, int *ok) {
    *ok = 1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, NAMES[i])) return (SamplerKind)i;
    if (!strcmp(name, "dpm++2m") || !strcmp(name, "dpmpp")) return SAMPLER_DPMPP2M;
    *ok = 0;
    return SAMPLER_DDPM;
}

void sample_describe(char *buf, size_t n, const SampleOptions *opt) {
    char g[64] = "";
    if (opt->num_classes > 0 && opt->labels) snprintf(g, sizeof g, ", guidance %g", opt->guidance);
    else if (opt->num_classes > 0) snprintf(g, sizeof g, ", null label (unconditional)");
    const char *cl = opt->clip ? ", clipped x0" : "";
    char tn[64] = "";
    if (opt->noise == NOISE_TORCH) snprintf(tn, sizeof tn, ", PyTorch noise (batch %d)", opt->batch < opt->n ? opt->batch : opt->n);
    char gt[140];
    snprintf(gt, sizeof gt, "%s%s", g, tn);
    switch (opt->sampler) {
    case SAMPLER_DDIM: snprintf(buf, n, "DDIM %d steps, eta %g%s%s", opt->steps, opt->eta, cl, gt); break;
    case SAMPLER_HEUN: snprintf(buf, n, "Heun %d steps (%d evaluations)%s%s", opt->steps, 2 * opt->steps - 1, cl, gt); break;
    case SAMPLER_DPMPP2M: snprintf(buf, n, "DPM++ 2M %d steps%s%s", opt->steps, cl, gt); break;
    default:
        snprintf(buf, n, "DDPM (%s)%s%s", opt->sigma == SIGMA_BETA ? "sigma^2 = beta" : "posterior sigma", cl, gt);
    }
}
