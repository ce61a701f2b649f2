// conv_lowering.c: how a convolution becomes GEMMs: im2col / col2im, zero-padded images read
// through row tables (implicit GEMM), images side by side, space-to-depth.
#define DDPM_NN_IMPL // defines the fast layers (see layers.h)
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "nn/reduce.h"
#include "nn/conv_lowering.h"

// ---------------------------------------------------------------------------------------
// im2col / col2im for one image: col[(ci K + kh) K + kw][oh Wo + ow] = in[ci][oh s - p + kh][ow s - p + kw]
// (rows ld floats apart: ld = Ho Wo for one image, or a multiple when images sit side by side)

// the output columns [*lo, *hi) whose input column ow s - p + kw lies inside [0, W)
static void valid_cols(int W, int Wo, int stride, int pad, int kw, int *lo, int *hi) {
    int off = kw - pad, l = 0, h = Wo;
    while (l < Wo && l * stride + off < 0) l++;
    while (h > l && (h - 1) * stride + off >= W) h--;
    *lo = l;
    *hi = h;
}

void im2col(float *col, const float *in, int Ci, int H, int W, int K, int stride, int pad, int Ho, int Wo, size_t ld) {
    for (int kw = 0; kw < K; kw++) {
        int lo, hi, off = kw - pad; // iw = ow s + off, inside the image for ow in [lo, hi)
        valid_cols(W, Wo, stride, pad, kw, &lo, &hi);
        for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < K; kh++) {
                float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * stride - pad + kh;
                    float *r = row + oh * Wo;
                    if (ih < 0 || ih >= H) { memset(r, 0, Wo * sizeof(float)); continue; }
                    const float *src = in + ((size_t)ci * H + ih) * W + off;
                    for (int ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    if (stride == 1) memcpy(r + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
                    else for (int ow = lo; ow < hi; ow++) r[ow] = src[ow * stride];
                    for (int ow = hi; ow < Wo; ow++) r[ow] = 0.0f;
                }
            }
    }
}

// in[ci][ih][iw] += col[...] (the adjoint of im2col)
void col2im(float *in, const float *col, int Ci, int H, int W, int K, int stride, int pad, int Ho, int Wo, size_t ld) {
    for (int kw = 0; kw < K; kw++) {
        int lo, hi, off = kw - pad;
        valid_cols(W, Wo, stride, pad, kw, &lo, &hi);
        for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < K; kh++) {
                const float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    float *dst = in + ((size_t)ci * H + ih) * W + off;
                    const float *r = row + oh * Wo;
                    if (stride == 1) for (int ow = lo; ow < hi; ow++) dst[ow] += r[ow];
                    else for (int ow = lo; ow < hi; ow++) dst[ow * stride] += r[ow];
                }
            }
    }
}

// dbias[c] += sum_p dy[c, p] for one image
void bias_grad_add(float *dbias, const float *dy, int C, int P) {
    for (int c = 0; c < C; c++) dbias[c] += sum16(dy + (size_t)c * P, P);
}

// ---------------------------------------------------------------------------------------
// conv2d: per image, out[Co, P] = w[Co, Ci K K] col[Ci K K, P] (+ bias), P = Ho Wo
//
// "Same" convolutions (stride 1, pad (K-1)/2: every 3x3 conv of the U-Net) are implicit GEMMs:
// the image is copied once into a zero-padded Xp[Ci][Hp][Wp] (Hp = H + 2p, Wp = W + p: each row
// is p zeros then W pixels, so the zeros before row r + 1 are also the right pad of row r), and
// row k = (ci K + kh) K + kw of the im2col matrix is Xp itself shifted by ci Hp Wp + kh Wp + kw,
// read in place through a row table. The output is computed at the Wp-wide positions
// p' = oh Wp + ow; the p columns ow >= W of each row are discarded.
// The data gradient of a same conv is a same conv of dY with wf[ci][co][kh][kw] =
// w[co][ci][K-1-kh][K-1-kw], and dw^T[CKK, Co] = Xrows[CKK, P'] dY'[Co, P']^T where dY' is dY
// in Wp-wide positions with zeros in the discarded columns (a view of the padded dY).
// Other convolutions (the 4x4 stride-2 downsampling, 1x1) use an explicit im2col or none.

int is_pointwise(int K, int stride, int pad) { return K == 1 && stride == 1 && pad == 0; }
int is_same(int K, int stride, int pad) { return K > 1 && stride == 1 && 2 * pad == K - 1; }

// Small outputs (7x7) would waste much of a GEMM on the wide columns (9 of every 7) and on a
// last, partly filled 16-column panel (49 = 3 x 16 + 1): there the im2col matrices of a group
// of G images sit side by side, col[CKK, G P], and one GEMM serves the group (G P ~ GROUP_COLS
// columns: 8 images at 7x7). Weight gradients are kept transposed (dw^T[CKK, Co] = col dY^T),
// as for the implicit same convs. (At 14x14 the im2col traffic costs more than it saves.)
int is_grouped(int K, int stride, int pad, int P) { return !is_pointwise(K, stride, pad) && P <= GROUP_MAX_P; }
int group_images(int P) { return GROUP_COLS / P > 1 ? GROUP_COLS / P : 1; }


// the zeros of one padded plane of esz-byte elements, rows Wp = W + p wide: the top p rows and the
// left pad of row p, then from the left pad of row H + p on (each row's right pad is its writer's)
static void zero_borders(void *plane, size_t esz, int H, int Wp, int p) {
    char *b = plane;
    memset(b, 0, ((size_t)p * Wp + p) * esz);
    memset(b + ((size_t)(H + p) * Wp + p) * esz, 0, ((size_t)p * Wp - p) * esz);
}

// xp = zero-padded copy of x[C][H][W]: [C][H + 2p][p zeros, W pixels] + PAD_SLACK zeros
void pad_image(float *xp, const float *x, int C, int H, int W, int p) {
    int Hp = H + 2 * p, Wp = W + p;
    for (int c = 0; c < C; c++) {
        float *xc = xp + (size_t)c * Hp * Wp;
        zero_borders(xc, sizeof *xc, H, Wp, p);
        for (int h = 0; h < H; h++) {
            float *r = xc + (size_t)(h + p) * Wp + p;
            memcpy(r, x + ((size_t)c * H + h) * W, W * sizeof(float));
            memset(r + W, 0, p * sizeof(float)); // left pad of the next row = right pad of this one
        }
    }
    memset(xp + (size_t)C * Hp * Wp, 0, PAD_SLACK * sizeof(float));
}

// xq = pad_image of x in bf16 pairs of channels (2 c2 low, 2 c2 + 1 high; zeros for a missing last)
void pad_image_pairs(uint32_t *xq, const float *x, int C, int H, int W, int p) {
    int Hp = H + 2 * p, Wp = W + p, C2 = (C + 1) / 2;
    for (int c2 = 0; c2 < C2; c2++) {
        uint32_t *xc = xq + (size_t)c2 * Hp * Wp;
        const float *lo = x + (size_t)2 * c2 * H * W, *hi = 2 * c2 + 1 < C ? lo + (size_t)H * W : NULL;
        zero_borders(xc, sizeof *xc, H, Wp, p);
        gemm_bf16_pairs(xc + (size_t)p * Wp + p, Wp, lo, hi, W, H, W); // each row's p zeros after it too
    }
    memset(xq + (size_t)C2 * Hp * Wp, 0, PAD_SLACK * sizeof *xq);
}

// xh = pad_image of x in bf16
void pad_image_bf16(uint16_t *xh, const float *x, int C, int H, int W, int p) {
    int Hp = H + 2 * p, Wp = W + p;
    for (int c = 0; c < C; c++) {
        uint16_t *xc = xh + (size_t)c * Hp * Wp;
        zero_borders(xc, sizeof *xc, H, Wp, p);
        gemm_bf16_round(xc + (size_t)p * Wp + p, Wp, x + (size_t)c * H * W, W, H, W); // each row's p zeros too
    }
    memset(xh + (size_t)C * Hp * Wp, 0, PAD_SLACK * sizeof *xh);
}

void pair_weights(float *wq, const float *w, int M, int C, int KK) {
    int C2 = (C + 1) / 2;
    for (int m = 0; m < M; m++)
        for (int c2 = 0; c2 < C2; c2++)
            for (int t = 0; t < KK; t++)
                for (int s = 0; s < 2; s++) {
                    int c = 2 * c2 + s;
                    wq[(size_t)m * 2 * C2 * KK + ((size_t)c2 * KK + t) * 2 + s] = c < C ? w[((size_t)m * C + c) * KK + t] : 0.0f;
                }
}

// off[(c K + kh) K + kw] = c Hp Wp + kh Wp + kw
void shift_table(long *off, int C, int K, int Hp, int Wp) {
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) off[(c * K + kh) * K + kw] = (long)c * Hp * Wp + (long)kh * Wp + kw;
}

// floats of a table of n longs in a float workspace (rounded up to keep 64-byte alignment)
size_t table_floats(size_t n) { return (n * sizeof(long) / sizeof(float) + 15) / 16 * 16; }
size_t padded_floats(int C, int H, int W, int K) {
    return ((size_t)C * (H + K - 1) * (W + (K - 1) / 2) + PAD_SLACK + 15) / 16 * 16;
}

// Grouped convs (7x7 outputs) of stride 1 and "same" padding build their im2col columns from a
// zero-padded copy xp of each image (pad_image): the row segment of (ci, kh, kw, oh) is
// xp[ci][oh + kh][kw .. kw + Wo), one 8-float vector when Wo <= 8, with no bounds to test. A
// segment's vector also covers the first column of the next one, which is written after it;
// the last segment of each row is copied by element, so nothing is written past the image.
int padded_im2col(int K, int stride, int pad, int Wo) { return is_same(K, stride, pad) && Wo <= 8; }

void im2col_padded8(float *col, const float *xp, int Ci, int K, int Hp, int Wp, int Ho, int Wo, size_t ld) {
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                const float *src = xp + ((size_t)ci * Hp + kh) * Wp + kw;
                int oh = 0;
                for (; oh < Ho - 1; oh++) store8(row + oh * Wo, load8(src + (size_t)oh * Wp));
                for (int ow = 0; ow < Wo; ow++) row[oh * Wo + ow] = src[(size_t)oh * Wp + ow];
            }
}

// the adjoint: dxp[ci][oh + kh][kw + ow] += col[..][oh Wo + ow], lanes ow >= Wo masked off
void col2im_padded8(float *dxp, const float *col, int Ci, int K, int Hp, int Wp, int Ho, int Wo, size_t ld) {
    v8i keep;
    for (int k = 0; k < 8; k++) keep[k] = k < Wo ? -1 : 0;
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                float *dst = dxp + ((size_t)ci * Hp + kh) * Wp + kw;
                int oh = 0;
                for (; oh < Ho - 1; oh++) {
                    float *d = dst + (size_t)oh * Wp;
                    store8(d, load8(d) + (v8f)((v8i)load8(row + oh * Wo) & keep));
                }
                for (int ow = 0; ow < Wo; ow++) dst[(size_t)oh * Wp + ow] += row[oh * Wo + ow];
            }
}

// Per-thread workspace of a grouped conv: col | dcol [CKK, ld] | Y or dY [Co, ld] | xp (one
// padded image, or its gradient) | chunk partials. Offsets of Y, xp and the partials:
// Rows of a group are ld = group_ld(ng, P) >= ng P floats apart, a multiple of 16: rows that
// start on a cache line keep a 16-column panel of B (read in place by the GEMM) at one line per
// row instead of two (measured 1-5% faster GEMMs).
size_t group_ld(int ng, int P) { return round16((size_t)ng * P); }
size_t grouped_off_y(int Ci, int K, int G, int P) { return 2 * (size_t)Ci * K * K * group_ld(G, P); }
size_t grouped_off_xp(int Ci, int K, int G, int P, int Co) { return grouped_off_y(Ci, K, G, P) + (size_t)Co * group_ld(G, P); }
size_t grouped_off_part(int Ci, int H, int W, int K, int G, int P, int Co) {
    return grouped_off_xp(Ci, K, G, P, Co) + padded_floats(Ci, H, W, K);
}

// im2col of image x into columns [j P, (j + 1) P) of col (rows ld apart), through xp if padded_im2col
void im2col_group(float *col, float *xp, const float *x, int Ci, int H, int W, int K, int stride, int pad,
                         int Ho, int Wo, size_t ld) {
    if (!padded_im2col(K, stride, pad, Wo)) {
        im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        return;
    }
    pad_image(xp, x, Ci, H, W, pad);
    im2col_padded8(col, xp, Ci, K, H + 2 * pad, W + pad, Ho, Wo, ld);
}

// dx += col2im(col), through the padded gradient dxp if padded_im2col
void col2im_group(float *dx, float *dxp, const float *col, int Ci, int H, int W, int K, int stride, int pad,
                         int Ho, int Wo, size_t ld) {
    if (!padded_im2col(K, stride, pad, Wo)) {
        col2im(dx, col, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        return;
    }
    int Hp = H + 2 * pad, Wp = W + pad;
    memset(dxp, 0, ((size_t)Ci * Hp * Wp + PAD_SLACK) * sizeof(float));
    col2im_padded8(dxp, col, Ci, K, Hp, Wp, Ho, Wo, ld);
    for (int ci = 0; ci < Ci; ci++) // the pixels of dxp: rows pad.., columns pad.. of each
        for (int h = 0; h < H; h++) {
            float *d = dx + ((size_t)ci * H + h) * W;
            const float *src = dxp + ((size_t)ci * Hp + h + pad) * Wp + pad;
            for (int w = 0; w < W; w++) d[w] += src[w];
        }
}

// y[0..n) (+)= w[0..n) + b: 8-float vectors, the last one overlapping the one before (its sums
// taken before any store, so overlapping lanes are written twice with the same value)
static inline void wide_row(float *y, const float *w, float b, int n, int acc) {
    if (n < 8) {
        for (int i = 0; i < n; i++) y[i] = acc ? y[i] + (w[i] + b) : w[i] + b;
        return;
    }
    v8f last = load8(w + n - 8) + b;
    if (acc) last = load8(y + n - 8) + last;
    for (int i = 0; i < n - 8; i += 8) {
        v8f v = load8(w + i) + b;
        store8(y + i, acc ? load8(y + i) + v : v);
    }
    store8(y + n - 8, last);
}

// y[C][H][W] (+)= wide[C][H][Wp] (first W columns of each row) + bias[C] (bias may be NULL)
void from_wide(float *y, const float *wide, const float *bias, int C, int H, int W, int Wp, int accumulate) {
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            wide_row(y + ((size_t)c * H + h) * W, wide + ((size_t)c * H + h) * Wp, bias ? bias[c] : 0.0f, W, accumulate);
}

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
int is_s2d(int K, int stride, int pad, int H, int W) { return K == 4 && stride == 2 && pad == 1 && H % 2 == 0 && W % 2 == 0; }

// floats of an s2d image of a [C][H][W] input (+ PAD_SLACK: the last shifted rows read past it)
size_t s2d_floats(int C, int H, int W) { return round16((size_t)4 * C * (H / 2 + 1) * (W / 2 + 1) + PAD_SLACK); }

// ev[q] = src[2 q], od[q] = src[2 q + 1] for q < m: 16 values at a time, the last 16 overlapping
// the ones before when m is not a multiple of 8
static void deinterleave_row(float *ev, float *od, const float *src, int m) {
    const v8i e = {0, 2, 4, 6, 8, 10, 12, 14}, o = e + 1;
    if (m < 8) {
        for (int q = 0; q < m; q++) {
            ev[q] = src[2 * q];
            od[q] = src[2 * q + 1];
        }
        return;
    }
    for (int q = 0;; q += 8) {
        if (q + 8 > m) q = m - 8;
        v8f a = load8(src + 2 * q), b = load8(src + 2 * q + 8);
        store8(ev + q, __builtin_shuffle(a, b, e));
        store8(od + q, __builtin_shuffle(a, b, o));
        if (q + 8 == m) break;
    }
}

// d[2 m] (+)= ev[m] + b, d[2 m + 1] (+)= od[m] + b for m < n: the interleaving of deinterleave_row,
// the last 16 overlapping the ones before (computed before any store, so the overlap is written
// twice with the same value)
static void interleave_row(float *d, const float *ev, const float *od, int n, float b, int acc) {
    const v8i lo = {0, 8, 1, 9, 2, 10, 3, 11}, hi = lo + 4;
    if (n < 8) {
        for (int m = 0; m < n; m++) {
            float v0 = ev[m] + b, v1 = od[m] + b;
            d[2 * m] = acc ? d[2 * m] + v0 : v0;
            d[2 * m + 1] = acc ? d[2 * m + 1] + v1 : v1;
        }
        return;
    }
    v8f ea = load8(ev + n - 8) + b, oa = load8(od + n - 8) + b;
    v8f l0 = __builtin_shuffle(ea, oa, lo), l1 = __builtin_shuffle(ea, oa, hi);
    if (acc) {
        l0 = load8(d + 2 * n - 16) + l0;
        l1 = load8(d + 2 * n - 8) + l1;
    }
    for (int m = 0; m + 8 < n; m += 8) {
        v8f e = load8(ev + m) + b, o = load8(od + m) + b;
        v8f v0 = __builtin_shuffle(e, o, lo), v1 = __builtin_shuffle(e, o, hi);
        store8(d + 2 * m, acc ? load8(d + 2 * m) + v0 : v0);
        store8(d + 2 * m + 8, acc ? load8(d + 2 * m + 8) + v1 : v1);
    }
    store8(d + 2 * n - 16, l0);
    store8(d + 2 * n - 8, l1);
}

void s2d_pack(float *xs, const float *x, int C, int H, int W) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int c = 0; c < C; c++)
        for (int a = 0; a < 2; a++) {
            float *p0 = xs + (size_t)(c * 2 + a) * 2 * Hs * Ws, *p1 = p0 + (size_t)Hs * Ws; // planes b = 0, 1
            for (int r = 0; r < Hs; r++) {
                int i = 2 * r + a - 1;
                float *d0 = p0 + (size_t)r * Ws, *d1 = p1 + (size_t)r * Ws;
                if (i < 0 || i >= H) {
                    memset(d0, 0, Ws * sizeof(float));
                    memset(d1, 0, Ws * sizeof(float));
                    continue;
                }
                d0[0] = 0.0f; // xpad column 0
                d1[Ws - 1] = 0.0f; // xpad column W + 1
                // xpad columns 2q + 1 (plane b = 1) and 2q + 2 (b = 0)
                deinterleave_row(d1, d0 + 1, x + ((size_t)c * H + i) * W, Ws - 1);
            }
        }
    memset(xs + (size_t)4 * C * Hs * Ws, 0, PAD_SLACK * sizeof(float));
}

// dx[c][i][j] (+)= dxs[(c, (i + 1) % 2, (j + 1) % 2)][(i + 1) / 2][(j + 1) / 2] + bias[c] (bias may be NULL)
void s2d_unpack(float *dx, const float *dxs, const float *bias, int C, int H, int W, int accumulate) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int c = 0; c < C; c++) {
        float bv = bias ? bias[c] : 0.0f;
        for (int i = 0; i < H; i++) {
            float *d = dx + ((size_t)c * H + i) * W;
            const float *s0 = dxs + ((size_t)((c * 2 + (i + 1) % 2) * 2) * Hs + (i + 1) / 2) * Ws; // b = 0 plane
            const float *s1 = s0 + (size_t)Hs * Ws;                                                 // b = 1 plane
            interleave_row(d, s1, s0 + 1, W / 2, bv, accumulate); // d[2m] = s1[m], d[2m + 1] = s0[m + 1]
        }
    }
}

// off[(ci 4 + kh) 4 + kw] = (ci, kh % 2, kw % 2) plane + (kh / 2) Ws + kw / 2
void s2d_table(long *off, int Ci, int H, int W) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < 4; kh++)
            for (int kw = 0; kw < 4; kw++)
                off[(ci * 4 + kh) * 4 + kw] = (long)((ci * 2 + kh % 2) * 2 + kw % 2) * Hs * Ws + (long)(kh / 2) * Ws + kw / 2;
}

void s2d_pair_table(long *q_off, int Ci, int H, int W) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < 4; kh++)
            for (int dw = 0; dw < 2; dw++)
                q_off[(ci * 4 + kh) * 2 + dw] = (long)(ci * 2 + kh % 2) * Hs * Ws + (long)(kh / 2) * Ws + dw;
}

// wf[(ci, a, b)][(co, e, f)] = w[co][ci][2 (1 - e) + a][2 (1 - f) + b]
void s2d_flip_weights(float *wf, const float *w, int Ci, int Co) {
    for (int ci = 0; ci < Ci; ci++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                for (int co = 0; co < Co; co++)
                    for (int e = 0; e < 2; e++)
                        for (int f = 0; f < 2; f++)
                            wf[(size_t)((ci * 2 + a) * 2 + b) * 4 * Co + (co * 2 + e) * 2 + f] =
                                w[(((size_t)co * Ci + ci) * 4 + 2 * (1 - e) + a) * 4 + 2 * (1 - f) + b];
}

// Per-thread workspace of the s2d conv kernels below, in a float region `mine`: off_x | off_dy | xs |
// dxs | dyp | wf | yw, then for bf16: q_xoff | q_dyoff | dyq | qw (wf in pair order)
size_t s2d_ws_floats(int Ci, int H, int W, int Co) {
    int Ho = H / 2, Wo = W / 2, C2 = (Co + 1) / 2;
    return table_floats((size_t)Ci * 16) + table_floats((size_t)Co * 4) + 2 * s2d_floats(Ci, H, W) +
           padded_floats(Co, Ho, Wo, 3) + round16((size_t)Ci * 16 * Co) + round16((size_t)Co * Ho * (Wo + 1)) +
           table_floats((size_t)Ci * 8) + table_floats((size_t)C2 * 4) + padded_floats(C2, Ho, Wo, 3) +
           round16((size_t)Ci * 4 * C2 * 8);
}

// carve `mine`; if w != NULL, the flipped weights wf, packed into wfp (gemm_pack_a) for the data gradient
S2dWs s2d_setup(float *mine, const float *w, float *wfp, int Ci, int H, int W, int Co) {
    int Ho = H / 2, Wo = W / 2, C2 = (Co + 1) / 2, Kq = C2 * 8;
    S2dWs s;
    s.off_x = (long *)mine;
    s.off_dy = (long *)(mine + table_floats((size_t)Ci * 16));
    s.xs = mine + table_floats((size_t)Ci * 16) + table_floats((size_t)Co * 4);
    s.dxs = s.xs + s2d_floats(Ci, H, W);
    s.dyp = s.dxs + s2d_floats(Ci, H, W);
    s.wf = s.dyp + padded_floats(Co, Ho, Wo, 3);
    s.yw = s.wf + round16((size_t)Ci * 16 * Co);
    s.q_xoff = (long *)(s.yw + round16((size_t)Co * Ho * (Wo + 1)));
    s.q_dyoff = (long *)((float *)s.q_xoff + table_floats((size_t)Ci * 8));
    s.dyq = (uint32_t *)((float *)s.q_dyoff + table_floats((size_t)C2 * 4));
    s.qw = (float *)s.dyq + padded_floats(C2, Ho, Wo, 3);
    s.pairs = gemm_precision() == GEMM_BF16;
    s2d_table(s.off_x, Ci, H, W);
    shift_table(s.off_dy, Co, 2, Ho + 2, Wo + 1);
    if (s.pairs) {
        s2d_pair_table(s.q_xoff, Ci, H, W);
        shift_table(s.q_dyoff, C2, 2, Ho + 2, Wo + 1);
    }
    s.wfp = wfp;
    if (w) {
        s2d_flip_weights(s.wf, w, Ci, Co);
        if (s.pairs) {
            pair_weights(s.qw, s.wf, 4 * Ci, Co, 4);
            gemm_pack_a(0, 4 * Ci, Kq, s.qw, Kq, wfp);
        } else {
            gemm_pack_a(0, 4 * Ci, 4 * Co, s.wf, 4 * Co, wfp);
        }
    }
    return s;
}

// y[Co][Ho][Wo] (+)= conv(x) + bias (bias may be NULL), one image whose s2d image is in s->xs
// (s2d_pack); wp: w[Co, Ci 16] packed (gemm_pack_a)
void s2d_forward(const S2dWs *s, float *y, const float *wp, const float *bias, int Ci, int H, int W, int Co,
                        int accumulate) {
    int Ho = H / 2, Ws = W / 2 + 1, HsWs = (Ho + 1) * Ws;
    if (s->pairs) { // xs's planes b = 0, 1 in bf16 pairs, in dxs (free in a forward; whole panels stay inside it)
        uint32_t *xq = (uint32_t *)s->dxs;
        gemm_bf16_pairs(xq, HsWs, s->xs, s->xs + HsWs, 2 * (size_t)HsWs, 2 * Ci, HsWs);
        gemm_packed_pairs(Co, Ho * Ws, Ci * 16, wp, xq, s->q_xoff, s->yw, Ho * Ws, 0);
    } else {
        gemm_packed(Co, Ho * Ws, Ci * 16, wp, s->xs, 0, s->off_x, s->yw, Ho * Ws, 0);
    }
    from_wide(y, s->yw, bias, Co, Ho, W / 2, Ws, accumulate);
}

// one image: dwt[Ci 16, Co] += Xrows dY'^T (if dwt; the image's s2d image in s->xs, s2d_pack),
// dx (+)= data gradient + bias (if dx)
void s2d_backward(const S2dWs *s, float *dx, float *dwt, const float *dy, const float *bias, int Ci, int H,
                         int W, int Co, int accumulate) {
    int Ho = H / 2, Wo = W / 2, Ws = Wo + 1;
    if (s->pairs) pad_image_pairs(s->dyq, dy, Co, Ho, Wo, 1); // dy in bf16 pairs of channels, for both gradients
    else pad_image(s->dyp, dy, Co, Ho, Wo, 1);
    if (dwt && s->pairs) { // xs in bf16 (in dxs, free until the data gradient), read in place
        uint16_t *xh = (uint16_t *)s->dxs;
        gemm_bf16_round(xh, s2d_floats(Ci, H, W), s->xs, 0, 1, s2d_floats(Ci, H, W));
        gemm_rows_a16_q(Ci * 16, Co, Ho * Ws, xh, 0, s->off_x, s->dyq + Ws + 1, (Ho + 2) * Ws, dwt, Co, 1);
    } else if (dwt) {
        gemm_rows(0, 1, Ci * 16, Co, Ho * Ws, s->xs, 0, s->off_x, s->dyp + Ws + 1, (Ho + 2) * Ws, NULL, dwt, Co, 1);
    }
    if (!dx) return;
    if (s->pairs) { // wfp in pair order (s2d_setup)
        gemm_packed_pairs(Ci * 4, (Ho + 1) * Ws, (Co + 1) / 2 * 8, s->wfp, s->dyq, s->q_dyoff, s->dxs, (Ho + 1) * Ws, 0);
    } else {
        gemm_packed(Ci * 4, (Ho + 1) * Ws, Co * 4, s->wfp, s->dyp, 0, s->off_dy, s->dxs, (Ho + 1) * Ws, 0);
    }
    s2d_unpack(dx, s->dxs, bias, Ci, H, W, accumulate);
}

// Each thread region ends with the layer's weight matrix packed for the GEMMs (gemm_pack_a), once
// per call instead of once per image: w[Co, CKK] in the forward; in the backward the data
// gradient's wf[Ci, Co K K] (same convs), w^T[CKK, Co] (im2col convs) or wf[4 Ci, 4 Co] (s2d convs);
// in bf16 the same and s2d ones in pair order
size_t conv_packed_floats(int Ci, int Co, int K) {
    size_t n[7] = {gemm_packed_a_floats(Co, Ci * K * K), gemm_packed_a_floats(Ci, Co * K * K),
                   gemm_packed_a_floats(Ci * K * K, Co), gemm_packed_a_floats(4 * Ci, 4 * Co),
                   gemm_packed_a_floats(Co, (Ci + 1) / 2 * 2 * K * K), gemm_packed_a_floats(Ci, (Co + 1) / 2 * 2 * K * K),
                   gemm_packed_a_floats(4 * Ci, (Co + 1) / 2 * 8)},
           m = 0;
    for (int i = 0; i < 7; i++) m = n[i] > m ? n[i] : m;
    return round16(m);
}
float *conv_packed(float *ws, size_t wsz, int Ci, int Co, int K) {
    return ws + (size_t)thread_id() * wsz + wsz - conv_packed_floats(Ci, Co, K);
}
