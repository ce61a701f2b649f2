// test_train.c: the training engine. Loss goes down on real MNIST; an image folder built from
// MNIST images (laid out as data/train/images/<digit>/*.png) trains a step; the epoch order
// is a permutation; the EMA warm-up formula.
#define _GNU_SOURCE
#include <stb_image_write.h>
#include <string.h>
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#include <sys/stat.h>

#include "core/common.h"
#include "data/data.h"
#include "testutil.h"
#include "train/trainer.h"

static TrainState default_state(int batch, int n) {
    TrainState st = {0};
    st.batch = batch; st.lr = 2e-3f; st.beta1 = 0.9f; st.beta2 = 0.999f; st.eps = 1e-8f;
    st.ema_decay = 0.99f; st.seed = 5; st.n_data = n;
    return st;
}

int main(void) {
    // permutation: every index once, different per epoch, same for the same (seed, epoch)
    int n = 1000, *p = malloc(n * sizeof(int)), *q = malloc(n * sizeof(int)), *seen = calloc(n, sizeof(int));
    epoch_permutation(p, n, 1, 0);
    epoch_permutation(q, n, 1, 1);
    int ok = 1, same = 1;
    for (int i = 0; i < n; i++) { if (p[i] < 0 || p[i] >= n || seen[p[i]]++) ok = 0; if (p[i] != q[i]) same = 0; }
    CHECK(ok, "epoch permutation is not a permutation");
    CHECK(!same, "epochs 0 and 1 have the same order");
    epoch_permutation(q, n, 1, 0);
    CHECK(!memcmp(p, q, n * sizeof(int)), "permutation not reproducible");
    CHECK_NEAR(ema_decay_at(0.999f, 0), 0.1, 1e-6, "ema decay at step 0 = 1/10");
    CHECK_NEAR(ema_decay_at(0.999f, 90), 0.91, 1e-6, "ema decay at step 90 = 91/100");
    CHECK_NEAR(ema_decay_at(0.999f, 1000000), 0.999, 1e-6, "ema decay capped");
    // learning rate: warm-up (step + 1) / warmup, then constant or cosine to 0 at lr_decay_steps
    TrainState ls = {0};
    ls.lr = 1e-3f; ls.warmup = 100;
    CHECK_NEAR(train_lr_at(&ls, 0), 1e-5, 1e-9, "warm-up step 0");
    CHECK_NEAR(train_lr_at(&ls, 49), 5e-4, 1e-9, "warm-up step 49");
    CHECK_NEAR(train_lr_at(&ls, 5000), 1e-3, 1e-9, "constant after warm-up");
    ls.lr_decay_steps = 1100;
    CHECK_NEAR(train_lr_at(&ls, 99), 1e-3, 1e-9, "last warm-up step");
    CHECK_NEAR(train_lr_at(&ls, 100), 1e-3, 1e-9, "cosine starts at lr");
    CHECK_NEAR(train_lr_at(&ls, 600), 5e-4, 1e-9, "cosine half-way = lr / 2");
    CHECK_NEAR(train_lr_at(&ls, 850), 1e-3 * (1 + cos(M_PI * 0.75)) / 2, 1e-9, "cosine at 3/4");
    CHECK_NEAR(train_lr_at(&ls, 1100), 0, 0, "0 at the end");
    CHECK_NEAR(train_lr_at(&ls, 5000), 0, 0, "0 past the end");
    // global gradient norm: sqrt(sum g^2), independent of the length's split into chunks
    for (int len = 1; len <= 1000; len += 333) {
        float *g = malloc(len * sizeof(float));
        double ref = 0;
        for (int i = 0; i < len; i++) { g[i] = (float)((i % 7) - 3) * 0.25f; ref += (double)g[i] * g[i]; }
        CHECK_NEAR(grad_global_norm(g, len), sqrt(ref), 1e-9 * sqrt(ref) + 1e-12, "gradient norm");
        free(g);
    }

    const char *mnist = getenv("MNIST_DIR");
    Dataset d;
    char err[600];
    if (!mnist || dataset_load(&d, mnist, 1, 28, err, sizeof(err)) != 0) {
        CHECK(0, "MNIST_DIR=%s: cannot load the MNIST test split (%s): run 'make data' (or set MNIST_DIR)",
              mnist ? mnist : "(unset)", mnist ? err : "MNIST_DIR unset");
        TEST_DONE("test_train");
    }
    d.n = 512; // a slice of the test split is enough
    ModelConfig cfg;
    config_load(&cfg, "tests/cfg/mini28.cfg");

    // loss decreases: mean of the last 10 of 60 steps well below the first 10
    TrainState st = default_state(16, d.n);
    Trainer tr;
    trainer_init(&tr, &cfg, &st, &d, NULL);
    double first = 0, last = 0;
    for (int k = 0; k < 60; k++) {
        float l = trainer_step(&tr);
        CHECK(isfinite(l), "step %d: loss %g", k, l);
        if (k < 10) first += l / 10;
        if (k >= 50) last += l / 10;
    }
    printf("mini28 on MNIST: mean loss steps 0-9 %.4f, steps 50-59 %.4f\n", first, last);
    CHECK(last < 0.7 * first, "loss did not decrease: %.4f -> %.4f", first, last);
    CHECK(tr.st.step == 60 && tr.st.epoch == 60 * 16 / 512 && tr.st.epoch_pos == (60 * 16) % 512,
          "step/epoch/cursor bookkeeping: step %lld epoch %lld pos %lld", (long long)tr.st.step, (long long)tr.st.epoch,
          (long long)tr.st.epoch_pos);
    // the EMA moved toward the parameters but is not equal to them
    double dm = 0;
    for (size_t i = 0; i < tr.model.n_params; i++) dm = fmax(dm, fabs(tr.ema[i] - tr.model.params[i]));
    CHECK(dm > 0, "EMA equals the parameters");
    trainer_free(&tr);

    // the other objectives learn too (v with Min-SNR-5; EDM, class-conditional, log-normal sigmas);
    // EDM measures sigma_data on the data; label dropout replaces about p_uncond of the labels
    for (int o = 0; o < 2; o++) {
        ModelConfig oc = cfg;
        if (o == 0) { oc.objective = OBJECTIVE_V; oc.min_snr_gamma = 5; }
        else { oc.objective = OBJECTIVE_EDM; oc.sigma_sampling = SIGMA_SAMPLING_LOGNORMAL; oc.num_classes = 10; oc.p_uncond = 0.25f; }
        st = default_state(16, d.n);
        trainer_init(&tr, &oc, &st, &d, NULL);
        double f0 = 0, f1 = 0;
        long dropped = 0, kept_ok = 0, kept = 0;
        for (int k = 0; k < 60; k++) {
            int pos = (int)tr.st.epoch_pos;
            float l = trainer_step(&tr);
            CHECK(isfinite(l), "objective %s step %d: loss %g", objective_name(oc.objective), k, l);
            if (k < 10) f0 += l / 10;
            if (k >= 50) f1 += l / 10;
            for (int b = 0; b < 16 && oc.num_classes; b++) {
                if (tr.y[b] == oc.num_classes) dropped++;
                else { kept++; kept_ok += tr.y[b] == d.labels[tr.perm[pos + b]]; }
            }
        }
        printf("mini28 objective %s: mean loss steps 0-9 %.4f, steps 50-59 %.4f\n", objective_name(oc.objective), f0, f1);
        CHECK(f1 < 0.8 * f0, "objective %s: loss did not decrease: %.4f -> %.4f", objective_name(oc.objective), f0, f1);
        if (o == 1) {
            double sd = dataset_sigma(&d), s1 = 0, s2 = 0, npx = (double)d.n * 784;
            for (long i = 0; i < (long)d.n * 784; i++) { double v = 2.0 * d.pixels[i] / 255.0 - 1.0; s1 += v; s2 += v * v; }
            CHECK(fabs(sd - sqrt(s2 / npx - (s1 / npx) * (s1 / npx))) < 1e-9 && sd > 0.3, "dataset_sigma %.6f", sd);
            CHECK(tr.model.cfg.sigma_data == (float)sd, "EDM sigma_data %g, want the measured %g", tr.model.cfg.sigma_data, sd);
            double share = (double)dropped / (60 * 16);
            CHECK(fabs(share - 0.25) < 0.05, "label dropout: %.3f of the labels are null, want 0.25", share);
            CHECK(kept_ok == kept, "label dropout: %ld of %ld kept labels are the images' labels", kept_ok, kept);
        }
        trainer_free(&tr);
    }

    // gradient clipping: the gradient Adam saw has norm grad_clip, and the unclipped norm is reported
    st = default_state(16, d.n);
    st.grad_clip = 0.01f;
    trainer_init(&tr, &cfg, &st, &d, NULL);
    trainer_step(&tr);
    CHECK(tr.last_grad_norm > 0.01, "gradient norm %g should exceed the clip for this test", tr.last_grad_norm);
    CHECK_NEAR(grad_global_norm(tr.model.grads, tr.model.n_params), 0.01, 1e-5, "clipped gradient norm");
    trainer_free(&tr);

    // an image folder: <tmp>/<digit>/<k>.png from 40 MNIST images
    char dir[] = "/tmp/ddpm_imgs_XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp");
    for (int i = 0; i < 40; i++) {
        char sub[300], path[400];
        snprintf(sub, sizeof(sub), "%s/%d", dir, d.labels[i]);
        mkdir(sub, 0755);
        snprintf(path, sizeof(path), "%s/%03d.png", sub, i);
        CHECK(stbi_write_png(path, 28, 28, 1, d.pixels + (size_t)i * 784, 28), "write %s", path);
    }
    Dataset f;
    CHECK(dataset_load(&f, dir, 0, 28, err, sizeof(err)) == 0, "image folder: %s", err);
    CHECK(f.n == 40, "image folder: %d images, want 40", f.n);
    st = default_state(8, f.n);
    trainer_init(&tr, &cfg, &st, &f, NULL);
    float *before = malloc(tr.model.n_params * 4);
    memcpy(before, tr.model.params, tr.model.n_params * 4);
    float l = trainer_step(&tr);
    CHECK(isfinite(l) && l > 0, "image folder: loss %g", l);
    CHECK(memcmp(before, tr.model.params, tr.model.n_params * 4) != 0, "image folder: a step changed nothing");
    trainer_free(&tr);
    dataset_free(&f);
    // a wrong-size image in the folder is an error naming the file
    char path[400];
    snprintf(path, sizeof(path), "%s/3/big.png", dir);
    mkdir(path, 0755); // (a directory named .png is not an image: skipped or rejected, never a crash)
    unsigned char big[32 * 32] = {0};
    snprintf(path, sizeof(path), "%s/3/zz_big.png", dir);
    stbi_write_png(path, 32, 32, 1, big, 32);
    CHECK(dataset_load(&f, dir, 0, 28, err, sizeof(err)) != 0 && strstr(err, "zz_big.png"), "wrong-size image: '%s'", err);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "warning: cannot remove %s\n", dir);
    free(before); free(p); free(q); free(seen);
    dataset_free(&d);
    TEST_DONE("test_train");
}
