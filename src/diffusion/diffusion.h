// diffusion.h: the DDPM noise schedule, forward noising q(x_t | x_0), and the reverse steps
// (DDPM ancestral sampling, Ho et al. 2020 Alg. 2; DDIM, Song et al. 2021 eq. 12).
//
// Timesteps are 0-indexed: t in {0, ..., T-1}. With alphas[t] = 1 - betas[t],
//   alpha_bar[t] = prod_{s=0..t} alphas[s]            (always; also for the cosine schedule)
// A 1-indexed text (as in the DDPM paper) writes alpha_bar_t for our alpha_bar[t-1].
//
// Schedules (betas[t], t = 0..T-1):
//   linear:   betas[t] = beta_start + (beta_end - beta_start) t/(T-1)
//   constant: betas[t] = beta
//   cosine:   f(u) = cos(((u/T) + s)/(1 + s) pi/2)^2, abar(u) = f(u)/f(0) (continuous, u in [0, T]),
//             betas[t] = min(1 - abar(t+1)/abar(t), 0.999).
//             So alpha_bar[t] = abar(t+1) wherever no beta was capped; the cap only bites at the
//             last step(s) (abar(T) ~ 0), where alpha_bar[T-1] = alpha_bar[T-2] * 0.001 instead.
#ifndef DDPM_DIFFUSION_H
#define DDPM_DIFFUSION_H

#include "core/config.h"
#include "core/rng.h"

typedef enum { SIGMA_BETA = 0, SIGMA_POSTERIOR = 1 } SigmaKind;

typedef struct {
    int T;
    // all [T], 0-indexed t; computed in double, stored as float
    float *betas;                     // beta_t
    float *alphas;                    // 1 - beta_t
    float *alpha_bar;                 // prod_{s<=t} alpha_s
    float *sqrt_alpha_bar;            // sqrt(ab_t)
    float *sqrt_one_minus_alpha_bar;  // sqrt(1 - ab_t)
    float *inv_sqrt_alpha;            // 1/sqrt(alpha_t)
    float *posterior_var;             // beta~_t = (1 - ab_{t-1})/(1 - ab_t) beta_t, and 0 at t = 0
    double *alpha_bar64;              // [T] alpha_bar in double: DDIM's 1 - ab_t/ab_prev needs it
} Schedule;

// Builds the schedule from c->schedule, c->num_timesteps and the matching beta keys.
// Dies with a message if T < 1 or any beta falls outside (0, 1).
void schedule_init(Schedule *s, const ModelConfig *c);
void schedule_free(Schedule *s);

// Forward process, one t per image:
// x_t[b, :] = sqrt(ab[t_b]) x0[b, :] + sqrt(1-ab[t_b]) eps[b, :] for B images of D values each.
// xt may alias x0 or eps.
void diffusion_add_noise(float *xt, const float *x0, const float *eps, const int *t,
                         const Schedule *s, int B, int D);

// DDPM ancestral step:
//   mean = (1/sqrt(alpha_t)) (x_t - beta_t/sqrt(1-ab_t) eps_pred)
//   x_{t-1} = mean + sigma_t z (t > 0),  sigma_t^2 = beta_t (SIGMA_BETA) or posterior_var[t]
//   x_{t-1} = mean             (t == 0)
// n values; z[i] = rng_normal(rng) drawn in order i = 0..n-1, only if t > 0 (rng may be NULL at t == 0).
// x_prev may alias xt.
void ddpm_step(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
               SigmaKind sk, Rng *rng, long n);
// sigma_t^2 used by ddpm_step (0 at t == 0)
// DDPM step through the clipped x0 estimate (as diffusers' clip_sample): x0 = clip(x0_hat),
// mean = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_{t-1}) / (1 - ab_t) x_t,
// plus sigma_t z for t > 0. Without clipping this mean equals ddpm_step's.
void ddpm_step_clipped(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                       SigmaKind sk, Rng *rng, long n);
double ddpm_sigma2(const Schedule *s, int t, SigmaKind sk);
// The three steps with the noise given: z[i] (n values, read only when the step draws) in place
// of the rng's draws (e.g. PyTorch's random numbers, core/torch_rng.h).
void ddpm_step_z(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                 SigmaKind sk, const float *z, long n);
void ddpm_step_clipped_z(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                         SigmaKind sk, const float *z, long n);
void ddim_step_z(float *x_prev, const float *xt, const float *eps_pred, int t, int t_prev, float eta,
                 int clip_x0, const Schedule *s, const float *z, long n);

// x0_hat = clamp((x_t - sqrt(1-ab_t) eps_pred)/sqrt(ab_t), -1, 1)
void predict_x0(float *x0, const float *xt, const float *eps_pred, int t, const Schedule *s, long n);

// DDIM timesteps: K evenly spaced values including 0 and T-1, ascending:
// ts[i] = round(i (T-1)/(K-1)), i = 0..K-1 (K = 1 -> {T-1}; K > T is clamped to T).
// Strictly increasing; returns the count written (ts needs room for min(K, T) ints).
int ddim_timesteps(int *ts, int K, int T);

// One DDIM step from t to t_prev < t (t_prev = -1: the final step to x0, ab_prev = 1):
//   x0_hat = (x_t - sqrt(1-ab_t) eps)/sqrt(ab_t)                  (not clipped, as in the paper)
//   sigma  = eta sqrt((1-ab_prev)/(1-ab_t)) sqrt(1 - ab_t/ab_prev)
//   x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma z
// z[i] drawn in order only if sigma > 0 (eta == 0 or t_prev == -1: deterministic, rng may be NULL).
// eta = 1 with t_prev = t-1 is the DDPM step with SIGMA_POSTERIOR (same mean and variance).
// clip_x0 != 0: x0_hat clipped to [-1, 1], and the eps term re-derived from it,
// eps = (x_t - sqrt(ab_t) x0)/sqrt(1 - ab_t) (as GLIDE; keeping eps_pred with the clipped x0 breaks
// down under classifier-free guidance, whose extrapolated eps puts x0_hat far outside [-1, 1]).
void ddim_step(float *x_prev, const float *xt, const float *eps_pred, int t, int t_prev, float eta,
               int clip_x0, const Schedule *s, Rng *rng, long n);

#endif
