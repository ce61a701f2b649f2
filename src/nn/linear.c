// linear.c: the fully connected layer.
#define DDPM_NN_IMPL // defines the fast layers (see layers.h)
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "nn/reduce.h"

// ---------------------------------------------------------------------------------------
// Linear (small: the time embedding path), single-threaded

void linear_forward(float *out, const float *in, const float *w, const float *bias, int B, int I, int O) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++) out[(size_t)b * O + o] = bias ? bias[o] : 0.0f;
    gemm(0, 1, B, O, I, in, I, w, I, out, O, 1);
}

void linear_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int B, int I, int O) {
    gemm(1, 0, O, I, B, dout, O, in, I, dw, I, 1);              // dw[O,I] += dout^T in
    if (dbias)
        for (int b = 0; b < B; b++)
            for (int o = 0; o < O; o++) dbias[o] += dout[(size_t)b * O + o];
    if (din) gemm(0, 0, B, I, O, dout, O, w, I, din, I, 1);      // din[B,I] += dout w
}
