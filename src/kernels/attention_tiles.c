// attention_tiles.c: the attention tiles of the active instruction set (isa.h; the vectorised ones
// in attention_tiles_body.h, compiled per instruction set), and the layout helpers they share.
#include "kernels/attention_tiles.h"

#include <math.h>
#include <string.h>

#include "kernels/tiles_variants.h"

// a [D, N] array as panels of ATT_J keys: t[(j / ATT_J) D ATT_J + d ATT_J + j % ATT_J], the last
// panel zero-padded: the flash kernels then read one contiguous stream of D x ATT_J per step
void key_panels(float *t, const float *X, int D, int N) {
    for (int j0 = 0; j0 < N; j0 += ATT_J, t += (size_t)D * ATT_J) {
        int n = N - j0 < ATT_J ? N - j0 : ATT_J;
        for (int d = 0; d < D; d++) {
            memcpy(t + d * ATT_J, X + (size_t)d * N + j0, n * sizeof(float));
            for (int j = n; j < ATT_J; j++) t[d * ATT_J + j] = 0.0f;
        }
    }
}

int is_flash(int D) { return D % 16 == 0 || D <= NARROW_D; }

void flash_write_rows(float *O, float *lse, const float *ob, const float *l, const float *m, int D, int N, int i,
                      int rows) {
    for (int r = 0; r < rows; r++) {
        float inv = 1.0f / l[r];
        for (int d = 0; d < D; d++) O[(size_t)d * N + i + r] = ob[r * D + d] * inv;
        lse[i + r] = (m[r] + log2f(l[r])) * 0.693147180559945309f; // ln 2
    }
}
// scratch of the flash kernels for heads up to C wide: tiles P and dS [FLASH_R][16], q, scaled q,
// dO and O or dQ [FLASH_R][D], then K^T, dK^T, dV^T [16 np][D] of one head (backward; narrow heads: dK
// and dV in key-panel layout); or the bf16 kernels' scratch (flash_bf16_ws_floats) if larger
size_t flash_ws_floats(int C, int N) {
    size_t fp32 = 2 * FLASH_R * 16 + 4 * (size_t)FLASH_R * C + 3 * (size_t)(N + 15) / 16 * 16 * C;
    size_t bf16 = flash_bf16_ws_floats(C, N);
    return fp32 > bf16 ? fp32 : bf16;
}

// xt[n][d] = a X[d][n] (a [D, N] array transposed, scaled)
void transpose_scaled(float *xt, const float *X, int D, int N, float a) {
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) xt[(size_t)n * D + d] = X[(size_t)d * N + n] * a;
}


float exp_row_sum(float *s, int n, float m) { return TILES_PICK(exp_row_sum)(s, n, m); }
float max_row(const float *s, int n) { return TILES_PICK(max_row)(s, n); }
void p_ds_row(float *s, float *dp, int n, float scale, float l, float di) { TILES_PICK(p_ds_row)(s, dp, n, scale, l, di); }

void flash_forward(float *O, float *lse, const float *Q, const float *kp, const float *vx, int D, int N, float scale,
                   float *fl) {
    TILES_PICK(flash_forward)(O, lse, Q, kp, vx, D, N, scale, fl);
}

void flash_backward(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *dO, const float *lse,
                    const float *di, const float *kp, const float *vp, int D, int N, float scale, float *fl) {
    TILES_PICK(flash_backward)(dQ, dK, dV, Q, K, dO, lse, di, kp, vp, D, N, scale, fl);
}
