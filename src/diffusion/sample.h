// sample.h: the reverse process. DDPM ancestral sampling (T steps) or DDIM (K steps),
// with one RNG stream per image, so image i is the same whatever n and the batch size.
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/diffusion.h"

typedef enum { SAMPLER_DDPM = 0, SAMPLER_DDIM = 1 } SamplerKind;

typedef struct {
    SamplerKind sampler;
    SigmaKind sigma;     // DDPM: sigma_t^2 = beta_t or the posterior variance
    int ddim_steps;      // DDIM: K
    float eta;           // DDIM: 0 = deterministic
    int clip;            // clip the x0 estimate to [-1, 1] inside each step
    uint64_t seed;
    int n;               // images
    int first;           // x[0] is image `first` (0): a share of a larger set (one MPI rank's)
    int batch;           // images per forward pass
    int strip_n, strip_k; // x0-estimate strip: first strip_n images at strip_k points (0 = none)
    int progress;        // print progress to stderr
} SampleOptions;

// The noise predictor: eps[n, D] = eps_theta(x[n, D], t[n]), returned as a pointer that stays
// valid until the next call (the U-Net's output activations). ctx is the caller's (the model).
typedef const float *(*Denoiser)(void *ctx, const float *x, const int *t, int n);

// x[n, D] receives the final samples in [-1, 1] (clipped). If strip != NULL it receives
// strip_n * strip_k images: row r = image r, column c = its clipped x0 estimate at the c-th of
// strip_k evenly spaced points of the sampling sequence (from t = T-1 to t = 0). With first > 0,
// x holds images first .. first + n - 1, and strip row r is still image r (rows of images outside
// this share are left as they are).
// The denoiser is called with at most min(opt->batch, opt->n) images at a time.
void sample_images(Denoiser eps_model, void *ctx, int D, const Schedule *s, const SampleOptions *opt, float *x,
                   float *strip);

// one line naming the sampler and its settings, e.g. "DDPM (sigma^2 = beta), clipped x0"
void sample_describe(char *buf, size_t n, const SampleOptions *opt);

#endif
