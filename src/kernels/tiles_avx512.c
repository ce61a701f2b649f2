// tiles_avx512.c: the attention tiles and GroupNorm/SiLU rows for CPUs with AVX-512 (their 16-float
// vectors in one zmm register).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx2,fma")
#endif
#include "kernels/tiles_variants.h"
#define TILE(name) name##_avx512
#include "kernels/attention_tiles_body.h"
#include "kernels/norm_rows_body.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
