// attention_tiles.h: vectorised pieces of one attention head (softmax rows, key panels, flash tiles).
#ifndef DDPM_ATTENTION_TILES_H
#define DDPM_ATTENTION_TILES_H

#include <stddef.h>

#define ATT_R 32
#define ATT_J 16 // keys per panel: the flash kernels' tile width
#define FLASH_R 6
#define NARROW_D 8

// a [D, N] array as panels of ATT_J keys: t[(j / ATT_J) D ATT_J + d ATT_J + j % ATT_J], the last
// panel zero-padded: the flash kernels then read one contiguous stream of D x ATT_J per step
void key_panels(float *t, const float *X, int D, int N);

// P[i][j] <- exp(P[i][j] - m) for j < n; returns sum_j (16 lanes, fixed order)
float exp_row_sum(float *s, int n, float m);

// max_j s[j] for j < n (8 lanes, then the tail)
float max_row(const float *s, int n);

// one query row of the backward from its scores s and dP: p_j = exp(scale s_j - l),
// ds_j = scale p_j (dP_j - di), in place (s <- p, dp <- ds)
void p_ds_row(float *s, float *dp, int n, float scale, float l, float di);

int is_flash(int D);

// the flash forward's output for queries i .. i + rows - 1 of a tile: O[d][i + r] = ob[r][d] / l[r],
// lse[i + r] = (m[r] + log2 l[r]) ln 2 (ob, l: the tile's sums in base 2, shifted by m)
void flash_write_rows(float *O, float *lse, const float *ob, const float *l, const float *m, int D, int N, int i,
                      int rows);

// scratch of the flash kernels for heads up to C wide: tiles P and dS [FLASH_R][16], q, scaled q,
// dO and O or dQ [FLASH_R][D], then K^T, dK^T, dV^T [16 np][D] of one head (backward; narrow heads: dK
// and dV in key-panel layout); or the bf16 kernels' scratch (flash_bf16_ws_floats) if larger
size_t flash_ws_floats(int C, int N);

// xt[n][d] = a X[d][n] (a [D, N] array transposed, scaled)
void transpose_scaled(float *xt, const float *X, int D, int N, float a);

// Flash forward of one head (is_flash(D)): O[d][i] = sum_j P_ij V[d][j] with
// P = softmax_j(scale q_i . k_j), lse[i] = log sum_j exp(scale q_i . k_j), computed in base 2
// (exp2_8_neg). kp = key_panels(K);
// vx = V^T [16 np][D] with rows past N zero (wide heads) or key_panels(V) (narrow);
// fl: flash_ws_floats scratch.
void flash_forward(float *O, float *lse, const float *Q, const float *kp, const float *vx, int D, int N,
                          float scale, float *fl);

// Flash backward of one head (is_flash(D); see attention_backward): dQ, dK, dV [D, N] written
// from Q, K, dO [D, N], lse and di = rowsum(dO o O) per query. kp, vp: key panels of K and V;
// fl: flash_ws_floats scratch (tiles; K^T, dK^T, dV^T, or dK, dV as key panels when narrow).
void flash_backward(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *dO,
                           const float *lse, const float *di, const float *kp, const float *vp, int D, int N,
                           float scale, float *fl);

// bf16 mixed precision (attention_bf16.c; gemm_precision() GEMM_BF16, heads with is_flash_bf16(D):
// D % 16 == 0, or D even and at most NARROW_D): the flash forward and backward above with bf16
// products (VDPBF16PS) and the fp32 softmax, from Q, K, V [D, N] themselves; fl: flash_ws_floats
// scratch, which covers flash_bf16_ws_floats.
int is_flash_bf16(int D);
size_t flash_bf16_ws_floats(int C, int N);
void flash_forward_bf16(float *O, float *lse, const float *Q, const float *K, const float *V, int D, int N, float scale,
                        float *fl);
void flash_backward_bf16(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *V,
                         const float *dO, const float *lse, const float *di, int D, int N, float scale, float *fl);

#endif
