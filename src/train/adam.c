// adam.c: the Adam update, written as torch.optim.Adam computes it (single-tensor path).
#include "train/adam.h"

#include <math.h>

#include "core/common.h"

void adam_update(float *params, const float *grads, float *m, float *v, size_t n, long step, AdamConfig c) {
    double bc1 = 1.0 - pow(c.beta1, (double)step);
    double bc2 = 1.0 - pow(c.beta2, (double)step);
    float step_size = (float)(c.lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        m[i] = c.beta1 * m[i] + (1.0f - c.beta1) * g;
        v[i] = c.beta2 * v[i] + (1.0f - c.beta2) * g * g;
        float denom = sqrtf(v[i]) / bc2_sqrt + c.eps;
        params[i] -= step_size * m[i] / denom;
    }
}

double cosine_decay(double p) { return 0.5 * (1.0 + cos(DDPM_PI * p)); }
