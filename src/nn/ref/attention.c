// ref/attention.c: the reference multi-head self-attention, with an explicit softmax row by
// row (see ref.h).
#define DDPM_NN_IMPL // a layer definition: no aliasing (see layers.h)
#include "nn/layers.h"
#include "nn/ref/ref.h"

#include <assert.h>
#include <math.h>

// One image is a[C,N], channel-major (channel c at position n is a[c N + n]). With NH heads of
// D = C / NH channels and scale = 1 / sqrt(D):
//   qkv = w_in a + b_in                  [3C,N]: rows [0,C) are Q, [C,2C) K, [2C,3C) V,
//                                        head h owns rows h D .. h D + D - 1 of each
//   per head, for each query i:
//     s_j   = scale sum_d Q[d,i] K[d,j]  the scores of row i, j = 0 .. N-1
//     lse_i = log sum_j exp(s_j)         (as m + log sum_j exp(s_j - m), m = max_j s_j)
//     P_ij  = exp(s_j - lse_i)           the softmax of the row
//     o[d,i] = sum_j P_ij V[d,j]         (o: the heads side by side, [C,N])
//   out += w_out o + b_out               (the caller put the residual in out)
// The forward saves qkv, o and lse; P is never stored: the backward recomputes it from lse.

// Scratch: the forward uses N + C N floats of ws (a row of scores, the out projection of one
// image), the backward 4 C N + 2 N (dO and dqkv of one image, a row of P and of dP). Callers size
// ws with attention_ws_floats(C, N, NH), which is at least that: the fast layer's own dO, dqkv and
// score blocks take 4 C N + 2 R N, R >= 1 (asserted below).
static float *scratch(float *ws, int C, int N, int NH, size_t need) {
    assert(attention_ws_floats(C, N, NH) >= need);
    (void)C; (void)N; (void)NH; (void)need;
    return ws;
}

// sum_j x[j] y[j], j < n, as 8 partial sums (independent chains, which the compiler vectorises;
// a float sum in another order differs by rounding only)
static float dot(const float *x, const float *y, int n) {
    float s8[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) s8[k] += x[j + k] * y[j + k];
    float sum = 0.0f;
    for (; j < n; j++) sum += x[j] * y[j];
    for (int k = 0; k < 8; k++) sum += s8[k];
    return sum;
}

// y[r,:] = bias[r] + sum_c w[r,c] x[c,:], r < R (x [Cin,N], y [R,N]): a 1x1 convolution
static void project(float *y, const float *w, const float *bias, const float *x, int R, int Cin, int N) {
    for (int r = 0; r < R; r++) {
        float *yr = y + (size_t)r * N;
        for (int n = 0; n < N; n++) yr[n] = bias[r];
        for (int c = 0; c < Cin; c++) {
            float wrc = w[(size_t)r * Cin + c];
            for (int n = 0; n < N; n++) yr[n] += wrc * x[(size_t)c * N + n];
        }
    }
}

// s[j] = scale sum_d X[d,i] Y[d,j], j < N: row i of scale X^T Y (X, Y: [D,N])
static void row_products(float *s, const float *X, const float *Y, int i, int D, int N, float scale) {
    for (int j = 0; j < N; j++) s[j] = 0.0f;
    for (int d = 0; d < D; d++) {
        float x = X[(size_t)d * N + i];
        for (int j = 0; j < N; j++) s[j] += x * Y[(size_t)d * N + j];
    }
    for (int j = 0; j < N; j++) s[j] *= scale;
}

void attention_forward_ref(float *out, float *qkv, float *o, float *lse, const float *a,
                           const float *w_in, const float *b_in, const float *w_out,
                           const float *b_out, int B, int C, int N, int NH, float *ws) {
    int D = C / NH;
    float scale = 1.0f / sqrtf((float)D);
    size_t CN = (size_t)C * N;
    float *p = scratch(ws, C, N, NH, (size_t)N + CN); // the scores, then the softmax, of one query row [N]
    float *y = p + N;                                  // w_out o + b_out of one image [C,N]
    for (int b = 0; b < B; b++) {
        const float *ab = a + (size_t)b * CN;
        float *qb = qkv + (size_t)b * 3 * CN, *ob = o + (size_t)b * CN, *yb = out + (size_t)b * CN;
        project(qb, w_in, b_in, ab, 3 * C, C, N); // qkv = w_in a + b_in
        for (int h = 0; h < NH; h++) {
            const float *Q = qb + (size_t)h * D * N, *K = qb + (size_t)(C + h * D) * N,
                        *V = qb + (size_t)(2 * C + h * D) * N;
            float *O = ob + (size_t)h * D * N, *L = lse + ((size_t)b * NH + h) * N;
            for (int i = 0; i < N; i++) {
                row_products(p, Q, K, i, D, N, scale); // p = s
                float m = p[0];
                for (int j = 1; j < N; j++) m = p[j] > m ? p[j] : m;
                float sum = 0.0f;
                for (int j = 0; j < N; j++) {
                    p[j] = expf(p[j] - m);
                    sum += p[j];
                }
                L[i] = m + logf(sum);
                for (int j = 0; j < N; j++) p[j] /= sum; // p = P_i. = exp(s - lse_i)
                for (int d = 0; d < D; d++) O[(size_t)d * N + i] = dot(p, V + (size_t)d * N, N);
            }
        }
        project(y, w_out, b_out, ob, C, C, N); // out += w_out o + b_out
        for (size_t k = 0; k < CN; k++) yb[k] += y[k];
    }
}

// Image by image, with dy = dout (parameter gradients are added once per image):
//   out projection:  dw_out += dy o^T,  db_out += sum_n dy[:,n],  dO = w_out^T dy   (the gradient of o)
//   per head, query i, with P_ij = exp(s_j - lse_i) recomputed:
//     dV[d,j] += P_ij dO[d,i]                          (from o[d,i] = sum_j P_ij V[d,j])
//     dP_j  = sum_d dO[d,i] V[d,j]
//     dS_j  = P_ij (dP_j - sum_k P_ik dP_k)            (the softmax backward: dS_j = d loss / d s_j)
//     dQ[d,i] = scale sum_j dS_j K[d,j],   dK[d,j] += scale dS_j Q[d,i]
//   in projection:   dw_in += dqkv a^T,  db_in += sum_n dqkv[:,n],  da += w_in^T dqkv
// da, dw_in, db_in, dw_out, db_out may each be NULL (not needed).
void attention_backward_ref(float *da, float *dw_in, float *db_in, float *dw_out, float *db_out,
                            const float *dout, const float *a, const float *qkv, const float *o,
                            const float *lse, const float *w_in, const float *w_out, int B, int C,
                            int N, int NH, float *ws) {
    int D = C / NH;
    float scale = 1.0f / sqrtf((float)D);
    size_t CN = (size_t)C * N;
    float *dO = scratch(ws, C, N, NH, 4 * CN + 2 * (size_t)N); // [C,N]; at the end w_in^T dqkv
    float *dqkv = dO + CN;                                      // [3C,N]
    float *p = dqkv + 3 * CN, *dp = p + N;                      // one row of P, of dP (then dS)
    for (int b = 0; b < B; b++) {
        const float *ab = a + (size_t)b * CN, *qb = qkv + (size_t)b * 3 * CN, *ob = o + (size_t)b * CN;
        const float *dy = dout + (size_t)b * CN;

        // out projection
        for (int c = 0; c < C; c++) {
            const float *dyc = dy + (size_t)c * N;
            if (dw_out)
                for (int k = 0; k < C; k++) dw_out[(size_t)c * C + k] += dot(dyc, ob + (size_t)k * N, N);
            if (db_out) {
                float sum = 0.0f;
                for (int n = 0; n < N; n++) sum += dyc[n];
                db_out[c] += sum;
            }
        }
        for (size_t k = 0; k < CN; k++) dO[k] = 0.0f;
        for (int c = 0; c < C; c++)
            for (int k = 0; k < C; k++) {
                float wck = w_out[(size_t)c * C + k];
                for (int n = 0; n < N; n++) dO[(size_t)k * N + n] += wck * dy[(size_t)c * N + n];
            }

        // the heads: dqkv = [dQ; dK; dV]
        for (size_t k = 0; k < 3 * CN; k++) dqkv[k] = 0.0f;
        for (int h = 0; h < NH; h++) {
            const float *Q = qb + (size_t)h * D * N, *K = qb + (size_t)(C + h * D) * N,
                        *V = qb + (size_t)(2 * C + h * D) * N, *dOh = dO + (size_t)h * D * N;
            const float *L = lse + ((size_t)b * NH + h) * N;
            float *dQ = dqkv + (size_t)h * D * N, *dK = dqkv + (size_t)(C + h * D) * N,
                  *dV = dqkv + (size_t)(2 * C + h * D) * N;
            for (int i = 0; i < N; i++) {
                row_products(p, Q, K, i, D, N, scale);
                for (int j = 0; j < N; j++) p[j] = expf(p[j] - L[i]); // P_ij
                row_products(dp, dOh, V, i, D, N, 1.0f);              // dP_j
                float pdp = dot(p, dp, N);                            // sum_k P_ik dP_k
                for (int j = 0; j < N; j++) dp[j] = p[j] * (dp[j] - pdp); // dS_j
                for (int d = 0; d < D; d++) {
                    dQ[(size_t)d * N + i] = scale * dot(dp, K + (size_t)d * N, N);
                    float q = scale * Q[(size_t)d * N + i], g = dOh[(size_t)d * N + i];
                    for (int j = 0; j < N; j++) {
                        dK[(size_t)d * N + j] += q * dp[j];
                        dV[(size_t)d * N + j] += g * p[j];
                    }
                }
            }
        }

        // in projection
        for (int r = 0; r < 3 * C; r++) {
            const float *g = dqkv + (size_t)r * N;
            if (dw_in)
                for (int c = 0; c < C; c++) dw_in[(size_t)r * C + c] += dot(g, ab + (size_t)c * N, N);
            if (db_in) {
                float sum = 0.0f;
                for (int n = 0; n < N; n++) sum += g[n];
                db_in[r] += sum;
            }
        }
        if (da) { // w_in^T dqkv into dO's space (no longer needed), then da += it
            float *t = dO;
            for (size_t k = 0; k < CN; k++) t[k] = 0.0f;
            for (int r = 0; r < 3 * C; r++)
                for (int c = 0; c < C; c++) {
                    float wrc = w_in[(size_t)r * C + c];
                    for (int n = 0; n < N; n++) t[(size_t)c * N + n] += wrc * dqkv[(size_t)r * N + n];
                }
            for (size_t k = 0; k < CN; k++) da[(size_t)b * CN + k] += t[k];
        }
    }
}
