// ref/conv_transpose.c: the reference 2-D transposed convolution, direct loops (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

// Every input pixel spreads its values over a K x K window of the output (weights w[Ci,Co,K,K]):
//   out[b,co,oh,ow] = bias[co] + sum_{ci,kh,kw} in[b,ci,ih,iw] w[ci,co,kh,kw]
// over the (ih, iw) with oh = ih stride - pad + kh, ow = iw stride - pad + kw. Evaluated one
// output plane out[b,co] at a time, one weight w[ci,co,kh,kw] at a time: the input plane in[b,ci]
// times w[ci,co,kh,kw] is added at every stride-th output pixel from (kh - pad, kw - pad). No scratch.
void conv_transpose2d_forward_ref(float *out, const float *in, const float *w, const float *bias,
                                  int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                                  float *ws) {
    (void)ws;
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < Co; co++) {
            float *y = out + ((size_t)b * Co + co) * Ho * Wo; // out[b,co] [Ho,Wo]
            for (int p = 0; p < Ho * Wo; p++) y[p] = bias ? bias[co] : 0.0f;
            for (int ci = 0; ci < Ci; ci++) {
                const float *x = in + ((size_t)b * Ci + ci) * H * W; // in[b,ci] [H,W]
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        float wv = w[(((size_t)ci * Co + co) * K + kh) * K + kw];
                        for (int ih = 0; ih < H; ih++) {
                            int oh = ih * stride - pad + kh;
                            if (oh < 0 || oh >= Ho) continue;
                            for (int iw = 0; iw < W; iw++) {
                                int ow = iw * stride - pad + kw;
                                if (ow < 0 || ow >= Wo) continue;
                                y[oh * Wo + ow] += wv * x[ih * W + iw];
                            }
                        }
                    }
            }
        }
}

// With dy = dout, oh = ih stride - pad + kh and ow = iw stride - pad + kw (inside the output):
//   dbias[co]       += sum_{b,oh,ow} dy[b,co,oh,ow]
//   dw[ci,co,kh,kw] += sum_{b,ih,iw} in[b,ci,ih,iw] dy[b,co,oh,ow]
//   din[b,ci,ih,iw] += sum_{co,kh,kw} dy[b,co,oh,ow] w[ci,co,kh,kw]   (a plain convolution of dy)
// dbias and dw are summed first, then added once; din is the forward's loops run backwards (each
// weight reads back dy[b,co] at the output pixels it wrote), added term by term.
// din, dw and dbias may each be NULL (not needed). No scratch.
void conv_transpose2d_backward_ref(float *din, float *dw, float *dbias, const float *dout,
                                   const float *in, const float *w, int B, int Ci, int H, int W,
                                   int Co, int K, int stride, int pad, float *ws) {
    (void)ws;
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
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
        for (int ci = 0; ci < Ci; ci++)
            for (int co = 0; co < Co; co++)
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        float sum = 0.0f;
                        for (int b = 0; b < B; b++) {
                            const float *x = in + ((size_t)b * Ci + ci) * H * W;
                            const float *dy = dout + ((size_t)b * Co + co) * Ho * Wo;
                            for (int ih = 0; ih < H; ih++) {
                                int oh = ih * stride - pad + kh;
                                if (oh < 0 || oh >= Ho) continue;
                                for (int iw = 0; iw < W; iw++) {
                                    int ow = iw * stride - pad + kw;
                                    if (ow < 0 || ow >= Wo) continue;
                                    sum += x[ih * W + iw] * dy[oh * Wo + ow];
                                }
                            }
                        }
                        dw[((ci * Co + co) * K + kh) * K + kw] += sum;
                    }
    if (din)
        for (int b = 0; b < B; b++)
            for (int co = 0; co < Co; co++) {
                const float *dy = dout + ((size_t)b * Co + co) * Ho * Wo; // dout[b,co] [Ho,Wo]
                for (int ci = 0; ci < Ci; ci++) {
                    float *dx = din + ((size_t)b * Ci + ci) * H * W; // din[b,ci] [H,W]
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++) {
                            float wv = w[(((size_t)ci * Co + co) * K + kh) * K + kw];
                            for (int ih = 0; ih < H; ih++) {
                                int oh = ih * stride - pad + kh;
                                if (oh < 0 || oh >= Ho) continue;
                                for (int iw = 0; iw < W; iw++) {
                                    int ow = iw * stride - pad + kw;
                                    if (ow < 0 || ow >= Wo) continue;
                                    dx[ih * W + iw] += wv * dy[oh * Wo + ow];
                                }
                            }
                        }
                }
            }
}
