// conv_lowering.h: the lowerings of a convolution to GEMMs (shared by conv.c and conv_transpose.c).
#ifndef DDPM_CONV_LOWERING_H
#define DDPM_CONV_LOWERING_H

#include <stddef.h>
#include <stdint.h>

#define GROUP_MAX_P 49
#define GROUP_COLS 400
#define PAD_SLACK 64 // floats after a padded image: the last shifted rows read K - 2 past its end
// an s2d conv's per-thread workspace (s2d_setup); in bf16 (pairs) also the row tables of the pair
// images: q_xoff of xs's planes b = 0, 1 in pairs, q_dyoff of dy padded in pairs of channels (dyq)
typedef struct { long *off_x, *off_dy, *q_xoff, *q_dyoff; float *xs, *dyp, *dxs, *wf, *yw, *wfp, *qw; uint32_t *dyq; int pairs; } S2dWs;

void im2col(float *col, const float *in, int Ci, int H, int W, int K, int stride, int pad, int Ho, int Wo, size_t ld);

// in[ci][ih][iw] += col[...] (the adjoint of im2col)
void col2im(float *in, const float *col, int Ci, int H, int W, int K, int stride, int pad, int Ho, int Wo, size_t ld);

// dbias[c] += sum_p dy[c, p] for one image
void bias_grad_add(float *dbias, const float *dy, int C, int P);

int is_pointwise(int K, int stride, int pad);

int is_same(int K, int stride, int pad);

// Small outputs (7x7) would waste much of a GEMM on the wide columns (9 of every 7) and on a
// last, partly filled 16-column panel (49 = 3 x 16 + 1): there the im2col matrices of a group
// of G images sit side by side, col[CKK, G P], and one GEMM serves the group (G P ~ GROUP_COLS
// columns: 8 images at 7x7). Weight gradients are kept transposed (dw^T[CKK, Co] = col dY^T),
// as for the implicit same convs. (At 14x14 the im2col traffic costs more than it saves.)
int is_grouped(int K, int stride, int pad, int P);

int group_images(int P);

// xp = zero-padded copy of x[C][H][W]: [C][H + 2p][p zeros, W pixels] + PAD_SLACK zeros
void pad_image(float *xp, const float *x, int C, int H, int W, int p);

// The same in bf16 (bf16 precision only): xh[C][H + 2p][p zeros, W pixels] + PAD_SLACK zeros
void pad_image_bf16(uint16_t *xh, const float *x, int C, int H, int W, int p);

// The same, in bf16 pairs of channels for gemm_packed_pairs (bf16 precision only): xq[c2] holds
// channels 2 c2 (low halves) and 2 c2 + 1 (high; zeros when C is odd), ceil(C/2) planes + PAD_SLACK
// zero pairs. With shift_table(off, ceil(C/2), K, ..), pair row (c2 K + kh) K + kw of the implicit
// im2col matrix is at xq + off[..]: its K runs over (c2, kh, kw, channel of the pair).
void pad_image_pairs(uint32_t *xq, const float *x, int C, int H, int W, int p);

// weights w[M][C][KK] in that order: wq[m][(c2 KK + t) 2 + s] = w[m][2 c2 + s][t], 0 for the
// missing channel C when C is odd; rows of 2 ceil(C/2) KK
void pair_weights(float *wq, const float *w, int M, int C, int KK);

// off[(c K + kh) K + kw] = c Hp Wp + kh Wp + kw
void shift_table(long *off, int C, int K, int Hp, int Wp);

// floats of a table of n longs in a float workspace (rounded up to keep 64-byte alignment)
size_t table_floats(size_t n);

size_t padded_floats(int C, int H, int W, int K);

// Grouped convs (7x7 outputs) of stride 1 and "same" padding build their im2col columns from a
// zero-padded copy xp of each image (pad_image): the row segment of (ci, kh, kw, oh) is
// xp[ci][oh + kh][kw .. kw + Wo), one 8-float vector when Wo <= 8, with no bounds to test. A
// segment's vector also covers the first column of the next one, which is written after it;
// the last segment of each row is copied by element, so nothing is written past the image.
int padded_im2col(int K, int stride, int pad, int Wo);

void im2col_padded8(float *col, const float *xp, int Ci, int K, int Hp, int Wp, int Ho, int Wo, size_t ld);

// the adjoint: dxp[ci][oh + kh][kw + ow] += col[..][oh Wo + ow], lanes ow >= Wo masked off
void col2im_padded8(float *dxp, const float *col, int Ci, int K, int Hp, int Wp, int Ho, int Wo, size_t ld);

// Per-thread workspace of a grouped conv: col | dcol [CKK, ld] | Y or dY [Co, ld] | xp (one
// padded image, or its gradient) | chunk partials. Offsets of Y, xp and the partials:
// Rows of a group are ld = group_ld(ng, P) >= ng P floats apart, a multiple of 16: rows that
// start on a cache line keep a 16-column panel of B (read in place by the GEMM) at one line per
// row instead of two (measured 1-5% faster GEMMs).
size_t group_ld(int ng, int P);

size_t grouped_off_y(int Ci, int K, int G, int P);

size_t grouped_off_xp(int Ci, int K, int G, int P, int Co);

size_t grouped_off_part(int Ci, int H, int W, int K, int G, int P, int Co);

// im2col of image x into columns [j P, (j + 1) P) of col (rows ld apart), through xp if padded_im2col
void im2col_group(float *col, float *xp, const float *x, int Ci, int H, int W, int K, int stride, int pad,
                         int Ho, int Wo, size_t ld);

// dx += col2im(col), through the padded gradient dxp if padded_im2col
void col2im_group(float *dx, float *dxp, const float *col, int Ci, int H, int W, int K, int stride, int pad,
                         int Ho, int Wo, size_t ld);

// y[C][H][W] (+)= wide[C][H][Wp] (first W columns of each row) + bias[C] (bias may be NULL)
void from_wide(float *y, const float *wide, const float *bias, int C, int H, int W, int Wp, int accumulate);

// ---------------------------------------------------------------------------------------
// The 4x4 stride-2 pad-1 convs (downsampling) through space-to-depth. With xpad = x zero-padded
// by 1 and H, W even, the s2d image xs[(ci 2 + a) 2 + b][r][q] = xpad[ci][2 r + a][2 q + b]
// (r < Ho + 1, q < Ws = Wo + 1) turns y[co][oh][ow] = sum w[co][ci][kh][kw] xpad[ci][2 oh + kh][2 ow + kw]
// into a 2x2 stride-1 conv over xs (kh = 2 dh + a, kw = 2 dw + b):
//   y[co][oh][ow] = sum w[co][ci][kh][kw] xs[(ci, kh % 2, kw % 2)][oh + kh / 2][ow + kw / 2],
// an implicit GEMM like the same convs: row k = (ci, kh, kw) of the im2col matrix is xs shifted by
// s2d_table's off[k], output at the Ws-wide positions oh Ws + ow (column ow = Wo is discarded).
// The data gradient, dxs[(ci, a, b)][r][q] = sum w[co][ci][2 dh + a][2 dw + b] dy[co][r - dh][q - dw],
// is a 2x2 conv of dyp = dy zero-padded by 1 (pad_image: Ho + 2 rows, Wo + 1 = Ws wide) with
// wf[(ci, a, b)][(co, e, f)] = w[co][ci][2 (1 - e) + a][2 (1 - f) + b] at all (Ho + 1) x Ws positions;
// dx is dxs put back to depth. dw^T[CKK, Co] = Xrows dY'^T with dY' = dyp shifted by (1, 1).
// A transposed conv is the data gradient of a conv: its forward is that data gradient, its
// backward a conv forward (din) and a weight gradient.
int is_s2d(int K, int stride, int pad, int H, int W);

// floats of an s2d image of a [C][H][W] input (+ PAD_SLACK: the last shifted rows read past it)
size_t s2d_floats(int C, int H, int W);

void s2d_pack(float *xs, const float *x, int C, int H, int W);

// dx[c][i][j] (+)= dxs[(c, (i + 1) % 2, (j + 1) % 2)][(i + 1) / 2][(j + 1) / 2] + bias[c] (bias may be NULL)
void s2d_unpack(float *dx, const float *dxs, const float *bias, int C, int H, int W, int accumulate);

// off[(ci 4 + kh) 4 + kw] = (ci, kh % 2, kw % 2) plane + (kh / 2) Ws + kw / 2
void s2d_table(long *off, int Ci, int H, int W);

// In bf16 the products read pair images in place (gemm_packed_pairs), as the same convs do. The
// forward pairs K's neighbours kw = 2 dw, 2 dw + 1: rows of one shift in planes b = 0 and 1, so
// w keeps its order and the pair image of xs is xq[ci 2 + a][r][q] = (xs[(ci, a, 0)], xs[(ci, a, 1)]),
// row (ci, kh, dw) at q_off[(ci 4 + kh) 2 + dw] = (ci 2 + kh % 2) Hs Ws + (kh / 2) Ws + dw.
// The data gradient pairs channels (co, co + 1) of dy, as a same conv's does (pair_weights of wf).
void s2d_pair_table(long *q_off, int Ci, int H, int W);

// wf[(ci, a, b)][(co, e, f)] = w[co][ci][2 (1 - e) + a][2 (1 - f) + b]
void s2d_flip_weights(float *wf, const float *w, int Ci, int Co);

size_t s2d_ws_floats(int Ci, int H, int W, int Co);

// carve `mine`; if w != NULL, the flipped weights wf, packed into wfp (gemm_pack_a) for the data gradient
S2dWs s2d_setup(float *mine, const float *w, float *wfp, int Ci, int H, int W, int Co);

// y[Co][Ho][Wo] (+)= conv(x) + bias (bias may be NULL), one image whose s2d image is in s->xs
// (s2d_pack); wp: w[Co, Ci 16] packed (gemm_pack_a). In bf16 the pair image is built in s->dxs.
void s2d_forward(const S2dWs *s, float *y, const float *wp, const float *bias, int Ci, int H, int W, int Co,
                        int accumulate);

// one image: dwt[Ci 16, Co] += Xrows dY'^T (if dwt; the image's s2d image in s->xs, s2d_pack),
// dx (+)= data gradient + bias (if dx)
void s2d_backward(const S2dWs *s, float *dx, float *dwt, const float *dy, const float *bias, int Ci, int H,
                         int W, int Co, int accumulate);

// Each thread region ends with the layer's weight matrix packed for the GEMMs (gemm_pack_a), once
// per call instead of once per image: w[Co, CKK] in the forward; in the backward the data
// gradient's wf[Ci, Co K K] (same convs), w^T[CKK, Co] (im2col convs) or wf[4 Ci, 4 Co] (s2d convs)
size_t conv_packed_floats(int Ci, int Co, int K);

float *conv_packed(float *ws, size_t wsz, int Ci, int Co, int K);

#endif
