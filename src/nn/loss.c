// loss.c: mean squared error (the diffusion loss) and softmax cross-entropy (the judge's).
#define DDPM_NN_IMPL // defines the fast layers (see layers.h)
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "nn/reduce.h"


float mse_forward(const float *pred, const float *target, long n) {
    double s = 0.0;
    for (long i = 0; i < n; i++) { double d = (double)pred[i] - target[i]; s += d * d; }
    return (float)(s / n);
}

void mse_backward(float *dpred, const float *pred, const float *target, long n) {
    float k = 2.0f / (float)n;
    for (long i = 0; i < n; i++) dpred[i] = k * (pred[i] - target[i]);
}

// ---------------------------------------------------------------------------------------
// softmax cross-entropy: p = exp(z - max z) / sum exp(z - max z); loss_b = -log p[label_b]
// = log sum exp(z) - z[label] (computed from the log-sum-exp, so p -> 0 gives no log(0)).

float softmax_cross_entropy_forward(float *probs, const float *logits, const int *labels, int B, int C) {
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *p = probs + (size_t)b * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) if (z[c] > mx) mx = z[c];
        double sum = 0.0;
        for (int c = 0; c < C; c++) { p[c] = expf(z[c] - mx); sum += p[c]; }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) p[c] *= inv;
        if (labels) loss += log(sum) + mx - z[labels[b]];
    }
    return labels ? (float)(loss / B) : 0.0f;
}

void softmax_cross_entropy_backward(float *dlogits, const float *probs, const int *labels, int B, int C) {
    float k = 1.0f / (float)B;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            dlogits[(size_t)b * C + c] += k * (probs[(size_t)b * C + c] - (c == labels[b] ? 1.0f : 0.0f));
}

