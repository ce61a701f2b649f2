// ref/conv.c: the reference 2-D convolution, direct loops from the definition (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

// out[b,co,oh,ow] (=, or += if accumulate) bias[co]
//     + sum_{ci,kh,kw} in[b,ci,ih,iw] w[co,ci,kh,kw],   ih = oh stride - pad + kh, iw = ow stride - pad + kw
// (taps that fall in the zero padding, ih or iw outside the image, add nothing). Evaluated one
// output plane out[b,co] at a time, one weight w[co,ci,kh,kw] at a time: the plane gets
// w[co,ci,kh,kw] times the input plane in[b,ci] shifted by (kh - pad, kw - pad), subsampled by stride.
// No scratch.
void conv2d_forward_ref(float *out, const float *in, const float *w, const float *bias,
                        int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                        int accumulate, float *ws) {
    (void)ws;
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < Co; co++) {
            float *y = out + ((size_t)b * Co + co) * Ho * Wo; // out[b,co] [Ho,Wo]
            for (int p = 0; p < Ho * Wo; p++) y[p] = (accumulate ? y[p] : 0.0f) + (bias ? bias[co] : 0.0f);
            for (int ci = 0; ci < Ci; ci++) {
                const float *x = in + ((size_t)b * Ci + ci) * H * W; // in[b,ci] [H,W]
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        float wv = w[(((size_t)co * Ci + ci) * K + kh) * K + kw];
                        for (int oh = 0; oh < Ho; oh++) {
                            int ih = oh * stride - pad + kh;
                            if (ih < 0 || ih >= H) continue;
                            for (int ow = 0; ow < Wo; ow++) {
                                int iw = ow * stride - pad + kw;
                                if (iw < 0 || iw >= W) continue;
                                y[oh * Wo + ow] += wv * x[ih * W + iw];
                            }
                        }
                    }
            }
        }
}

// With dy = dout (the gradient of out):
//   dbias[co]         += sum_{b,oh,ow} dy[b,co,oh,ow]
//   dw[co,ci,kh,kw]   += sum_{b,oh,ow} dy[b,co,oh,ow] in[b,ci,oh stride - pad + kh, ow stride - pad + kw]
//   din[b,ci,ih,iw]   += sum of dy[b,co,oh,ow] w[co,ci,kh,kw] over every tap (co,kh,kw,oh,ow) of the
//                        forward that read in[b,ci,ih,iw]
// dbias and dw are summed first, then added once; din is the forward's loops run backwards
// (each weight sends dy[b,co] back to the input pixels it read), added term by term.
// din, dw and dbias may each be NULL (not needed). No scratch.
void conv2d_backward_ref(float *din, float *dw, float *dbias, const float *dout, const float *in,
                         const float *w, int B, int Ci, int H, int W, int Co, int K, int stride,
                         int pad, float *ws) {
    (void)ws;
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    if (dbias)
        for (int co = 0; co < Co; co++) {
            float sum = 0.0f;
            for (int b = 0; b < B; b++) {
                const float *dy = dout + ((size_t)b * Co + co) * Ho * Wo;
                for (int p = 0; p < Ho * Wo; p++) sum += dy[p];
            }
            dbias[co] += sum;
        }
    if (dw)
        for (int co = 0; co < Co; co++)
            for (int ci = 0; ci < Ci; ci++)
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        float sum = 0.0f;
                        for (int b = 0; b < B; b++) {
                            const float *dy = dout + ((size_t)b * Co + co) * Ho * Wo;
                            const float *x = in + ((size_t)b * Ci + ci) * H * W;
                            for (int oh = 0; oh < Ho; oh++) {
                                int ih = oh * stride - pad + kh;
                                if (ih < 0 || ih >= H) continue;
                                for (int ow = 0; ow < Wo; ow++) {
                                    int iw = ow * stride - pad + kw;
                                    if (iw < 0 || iw >= W) continue;
                                    sum += dy[oh * Wo + ow] * x[ih * W + iw];
                                }
                            }
                        }
                        dw[((co * Ci + ci) * K + kh) * K + kw] += sum;
                    }
    if (din)
        for (int b = 0; b < B; b++)
            for (int co = 0; co < Co; co++) {
                const float *dy = dout + ((size_t)b * Co + co) * Ho * Wo; // dout[b,co] [Ho,Wo]
                for (int ci = 0; ci < Ci; ci++) {
                    float *dx = din + ((size_t)b * Ci + ci) * H * W; // din[b,ci] [H,W]
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++) {
                            float wv = w[(((size_t)co * Ci + ci) * K + kh) * K + kw];
                            for (int oh = 0; oh < Ho; oh++) {
                                int ih = oh * stride - pad + kh;
                                if (ih < 0 || ih >= H) continue;
                                for (int ow = 0; ow < Wo; ow++) {
                                    int iw = ow * stride - pad + kw;
                                    if (iw < 0 || iw >= W) continue;
                                    dx[ih * W + iw] += wv * dy[oh * Wo + ow];
                                }
                            }
                        }
                }
            }
}
