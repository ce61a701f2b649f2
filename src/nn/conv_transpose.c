// conv_transpose.c: 2-D transposed convolution (the upsampling), forward and backward.
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
// transposed conv: per image, col[Co K K, H W] = w[Ci, Co K K]^T in[Ci, H W]; out = col2im(col) + bias.
// It is the adjoint (data gradient) of a conv from (Co, Ho, Wo) to (Ci, H, W).

// The 4x4 stride-2 pad-1 transposed conv (the upsampling) is the data gradient of the s2d conv
// from (Co, 2H, 2W) to (Ci, H, W), whose weights w[Ci][Co][K][K] are this layer's.
static int is_s2d_transposed(int K, int stride, int pad) { return is_s2d(K, stride, pad, 2, 2); }

size_t conv_transpose2d_ws_floats(int Ci, int H, int W, int Co, int K, int stride, int pad) {
    size_t ckk = (size_t)Co * K * K, P = (size_t)H * W;
    if (is_s2d_transposed(K, stride, pad)) // + the packed weights (the conv's wf forward, its w backward) at the end
        return s2d_ws_floats(Co, 2 * H, 2 * W, Ci) + GRAD_CHUNKS * round16((size_t)Ci * ckk + Co) + conv_packed_floats(Co, Ci, K);
    return round16(ckk * P) + GRAD_CHUNKS * round16((size_t)Ci * ckk + Co); // col, GRAD_CHUNKS (dw, dbias) partials
}

void conv_transpose2d_forward(float *out, const float *in, const float *w, const float *bias,
                              int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                              float *ws) {
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
    int P = H * W, CKK = Co * K * K;
    size_t wsz = conv_transpose2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    if (is_s2d_transposed(K, stride, pad)) { // out = data gradient of the conv (Co, Ho, Wo) -> (Ci, H, W) at in, + bias
#pragma omp parallel
        {
            S2dWs s = s2d_setup(ws + (size_t)thread_id() * wsz, w, conv_packed(ws, wsz, Co, Ci, K), Co, Ho, Wo, Ci);
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < B; b++)
                s2d_backward(&s, out + (size_t)b * Co * Ho * Wo, NULL, in + (size_t)b * Ci * P, bias, Co, Ho, Wo, Ci, 0);
        }
        return;
    }
#pragma omp parallel
    {
        float *col = ws + (size_t)thread_id() * wsz;
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            const float *x = in + (size_t)b * Ci * P;
            float *y = out + (size_t)b * Co * Ho * Wo;
            for (int co = 0; co < Co; co++)
                for (int p = 0; p < Ho * Wo; p++) y[(size_t)co * Ho * Wo + p] = bias ? bias[co] : 0.0f;
            gemm(1, 0, CKK, P, Ci, w, CKK, x, P, col, P, 0);
            col2im(y, col, Co, Ho, Wo, K, stride, pad, H, W, P);
        }
    }
}

void conv_transpose2d_backward(float *din, float *dw, float *dbias, const float *dout,
                               const float *in, const float *w, int B, int Ci, int H, int W,
                               int Co, int K, int stride, int pad, float *ws) {
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
    int P = H * W, CKK = Co * K * K;
    size_t wsz = conv_transpose2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    int s2d = is_s2d_transposed(K, stride, pad);
    // chunk partials: dw (dw^T[Co K K, Ci] for s2d), then dbias
    size_t off_part = s2d ? s2d_ws_floats(Co, Ho, Wo, Ci) : round16((size_t)CKK * P), psize = round16((size_t)Ci * CKK + Co);
    int nt = 1;
#pragma omp parallel
    {
#pragma omp single
        nt = thread_count();
        float *col = ws + (size_t)thread_id() * wsz;
        S2dWs s = {0};
        float *wp = s2d ? conv_packed(ws, wsz, Co, Ci, K) : NULL;
        if (s2d) s = s2d_setup(col, NULL, NULL, Co, Ho, Wo, Ci);
        if (s2d && din) gemm_pack_a(0, Ci, CKK, w, CKK, wp); // the conv's w[Ci, Co K K]
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < GRAD_CHUNKS; c++) {
            int lo, hi;
            float *dwp = chunk_begin(ws, wsz, off_part, psize, c, nt, B, &lo, &hi), *dbp = dwp + (size_t)Ci * CKK;
            for (int b = lo; b < hi; b++) {
                if (s2d) { // the conv's weight gradient (x = dout, dy = in), then din += conv(dout)
                    const float *x = in + (size_t)b * Ci * P, *dy = dout + (size_t)b * Co * Ho * Wo;
                    bias_grad_add(dbp, dy, Co, Ho * Wo);
                    s2d_pack(s.xs, dy, Co, Ho, Wo); // the conv's x, once for both products
                    s2d_backward(&s, NULL, dwp, /* the conv's dy */ x, NULL, Co, Ho, Wo, Ci, 1);
                    if (din) s2d_forward(&s, din + (size_t)b * Ci * P, wp, NULL, Co, Ho, Wo, Ci, 1);
                    continue;
                }
                const float *x = in + (size_t)b * Ci * P;
                const float *dy = dout + (size_t)b * Co * Ho * Wo;
                bias_grad_add(dbp, dy, Co, Ho * Wo);
                im2col(col, dy, Co, Ho, Wo, K, stride, pad, H, W, P); // dcol[CKK, P]
                gemm(0, 1, Ci, CKK, P, x, P, col, P, dwp, CKK, 1);  // dw[Ci, CKK] += x dcol^T
                if (din) gemm(0, 0, Ci, P, CKK, w, CKK, col, P, din + (size_t)b * Ci * P, P, 1); // dx += w dcol
            }
        }
    }
    if (s2d) reduce_chunks_transposed(dw, ws, wsz, off_part, psize, CKK, Ci, nt);
    else reduce_chunks(dw, ws, wsz, off_part, psize, 0, (long)Ci * CKK, nt);
    reduce_chunks(dbias, ws, wsz, off_part, psize, (size_t)Ci * CKK, Co, nt);
}
