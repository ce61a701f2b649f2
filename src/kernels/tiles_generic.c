// tiles_generic.c: the attention tiles and GroupNorm/SiLU rows for the build's own target (plain C
// and vector extensions: SSE2 in a portable x86-64 build); they run on every CPU.
#include "kernels/tiles_variants.h"
#define TILE(name) name##_generic
#include "kernels/attention_tiles_body.h"
#include "kernels/norm_rows_body.h"
