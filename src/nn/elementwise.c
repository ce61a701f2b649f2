// elementwise.c: the time embedding, whole-array helpers, channel concat, broadcast bias.
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
// time embedding: f_i = 10000^(i/half), e = [sin(t/f_0..), cos(t/f_0..)] (computed in double)

void timestep_embedding(float *out, const float *t, int B, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            double arg = (double)t[b] / pow(10000.0, (double)i / (double)half);
            out[(size_t)b * D + i] = (float)sin(arg);
            out[(size_t)b * D + half + i] = (float)cos(arg);
        }
}

// ---------------------------------------------------------------------------------------
// embedding: out[b] += table[idx[b]]; dtable[idx[b]] += dout[b] (serial over b: a fixed order)

void embedding_add_forward(float *out, const float *table, const int *idx, int B, int D) {
    for (int b = 0; b < B; b++) {
        const float *e = table + (size_t)idx[b] * D;
        float *o = out + (size_t)b * D;
        for (int i = 0; i < D; i++) o[i] += e[i];
    }
}

void embedding_add_backward(float *dtable, const float *dout, const int *idx, int B, int D) {
    for (int b = 0; b < B; b++) {
        float *g = dtable + (size_t)idx[b] * D;
        const float *d = dout + (size_t)b * D;
        for (int i = 0; i < D; i++) g[i] += d[i];
    }
}

// ---------------------------------------------------------------------------------------

void array_zero(float *y, long n) {
#pragma omp parallel
    {
        long lo, hi;
        thread_span(n, &lo, &hi);
        if (hi > lo) memset(y + lo, 0, (size_t)(hi - lo) * sizeof(float));
    }
}

void array_copy(float *y, const float *x, long n) {
#pragma omp parallel
    {
        long lo, hi;
        thread_span(n, &lo, &hi);
        if (hi > lo) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
    }
}

void array_add(float *y, const float *x, long n) {
#pragma omp parallel
    {
        long lo, hi;
        thread_span(n, &lo, &hi);
        for (long i = lo; i < hi; i++) y[i] += x[i];
    }
}

void concat_channels_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb, int HW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < B; n++) {
        memcpy(out + (size_t)n * (Ca + Cb) * HW, a + (size_t)n * Ca * HW, (size_t)Ca * HW * sizeof(float));
        memcpy(out + ((size_t)n * (Ca + Cb) + Ca) * HW, b + (size_t)n * Cb * HW, (size_t)Cb * HW * sizeof(float));
    }
}

void concat_channels_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb, int HW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < B; n++) {
        const float *src = dout + (size_t)n * (Ca + Cb) * HW;
        float *pa = da + (size_t)n * Ca * HW, *pb = db + (size_t)n * Cb * HW;
        for (long i = 0; i < (long)Ca * HW; i++) pa[i] += src[i];
        for (long i = 0; i < (long)Cb * HW; i++) pb[i] += src[(long)Ca * HW + i];
    }
}

void add_bias_bc_forward(float *out, const float *bias, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        float v = bias[bc];
        float *o = out + (size_t)bc * HW;
        for (int p = 0; p < HW; p++) o[p] += v;
    }
}

void add_bias_bc_backward(float *dbias, const float *dout, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        dbias[bc] += sum16(dout + (size_t)bc * HW, HW);
    }
}
