// ref/elementwise.c: the reference time embedding, whole-array helpers, channel concat and
// broadcast bias (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

#include <math.h>

// out[b] = [sin(t/f_0) .. sin(t/f_{half-1}), cos(t/f_0) .. cos(t/f_{half-1})],
// f_i = 10000^(i / half), half = D / 2 (evaluated in double)
void timestep_embedding_ref(float *out, const float *t, int B, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            double arg = (double)t[b] / pow(10000.0, (double)i / (double)half);
            out[(size_t)b * D + i] = (float)sin(arg);
            out[(size_t)b * D + half + i] = (float)cos(arg);
        }
}

// out[b, :] += table[idx[b], :]
void embedding_add_forward_ref(float *out, const float *table, const int *idx, int B, int D) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) out[(size_t)b * D + i] += table[(size_t)idx[b] * D + i];
}

// dtable[idx[b], :] += dout[b, :]
void embedding_add_backward_ref(float *dtable, const float *dout, const int *idx, int B, int D) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) dtable[(size_t)idx[b] * D + i] += dout[(size_t)b * D + i];
}

// y = 0, y = x, y += x
void array_zero_ref(float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = 0.0f;
}

void array_copy_ref(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i];
}

void array_add_ref(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}

// out[b] = [a[b] (Ca channels), b[b] (Cb channels)], each channel HW values
void concat_channels_forward_ref(float *out, const float *a, const float *b, int B, int Ca, int Cb, int HW) {
    size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW; // values per image of a and b
    for (int n = 0; n < B; n++) {
        float *y = out + (size_t)n * (na + nb);
        for (size_t i = 0; i < na; i++) y[i] = a[n * na + i];
        for (size_t i = 0; i < nb; i++) y[na + i] = b[n * nb + i];
    }
}

// da += the first Ca channels of dout, db += the last Cb
void concat_channels_backward_ref(float *da, float *db, const float *dout, int B, int Ca, int Cb, int HW) {
    size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
    for (int n = 0; n < B; n++) {
        const float *dy = dout + (size_t)n * (na + nb);
        for (size_t i = 0; i < na; i++) da[n * na + i] += dy[i];
        for (size_t i = 0; i < nb; i++) db[n * nb + i] += dy[na + i];
    }
}

// out[b,c,p] += bias[b,c]
void add_bias_bc_forward_ref(float *out, const float *bias, int B, int C, int HW) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++)
        for (int p = 0; p < HW; p++) out[bc * HW + p] += bias[bc];
}

// dbias[b,c] += sum_p dout[b,c,p]
void add_bias_bc_backward_ref(float *dbias, const float *dout, int B, int C, int HW) {
    for (size_t bc = 0; bc < (size_t)B * C; bc++) {
        float sum = 0.0f;
        for (int p = 0; p < HW; p++) sum += dout[bc * HW + p];
        dbias[bc] += sum;
    }
}
