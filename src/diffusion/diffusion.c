// diffusion.c: noise schedules, forward noising, DDPM and DDIM reverse steps.
// Everything is computed in double and rounded to float once at the end.
#include "diffusion/diffusion.h"

#include <math.h>
#include <stddef.h>

#include "core/common.h"


// cosine schedule, continuous in u in [0, T]: f(u) = cos(((u/T) + s)/(1 + s) pi/2)^2
static double cosine_f(double u, int T, double s) {
    double c = cos(((u / T) + s) / (1.0 + s) * DDPM_PI / 2.0);
    return c * c;
}

void schedule_init(Schedule *s, const ModelConfig *c) {
    int T = c->num_timesteps;
    if (T < 1) die("schedule: num_timesteps must be >= 1 (got %d)", T);
    s->T = T;
    size_t fb = (size_t)T * sizeof(float);
    s->betas = mallocCheck(fb);
    s->alphas = mallocCheck(fb);
    s->alpha_bar = mallocCheck(fb);
    s->sqrt_alpha_bar = mallocCheck(fb);
    s->sqrt_one_minus_alpha_bar = mallocCheck(fb);
    s->inv_sqrt_alpha = mallocCheck(fb);
    s->posterior_var = mallocCheck(fb);
    s->alpha_bar64 = mallocCheck((size_t)T * sizeof(double));

    double ab_prev = 1.0;  // ab_{-1} = 1 (the empty product)
    for (int t = 0; t < T; t++) {
        double beta;
        switch (c->schedule) {
        case SCHEDULE_LINEAR:  // evenly spaced from beta_start to beta_end
            beta = T == 1 ? c->beta_start
                          : c->beta_start + ((double)c->beta_end - c->beta_start) * t / (T - 1);
            break;
        case SCHEDULE_COSINE: {  // beta_t = min(1 - abar(t+1)/abar(t), 0.999)
            double f0 = cosine_f(0.0, T, c->cosine_s);
            double abar_t = cosine_f(t, T, c->cosine_s) / f0;
            double abar_t1 = cosine_f(t + 1, T, c->cosine_s) / f0;
            beta = fmin(1.0 - abar_t1 / abar_t, 0.999);
            break;
        }
        case SCHEDULE_CONSTANT:
            beta = c->beta;
            break;
        default:
            die("schedule: unknown schedule kind %d", (int)c->schedule);
        }
        if (!(beta > 0.0 && beta < 1.0))
            die("schedule (%s): beta[%d] = %g is outside (0, 1)", schedule_name(c->schedule), t, beta);
        double alpha = 1.0 - beta;
        double ab = ab_prev * alpha;  // ab_t = ab_{t-1} alpha_t
        s->betas[t] = (float)beta;
        s->alphas[t] = (float)alpha;
        s->alpha_bar[t] = (float)ab;
        s->alpha_bar64[t] = ab;
        s->sqrt_alpha_bar[t] = (float)sqrt(ab);
        s->sqrt_one_minus_alpha_bar[t] = (float)sqrt(1.0 - ab);
        s->inv_sqrt_alpha[t] = (float)(1.0 / sqrt(alpha));
        // beta~_t = (1 - ab_{t-1})/(1 - ab_t) beta_t; at t = 0, ab_{-1} = 1 gives 0
        s->posterior_var[t] = (float)((1.0 - ab_prev) / (1.0 - ab) * beta);
        ab_prev = ab;
    }
}

void schedule_free(Schedule *s) {
    free(s->betas);
    free(s->alphas);
    free(s->alpha_bar);
    free(s->sqrt_alpha_bar);
    free(s->sqrt_one_minus_alpha_bar);
    free(s->inv_sqrt_alpha);
    free(s->posterior_var);
    free(s->alpha_bar64);
    *s = (Schedule){0};
}

static void check_t(const Schedule *s, int t, const char *who) {
    if (t < 0 || t >= s->T) die("%s: timestep %d outside [0, %d)", who, t, s->T);
}

void diffusion_add_noise(float *xt, const float *x0, const float *eps, const int *t,
                         const Schedule *s, int B, int D) {
    for (int b = 0; b < B; b++) {
        check_t(s, t[b], "diffusion_add_noise");
        double a = s->sqrt_alpha_bar[t[b]], c = s->sqrt_one_minus_alpha_bar[t[b]];
        long off = (long)b * D;
        for (int i = 0; i < D; i++) {
            // x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
            xt[off + i] = (float)(a * x0[off + i] + c * eps[off + i]);
        }
    }
}

double ddpm_sigma2(const Schedule *s, int t, SigmaKind sk) {
    check_t(s, t, "ddpm_sigma2");
    if (t == 0) return 0.0;
    return sk == SIGMA_POSTERIOR ? (double)s->posterior_var[t] : (double)s->betas[t];
}

// z[i] if z is given, else the next rng_normal(rng)
static inline double noise_at(Rng *rng, const float *z, long i) { return z ? (double)z[i] : (double)rng_normal(rng); }

static void ddpm_step_any(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                          SigmaKind sk, Rng *rng, const float *z, long n) {
    check_t(s, t, "ddpm_step");
    // mean = (1/sqrt(alpha_t)) (x_t - beta_t/sqrt(1 - ab_t) eps)
    double c1 = s->inv_sqrt_alpha[t];
    double c2 = (double)s->betas[t] / s->sqrt_one_minus_alpha_bar[t];
    if (t == 0) {
        for (long i = 0; i < n; i++) x_prev[i] = (float)(c1 * (xt[i] - c2 * eps_pred[i]));
        return;
    }
    if (!rng && !z) die("ddpm_step: t = %d > 0 needs an rng", t);
    double sigma = sqrt(ddpm_sigma2(s, t, sk));
    for (long i = 0; i < n; i++) {
        double mean = c1 * (xt[i] - c2 * eps_pred[i]);
        x_prev[i] = (float)(mean + sigma * noise_at(rng, z, i));  // x_{t-1} = mean + sigma_t z
    }
}

void ddpm_step(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
               SigmaKind sk, Rng *rng, long n) {
    ddpm_step_any(x_prev, xt, eps_pred, t, s, sk, rng, NULL, n);
}

void ddpm_step_z(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                 SigmaKind sk, const float *z, long n) {
    ddpm_step_any(x_prev, xt, eps_pred, t, s, sk, NULL, z, n);
}

void predict_x0(float *x0, const float *xt, const float *eps_pred, int t, const Schedule *s, long n) {
    check_t(s, t, "predict_x0");
    double a = s->sqrt_alpha_bar[t], c = s->sqrt_one_minus_alpha_bar[t];
    for (long i = 0; i < n; i++) {
        double v = (xt[i] - c * eps_pred[i]) / a;  // x0_hat = (x_t - sqrt(1-ab) eps)/sqrt(ab)
        x0[i] = (float)(v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v);
    }
}

int ddim_timesteps(int *ts, int K, int T) {
    if (K < 1 || T < 1) die("ddim_timesteps: need K >= 1 and T >= 1 (got K = %d, T = %d)", K, T);
    if (K > T) K = T;
    if (K == 1) { ts[0] = T - 1; return 1; }
    for (int i = 0; i < K; i++) {
        // ts[i] = round(i (T-1)/(K-1)), rounding half up, in exact integer arithmetic
        long long num = 2LL * i * (T - 1) + (K - 1);
        ts[i] = (int)(num / (2LL * (K - 1)));
    }
    return K;
}

static void ddim_step_any(float *x_prev, const float *xt, const float *eps_pred, int t, int t_prev, float eta,
                          int clip_x0, const Schedule *s, Rng *rng, const float *z, long n) {
    check_t(s, t, "ddim_step");
    if (t_prev < -1 || t_prev >= t) die("ddim_step: need -1 <= t_prev < t (got t = %d, t_prev = %d)", t, t_prev);
    double ab = s->alpha_bar64[t];
    double ab_prev = t_prev >= 0 ? s->alpha_bar64[t_prev] : 1.0;
    // sigma = eta sqrt((1 - ab_prev)/(1 - ab_t)) sqrt(1 - ab_t/ab_prev)
    double sigma = eta * sqrt((1.0 - ab_prev) / (1.0 - ab)) * sqrt(1.0 - ab / ab_prev);
    double dir2 = 1.0 - ab_prev - sigma * sigma;  // weight^2 of the "direction pointing to x_t"
    double c_dir = sqrt(dir2 > 0.0 ? dir2 : 0.0);
    double sa = sqrt(ab), s1m = sqrt(1.0 - ab), sa_prev = sqrt(ab_prev);
    int noisy = sigma > 0.0;
    if (noisy && !rng && !z) die("ddim_step: eta > 0 needs an rng");
    for (long i = 0; i < n; i++) {
        double x0 = (xt[i] - s1m * eps_pred[i]) / sa;  // x0_hat
        double e = eps_pred[i];
        if (clip_x0) { // the clipped x0, and the eps that goes with it: eps = (x_t - sqrt(ab) x0)/sqrt(1 - ab)
            x0 = x0 < -1.0 ? -1.0 : x0 > 1.0 ? 1.0 : x0;
            e = (xt[i] - sa * x0) / s1m;
        }
        double v = sa_prev * x0 + c_dir * e;
        if (noisy) v += sigma * noise_at(rng, z, i);
        x_prev[i] = (float)v;
    }
}

void ddim_step(float *x_prev, const float *xt, const float *eps_pred, int t, int t_prev, float eta,
               int clip_x0, const Schedule *s, Rng *rng, long n) {
    ddim_step_any(x_prev, xt, eps_pred, t, t_prev, eta, clip_x0, s, rng, NULL, n);
}

void ddim_step_z(float *x_prev, const float *xt, const float *eps_pred, int t, int t_prev, float eta,
                 int clip_x0, const Schedule *s, const float *z, long n) {
    ddim_step_any(x_prev, xt, eps_pred, t, t_prev, eta, clip_x0, s, NULL, z, n);
}

static void ddpm_step_clipped_any(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                                  SigmaKind sk, Rng *rng, const float *z, long n) {
    check_t(s, t, "ddpm_step_clipped");
    double ab = s->alpha_bar64[t], ab_prev = t > 0 ? s->alpha_bar64[t - 1] : 1.0;
    double beta = s->betas[t], alpha = 1.0 - beta;
    double c0 = sqrt(ab_prev) * beta / (1.0 - ab), ct = sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab);
    double sigma = sqrt(ddpm_sigma2(s, t, sk));
    double sa = sqrt(ab), s1m = sqrt(1.0 - ab);
    if (t > 0 && !rng && !z) die("ddpm_step_clipped: t > 0 needs an rng");
    for (long i = 0; i < n; i++) {
        double x0 = (xt[i] - s1m * eps_pred[i]) / sa;
        x0 = x0 < -1.0 ? -1.0 : x0 > 1.0 ? 1.0 : x0;
        double v = c0 * x0 + ct * xt[i];
        if (t > 0) v += sigma * noise_at(rng, z, i);
        x_prev[i] = (float)v;
    }
}

void ddpm_step_clipped(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                       SigmaKind sk, Rng *rng, long n) {
    ddpm_step_clipped_any(x_prev, xt, eps_pred, t, s, sk, rng, NULL, n);
}

void ddpm_step_clipped_z(float *x_prev, const float *xt, const float *eps_pred, int t, const Schedule *s,
                         SigmaKind sk, const float *z, long n) {
    ddpm_step_clipped_any(x_prev, xt, eps_pred, t, s, sk, NULL, z, n);
}
