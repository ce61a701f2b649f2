// norm_rows_body.h: the rows of GroupNorm and SiLU (norm_rows.h), compiled once per instruction
// set by tiles_<isa>.c, which defines TILE(name) (name_<isa>) and the target; norm_rows.c
// dispatches to them. The elementwise rows run 16 lanes, then 8, then one at a time: exp16, exp8
// and exp_approx give the same value, so each element's result is the same whichever loop takes it.
#include "kernels/norm_rows.h"

#include <math.h>

#include "kernels/vec.h"

void TILE(gn_mean_rstd)(const float *x, long n, float *mean, float *rstd) {
    v8f a = {0}, b = {0}; // lanes 0-7 and 8-15
    long i = 0;
    for (; i + 16 <= n; i += 16) { a += load8(x + i); b += load8(x + i + 8); }
    double s = 0.0;
    for (; i < n; i++) s += x[i];
    for (int j = 0; j < 8; j++) s += a[j];
    for (int j = 0; j < 8; j++) s += b[j];
    float m = (float)(s / n);
    a = (v8f){0};
    b = (v8f){0};
    for (i = 0; i + 16 <= n; i += 16) {
        v8f d0 = load8(x + i) - m, d1 = load8(x + i + 8) - m;
        a += d0 * d0;
        b += d1 * d1;
    }
    double ss = 0.0;
    for (; i < n; i++) { double d = x[i] - m; ss += d * d; }
    for (int j = 0; j < 8; j++) ss += a[j];
    for (int j = 0; j < 8; j++) ss += b[j];
    *mean = m;
    *rstd = (float)(1.0 / sqrt(ss / n + 1e-5));
}

void TILE(gn_affine_silu)(float *y, float *act, const float *x, int n, float a, float b) {
    if (y)
        for (int p = 0; p < n; p++) y[p] = x[p] * a + b;
    if (act) {
        int p = 0;
        for (; p + 16 <= n; p += 16) {
            v16f v = load16(x + p) * a + b, e = -v;
            exp16(&e);
            store16(act + p, v / (1.0f + e));
        }
        for (; p + 8 <= n; p += 8) {
            v8f v = load8(x + p) * a + b, e = -v;
            exp8(&e);
            store8(act + p, v / (1.0f + e));
        }
        for (; p < n; p++) {
            float v = x[p] * a + b;
            act[p] = v / (1.0f + exp_approx(-v));
        }
    }
}

void TILE(gn_dy_sums)(const float *dy, const float *x, float m, int n, float *s_dy, float *s_dyx) {
    v8f a0 = {0}, a1 = {0}, c0 = {0}, c1 = {0};
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        v8f d0 = load8(dy + p), d1 = load8(dy + p + 8);
        a0 += d0;
        a1 += d1;
        c0 += d0 * (load8(x + p) - m);
        c1 += d1 * (load8(x + p + 8) - m);
    }
    a0 += a1;
    c0 += c1;
    float sa = hsum8(&a0), sc = hsum8(&c0);
    for (; p < n; p++) { sa += dy[p]; sc += dy[p] * (x[p] - m); }
    *s_dy = sa;
    *s_dyx = sc;
}

void TILE(gn_dx_add)(float *dx, const float *dy, const float *x, int n, float r, float g, float m, float md,
                     float mdx) {
    for (int p = 0; p < n; p++) dx[p] += r * (dy[p] * g - md - (x[p] - m) * r * mdx);
}

void TILE(silu_affine_backward)(float *dv, const float *da, const float *x, int n, float a, float b, int acc) {
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        v16f v = load16(x + p) * a + b, e = -v;
        exp16(&e);
        v16f sg = 1.0f / (1.0f + e), d = load16(da + p) * sg * (1.0f + v * (1.0f - sg));
        store16(dv + p, acc ? load16(dv + p) + d : d);
    }
    for (; p + 8 <= n; p += 8) {
        v8f v = load8(x + p) * a + b, e = -v;
        exp8(&e);
        v8f sg = 1.0f / (1.0f + e), d = load8(da + p) * sg * (1.0f + v * (1.0f - sg));
        store8(dv + p, acc ? load8(dv + p) + d : d);
    }
    for (; p < n; p++) {
        float v = x[p] * a + b, sg = 1.0f / (1.0f + exp_approx(-v));
        float d = da[p] * sg * (1.0f + v * (1.0f - sg));
        dv[p] = acc ? dv[p] + d : d;
    }
}

void TILE(silu_rows)(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i] / (1.0f + exp_approx(-x[i]));
}

void TILE(silu_backward_rows)(float *dx, const float *dy, const float *x, long n) {
    for (long i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_approx(-x[i]));
        dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}
