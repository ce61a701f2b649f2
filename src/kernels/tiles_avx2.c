// tiles_avx2.c: the attention tiles and GroupNorm/SiLU rows for CPUs with AVX2 + FMA (8-float
// vectors in ymm registers, 16-float ones in pairs). The whole x86-64-v3 level, so that in a build
// for a wider CPU (-march=native) this copy still runs without AVX-512.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("arch=x86-64-v3"))), apply_to = function)
#else
#pragma GCC target("arch=x86-64-v3")
#endif
#include "kernels/tiles_variants.h"
#define TILE(name) name##_avx2
#include "kernels/attention_tiles_body.h"
#include "kernels/norm_rows_body.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
