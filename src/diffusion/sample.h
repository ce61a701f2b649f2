// sample.h: the reverse process. DDPM ancestral sampling (T steps) or DDIM (K steps),
// with one RNG stream per image, so image i is the same whatever n and the batch size.
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <stdint.h>

#include "train/checkpoint.h"
#include "diffusion/diffusion.h"
#include "model/unet.h"

typedef enum { SAMPLER_DDPM = 0, SAMPLER_DDIM = 1 } SamplerKind;

typedef struct {
    SamplerKind sampler;
    SigmaKind sigma;     // DDPM: sigma_t^2 = beta_t or the posterior variance
    int ddim_steps;      // DDIM: K
    float eta;           // DDIM: 0 = deterministic
    int clip;            // clip the x0 estimate to [-1, 1] inside each step
    uint64_t seed;
    int n;               // images
    int batch;           // images per forward pass
    int strip_n, strip_k; // x0-estimate strip: first strip_n images at strip_k points (0 = none)
    int progress;        // print progress to stderr
} SampleOptions;

// x[n, C, S, S] receives the final samples in [-1, 1] (clipped). If strip != NULL it receives
// strip_n * strip_k images: row r = image r, column c = its clipped x0 estimate at the c-th of
// strip_k evenly spaced points of the sampling sequence (from t = T-1 to t = 0).
// The model's activations are (re)allocated for opt->batch images.
void sample_images(Unet *m, const Schedule *s, const SampleOptions *opt, float *x, float *strip);

// Load a checkpoint for sampling: builds m with the EMA weights (or the raw ones if no_ema or
// the run kept no EMA) and its schedule. Exits with a one-line message on any error.
// Returns 1 if the EMA weights are used. ck keeps the training state (ck->st) for reports.
int load_model_for_sampling(const char *path, int no_ema, Checkpoint *ck, Unet *m, Schedule *s);

#endif
