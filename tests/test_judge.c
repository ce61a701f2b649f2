// test_judge.c: the MNIST judge (judge.h) and its file.
// - softmax cross-entropy: forward against a double-precision reference, backward against central
//   differences of the loss for every logit, accumulation into a pre-filled gradient
// - the whole judge: backward against central differences of the loss on sampled parameters of every
//   tensor (the largest-gradient entries plus random ones), accumulation, no-label forward = labelled probs
// - judge.bin: save/load round trip; truncated, corrupted, wrong-magic, wrong-version copies are
//   rejected with a message naming the file
// - the committed models/judge.bin: accuracy > 98.5% on the first 2000 MNIST test images and
//   IS > 9 of those real images ($MNIST_DIR; 'make data' gets it)
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "data/data.h"
#include "eval/judge.h"
#include "nn/layers.h"
#include "eval/metrics.h"
#include "core/rng.h"
#include "testutil.h"

static Rng g;

static void test_softmax_ce(void) {
    int B = 5, C = 10;
    float z[50], p[50], dz[50];
    int lab[5] = {3, 0, 9, 3, 7};
    for (int i = 0; i < B * C; i++) z[i] = 3.0f * rng_normal(&g);
    z[7] = 80.0f; // a large logit: the max subtraction must keep exp finite
    float loss = softmax_cross_entropy_forward(p, z, lab, B, C);
    double want = 0;
    for (int b = 0; b < B; b++) {
        double mx = -1e30, s = 0, ps = 0;
        for (int c = 0; c < C; c++) mx = fmax(mx, z[b * C + c]);
        for (int c = 0; c < C; c++) s += exp((double)z[b * C + c] - mx);
        for (int c = 0; c < C; c++) {
            double pc = exp((double)z[b * C + c] - mx) / s;
            CHECK(fabs(p[b * C + c] - pc) <= 1e-6, "softmax[%d,%d] = %.9g, want %.9g", b, c, p[b * C + c], pc);
            ps += p[b * C + c];
        }
        CHECK_NEAR(ps, 1.0, 1e-6, "probabilities sum to 1");
        want += log(s) + mx - z[b * C + lab[b]];
    }
    want /= B;
    CHECK_NEAR(loss, want, 1e-5 * fmax(1.0, want), "cross-entropy loss");
    CHECK(softmax_cross_entropy_forward(p, z, NULL, B, C) == 0.0f, "no labels: loss 0");
    // backward vs central differences (loss in double via the reference formula is not needed:
    // the float loss is accurate to ~1e-7 relative, h = 1e-2 gives ~1e-5 absolute noise)
    for (int i = 0; i < B * C; i++) dz[i] = 0.25f; // pre-filled: backward must add
    softmax_cross_entropy_forward(p, z, lab, B, C);
    softmax_cross_entropy_backward(dz, p, lab, B, C);
    double maxe = 0;
    for (int i = 0; i < B * C; i++) {
        float save = z[i], h = 1e-2f;
        z[i] = save + h;
        double lp = softmax_cross_entropy_forward(p, z, lab, B, C);
        z[i] = save - h;
        double lm = softmax_cross_entropy_forward(p, z, lab, B, C);
        z[i] = save;
        double num = (lp - lm) / (2.0 * h);
        maxe = fmax(maxe, fabs((dz[i] - 0.25) - num));
    }
    CHECK(maxe <= 2e-4, "softmax cross-entropy backward: max |analytic - numeric| = %.3g", maxe);
    printf("  softmax cross-entropy: loss %.6f (ref %.6f), grad max err %.2g\n", loss, want, maxe);
}

// the judge's gradient on sampled parameters
static void test_judge_grad(void) {
    JudgeConfig c;
    judge_default_config(&c);
    Judge j;
    judge_build(&j, &c);
    Rng r;
    rng_seed(&r, 11);
    judge_init_params(&j, &r);
    int B = 3, S = c.in_size;
    judge_alloc_acts(&j, B, 1);
    float *x = mallocCheck((size_t)B * S * S * sizeof(float));
    for (int i = 0; i < B * S * S; i++) x[i] = 2.0f * rng_uniform(&g) - 1.0f;
    int lab[3] = {1, 7, 4};
    judge_forward(&j, x, lab, B);
    // probabilities without labels are the same numbers
    float *p1 = mallocCheck((size_t)B * c.classes * sizeof(float));
    memcpy(p1, judge_probs(&j), (size_t)B * c.classes * sizeof(float));
    judge_forward(&j, x, NULL, B);
    CHECK(memcmp(p1, judge_probs(&j), (size_t)B * c.classes * sizeof(float)) == 0, "forward without labels differs");
    judge_forward(&j, x, lab, B);
    judge_zero_grad(&j);
    judge_backward(&j);
    float *g1 = mallocCheck(j.n_params * sizeof(float));
    memcpy(g1, j.grads, j.n_params * sizeof(float));
    // accumulation: a second backward doubles the gradient
    judge_backward(&j);
    double acc_err = 0;
    for (size_t i = 0; i < j.n_params; i++) acc_err = fmax(acc_err, fabs(j.grads[i] - 2.0f * g1[i]));
    CHECK(acc_err <= 1e-6, "second backward does not accumulate: max |g2 - 2 g1| = %.3g", acc_err);

    const char *names[12] = {"conv1.w", "conv1.b", "conv2.w", "conv2.b", "conv3.w", "conv3.b",
                             "conv4.w", "conv4.b", "fc1.w",   "fc1.b",   "fc2.w",   "fc2.b"};
    size_t off[13] = {j.w1, j.b1, j.w2, j.b2, j.w3, j.b3, j.w4, j.b4, j.w5, j.b5, j.w6, j.b6, j.n_params};
    for (int t = 0; t < 12; t++) {
        size_t n = off[t + 1] - off[t];
        // 4 largest |grad| entries + 4 random ones
        size_t pick[8];
        int np = 0;
        for (int k = 0; k < 4; k++) {
            size_t best = off[t];
            double bv = -1;
            for (size_t i = off[t]; i < off[t + 1]; i++) {
                int taken = 0;
                for (int q = 0; q < np; q++) taken |= pick[q] == i;
                if (!taken && fabs(g1[i]) > bv) { bv = fabs(g1[i]); best = i; }
            }
            pick[np++] = best;
        }
        for (int k = 0; k < 4; k++) pick[np++] = off[t] + rng_below(&g, (uint32_t)n);
        double scale = 0, maxe = 0;
        for (int k = 0; k < np; k++) scale = fmax(scale, fabs(g1[pick[k]]));
        for (int k = 0; k < np; k++) {
            size_t i = pick[k];
            float save = j.params[i], h = 1e-2f;
            j.params[i] = save + h;
            double lp = judge_forward(&j, x, lab, B);
            j.params[i] = save - h;
            double lm = judge_forward(&j, x, lab, B);
            j.params[i] = save;
            double num = (lp - lm) / (2.0 * h);
            double e = fabs(g1[i] - num);
            maxe = fmax(maxe, e);
            CHECK(e <= 0.02 * scale + 2e-5, "%s[%zu]: analytic %.6g numeric %.6g (tensor scale %.3g)", names[t], i - off[t],
                  (double)g1[i], num, scale);
        }
        printf("  judge grad %-8s max |g| %.3g, max err %.2g\n", names[t], scale, maxe);
    }
    free(x); free(p1); free(g1);
    judge_free(&j);
}

static int write_bytes(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = mallocCheck((size_t)sz);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static void expect_reject(const char *path, const char *what) {
    Judge j;
    char err[700] = "";
    int rc = judge_load(path, &j, err, sizeof err);
    CHECK(rc != 0, "%s: load succeeded", what);
    CHECK(strstr(err, path) != NULL && !strchr(err, '\n'), "%s: message does not name %s in one line: '%s'", what, path, err);
    if (rc != 0) printf("  rejects %-16s %s\n", what, err);
    else judge_free(&j);
}

static void test_file(void) {
    char dir[] = "/tmp/test_judge_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/judge.bin", dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    JudgeConfig c = {12, 3, 4, 5, 6, 4}; // a small non-default architecture: the numbers are in the file
    Judge j, k;
    judge_build(&j, &c);
    Rng r;
    rng_seed(&r, 5);
    judge_init_params(&j, &r);
    char err[700];
    CHECK(judge_save(path, &j, err, sizeof err) == 0, "save: %s", err);
    CHECK(judge_load(path, &k, err, sizeof err) == 0, "load: %s", err);
    CHECK(k.cfg.in_size == 12 && k.cfg.c1 == 3 && k.cfg.c2 == 4 && k.cfg.c3 == 5 && k.cfg.feat == 6 && k.cfg.classes == 4,
          "architecture not restored");
    CHECK(k.n_params == j.n_params && !memcmp(k.params, j.params, j.n_params * sizeof(float)), "parameters not restored");
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    CHECK(n == 8 + 4 + 24 + 8 + 4 * j.n_params + 4, "file size %zu", n);
    CHECK(!memcmp(b, "DDPMJUDG", 8), "magic");
    // truncated copies
    size_t cuts[] = {0, 5, 8, 30, 44, n / 2, n - 1};
    for (int t = 0; t < 7; t++) {
        write_bytes(bad, b, cuts[t]);
        char what[64];
        snprintf(what, sizeof what, "truncated(%zu)", cuts[t]);
        expect_reject(bad, what);
    }
    // one flipped bit in the parameters, in the header, in the CRC
    size_t flips[] = {n / 2, 14, n - 2};
    for (int t = 0; t < 3; t++) {
        b[flips[t]] ^= 0x10;
        write_bytes(bad, b, n);
        b[flips[t]] ^= 0x10;
        expect_reject(bad, t == 0 ? "corrupt(params)" : t == 1 ? "corrupt(header)" : "corrupt(crc)");
    }
    b[0] = 'X';
    write_bytes(bad, b, n);
    b[0] = 'D';
    expect_reject(bad, "wrong magic");
    b[8] = 2;
    write_bytes(bad, b, n);
    b[8] = 1;
    expect_reject(bad, "wrong version");
    expect_reject("/nonexistent/judge.bin", "missing file");
    // a stale temp file never appears: the directory holds only what we wrote
    free(b);
    judge_free(&j);
    judge_free(&k);
    unlink(path);
    unlink(bad);
    rmdir(dir);
}

static void test_committed(void) {
    const char *path = "models/judge.bin";
    Judge j;
    char err[700];
    if (judge_load(path, &j, err, sizeof err)) {
        CHECK(0, "cannot load the committed judge: %s", err);
        return;
    }
    printf("  %s: %zu parameters, %d-d features\n", path, j.n_params, j.cfg.feat);
    // the corrupted committed file is rejected too
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    char tmp[] = "/tmp/test_judge_bad_XXXXXX";
    int fd = mkstemp(tmp);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) close(fd);
    b[n / 3] ^= 0x01;
    write_bytes(tmp, b, n);
    expect_reject(tmp, "corrupt copy");
    write_bytes(tmp, b, n - 100);
    expect_reject(tmp, "truncated copy");
    unlink(tmp);
    free(b);

    const char *mnist = getenv("MNIST_DIR");
    Dataset test;
    if (!mnist || !*mnist || dataset_load(&test, mnist, 1, j.cfg.in_size, err, sizeof err)) {
        CHECK(0, "MNIST_DIR=%s: cannot load the MNIST test split (%s): run 'make data' (or set MNIST_DIR)",
              mnist ? mnist : "(unset)", mnist ? err : "MNIST_DIR unset");
        judge_free(&j);
        return;
    }
    int N = 2000 < test.n ? 2000 : test.n;
    judge_alloc_acts(&j, 100, 0);
    double t0 = now_seconds();
    double acc = judge_accuracy(&j, &test, N);
    CHECK(acc > 0.985, "accuracy on the first %d test images %.2f%%, want > 98.5%%", N, 100 * acc);
    float *probs = mallocCheck((size_t)N * j.cfg.classes * sizeof(float));
    judge_embed_u8(&j, test.pixels, N, NULL, probs);
    double is = inception_score(probs, N, j.cfg.classes), conf = confident_share(probs, N, j.cfg.classes, 0.9);
    CHECK(is > 9.0, "IS of %d real test images %.3f, want > 9", N, is);
    printf("  first %d MNIST test images: accuracy %.2f%%, IS %.3f, confident %.1f%% (%.1f s)\n", N, 100 * acc, is,
           100 * conf, now_seconds() - t0);
    free(probs);
    dataset_free(&test);
    judge_free(&j);
}

int main(void) {
    rng_seed(&g, 3);
    test_softmax_ce();
    test_judge_grad();
    test_file();
    test_committed();
    TEST_DONE("test_judge");
}
