// norm_rows.c: the GroupNorm/SiLU rows of the active instruction set (isa.h; the code is in
// norm_rows_body.h, compiled per instruction set).
#include "kernels/norm_rows.h"

#include "kernels/tiles_variants.h"

void gn_mean_rstd(const float *x, long n, float *mean, float *rstd) { TILES_PICK(gn_mean_rstd)(x, n, mean, rstd); }
void gn_affine_silu(float *y, float *act, const float *x, int n, float a, float b) { TILES_PICK(gn_affine_silu)(y, act, x, n, a, b); }
void gn_dy_sums(const float *dy, const float *x, float m, int n, float *s_dy, float *s_dyx) {
    TILES_PICK(gn_dy_sums)(dy, x, m, n, s_dy, s_dyx);
}
void gn_dx_add(float *dx, const float *dy, const float *x, int n, float r, float g, float m, float md, float mdx) {
    TILES_PICK(gn_dx_add)(dx, dy, x, n, r, g, m, md, mdx);
}
void silu_affine_backward(float *dv, const float *da, const float *x, int n, float a, float b, int acc) {
    TILES_PICK(silu_affine_backward)(dv, da, x, n, a, b, acc);
}
void silu_rows(float *y, const float *x, long n) { TILES_PICK(silu_rows)(y, x, n); }
void silu_backward_rows(float *dx, const float *dy, const float *x, long n) { TILES_PICK(silu_backward_rows)(dx, dy, x, n); }
