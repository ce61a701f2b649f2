// ckpt_diff.c: how far apart two checkpoints of one run are (tests/test_mpi.sh).
//   ckpt_diff A.ckpt B.ckpt TOL    exit 0 if the progress (step, epoch, data cursor, noise RNG)
//                                  is equal and every array (params, Adam m and v, EMA) is within
//                                  TOL relative: max_i |a_i - b_i| <= TOL max_i |b_i|
// The attention key biases (in_proj_bias[C, 2C)) are left out of the bound and reported apart:
// q.(k + b) adds q.b to every score of a query, which the softmax removes, so their gradient is 0
// in exact arithmetic and rounding noise in floats; Adam divides by its size, so another order of
// summation moves them by up to lr per step at random, with no effect on the model's output.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "model/unet.h"
#include "train/checkpoint.h"

static char *skip; // [n] 1: an attention key bias

static double rel_dist(const char *name, const float *a, const float *b, size_t n) {
    double dmax = 0, bmax = 0, kmax = 0;
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        differ += a[i] != b[i];
        if (skip[i]) { if (d > kmax) kmax = d; continue; }
        if (d > dmax) dmax = d;
        if (fabs(b[i]) > bmax) bmax = fabs(b[i]);
    }
    double r = bmax > 0 ? dmax / bmax : dmax;
    printf("  %-6s max|a-b| / max|b| = %.3e (key biases: max|a-b| = %.1e), %zu of %zu floats differ\n", name, r, kmax,
           differ, n);
    return r;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: ckpt_diff A.ckpt B.ckpt TOL\n"); return 2; }
    Checkpoint a, b;
    char err[ERR_LEN];
    if (checkpoint_load(argv[1], &a, err, sizeof err) || checkpoint_load(argv[2], &b, err, sizeof err)) {
        fprintf(stderr, "ckpt_diff: %s\n", err);
        return 1;
    }
    double tol = atof(argv[3]);
    if (a.n_params != b.n_params || (a.ema == NULL) != (b.ema == NULL)) { printf("ckpt_diff: different models\n"); return 1; }
    Unet m;
    unet_build(&m, &a.cfg);
    skip = callocCheck(a.n_params, 1);
    for (int t = 0; t < m.n_tensors; t++) {
        const ParamTensor *p = &m.tensors[t];
        size_t C = p->numel / 3;
        if (strstr(p->name, "in_proj_bias")) memset(skip + p->offset + C, 1, C);
    }
    int same_state = a.st.step == b.st.step && a.st.epoch == b.st.epoch && a.st.epoch_pos == b.st.epoch_pos &&
                     !memcmp(&a.st.noise_rng, &b.st.noise_rng, sizeof a.st.noise_rng);
    printf("  state  step %lld / %lld, %s\n", (long long)a.st.step, (long long)b.st.step,
           same_state ? "same progress and noise stream" : "DIFFERENT progress or noise stream");
    double worst = rel_dist("params", a.params, b.params, a.n_params);
    double r = rel_dist("adam_m", a.m, b.m, a.n_params); if (r > worst) worst = r;
    r = rel_dist("adam_v", a.v, b.v, a.n_params); if (r > worst) worst = r;
    if (a.ema) { r = rel_dist("ema", a.ema, b.ema, a.n_params); if (r > worst) worst = r; }
    unet_free(&m);
    checkpoint_free(&a);
    checkpoint_free(&b);
    free(skip);
    return same_state && worst <= tol ? 0 : 1;
}
