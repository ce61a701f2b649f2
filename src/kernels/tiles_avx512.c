// tiles_avx512.c: the attention tiles and GroupNorm/SiLU rows for CPUs with AVX-512 (their 16-float
// vectors in one zmm register). The Makefile compiles this file with -mavx512f -mavx2 -mfma.
#include "kernels/tiles_variants.h"
#define TILE(name) name##_avx512
#include "kernels/attention_tiles_body.h"
#include "kernels/norm_rows_body.h"
