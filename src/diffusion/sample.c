// sample.c: DDPM / DDIM sampling loops over a noise predictor, in batches.
#include "diffusion/sample.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"

static void progress_line(const char *what, long done, long total, double t0) {
    double el = now_seconds() - t0;
    double eta = done > 0 ? el * (double)(total - done) / (double)done : 0.0;
    fprintf(stderr, "\r%s: %ld/%ld steps | %.1f s elapsed | ETA %.0f s   ", what, done, total, el, eta);
    fflush(stderr);
}

void sample_images(Denoiser eps_model, void *ctx, int D, const Schedule *s, const SampleOptions *opt, float *x,
                   float *strip) {
    int T = s->T;
    int B = opt->batch < opt->n ? opt->batch : opt->n;
    if (B < 1) B = 1;
    // the sequence of timesteps, from T-1 down to 0
    int n_steps = T;
    int *ts = mallocCheck((size_t)T * sizeof(int));
    if (opt->sampler == SAMPLER_DDIM) {
        n_steps = ddim_timesteps(ts, opt->ddim_steps, T); // ascending
    } else {
        for (int i = 0; i < T; i++) ts[i] = i;
    }
    // strip: record the x0 estimate at step indices round(j (n_steps-1) / (k-1))
    int k = opt->strip_k;
    float *tmp = mallocCheck((size_t)D * sizeof(float));
    int *tb = mallocCheck((size_t)B * sizeof(int));
    float *xb = alignedCalloc((size_t)B * D * sizeof(float));
    Rng *rngs = mallocCheck((size_t)B * sizeof(Rng));
    long total = (long)n_steps * ((opt->n + B - 1) / B), done = 0;
    double t0 = now_seconds(), last = 0;
    int tty = opt->progress && isatty(2);
    for (int i0 = 0; i0 < opt->n; i0 += B) {
        int nb = opt->n - i0 < B ? opt->n - i0 : B;
        // x_T ~ N(0, I), one stream per image
        for (int b = 0; b < nb; b++) {
            rng_seed(&rngs[b], opt->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)(opt->first + i0 + b) + 1);
            rng_fill_normal(&rngs[b], xb + (size_t)b * D, D);
        }
        int next_strip = 0;
        for (int si = n_steps - 1; si >= 0; si--) {
            int t = ts[si], step_idx = n_steps - 1 - si;
            for (int b = 0; b < nb; b++) tb[b] = t;
            const float *eps = eps_model(ctx, xb, tb, nb);
            int g0 = opt->first + i0; // the image index of xb[0]
            int record = strip && g0 < opt->strip_n && k > 0 && next_strip < k &&
                         step_idx == (int)lround((double)next_strip * (n_steps - 1) / (k > 1 ? k - 1 : 1));
            if (record) {
                for (int b = 0; b < nb && g0 + b < opt->strip_n; b++)
                    predict_x0(strip + ((size_t)(g0 + b) * k + next_strip) * D, xb + (size_t)b * D, eps + (size_t)b * D, t, s, D);
                next_strip++;
            }
            for (int b = 0; b < nb; b++) {
                float *xi = xb + (size_t)b * D;
                const float *ei = eps + (size_t)b * D;
                if (opt->sampler == SAMPLER_DDIM)
                    ddim_step(tmp, xi, ei, t, si > 0 ? ts[si - 1] : -1, opt->eta, opt->clip, s, &rngs[b], D);
                else if (opt->clip)
                    ddpm_step_clipped(tmp, xi, ei, t, s, opt->sigma, &rngs[b], D);
                else
                    ddpm_step(tmp, xi, ei, t, s, opt->sigma, &rngs[b], D);
                memcpy(xi, tmp, (size_t)D * sizeof(float));
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
        for (long i = 0; i < (long)nb * D; i++) {
            float v = xb[i];
            x[(size_t)i0 * D + i] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
        }
    }
    if (opt->progress) {
        progress_line("sampling", done, total, t0);
        fputc('\n', stderr);
    }
    free(ts); free(tmp); free(tb); free(xb); free(rngs);
}

void sample_describe(char *buf, size_t n, const SampleOptions *opt) {
    if (opt->sampler == SAMPLER_DDIM)
        snprintf(buf, n, "DDIM %d steps, eta %g%s", opt->ddim_steps, opt->eta, opt->clip ? ", clipped x0" : "");
    else
        snprintf(buf, n, "DDPM (%s)%s", opt->sigma == SIGMA_BETA ? "sigma^2 = beta" : "posterior sigma",
                 opt->clip ? ", clipped x0" : "");
}
