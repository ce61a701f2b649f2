// ref.h: the plain reference twin of every layer of layers.h.
//
// Each <name>_ref has exactly the signature and the meaning of <name> in layers.h (shapes, NCHW
// float32, backward ACCUMULATES into din/dw/db, a NULL din means "not needed", ws is the scratch
// the fast layer's *_ws_floats sizes). They are plain single-threaded loops written from the
// definitions, in the spirit of llm.c's train_gpt2.c: direct convolutions (no im2col, no GEMM),
// GroupNorm from its mean and variance, attention with an explicit softmax row by row. No
// allocation; deterministic. They are the definition the fast layers are tested against
// (tests/test_layers.c), and `make REF=1` builds a ./ddpm whose model runs them (nn/ref/alias.h).
#ifndef DDPM_REF_H
#define DDPM_REF_H

#include <stddef.h>

// ---- convolution (ref/conv.c)
void conv2d_forward_ref(float *out, const float *in, const float *w, const float *bias,
                        int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                        int accumulate, float *ws);
void conv2d_backward_ref(float *din, float *dw, float *dbias, const float *dout, const float *in,
                         const float *w, int B, int Ci, int H, int W, int Co, int K, int stride,
                         int pad, float *ws);

// ---- transposed convolution (ref/conv_transpose.c)
void conv_transpose2d_forward_ref(float *out, const float *in, const float *w, const float *bias,
                                  int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                                  float *ws);
void conv_transpose2d_backward_ref(float *din, float *dw, float *dbias, const float *dout,
                                   const float *in, const float *w, int B, int Ci, int H, int W,
                                   int Co, int K, int stride, int pad, float *ws);

// ---- GroupNorm and SiLU (ref/norm.c)
void groupnorm_forward_ref(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                           const float *beta, int B, int C, int HW, int G);
void groupnorm_silu_forward_ref(float *out, float *act, float *mean, float *rstd, const float *in,
                                const float *gamma, const float *beta, int B, int C, int HW, int G);
void groupnorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *mean, const float *rstd,
                            const float *gamma, int B, int C, int HW, int G);
void silu_forward_ref(float *out, const float *in, long n);
void silu_backward_ref(float *din, const float *dout, const float *in, long n);
void silu_backward_groupnorm_ref(float *dgn, const float *dact, const float *in, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta, int B, int C,
                                 int HW, int G);
void groupnorm_silu_backward_ref(float *din, float *dgamma, float *dbeta, float *dgn, float *sums, const float *dact,
                                 const float *in, const float *mean, const float *rstd, const float *gamma,
                                 const float *beta, int B, int C, int HW, int G);

// ---- Linear (ref/linear.c)
void linear_forward_ref(float *out, const float *in, const float *w, const float *bias, int B, int I, int O);
void linear_backward_ref(float *din, float *dw, float *dbias, const float *dout, const float *in,
                         const float *w, int B, int I, int O);

// ---- multi-head self-attention (ref/attention.c)
void attention_forward_ref(float *out, float *qkv, float *o, float *lse, const float *a,
                           const float *w_in, const float *b_in, const float *w_out,
                           const float *b_out, int B, int C, int N, int NH, float *ws);
void attention_backward_ref(float *da, float *dw_in, float *db_in, float *dw_out, float *db_out,
                            const float *dout, const float *a, const float *qkv, const float *o,
                            const float *lse, const float *w_in, const float *w_out, int B, int C,
                            int N, int NH, float *ws);

// ---- time embedding, whole arrays, concat, broadcast bias (ref/elementwise.c)
void timestep_embedding_ref(float *out, const float *t, int B, int D);
void embedding_add_forward_ref(float *out, const float *table, const int *idx, int B, int D);
void embedding_add_backward_ref(float *dtable, const float *dout, const int *idx, int B, int D);
void array_zero_ref(float *y, long n);
void array_copy_ref(float *y, const float *x, long n);
void array_add_ref(float *y, const float *x, long n);
void concat_channels_forward_ref(float *out, const float *a, const float *b, int B, int Ca, int Cb, int HW);
void concat_channels_backward_ref(float *da, float *db, const float *dout, int B, int Ca, int Cb, int HW);
void add_bias_bc_forward_ref(float *out, const float *bias, int B, int C, int HW);
void add_bias_bc_backward_ref(float *dbias, const float *dout, int B, int C, int HW);

// ---- losses (ref/loss.c)
float mse_forward_ref(const float *pred, const float *target, long n);
void mse_backward_ref(float *dpred, const float *pred, const float *target, long n);
float softmax_cross_entropy_forward_ref(float *probs, const float *logits, const int *labels, int B, int C);
void softmax_cross_entropy_backward_ref(float *dlogits, const float *probs, const int *labels, int B, int C);

#endif
