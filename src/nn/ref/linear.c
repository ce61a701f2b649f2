// ref/linear.c: the reference fully connected layer (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

// out[b,o] = bias[o] + sum_i in[b,i] w[o,i]   (bias may be NULL)
void linear_forward_ref(float *out, const float *in, const float *w, const float *bias, int B, int I, int O) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++) {
            float sum = bias ? bias[o] : 0.0f;
            for (int i = 0; i < I; i++) sum += in[(size_t)b * I + i] * w[(size_t)o * I + i];
            out[(size_t)b * O + o] = sum;
        }
}

// With dy = dout, each gradient summed first, then added (+=) once:
//   din[b,i] += sum_o dy[b,o] w[o,i],   dw[o,i] += sum_b dy[b,o] in[b,i],   dbias[o] += sum_b dy[b,o]
// din and dbias may be NULL (not needed).
void linear_backward_ref(float *din, float *dw, float *dbias, const float *dout, const float *in,
                         const float *w, int B, int I, int O) {
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++) {
            float sum = 0.0f;
            for (int b = 0; b < B; b++) sum += dout[(size_t)b * O + o] * in[(size_t)b * I + i];
            dw[(size_t)o * I + i] += sum;
        }
    if (dbias)
        for (int o = 0; o < O; o++) {
            float sum = 0.0f;
            for (int b = 0; b < B; b++) sum += dout[(size_t)b * O + o];
            dbias[o] += sum;
        }
    if (din)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < I; i++) {
                float sum = 0.0f;
                for (int o = 0; o < O; o++) sum += dout[(size_t)b * O + o] * w[(size_t)o * I + i];
                din[(size_t)b * I + i] += sum;
            }
}
