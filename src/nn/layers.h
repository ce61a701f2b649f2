// layers.h: the U-Net's layers, each a forward/backward pair on plain float arrays.
//
// Conventions (as in llm.c):
// - tensors are NCHW, row-major, float32; shapes are given in the comments;
// - backward functions ACCUMULATE (+=) into every gradient they are given (din, dw, db);
//   a NULL din means "not needed" (e.g. the network input);
// - `ws` is caller-provided scratch of at least nthreads * <layer>_ws_floats(...) floats,
//   where nthreads = omp_get_max_threads(); no layer allocates memory;
// - OpenMP inside a layer hands out images dynamically (a thread slowed down by the machine
//   takes fewer) and sums parameter gradients per fixed chunk of the batch, in chunk order:
//   the result depends only on the inputs, not on the schedule or the thread count.
#ifndef DDPM_LAYERS_H
#define DDPM_LAYERS_H

#include <stddef.h>

// ---- convolution: out[B,Co,Ho,Wo] (=, or += if accumulate) conv(in[B,Ci,H,W], w[Co,Ci,K,K]) + bias[Co]
// Ho = (H + 2 pad - K) / stride + 1 (likewise Wo). Used for 3x3/pad 1, 1x1, and 4x4/stride 2/pad 1.
size_t conv2d_ws_floats(int Ci, int H, int W, int Co, int K, int stride, int pad);
void conv2d_forward(float *out, const float *in, const float *w, const float *bias,
                    int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                    int accumulate, float *ws);
void conv2d_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int B, int Ci, int H, int W, int Co, int K, int stride,
                     int pad, float *ws);

// ---- transposed convolution: out[B,Co,Ho,Wo] = convT(in[B,Ci,H,W], w[Ci,Co,K,K]) + bias[Co]
// Ho = (H - 1) stride - 2 pad + K. (PyTorch ConvTranspose2d weight layout.)
size_t conv_transpose2d_ws_floats(int Ci, int H, int W, int Co, int K, int stride, int pad);
void conv_transpose2d_forward(float *out, const float *in, const float *w, const float *bias,
                              int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                              float *ws);
void conv_transpose2d_backward(float *din, float *dw, float *dbias, const float *dout,
                               const float *in, const float *w, int B, int Ci, int H, int W,
                               int Co, int K, int stride, int pad, float *ws);

// ---- GroupNorm(G groups, eps 1e-5, affine): out[B,C,HW]; saves mean[B,G], rstd[B,G]
void groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                       const float *beta, int B, int C, int HW, int G);
// the same, and act = SiLU(out) in the same pass (the U-Net's every GroupNorm is followed by SiLU);
// out may be NULL (then only act is written: silu_backward_groupnorm recomputes out)
void groupnorm_silu_forward(float *out, float *act, float *mean, float *rstd, const float *in,
                            const float *gamma, const float *beta, int B, int C, int HW, int G);
void groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *gamma, int B, int C, int HW, int G);

// ---- SiLU: out = x sigmoid(x), elementwise over n
void silu_forward(float *out, const float *in, long n);
void silu_backward(float *din, const float *dout, const float *in, long n);
// dgn += dact silu'(v) with v = GroupNorm(in) recomputed from mean / rstd / gamma / beta
void silu_backward_groupnorm(float *dgn, const float *dact, const float *in, const float *mean, const float *rstd,
                             const float *gamma, const float *beta, int B, int C, int HW, int G);
// both backwards of groupnorm_silu_forward: silu_backward_groupnorm into dgn (scratch: overwritten), then
// groupnorm_backward of dgn (the same values); sums: scratch of 2 B C floats
void groupnorm_silu_backward(float *din, float *dgamma, float *dbeta, float *dgn, float *sums, const float *dact,
                             const float *in, const float *mean, const float *rstd, const float *gamma,
                             const float *beta, int B, int C, int HW, int G);

// ---- Linear: out[B,O] = in[B,I] w[O,I]^T + bias[O]
void linear_forward(float *out, const float *in, const float *w, const float *bias, int B, int I, int O);
void linear_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int B, int I, int O);

// ---- multi-head self-attention over the N = H*W positions of a[B,C,N] (channel-major).
// out[B,C,N] += out_proj(MHA(a)), i.e. the caller puts the residual in `out` first.
// w_in[3C,C] = [Wq; Wk; Wv], b_in[3C], w_out[C,C], b_out[C]; head dim D = C / NH,
// scores scaled by 1/sqrt(D). Saves qkv[B,3C,N], o[B,C,N] (heads before out_proj) and the
// row log-sum-exp lse[B,NH,N]; the NxN probabilities are never stored (recomputed in backward).
size_t attention_ws_floats(int C, int N, int NH);
void attention_forward(float *out, float *qkv, float *o, float *lse, const float *a,
                       const float *w_in, const float *b_in, const float *w_out,
                       const float *b_out, int B, int C, int N, int NH, float *ws);
void attention_backward(float *da, float *dw_in, float *db_in, float *dw_out, float *db_out,
                        const float *dout, const float *a, const float *qkv, const float *o,
                        const float *lse, const float *w_in, const float *w_out, int B, int C,
                        int N, int NH, float *ws);

// ---- sinusoidal time embedding: out[B,D] = [sin(t/f_0..f_{D/2-1}), cos(t/f_0..)],
// f_i = 10000^(i/(D/2)) (64 sines then 64 cosines for D = 128, as the reference code); t may be
// fractional (the noise level of a continuous-time objective, see diffusion/objective.h)
void timestep_embedding(float *out, const float *t, int B, int D);

// ---- embedding lookup added to a vector: out[b,:] += table[idx[b],:] (table[K,D]);
// backward: dtable[idx[b],:] += dout[b,:] (accumulates; images with the same idx add up in order b)
void embedding_add_forward(float *out, const float *table, const int *idx, int B, int D);
void embedding_add_backward(float *dtable, const float *dout, const int *idx, int B, int D);

// ---- whole arrays, split among the threads: y = 0, y = x, y += x
void array_zero(float *y, long n);
void array_copy(float *y, const float *x, long n);
void array_add(float *y, const float *x, long n);

// ---- channel concat: out[B,Ca+Cb,HW] = [a[B,Ca,HW], b[B,Cb,HW]]
void concat_channels_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb, int HW);
void concat_channels_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb, int HW);

// ---- per-(image, channel) bias broadcast over positions: out[b,c,:] += bias[b,c]
void add_bias_bc_forward(float *out, const float *bias, int B, int C, int HW);
void add_bias_bc_backward(float *dbias, const float *dout, int B, int C, int HW);

// ---- mean squared error: loss = mean_i (pred_i - target_i)^2; dpred = 2 (pred - target) / n
// (the start of the backward pass: mse_backward WRITES dpred, the one backward that does not accumulate)
float mse_forward(const float *pred, const float *target, long n);
void mse_backward(float *dpred, const float *pred, const float *target, long n);

// ---- softmax cross-entropy over C classes (the classifier head of the judge):
// probs[B,C] = softmax(logits[B,C]) (max-subtracted); returns loss = mean_b -log probs[b, labels[b]],
// or 0 when labels is NULL (then it is just the softmax).
float softmax_cross_entropy_forward(float *probs, const float *logits, const int *labels, int B, int C);
// d loss / d logits[b,c] = (probs[b,c] - [c == labels[b]]) / B, ACCUMULATED into dlogits
void softmax_cross_entropy_backward(float *dlogits, const float *probs, const int *labels, int B, int C);

#if defined(DDPM_REF) && !defined(DDPM_NN_IMPL)
#include "nn/ref/alias.h" // make REF=1: every caller gets the plain reference layers
#endif

#endif
