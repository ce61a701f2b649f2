// attention.c: multi-head self-attention, forward and backward.
#define DDPM_NN_IMPL // defines the fast layers (see layers.h)
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/vec.h"
#include "nn/reduce.h"
#include "kernels/attention_tiles.h"
#include "nn/conv_lowering.h"

// ---------------------------------------------------------------------------------------
// Multi-head self-attention, per image and head h (D = C/NH, rows of qkv are [q; k; v]):
//   S = scale Q^T K [N,N], P = softmax_rows(S), O = V P^T [D,N]; out += w_out O + b_out.
// The forward keeps lse_i = log sum_j exp(S_ij); the backward recomputes P_ij = exp(S_ij - lse_i),
// dS = P o (dP - rowsum(dO o O)) with dP = dO^T V, dQ = scale K dS^T, dK = scale Q dS, dV = dO P^T.
// Heads whose width is a multiple of 16 or at most NARROW_D run the fused (flash) kernels below;
// in bf16 precision those of a multiple of 16 or even and at most NARROW_D run their bf16 twins
// (flash_forward_bf16).
// Other heads process queries in blocks of ATT_R rows with GEMMs, so only an ATT_R x N block of
// S exists at a time: ATT_R = 32 keeps the backward's P and dS blocks (2 x 32 x 784 floats at
// 28x28) in L2, measured 12% faster than 128.


typedef struct { size_t dqkv, S, dP, T, inv, mx, di, kp, vp, fl, grp, part, dwin, dbin, dwout, dbout, psize, total; } AttnWs;

static AttnWs attention_ws_layout(int C, int N) {
    size_t R = N < ATT_R ? N : ATT_R;
    AttnWs w;
    w.dqkv = (size_t)C * N;
    w.S = w.dqkv + 3 * (size_t)C * N;
    w.dP = w.S + R * N;
    w.T = w.dP + R * N;
    w.inv = w.T + R * C;
    w.mx = w.inv + R;
    w.di = w.mx + R;
    w.kp = w.di + N;
    w.vp = w.kp + (size_t)C * (N + ATT_J);
    w.fl = round16(w.vp + (size_t)C * (N + ATT_J));
    // grouped projections (attention_group): 4 C G N floats (forward), 9 C G N (backward)
    w.grp = round16(w.fl + flash_ws_floats(C, N));
    size_t G = N <= GROUP_MAX_P ? (size_t)group_images(N) : 1;
    // one chunk's partial: dw_in | db_in | dw_out | db_out at these offsets; GRAD_CHUNKS slots
    w.part = round16(w.grp + (G > 1 ? 9 * (size_t)C * G * N : 0));
    w.dwin = 0;
    w.dbin = w.dwin + 3 * (size_t)C * C;
    w.dwout = w.dbin + 3 * (size_t)C;
    w.dbout = w.dwout + (size_t)C * C;
    w.psize = round16(w.dbout + C);
    w.total = w.part + GRAD_CHUNKS * w.psize;
    return w;
}

size_t attention_ws_floats(int C, int N, int NH) {
    (void)NH;
    return attention_ws_layout(C, N).total;
}

// Small images (N <= GROUP_MAX_P, the 7x7 level) project G = group_images(N) images side by side
// per GEMM, as the grouped convs do: at N = 49 a GEMM per image would leave most of its last
// 16-column panel empty and repack w for few columns. g[r][j N + i] = x_{b0+j}[r][i], ld = n N.
static int attention_group(int N) { return N <= GROUP_MAX_P ? group_images(N) : 1; }

static void gather_images(float *g, const float *x, int b0, int n, int R, int N) {
    size_t ld = (size_t)n * N;
    for (int j = 0; j < n; j++)
        for (int r = 0; r < R; r++)
            memcpy(g + (size_t)r * ld + (size_t)j * N, x + ((size_t)(b0 + j) * R + r) * N, N * sizeof(float));
}

// the inverse of gather_images: x_{b0+j}[r][i] (+)= g[r][j N + i]
static void scatter_images(float *x, const float *g, int b0, int n, int R, int N, int accumulate) {
    size_t ld = (size_t)n * N;
    for (int j = 0; j < n; j++)
        for (int r = 0; r < R; r++) {
            float *d = x + ((size_t)(b0 + j) * R + r) * N;
            const float *src = g + (size_t)r * ld + (size_t)j * N;
            if (accumulate) for (int i = 0; i < N; i++) d[i] += src[i];
            else memcpy(d, src, N * sizeof(float));
        }
}

// the heads of one image: O [C,N] and lse [NH,N] from qkv [3C,N] (mine: the thread's workspace)
static void attention_heads_forward(float *ob, float *lb, const float *qb, float *mine, const AttnWs *L, int C,
                                    int N, int NH) {
    int D = C / NH;
    float scale = 1.0f / sqrtf((float)D);
    float *S = mine + L->S, *T = mine + L->T, *inv = mine + L->inv, *mx = mine + L->mx, *kp = mine + L->kp;
    for (int h = 0; h < NH; h++) {
        const float *Q = qb + (size_t)h * D * N, *K = qb + (size_t)(C + h * D) * N,
                    *V = qb + (size_t)(2 * C + h * D) * N;
        float *Oh = ob + (size_t)h * D * N;
        if (gemm_precision() == GEMM_BF16 && is_flash_bf16(D)) {
            flash_forward_bf16(Oh, lb + (size_t)h * N, Q, K, V, D, N, scale, mine + L->fl);
            continue;
        }
        if (is_flash(D)) { // K in panels; V^T (wide heads, zero rows up to a multiple of 16) or in panels
            float *vx = mine + L->vp;
            int np = (N + 15) / 16;
            key_panels(kp, K, D, N);
            if (D <= NARROW_D) key_panels(vx, V, D, N);
            else {
                transpose_scaled(vx, V, D, N, 1.0f);
                memset(vx + (size_t)N * D, 0, (size_t)(np * 16 - N) * D * sizeof(float));
            }
            flash_forward(Oh, lb + (size_t)h * N, Q, kp, vx, D, N, scale, mine + L->fl);
            continue;
        }
        // (scale Q)^T and V^T (in the backward's dO region)
        float *qst = mine, *vt = mine + (size_t)N * D;
        transpose_scaled(qst, Q, D, N, scale);
        transpose_scaled(vt, V, D, N, 1.0f);
        for (int i0 = 0; i0 < N; i0 += ATT_R) {
            int R = N - i0 < ATT_R ? N - i0 : ATT_R;
            gemm(0, 0, R, N, D, qst + (size_t)i0 * D, D, K, N, S, N, 0); // S = (scale Q_blk)^T K
            for (int i = 0; i < R; i++) mx[i] = max_row(S + (size_t)i * N, N);
            for (int i = 0; i < R; i++) { // S <- exp(S - max), unnormalised
                float sum = exp_row_sum(S + (size_t)i * N, N, mx[i]);
                inv[i] = 1.0f / sum;
                lb[(size_t)h * N + i0 + i] = mx[i] + logf(sum);
            }
            // O[:, blk]^T = P V^T = (S V^T) / rowsum
            gemm(0, 0, R, D, N, S, N, vt, D, T, D, 0);
            for (int d = 0; d < D; d++)
                for (int i = 0; i < R; i++) Oh[(size_t)d * N + i0 + i] = T[(size_t)i * D + d] * inv[i];
        }
    }
}

void attention_forward(float *out, float *qkv, float *o, float *lse, const float *a,
                       const float *w_in, const float *b_in, const float *w_out,
                       const float *b_out, int B, int C, int N, int NH, float *ws) {
    AttnWs L = attention_ws_layout(C, N);
    int G = attention_group(N);
#pragma omp parallel
    {
        float *mine = ws + (size_t)thread_id() * L.total;
        // qkv[3C,N] = w_in a + b_in, G images per GEMM
#pragma omp for schedule(dynamic, 1)
        for (int b0 = 0; b0 < B; b0 += G) {
            int n = B - b0 < G ? B - b0 : G;
            size_t ld = (size_t)n * N;
            const float *ag = a + (size_t)b0 * C * N;
            float *qg = qkv + (size_t)b0 * 3 * C * N;
            if (n > 1) {
                float *t = mine + L.grp;
                gather_images(t, a, b0, n, C, N);
                ag = t;
                qg = t + (size_t)C * ld;
            }
            for (int r = 0; r < 3 * C; r++)
                for (size_t i = 0; i < ld; i++) qg[(size_t)r * ld + i] = b_in[r];
            gemm(0, 0, 3 * C, (int)ld, C, w_in, C, ag, (int)ld, qg, (int)ld, 1);
            if (n > 1) scatter_images(qkv, qg, b0, n, 3 * C, N, 0);
        }
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            attention_heads_forward(o + (size_t)b * C * N, lse + (size_t)b * NH * N, qkv + (size_t)b * 3 * C * N,
                                    mine, &L, C, N, NH);
        // out += w_out O + b_out, G images per GEMM
#pragma omp for schedule(dynamic, 1)
        for (int b0 = 0; b0 < B; b0 += G) {
            int n = B - b0 < G ? B - b0 : G;
            size_t ld = (size_t)n * N;
            if (n == 1) {
                float *yb = out + (size_t)b0 * C * N;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < N; i++) yb[(size_t)c * N + i] += b_out[c];
                gemm(0, 0, C, N, C, w_out, C, o + (size_t)b0 * C * N, N, yb, N, 1);
                continue;
            }
            float *og = mine + L.grp, *yg = og + (size_t)C * ld;
            gather_images(og, o, b0, n, C, N);
            for (int c = 0; c < C; c++)
                for (size_t i = 0; i < ld; i++) yg[(size_t)c * ld + i] = b_out[c];
            gemm(0, 0, C, (int)ld, C, w_out, C, og, (int)ld, yg, (int)ld, 1);
            scatter_images(out, yg, b0, n, C, N, 1);
        }
    }
}

// the heads of one image backward: dqkv [3C,N] (written) from dO [C,N] (the gradient of the
// concatenated head outputs), qkv, O and lse of the forward
static void attention_heads_backward(float *dqkv, const float *dO, const float *qb, const float *ob,
                                     const float *lb, float *mine, const AttnWs *L, int C, int N, int NH) {
    int D = C / NH;
    float scale = 1.0f / sqrtf((float)D);
    float *S = mine + L->S, *dP = mine + L->dP, *T = mine + L->T;
    float *di = mine + L->di, *kp = mine + L->kp, *vp = mine + L->vp;
    for (int h = 0; h < NH; h++) {
        const float *Q = qb + (size_t)h * D * N, *K = qb + (size_t)(C + h * D) * N,
                    *V = qb + (size_t)(2 * C + h * D) * N;
        const float *Oh = ob + (size_t)h * D * N, *dOh = dO + (size_t)h * D * N;
        float *dQ = dqkv + (size_t)h * D * N, *dK = dqkv + (size_t)(C + h * D) * N,
              *dV = dqkv + (size_t)(2 * C + h * D) * N;
        // di_i = rowsum(dO o O)_i = sum_d dO[d,i] O[d,i]
        for (int i = 0; i < N; i++) di[i] = 0.0f;
        for (int d = 0; d < D; d++)
            for (int i = 0; i < N; i++) di[i] += dOh[(size_t)d * N + i] * Oh[(size_t)d * N + i];
        if (gemm_precision() == GEMM_BF16 && is_flash_bf16(D)) {
            flash_backward_bf16(dQ, dK, dV, Q, K, V, dOh, lb + (size_t)h * N, di, D, N, scale, mine + L->fl);
            continue;
        }
        if (is_flash(D)) {
            key_panels(kp, K, D, N);
            key_panels(vp, V, D, N);
            flash_backward(dQ, dK, dV, Q, K, dOh, lb + (size_t)h * N, di, kp, vp, D, N, scale, mine + L->fl);
            continue;
        }
        float *kt = kp; // K^T [N, D] for dQ
        transpose_scaled(kt, K, D, N, 1.0f);
        for (int i0 = 0; i0 < N; i0 += ATT_R) {
            int R = N - i0 < ATT_R ? N - i0 : ATT_R;
            const float *lse = lb + (size_t)h * N;
            gemm(1, 0, R, N, D, Q + i0, N, K, N, S, N, 0);   // S = Q_blk^T K
            gemm(1, 0, R, N, D, dOh + i0, N, V, N, dP, N, 0); // dP = dO_blk^T V
            for (int i = 0; i < R; i++) // S <- P, dP <- dS
                p_ds_row(S + (size_t)i * N, dP + (size_t)i * N, N, scale, lse[i0 + i], di[i0 + i]);
            gemm(0, 0, D, N, R, dOh + i0, N, S, N, dV, N, i0 > 0);  // dV (+)= dO_blk P
            gemm(0, 0, R, D, N, dP, N, kt, D, T, D, 0);             // dQ_blk^T = dS K^T
            for (int d = 0; d < D; d++)
                for (int i = 0; i < R; i++) dQ[(size_t)d * N + i0 + i] = T[(size_t)i * D + d];
            gemm(0, 0, D, N, R, Q + i0, N, dP, N, dK, N, i0 > 0);   // dK (+)= Q_blk dS
        }
    }
}

void attention_backward(float *da, float *dw_in, float *db_in, float *dw_out, float *db_out,
                        const float *dout, const float *a, const float *qkv, const float *o,
                        const float *lse, const float *w_in, const float *w_out, int B, int C,
                        int N, int NH, float *ws) {
    AttnWs L = attention_ws_layout(C, N);
    int G = attention_group(N), nt = 1;
#pragma omp parallel
    {
#pragma omp single
        nt = thread_count();
        float *mine = ws + (size_t)thread_id() * L.total;
#pragma omp for schedule(dynamic, 1)
        for (int ch = 0; ch < GRAD_CHUNKS; ch++) {
            int lo, hi;
            float *part = chunk_begin(ws, L.total, L.part, L.psize, ch, nt, B, &lo, &hi);
            for (int b0 = lo; b0 < hi; b0 += G) { // up to G images at a time
                int n = hi - b0 < G ? hi - b0 : G;
                size_t ld = (size_t)n * N;
                // dO, dqkv of the n images ([C,N] and [3C,N] each); t: n > 1 scratch (5 C n N)
                float *dO = mine, *dqkv = mine + L.dqkv, *t = NULL;
                const float *dyg = dout + (size_t)b0 * C * N, *og = o + (size_t)b0 * C * N;
                float *dOg = dO;
                if (n > 1) {
                    dO = mine + L.grp;
                    dqkv = dO + (size_t)C * ld;
                    t = dqkv + 3 * (size_t)C * ld;
                    gather_images(t, dout, b0, n, C, N);
                    gather_images(t + (size_t)C * ld, o, b0, n, C, N);
                    dyg = t;
                    og = t + (size_t)C * ld;
                    dOg = t + 2 * (size_t)C * ld;
                }
                // out_proj: dw_out += dy O^T, db_out += rowsum dy, dO = w_out^T dy
                gemm(0, 1, C, C, (int)ld, dyg, (int)ld, og, (int)ld, part + L.dwout, C, 1);
                for (int c = 0; c < C; c++) part[L.dbout + c] += sum16(dyg + (size_t)c * ld, (long)ld);
                gemm(1, 0, C, (int)ld, C, w_out, C, dyg, (int)ld, dOg, (int)ld, 0);
                if (n > 1) scatter_images(dO, dOg, 0, n, C, N, 0);
                for (int j = 0; j < n; j++) {
                    size_t b = (size_t)b0 + j;
                    attention_heads_backward(dqkv + (size_t)j * 3 * C * N, dO + (size_t)j * C * N, qkv + b * 3 * C * N,
                                             o + b * C * N, lse + b * NH * N, mine, &L, C, N, NH);
                }
                // in_proj: dw_in += dqkv a^T, db_in += rowsum dqkv, da += w_in^T dqkv
                const float *dqg = dqkv, *ag = a + (size_t)b0 * C * N;
                float *dag = da ? da + (size_t)b0 * C * N : NULL;
                if (n > 1) {
                    gather_images(t, dqkv, 0, n, 3 * C, N);
                    gather_images(t + 3 * (size_t)C * ld, a, b0, n, C, N);
                    dqg = t;
                    ag = t + 3 * (size_t)C * ld;
                    dag = t + 4 * (size_t)C * ld;
                }
                gemm(0, 1, 3 * C, C, (int)ld, dqg, (int)ld, ag, (int)ld, part + L.dwin, C, 1);
                for (int r = 0; r < 3 * C; r++) part[L.dbin + r] += sum16(dqg + (size_t)r * ld, (long)ld);
                if (da) {
                    gemm(1, 0, C, (int)ld, 3 * C, w_in, C, dqg, (int)ld, dag, (int)ld, n > 1 ? 0 : 1);
                    if (n > 1) scatter_images(da, dag, b0, n, C, N, 1);
                }
            }
        }
    }
    reduce_chunks(dw_in, ws, L.total, L.part, L.psize, L.dwin, 3L * C * C, nt);
    reduce_chunks(db_in, ws, L.total, L.part, L.psize, L.dbin, 3L * C, nt);
    reduce_chunks(dw_out, ws, L.total, L.part, L.psize, L.dwout, (long)C * C, nt);
    reduce_chunks(db_out, ws, L.total, L.part, L.psize, L.dbout, C, nt);
}
