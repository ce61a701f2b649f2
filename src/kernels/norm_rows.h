// norm_rows.h: the vectorised rows of GroupNorm and SiLU (the layers in nn/norm.c loop over
// groups and channels and call these), one variant per instruction set (isa.h).
#ifndef DDPM_NORM_ROWS_H
#define DDPM_NORM_ROWS_H

// mean and 1/sqrt(var + 1e-5) (biased var) of x[n]: two passes on 16 float lanes, combined in double
void gn_mean_rstd(const float *x, long n, float *mean, float *rstd);
// v = x[p] a + b for p < n: y[p] = v (if y), act[p] = SiLU(v) = v / (1 + e^-v) (if act)
void gn_affine_silu(float *y, float *act, const float *x, int n, float a, float b);
// s_dy = sum_p dy[p], s_dyx = sum_p dy[p] (x[p] - m), on 16 float lanes
void gn_dy_sums(const float *dy, const float *x, float m, int n, float *s_dy, float *s_dyx);
// dx[p] += r (dy[p] g - md - (x[p] - m) r mdx)
void gn_dx_add(float *dx, const float *dy, const float *x, int n, float r, float g, float m, float md, float mdx);
// dv[p] (+= if acc, else =) da[p] s (1 + v (1 - s)), v = x[p] a + b, s = sigmoid(v): SiLU's
// backward through a GroupNorm output recomputed from its input
void silu_affine_backward(float *dv, const float *da, const float *x, int n, float a, float b, int acc);
// y[i] = SiLU(x[i]); dx[i] += dy[i] SiLU'(x[i]), SiLU' = s (1 + x (1 - s))
void silu_rows(float *y, const float *x, long n);
void silu_backward_rows(float *dx, const float *dy, const float *x, long n);

#endif
