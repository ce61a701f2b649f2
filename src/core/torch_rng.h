// torch_rng.h: PyTorch's CPU random numbers, exactly: torch.manual_seed(seed); torch.randn(n)
// (float32, contiguous) gives the values torch_randn writes, bit for bit.
//
//   generator: mt19937 (Matsumoto & Nishimura) seeded with the low 32 bits of the seed;
//              random() = one 32-bit output, random64() = (first << 32) | second
//   uniform:   float u = (random() & (2^24 - 1)) 2^-24; double u = (random64() & (2^53 - 1)) 2^-53
//   n >= 16:   all n float uniforms first; then Box-Muller on blocks of 16:
//              u1 = 1 - d[j], u2 = d[j+8] (j < 8), r = sqrt(-2 log u1), th = 2 pi u2,
//              d[j] = r cos th, d[j+8] = r sin th; if n % 16 != 0 the last 16 values are
//              redrawn (16 more uniforms) and transformed again. log/sin/cos are those of
//              torch's AVX2 kernel (avx_mathfun.h, Cephes polynomials), the kernel every x86-64
//              CPU with AVX2 runs (torch never dispatches normal_ to AVX512).
//   n < 16:    one value at a time in double: u1, u2 from random64(), r = sqrt(-2 log(1 - u2)),
//              th = 2 pi u1, returns r cos th and keeps r sin th for the next call (a cache in
//              the generator, cleared by manual_seed), rounded to float.
#ifndef DDPM_TORCH_RNG_H
#define DDPM_TORCH_RNG_H

#include <stdint.h>

typedef struct {
    uint32_t mt[624];
    int idx;              // next word of mt to temper (624: regenerate)
    int has_next_normal;  // the cached second value of the scalar (double) Box-Muller
    double next_normal;
} TorchGen;

void torch_manual_seed(TorchGen *g, uint64_t seed);
uint32_t torch_random(TorchGen *g);
uint64_t torch_random64(TorchGen *g);
// x[0..n) = torch.randn(n) (any shape of n elements: torch draws contiguous tensors in order)
void torch_randn(TorchGen *g, float *x, long n);

#endif
