// conv.c: 2-D convolution, forward and backward, through the lowerings of conv_lowering.c.
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

// A same conv's per-thread workspace, in floats from the start of the thread's region:
//   forward:  off_x (row table of Xp) | fwd_xp (padded x) | yw (wide output [Co, H Wp])
//   backward: off_x | off_dy (row table of dYp) | xp | dyp (padded dy) | dxw (wide dx [Ci, H Wp]) |
//             wf (flipped weights [Ci, Co K K]) | part (GRAD_CHUNKS partials of dw^T and dbias)
//   then, in bf16 (no xp, dyp): q_off (row table of the pair image) | q_img (x or dy in bf16 pairs of
//             channels, pad_image_pairs, for gemm_packed_pairs and gemm_rows_a16_q) | q_w (the weights
//             or wf in pair order) | q_x (x padded in bf16, pad_image_bf16, for the weight gradient's
//             gemm_rows_a16_q)
typedef struct { size_t fwd_xp, yw, off_dy, xp, dyp, dxw, wf, part, q_off, q_img, q_w, q_x, end; } SameLayout;

static SameLayout same_layout(int Ci, int H, int W, int Co, int K) {
    size_t ckk = (size_t)Ci * K * K, okk = (size_t)Co * K * K, wide = (size_t)H * (W + (K - 1) / 2);
    SameLayout l;
    l.fwd_xp = table_floats(ckk);
    l.yw = l.fwd_xp + padded_floats(Ci, H, W, K);
    l.off_dy = table_floats(ckk);
    l.xp = l.off_dy + table_floats(okk);
    l.dyp = l.xp + padded_floats(Ci, H, W, K);
    l.dxw = l.dyp + padded_floats(Co, H, W, K);
    l.wf = l.dxw + (size_t)Ci * wide;
    l.part = l.wf + (size_t)Ci * okk;
    size_t fwd = l.yw + (size_t)Co * wide, bwd = l.part + GRAD_CHUNKS * round16(ckk * Co + Co);
    int cm = Ci > Co ? Ci : Co, c2 = (cm + 1) / 2;
    l.q_off = round16(fwd > bwd ? fwd : bwd);
    l.q_img = l.q_off + table_floats((size_t)c2 * K * K);
    l.q_w = l.q_img + padded_floats(c2, H, W, K); // a pair takes a float's 4 bytes
    l.q_x = round16(l.q_w + (size_t)cm * 2 * c2 * K * K);
    l.end = round16(l.q_x + padded_floats(Ci, H, W, K) / 2 + 1);
    return l;
}

static size_t conv2d_ws_base(int Ci, int H, int W, int Co, int K, int stride, int pad);
size_t conv2d_ws_floats(int Ci, int H, int W, int Co, int K, int stride, int pad) {
    return conv2d_ws_base(Ci, H, W, Co, K, stride, pad) + conv_packed_floats(Ci, Co, K);
}
static size_t conv2d_ws_base(int Ci, int H, int W, int Co, int K, int stride, int pad) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    size_t ckk = (size_t)Ci * K * K, P = (size_t)Ho * Wo;
    if (is_grouped(K, stride, pad, (int)P)) {
        int G = group_images((int)P);
        return grouped_off_part(Ci, H, W, K, G, (int)P, Co) + GRAD_CHUNKS * round16(ckk * Co + Co);
    }
    if (is_s2d(K, stride, pad, H, W)) return s2d_ws_floats(Ci, H, W, Co) + GRAD_CHUNKS * round16(ckk * Co + Co);
    if (is_same(K, stride, pad)) return same_layout(Ci, H, W, Co, K).end;
    return round16(2 * ckk * P) + GRAD_CHUNKS * round16((size_t)Co * ckk + Co); // col, dcol, GRAD_CHUNKS (dw, dbias) partials
}

void conv2d_forward(float *out, const float *in, const float *w, const float *bias,
                    int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                    int accumulate, float *ws) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    int P = Ho * Wo, CKK = Ci * K * K;
    size_t wsz = conv2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    int same = is_same(K, stride, pad), G = group_images(P);
    int Hp = H + K - 1, Wp = W + (K - 1) / 2;
    if (is_grouped(K, stride, pad, P)) {
#pragma omp parallel
        {
            float *col = ws + (size_t)thread_id() * wsz, *yg = col + grouped_off_y(Ci, K, G, P);
            float *xp = col + grouped_off_xp(Ci, K, G, P, Co), *wp = conv_packed(ws, wsz, Ci, Co, K);
            gemm_pack_a(0, Co, CKK, w, CKK, wp);
#pragma omp for schedule(dynamic, 1)
            for (int b0 = 0; b0 < B; b0 += G) {
                int ng = B - b0 < G ? B - b0 : G;
                size_t ld = group_ld(ng, P);
                for (int j = 0; j < ng; j++)
                    im2col_group(col + (size_t)j * P, xp, in + (size_t)(b0 + j) * Ci * H * W, Ci, H, W, K, stride, pad, Ho, Wo, ld);
                gemm_packed(Co, ng * P, CKK, wp, col, (int)ld, NULL, yg, (int)ld, 0); // yg[Co, ng P] = w col
                for (int j = 0; j < ng; j++)
                    for (int co = 0; co < Co; co++) {
                        float bv = bias ? bias[co] : 0.0f, *yc = out + ((size_t)(b0 + j) * Co + co) * P;
                        const float *src = yg + (size_t)co * ld + (size_t)j * P;
                        if (accumulate) for (int p = 0; p < P; p++) yc[p] += src[p] + bv;
                        else for (int p = 0; p < P; p++) yc[p] = src[p] + bv;
                    }
            }
        }
        return;
    }
    if (is_s2d(K, stride, pad, H, W)) {
#pragma omp parallel
        {
            S2dWs s = s2d_setup(ws + (size_t)thread_id() * wsz, NULL, NULL, Ci, H, W, Co);
            float *wp = conv_packed(ws, wsz, Ci, Co, K);
            gemm_pack_a(0, Co, CKK, w, CKK, wp);
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < B; b++) {
                s2d_pack(s.xs, in + (size_t)b * Ci * H * W, Ci, H, W);
                s2d_forward(&s, out + (size_t)b * Co * P, wp, bias, Ci, H, W, Co, accumulate);
            }
        }
        return;
    }
    // bf16: the image in bf16 pairs of channels, read in place (K in pair order: Kq >= CKK)
    int pairs = same && gemm_precision() == GEMM_BF16, Kq = (Ci + 1) / 2 * 2 * K * K;
#pragma omp parallel
    {
        float *col = ws + (size_t)thread_id() * wsz, *wp = conv_packed(ws, wsz, Ci, Co, K);
        long *off = (long *)col;
        SameLayout sl = same_layout(Ci, H, W, Co, K);
        float *xp = col + sl.fwd_xp, *yw = col + sl.yw;
        long *qoff = (long *)(col + sl.q_off);
        uint32_t *xq = (uint32_t *)(col + sl.q_img);
        if (pairs) {
            pair_weights(col + sl.q_w, w, Co, Ci, K * K);
            gemm_pack_a(0, Co, Kq, col + sl.q_w, Kq, wp);
            shift_table(qoff, (Ci + 1) / 2, K, Hp, Wp);
        } else {
            gemm_pack_a(0, Co, CKK, w, CKK, wp);
            if (same) shift_table(off, Ci, K, Hp, Wp);
        }
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            const float *x = in + (size_t)b * Ci * H * W;
            float *y = out + (size_t)b * Co * P;
            if (pairs) { // yw[Co, H Wp] = w[Co, Kq] Xpairs[Kq, H Wp]
                pad_image_pairs(xq, x, Ci, H, W, pad);
                gemm_packed_pairs(Co, H * Wp, Kq, wp, xq, qoff, yw, H * Wp, 0);
                from_wide(y, yw, bias, Co, H, W, Wp, accumulate);
                continue;
            }
            if (same) { // yw[Co, H Wp] = w[Co, CKK] Xrows[CKK, H Wp]; y (+)= yw + bias
                pad_image(xp, x, Ci, H, W, pad);
                gemm_packed(Co, H * Wp, CKK, wp, xp, 0, off, yw, H * Wp, 0);
                from_wide(y, yw, bias, Co, H, W, Wp, accumulate);
                continue;
            }
            for (int co = 0; co < Co; co++) {
                float bv = bias ? bias[co] : 0.0f;
                float *yc = y + (size_t)co * P;
                if (accumulate) for (int p = 0; p < P; p++) yc[p] += bv;
                else for (int p = 0; p < P; p++) yc[p] = bv;
            }
            const float *cb = x;
            if (!is_pointwise(K, stride, pad)) {
                im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo, P);
                cb = col;
            }
            gemm_packed(Co, P, CKK, wp, cb, P, NULL, y, P, 1);
        }
    }
}

// per-thread part of the same-conv backward workspace (layout of conv2d_ws_floats)
// (pairs, in bf16: the weight gradient from x padded in bf16 (xh) and dy's pair image dyq (no float
// xp, dyp), the data gradient from dyq through q_off, wfp packed in pair order)
typedef struct { long *off_x, *off_dy, *q_off; float *xp, *dyp, *dxw, *wf, *wfp; uint32_t *dyq; uint16_t *xh; int pairs; } SameBwd;

// carve `mine`; if need_wf, the flipped weights wf, packed into wfp (gemm_pack_a) for the data gradient
static SameBwd same_backward_setup(float *mine, const float *w, int need_wf, float *wfp, int Ci, int H, int W, int Co,
                                   int K) {
    int Hp = H + K - 1, Wp = W + (K - 1) / 2, OKK = Co * K * K;
    SameLayout l = same_layout(Ci, H, W, Co, K);
    SameBwd s;
    s.off_x = (long *)mine;
    s.off_dy = (long *)(mine + l.off_dy);
    s.xp = mine + l.xp;
    s.dyp = mine + l.dyp;
    s.dxw = mine + l.dxw;
    s.wf = mine + l.wf;
    s.q_off = (long *)(mine + l.q_off);
    s.dyq = (uint32_t *)(mine + l.q_img);
    s.xh = (uint16_t *)(mine + l.q_x);
    s.pairs = gemm_precision() == GEMM_BF16;
    shift_table(s.off_x, Ci, K, Hp, Wp);
    shift_table(s.off_dy, Co, K, Hp, Wp);
    if (s.pairs) shift_table(s.q_off, (Co + 1) / 2, K, Hp, Wp);
    if (need_wf) // wf[ci][(co K + kh) K + kw] = w[co][ci][K-1-kh][K-1-kw]
        for (int ci = 0; ci < Ci; ci++)
            for (int co = 0; co < Co; co++)
                for (int kk = 0; kk < K * K; kk++)
                    s.wf[(size_t)ci * OKK + (size_t)co * K * K + kk] = w[((size_t)co * Ci + ci) * K * K + (K * K - 1 - kk)];
    s.wfp = wfp;
    if (need_wf && s.pairs) {
        int Kq = (Co + 1) / 2 * 2 * K * K;
        pair_weights(mine + l.q_w, s.wf, Ci, Co, K * K);
        gemm_pack_a(0, Ci, Kq, mine + l.q_w, Kq, wfp);
    } else if (need_wf) {
        gemm_pack_a(0, Ci, OKK, s.wf, OKK, wfp);
    }
    return s;
}

// the same-conv backward of images [lo, hi): dw^T and dbias into one chunk's partials
static void conv2d_same_backward(const SameBwd *s, float *din, float *dwt, float *dbp, const float *dout,
                                 const float *in, int lo, int hi, int Ci, int H, int W, int Co, int K, int pad) {
    int Hp = H + K - 1, Wp = W + (K - 1) / 2, OKK = Co * K * K, HWp = H * Wp;
    for (int b = lo; b < hi; b++) {
        const float *x = in + (size_t)b * Ci * H * W;
        const float *dy = dout + (size_t)b * Co * H * W;
        bias_grad_add(dbp, dy, Co, H * W);
        // dw^T[CKK, Co] += Xrows[CKK, H Wp] dY'[Co, H Wp]^T, dY' = dyp (or dyq) shifted by (pad, pad)
        if (s->pairs) { // Xrows read in place from x padded in bf16 (its PAD_SLACK zeros end the last row's pair),
                        // dY' from dy's pair image, which the data gradient reads too
            pad_image_pairs(s->dyq, dy, Co, H, W, pad);
            pad_image_bf16(s->xh, x, Ci, H, W, pad);
            gemm_rows_a16_q(Ci * K * K, Co, HWp, s->xh, 0, s->off_x, s->dyq + (size_t)pad * Wp + pad, Hp * Wp, dwt, Co, 1);
        } else {
            pad_image(s->xp, x, Ci, H, W, pad);
            pad_image(s->dyp, dy, Co, H, W, pad);
            gemm_rows(0, 1, Ci * K * K, Co, HWp, s->xp, 0, s->off_x, s->dyp + (size_t)pad * Wp + pad, Hp * Wp, NULL, dwt,
                      Co, 1);
        }
        if (din && s->pairs) { // the same with dy in bf16 pairs
            gemm_packed_pairs(Ci, HWp, (Co + 1) / 2 * 2 * K * K, s->wfp, s->dyq, s->q_off, s->dxw, HWp, 0);
            from_wide(din + (size_t)b * Ci * H * W, s->dxw, NULL, Ci, H, W, Wp, 1);
        } else if (din) { // dx += same conv of dy with wf
            gemm_packed(Ci, HWp, OKK, s->wfp, s->dyp, 0, s->off_dy, s->dxw, HWp, 0);
            from_wide(din + (size_t)b * Ci * H * W, s->dxw, NULL, Ci, H, W, Wp, 1);
        }
    }
}

// the grouped-conv backward of images [lo, hi), G at a time: dw^T and dbias into one chunk's partials;
// wtp: w^T[CKK, Co] packed (gemm_pack_a)
static void conv2d_grouped_backward(float *mine, float *din, float *dwt, float *dbp, const float *dout,
                                    const float *in, const float *wtp, int lo, int hi, int G, int Ci, int H,
                                    int W, int Co, int K, int stride, int pad) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    int P = Ho * Wo, CKK = Ci * K * K;
    float *col = mine, *dcol = col + (size_t)CKK * group_ld(G, P), *dyg = mine + grouped_off_y(Ci, K, G, P);
    float *xp = mine + grouped_off_xp(Ci, K, G, P, Co);
    for (int b0 = lo; b0 < hi; b0 += G) {
        int ng = hi - b0 < G ? hi - b0 : G;
        size_t ld = group_ld(ng, P);
        for (int j = 0; j < ng; j++) { // dyg[Co, ng P] and col[CKK, ng P]: the group side by side
            const float *dy = dout + (size_t)(b0 + j) * Co * P;
            bias_grad_add(dbp, dy, Co, P);
            for (int co = 0; co < Co; co++) memcpy(dyg + (size_t)co * ld + (size_t)j * P, dy + (size_t)co * P, P * sizeof(float));
            im2col_group(col + (size_t)j * P, xp, in + (size_t)(b0 + j) * Ci * H * W, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        }
        if (gemm_precision() == GEMM_BF16) { // col in bf16 (in dcol, free until the data gradient), read in place
            uint16_t *colh = (uint16_t *)dcol;
            gemm_bf16_round(colh, ld, col, ld, CKK, (size_t)ng * P); // zeros past ng P: an odd one's last pair (ld > ng P)
            gemm_rows_a16(1, CKK, Co, ng * P, colh, (int)ld, NULL, dyg, (int)ld, NULL, dwt, Co, 1);
        } else {
            gemm(0, 1, CKK, Co, ng * P, col, (int)ld, dyg, (int)ld, dwt, Co, 1); // dw^T += col dY^T
        }
        if (din) {                                                           // dx += col2im(w^T dY)
            gemm_packed(CKK, ng * P, Co, wtp, dyg, (int)ld, NULL, dcol, (int)ld, 0);
            for (int j = 0; j < ng; j++)
                col2im_group(din + (size_t)(b0 + j) * Ci * H * W, xp, dcol + (size_t)j * P, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        }
    }
}

void conv2d_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int B, int Ci, int H, int W, int Co, int K, int stride,
                     int pad, float *ws) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    int P = Ho * Wo, CKK = Ci * K * K;
    size_t wsz = conv2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    int same = is_same(K, stride, pad), grouped = is_grouped(K, stride, pad, P), G = group_images(P);
    int s2d = !grouped && is_s2d(K, stride, pad, H, W);
    // bf16 pointwise: dw^T[Ci, Co] += x dy^T with x read in place in bf16 (in col), reduced transposed
    int pw16 = is_pointwise(K, stride, pad) && gemm_precision() == GEMM_BF16;
    // where the chunk partials (dw, or dw^T for same, grouped and s2d convs, then dbias) start in a thread's region
    size_t off_part = round16(2 * (size_t)CKK * P), psize = round16((size_t)Co * CKK + Co);
    if (grouped) off_part = grouped_off_part(Ci, H, W, K, G, P, Co);
    else if (s2d) off_part = s2d_ws_floats(Ci, H, W, Co);
    else if (same) off_part = same_layout(Ci, H, W, Co, K).part;
    int nt = 1;
#pragma omp parallel
    {
#pragma omp single
        nt = thread_count();
        float *mine = ws + (size_t)thread_id() * wsz;
        float *col = mine, *dcol = mine + (size_t)CKK * P;
        float *wp = conv_packed(ws, wsz, Ci, Co, K);
        SameBwd sb;
        S2dWs s2 = {0};
        if (same && !grouped) sb = same_backward_setup(mine, w, din != NULL, wp, Ci, H, W, Co, K);
        else if (s2d) s2 = s2d_setup(mine, din ? w : NULL, wp, Ci, H, W, Co);
        else if (din) gemm_pack_a(1, CKK, Co, w, CKK, wp); // w^T[CKK, Co] for the data gradient
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < GRAD_CHUNKS; c++) {
            int lo, hi;
            float *dwp = chunk_begin(ws, wsz, off_part, psize, c, nt, B, &lo, &hi), *dbp = dwp + (size_t)Co * CKK;
            if (grouped) {
                conv2d_grouped_backward(mine, din, dwp, dbp, dout, in, wp, lo, hi, G, Ci, H, W, Co, K, stride, pad);
                continue;
            }
            if (same) {
                conv2d_same_backward(&sb, din, dwp, dbp, dout, in, lo, hi, Ci, H, W, Co, K, pad);
                continue;
            }
            if (s2d) {
                for (int b = lo; b < hi; b++) {
                    const float *dy = dout + (size_t)b * Co * P;
                    bias_grad_add(dbp, dy, Co, P);
                    s2d_pack(s2.xs, in + (size_t)b * Ci * H * W, Ci, H, W);
                    s2d_backward(&s2, din ? din + (size_t)b * Ci * H * W : NULL, dwp, dy, NULL, Ci, H, W, Co, 1);
                }
                continue;
            }
            for (int b = lo; b < hi; b++) {
                const float *x = in + (size_t)b * Ci * H * W;
                const float *dy = dout + (size_t)b * Co * P;
                bias_grad_add(dbp, dy, Co, P);
                if (pw16) {
                    uint16_t *xh = (uint16_t *)col;
                    gemm_bf16_round(xh, (size_t)Ci * P + 1, x, 0, 1, (size_t)Ci * P); // and a zero: an odd P's last pair
                    gemm_rows_a16(1, Ci, Co, P, xh, P, NULL, dy, P, NULL, dwp, Co, 1);
                    if (din) gemm_packed(CKK, P, Co, wp, dy, P, NULL, din + (size_t)b * Ci * H * W, P, 1);
                    continue;
                }
                // dw[Co, CKK] += dy[Co, P] col[CKK, P]^T
                const float *cb = x;
                if (!is_pointwise(K, stride, pad)) {
                    im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo, P);
                    cb = col;
                }
                gemm(0, 1, Co, CKK, P, dy, P, cb, P, dwp, CKK, 1);
                // din += col2im(w^T dy)
                if (din) {
                    float *dx = din + (size_t)b * Ci * H * W;
                    if (is_pointwise(K, stride, pad)) {
                        gemm_packed(CKK, P, Co, wp, dy, P, NULL, dx, P, 1);
                    } else {
                        gemm_packed(CKK, P, Co, wp, dy, P, NULL, dcol, P, 0);
                        col2im(dx, dcol, Ci, H, W, K, stride, pad, Ho, Wo, P);
                    }
                }
            }
        }
    }
    if (same || grouped || s2d || pw16) reduce_chunks_transposed(dw, ws, wsz, off_part, psize, CKK, Co, nt);
    else reduce_chunks(dw, ws, wsz, off_part, psize, 0, (long)Co * CKK, nt);
    reduce_chunks(dbias, ws, wsz, off_part, psize, (size_t)Co * CKK, Co, nt);
}
