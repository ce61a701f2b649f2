// objective.c: the preconditionings of eps, v and EDM, the sigma <-> t map, loss weights and the
// training noise-level draws (see objective.h).
#include "diffusion/objective.h"

#include <math.h>
#include <string.h>

#include "core/common.h"

Precond precond(ObjectiveKind obj, double sigma, double sigma_data) {
    Precond p;
    double s2 = sigma * sigma;
    switch (obj) {
    case OBJECTIVE_V:
        p.c_in = 1.0 / sqrt(1.0 + s2);
        p.c_skip = 1.0 / (1.0 + s2);
        p.c_out = -sigma / sqrt(1.0 + s2);
        break;
    case OBJECTIVE_EDM: {
        double d2 = (double)sigma_data * sigma_data;
        p.c_in = 1.0 / sqrt(s2 + d2);
        p.c_skip = d2 / (s2 + d2);
        p.c_out = sigma * sigma_data / sqrt(s2 + d2);
        break;
    }
    default:
        p.c_in = 1.0 / sqrt(1.0 + s2);
        p.c_skip = 1.0;
        p.c_out = -sigma;
        break;
    }
    return p;
}

double schedule_sigma(const Schedule *s, int t) {
    if (t < 0 || t >= s->T) die("schedule_sigma: timestep %d outside [0, %d)", t, s->T);
    double ab = s->alpha_bar64[t];
    return sqrt((1.0 - ab) / ab);
}

// ln sigma_t is increasing in t (ab_t decreases): binary search for the interval, then interpolate
double sigma_to_t(const Schedule *s, double sigma) {
    int T = s->T;
    if (T == 1 || !(sigma > schedule_sigma(s, 0))) return 0.0;
    if (sigma >= schedule_sigma(s, T - 1)) return (double)(T - 1);
    double ls = log(sigma);
    int lo = 0, hi = T - 1; // log sigma_lo < ls <= log sigma_hi
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (log(schedule_sigma(s, mid)) < ls) lo = mid;
        else hi = mid;
    }
    double a = log(schedule_sigma(s, lo)), b = log(schedule_sigma(s, hi));
    return lo + (ls - a) / (b - a);
}

double t_to_sigma(const Schedule *s, double t) {
    int T = s->T;
    if (t <= 0) return schedule_sigma(s, 0);
    if (t >= T - 1) return schedule_sigma(s, T - 1);
    int lo = (int)floor(t);
    double f = t - lo, a = log(schedule_sigma(s, lo)), b = log(schedule_sigma(s, lo + 1));
    return exp(a + f * (b - a));
}

double loss_weight(const ModelConfig *c, double sigma) {
    if (!(c->min_snr_gamma > 0)) return 1.0;
    Precond p = precond(c->objective, sigma, c->sigma_data);
    double snr = 1.0 / (sigma * sigma);
    return fmin(snr, (double)c->min_snr_gamma) * p.c_out * p.c_out;
}

void draw_noise_level(const ModelConfig *c, const Schedule *s, Rng *rng, float *t, double *sigma) {
    if (c->sigma_sampling == SIGMA_SAMPLING_LOGNORMAL) {
        double sg = exp((double)c->p_mean + (double)c->p_std * rng_normal(rng));
        double lo = schedule_sigma(s, 0), hi = schedule_sigma(s, s->T - 1);
        sg = sg < lo ? lo : sg > hi ? hi : sg;
        *t = (float)sigma_to_t(s, sg);
        *sigma = t_to_sigma(s, *t); // the level of the t the network sees
    } else {
        int ti = (int)rng_below(rng, (uint32_t)s->T);
        *t = (float)ti;
        *sigma = schedule_sigma(s, ti);
    }
}

void objective_batch(const ModelConfig *c, const Schedule *s, const float *x0, const float *eps, const float *t,
                     const double *sigma, int B, int D, float *xin, float *target) {
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * D;
        if (c->objective == OBJECTIVE_EPS && t[b] == (float)(int)t[b]) {
            int ti = (int)t[b];
            diffusion_add_noise(xin + o, x0 + o, eps + o, &ti, s, 1, D);
            memcpy(target + o, eps + o, (size_t)D * sizeof(float));
            continue;
        }
        Precond p = precond(c->objective, sigma[b], c->sigma_data);
        for (int i = 0; i < D; i++) {
            double x0i = x0[o + i], x = x0i + sigma[b] * eps[o + i];
            xin[o + i] = (float)(p.c_in * x);
            target[o + i] = (float)((x0i - p.c_skip * x) / p.c_out);
        }
    }
}

double objective_loss(const float *pred, const float *target, const double *w, int B, int D, double *row) {
    double total = 0;
    for (int b = 0; b < B; b++) {
        double l = 0;
        for (int i = 0; i < D; i++) {
            double d = (double)pred[(size_t)b * D + i] - target[(size_t)b * D + i];
            l += d * d;
        }
        row[b] = l;
        total += w[b] * l;
    }
    return total / ((double)B * D);
}

void objective_loss_backward(float *dpred, const float *pred, const float *target, const double *w, int B, int D,
                             long n_total) {
    float k = 2.0f / (float)n_total;
    for (int b = 0; b < B; b++) {
        float wb = (float)w[b];
        for (int i = 0; i < D; i++) {
            size_t j = (size_t)b * D + i;
            float g = k * (pred[j] - target[j]);
            dpred[j] = w[b] == 1.0 ? g : g * wb;
        }
    }
}
