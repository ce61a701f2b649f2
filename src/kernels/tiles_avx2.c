// tiles_avx2.c: the attention tiles and GroupNorm/SiLU rows for CPUs with AVX2 + FMA (8-float
// vectors in ymm registers; a panel of 16 keys in two). The Makefile compiles this file with
// -mno-avx512f -mavx2 -mfma, so that it stays AVX2 also in a build for a wider CPU.
#include "kernels/tiles_variants.h"
#define TILE(name) name##_avx2
#define TILE_SPLIT16 // the attention panels as two 8-float halves
#include "kernels/attention_tiles_body.h"
#include "kernels/norm_rows_body.h"
