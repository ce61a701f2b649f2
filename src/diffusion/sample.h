// sample.h: the reverse process over any network F (see objective.h for how F becomes a
// denoiser D(x; sigma) = c_skip x + c_out F(c_in x, t(sigma))), in batches, with one RNG stream
// per image, so image i is the same whatever n and the batch size.
//   DDPM:     ancestral sampling over all T steps (Ho et al. 2020, Alg. 2)
//   DDIM:     K steps of the discrete schedule (Song et al. 2021)
//   Heun:     K Karras sigmas, EDM's 2nd-order deterministic sampler (Karras et al. 2022, Alg. 1)
//   DPM++ 2M: K Karras sigmas, DPM-Solver++(2M) (Lu et al. 2022), a multistep solver of the
//             data-prediction ODE: one network evaluation per step
// Karras sigmas: sigma_i = (smax^(1/rho) + i/(K-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < K,
// sigma_K = 0, with smin, smax the schedule's sigma_0 and sigma_{T-1}.
// Class-conditional models: classifier-free guidance F = F_u + w (F_c - F_u) (Ho & Salimans 2022),
// F_u at the null label; w = 1 is the conditional model alone, w = 0 the unconditional one.
// Noise: one RNG stream per image (image i depends only on seed and i), or PyTorch's (NOISE_TORCH).
#ifndef DDPM_SAMPLE_H
#define DDPM_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "diffusion/diffusion.h"

typedef enum { SAMPLER_DDPM = 0, SAMPLER_DDIM = 1, SAMPLER_HEUN = 2, SAMPLER_DPMPP2M = 3 } SamplerKind;
// NOISE_DDPMC: one stream per image (image i depends only on seed and i);
// NOISE_TORCH: PyTorch's, as torch.manual_seed(seed) then, per batch of nb images, x_T =
// torch.randn(nb, C, H, W) and each noisy step's z = torch.randn(nb, C, H, W) (one generator for
// the whole run: the images depend on the batch size; batch = n is DDPM-Pytorch's sample_ddpm.py)
typedef enum { NOISE_DDPMC = 0, NOISE_TORCH = 1 } NoiseKind;

typedef struct {
    SamplerKind sampler;
    SigmaKind sigma;     // DDPM: sigma_t^2 = beta_t or the posterior variance
    int steps;           // DDIM, Heun, DPM++: K
    float eta;           // DDIM: 0 = deterministic
    float rho;           // Karras spacing of the sigmas (Heun, DPM++), 7 if 0
    int clip;            // clip the x0 estimate to [-1, 1] inside each step
    uint64_t seed;
    NoiseKind noise;
    int n;               // images
    int first;           // x[0] is image `first` (0): a share of a larger set (one MPI rank's)
    int batch;           // images per forward pass (2x that with guidance)
    int batch_given;     // set by --batch (else the command's default)
    int strip_n, strip_k; // x0-estimate strip: first strip_n images at strip_k points (0 = none)
    int progress;        // print progress to stderr
    // the model (from its config)
    ObjectiveKind objective;
    float sigma_data;
    int num_classes;     // 0 = unconditional
    // class-conditional sampling: labels[n] in [0, num_classes) or NULL (the null label)
    const int *labels;
    float guidance;      // w
} SampleOptions;

// The network: out[n, D] = F(x[n, D], t[n], y[n]) (y NULL: null label), returned as a pointer that
// stays valid until the next call. ctx is the caller's (the model).
typedef const float *(*Network)(void *ctx, const float *x, const float *t, const int *y, int n);

// network evaluations per image of a sampling run (guidance evaluates F twice per step)
int sample_nfe(const SampleOptions *opt, int T);
// the most images the network is called with at once: min(batch, n), doubled with guidance
int sample_max_batch(const SampleOptions *opt);

// x[n, D] receives the final samples in [-1, 1] (clipped). If strip != NULL it receives
// strip_n * strip_k images: row r = image r, column c = its clipped x0 estimate at the c-th of
// strip_k evenly spaced points of the sampling sequence (from high noise to none). With first > 0,
// x holds images first .. first + n - 1 (labels too), and strip row r is still image r (rows of
// images outside this share are left as they are).
void sample_images(Network net, void *ctx, int D, const Schedule *s, const SampleOptions *opt, float *x,
                   float *strip);

// Karras sigmas: K + 1 values, the last 0
void karras_sigmas(double *sig, int K, double smin, double smax, double rho);

// one line naming the sampler and its settings, e.g. "DPM++ 2M 25 steps, clipped x0"
void sample_describe(char *buf, size_t n, const SampleOptions *opt);
SamplerKind sampler_from_name(const char *name, int *ok);
const char *sampler_name(SamplerKind k);

#endif
