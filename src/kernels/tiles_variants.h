// tiles_variants.h: the per-instruction-set copies of the attention tiles and GroupNorm/SiLU rows
// (tiles_<isa>.c), dispatched by attention_tiles.c and norm_rows.c.
#ifndef DDPM_TILES_VARIANTS_H
#define DDPM_TILES_VARIANTS_H

#include <stddef.h>

#include "kernels/isa.h"

// the copy of `name` for the active instruction set
#define TILES_PICK(name) \
    (isa_active() == ISA_AVX512 ? name##_avx512 : isa_active() == ISA_AVX2 ? name##_avx2 : name##_generic)

#define TILES_VARIANT_DECL(isa)                                                                                   \
    float exp_row_sum_##isa(float *s, int n, float m);                                                            \
    float max_row_##isa(const float *s, int n);                                                                   \
    void p_ds_row_##isa(float *s, float *dp, int n, float scale, float l, float di);                             \
    void flash_forward_##isa(float *O, float *lse, const float *Q, const float *kp, const float *vx, int D, int N, \
                             float scale, float *fl);                                                             \
    void flash_backward_##isa(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *dO,  \
                              const float *lse, const float *di, const float *kp, const float *vp, int D, int N,  \
                              float scale, float *fl);                                                            \
    void gn_mean_rstd_##isa(const float *x, long n, float *mean, float *rstd);                                    \
    void gn_affine_silu_##isa(float *y, float *act, const float *x, int n, float a, float b);                    \
    void gn_dy_sums_##isa(const float *dy, const float *x, float m, int n, float *s_dy, float *s_dyx);           \
    void gn_dx_add_##isa(float *dx, const float *dy, const float *x, int n, float r, float g, float m, float md,  \
                         float mdx);                                                                              \
    void silu_affine_backward_##isa(float *dv, const float *da, const float *x, int n, float a, float b,         \
                                    int acc);                                                                     \
    void silu_rows_##isa(float *y, const float *x, long n);                                                       \
    void silu_backward_rows_##isa(float *dx, const float *dy, const float *x, long n);
TILES_VARIANT_DECL(avx512)
TILES_VARIANT_DECL(avx2)
TILES_VARIANT_DECL(generic)

#endif
