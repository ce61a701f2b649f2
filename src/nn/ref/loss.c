// ref/loss.c: the reference losses: mean squared error and softmax cross-entropy (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

#include <math.h>

// loss = (1/n) sum_i (pred_i - target_i)^2 (summed in double)
float mse_forward_ref(const float *pred, const float *target, long n) {
    double sum = 0.0;
    for (long i = 0; i < n; i++) {
        double d = (double)pred[i] - target[i];
        sum += d * d;
    }
    return (float)(sum / n);
}

// dpred = d loss / d pred = 2 (pred - target) / n, WRITTEN (=): the root of the backward pass
void mse_backward_ref(float *dpred, const float *pred, const float *target, long n) {
    for (long i = 0; i < n; i++) dpred[i] = 2.0f * (pred[i] - target[i]) / (float)n;
}

// per row b: probs = softmax(z) = exp(z - max z) / sum_c exp(z_c - max z);
// loss = mean_b -log probs[b, labels[b]] = mean_b (log sum_c exp z_c - z[labels[b]]), or 0 without labels
float softmax_cross_entropy_forward_ref(float *probs, const float *logits, const int *labels, int B, int C) {
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *p = probs + (size_t)b * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < C; c++) sum += exp((double)z[c] - mx);
        for (int c = 0; c < C; c++) p[c] = (float)(exp((double)z[c] - mx) / sum);
        if (labels) loss += log(sum) + mx - z[labels[b]];
    }
    return labels ? (float)(loss / B) : 0.0f;
}

// dlogits[b,c] += (probs[b,c] - [c == labels[b]]) / B
void softmax_cross_entropy_backward_ref(float *dlogits, const float *probs, const int *labels, int B, int C) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float onehot = c == labels[b] ? 1.0f : 0.0f;
            dlogits[(size_t)b * C + c] += (probs[(size_t)b * C + c] - onehot) / (float)B;
        }
}
