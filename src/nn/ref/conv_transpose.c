// ref/conv_transpose.c: the reference 2-D transposed convolution (see ref.h), written as what it
// is: the adjoint of a convolution. Take the convolution C from [Co, Ho, Wo] to [Ci, H, W] with
// the same K, stride, pad and weights w[Ci,Co,K,K] (the layout of a conv from Co to Ci channels).
// Every input pixel of the transposed conv spreads over a K x K window of its output:
//   out[b,co,oh,ow] = bias[co] + sum_{ci,kh,kw} in[b,ci,ih,iw] w[ci,co,kh,kw],
//   oh = ih stride - pad + kh, ow = iw stride - pad + kw,
// which is exactly the data gradient of C at dy = in. So the forward is C's backward to its input,
// the data gradient is C's forward, and the weight gradient is C's, with the roles of input and
// output gradient swapped. No scratch.
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

void conv_transpose2d_forward_ref(float *out, const float *in, const float *w, const float *bias,
                                  int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                                  float *ws) {
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
    for (int b = 0; b < B; b++)
        for (int co = 0; co < Co; co++)
            for (int p = 0; p < Ho * Wo; p++) out[((size_t)b * Co + co) * Ho * Wo + p] = bias ? bias[co] : 0.0f;
    // out += C^T in: C's data gradient (C: Co channels of Ho x Wo in, Ci of H x W out)
    conv2d_backward_ref(out, NULL, NULL, in, NULL, w, B, Co, Ho, Wo, Ci, K, stride, pad, ws);
}

// With dy = dout:
//   dbias[co]       += sum_{b,oh,ow} dy[b,co,oh,ow]
//   din             += C dy                       (C's forward, no bias)
//   dw[ci,co,kh,kw] += sum_{b,ih,iw} in[b,ci,ih,iw] dy[b,co,oh,ow]  (C's weight gradient at
//                      input dy and output gradient in)
// din, dw and dbias may each be NULL (not needed).
void conv_transpose2d_backward_ref(float *din, float *dw, float *dbias, const float *dout,
                                   const float *in, const float *w, int B, int Ci, int H, int W,
                                   int Co, int K, int stride, int pad, float *ws) {
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
    if (din) conv2d_forward_ref(din, dout, w, NULL, B, Co, Ho, Wo, Ci, K, stride, pad, 1, ws);
    if (dw) conv2d_backward_ref(NULL, dw, NULL, in, dout, w, B, Co, Ho, Wo, Ci, K, stride, pad, ws);
}
