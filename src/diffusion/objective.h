// objective.h: what the network predicts, and how training draws the noise level.
//
// Every objective is one preconditioning of the same network F (Karras et al. 2022, "EDM",
// Table 1), written in the variance-exploding view of the process: x = x0 + sigma n, where the
// VP sample of timestep t is x_t = sqrt(ab_t) x and sigma_t^2 = (1 - ab_t)/ab_t. The denoiser is
//   D(x; sigma) = c_skip x + c_out F(c_in x, t(sigma))                   (an estimate of x0)
//   eps: c_in = 1/sqrt(1+s^2), c_skip = 1,           c_out = -s             F predicts eps
//   v:   c_in = 1/sqrt(1+s^2), c_skip = 1/(1+s^2),   c_out = -s/sqrt(1+s^2) F predicts v = sqrt(ab) eps - sqrt(1-ab) x0
//   edm: c_in = 1/sqrt(s^2+d^2), c_skip = d^2/(s^2+d^2), c_out = s d/sqrt(s^2+d^2)    (d = sigma_data)
// For eps and v, c_in x is exactly the VP sample x_t. t(sigma) is the (fractional) timestep whose
// noise level is sigma on the config's schedule: ln sigma_t interpolated linearly between integer t,
// so integer t give the schedule's own sigmas and every objective shares the timestep embedding.
//
// Training minimises w(sigma) |F - F*|^2, F* = (x0 - c_skip x)/c_out (the F for which D = x0):
// eps: F* = eps, v: F* = v, edm: EDM's target with its loss weight lambda = 1/c_out^2 (so w = 1).
// With min_snr_gamma > 0 the weight on |D - x0|^2 is min(SNR, gamma), SNR = 1/sigma^2 (Hang et
// al. 2023): w = min(SNR, gamma) c_out^2 (eps: min(SNR, g)/SNR; v: min(SNR, g)/(SNR + 1)).
#ifndef DDPM_OBJECTIVE_H
#define DDPM_OBJECTIVE_H

#include "core/config.h"
#include "core/rng.h"
#include "diffusion/diffusion.h"

typedef struct { double c_in, c_skip, c_out; } Precond;

Precond precond(ObjectiveKind obj, double sigma, double sigma_data);
// sigma_t = sqrt((1 - ab_t)/ab_t) of integer t in [0, T)
double schedule_sigma(const Schedule *s, int t);
// the fractional timestep of a noise level, clamped to [0, T-1], and its inverse
double sigma_to_t(const Schedule *s, double sigma);
double t_to_sigma(const Schedule *s, double t);
// the weight w(sigma) of |F - F*|^2
double loss_weight(const ModelConfig *c, double sigma);
// one training noise level: uniform: t ~ U{0..T-1} (integer, drawn with rng_below);
// lognormal: ln sigma ~ N(p_mean, p_std^2) (one rng_normal), clamped to the schedule's
// [sigma_0, sigma_{T-1}]. Writes the network's timestep t and sigma.
void draw_noise_level(const ModelConfig *c, const Schedule *s, Rng *rng, float *t, double *sigma);
// The training batch: for each image b (timestep t[b], level sigma[b]) x = x0 + sigma eps,
// xin = c_in x, target = F* = (x0 - c_skip x)/c_out (its loss weight: loss_weight(sigma)). For eps
// at an integer t, xin is diffusion_add_noise's VP sample and the target eps itself.
void objective_batch(const ModelConfig *c, const Schedule *s, const float *x0, const float *eps, const float *t,
                     const double *sigma, int B, int D, float *xin, float *target);
// loss = sum_b w_b |pred_b - target_b|^2 / (B D), in double; row[b] = |pred_b - target_b|^2
double objective_loss(const float *pred, const float *target, const double *w, int B, int D, double *row);
// its gradient for B of the n_total values of a batch, written: dpred = 2 w_b (pred - target) / n_total
void objective_loss_backward(float *dpred, const float *pred, const float *target, const double *w, int B, int D,
                             long n_total);

#endif
