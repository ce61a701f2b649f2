// rng.h: a small explicit-state RNG (xoshiro256**), seeded with splitmix64.
// The state is a plain struct so it can be saved in a checkpoint byte for byte.
#ifndef DDPM_RNG_H
#define DDPM_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
// uniform in [0, 1) with 24 random bits (exactly representable as float)
float rng_uniform(Rng *r);
// uniform integer in [0, n)
uint32_t rng_below(Rng *r, uint32_t n);
// standard normal via Box-Muller (uses two uniforms, returns one value; no hidden cache)
float rng_normal(Rng *r);
void rng_fill_normal(Rng *r, float *x, long n);
// Fisher-Yates shuffle of idx[0..n)
void rng_shuffle(Rng *r, int *idx, int n);

#endif
