// adam.h: Adam (torch.optim.Adam semantics, no weight decay) as one loop over the flat buffers.
#ifndef DDPM_ADAM_H
#define DDPM_ADAM_H

#include <stddef.h>

typedef struct {
    float lr, beta1, beta2, eps;
} AdamConfig;

// step is the 1-based count of this update (for bias correction). m, v: [n], zero initially.
// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
// p -= (lr / (1 - b1^step)) m / (sqrt(v) / sqrt(1 - b2^step) + eps)
void adam_update(float *params, const float *grads, float *m, float *v, size_t n, long step, AdamConfig cfg);

// the cosine learning-rate factor (1 + cos(pi p)) / 2: 1 at p = 0, 0 at p = 1
double cosine_decay(double p);

#endif
