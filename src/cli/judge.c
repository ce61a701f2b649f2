// judge.c: ddpm judge: train the MNIST classifier that ddpm eval scores samples with.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/config.h"
#include "core/threads.h"
#include "core/rng.h"
#include "data/data.h"
#include "eval/judge.h"

static const char *JUDGE_HELP =
    "usage: ddpm judge [--data DIR] [--out FILE] [options]\n"
    "Train the MNIST classifier ('judge') that 'ddpm eval' uses to score samples: a small CNN\n"
    "(conv 16-32-32-64, 128 SiLU features, 10 classes), Adam with a cosine-decayed learning rate,\n"
    "random shifts as augmentation. Prints progress and the accuracy on the t10k test split, then saves.\n"
    "  --data DIR      MNIST IDX files with labels (default data)\n"
    "  --out FILE      judge file to write (default models/judge.bin)\n"
    "  --epochs N      passes over the training set (default 4)\n"
    "  --batch N       images per step (default 64)\n"
    "  --lr X          Adam learning rate at the start (default 1e-3)\n"
    "  --shift N       augmentation: random shifts of up to +-N pixels, 0 = off (default 2)\n"
    "  --seed S        seed of init, data order and augmentation (default 0)\n"
    "  --limit N       train on the first N images only\n"
    "  --threads N     OpenMP threads (default: OMP_NUM_THREADS or all cores)\n";

int cmd_judge(int argc, char **argv) {
    cli_set_command("ddpm judge");
    const char *data_dir = "data", *out = "models/judge.bin";
    JudgeTrainOptions o = {4, 64, 1e-3f, 0, 2, 1};
    long threads = 0, limit = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(JUDGE_HELP, stdout); return 0; }
        else if (!strcmp(a, "--data")) data_dir = need_value(argc, argv, &i);
        else if (!strcmp(a, "--out")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--epochs")) o.epochs = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(a, "--batch")) o.batch = (int)parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--lr")) o.lr = (float)parse_double(a, need_value(argc, argv, &i), 1e-12, 10.0);
        else if (!strcmp(a, "--shift")) o.shift = (int)parse_long(a, need_value(argc, argv, &i), 0, 8);
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)parse_long(a, need_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (!strcmp(a, "--limit")) limit = parse_long(a, need_value(argc, argv, &i), 1, 100000000L);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, MAX_THREADS);
        else usage_error("unknown option '%s'", a);
    }
    refuse_data_file("--out", out, data_dir);
    refuse_bad_output(out);
    set_threads((int)threads);
    JudgeConfig cfg;
    judge_default_config(&cfg);
    char err[ERR_LEN];
    Dataset train, test;
    if (dataset_load(&train, data_dir, 0, cfg.in_size, err, sizeof(err))) die("%s", err);
    for (int i = 0; i < train.n; i++)
        if (train.labels[i] >= cfg.classes) die("%s: training image %d has no digit label; the judge needs labelled MNIST", data_dir, i);
    if (limit > 0 && limit < train.n) train.n = (int)limit;
    if (train.n < o.batch) die("%s: %d training images, fewer than one batch of %d", data_dir, train.n, o.batch);
    int have_test = dataset_load(&test, data_dir, 1, cfg.in_size, err, sizeof(err)) == 0;
    if (!have_test) fprintf(stderr, "ddpm judge: %s; test accuracy will not be measured\n", err);

    Judge j;
    judge_build(&j, &cfg);
    Rng rng;
    rng_seed(&rng, o.seed);
    judge_init_params(&j, &rng);
    fprintf(stderr, "ddpm judge: %zu parameters | %d training images, batch %d, %d epochs, lr %g, shift +-%d, seed %llu | %d threads -> %s\n",
            j.n_params, train.n, o.batch, o.epochs, o.lr, o.shift, (unsigned long long)o.seed, threads_in_use(), out);
    double t0 = now_seconds();
    double loss = judge_train(&j, &train, &o);
    double t_train = now_seconds() - t0;
    if (!isfinite(loss)) die("training diverged (loss %g); try a smaller --lr. Nothing saved.", loss);
    judge_alloc_acts(&j, 100, 0);
    double train_acc = judge_accuracy(&j, &train, 10000);
    printf("train accuracy (first %d images, no augmentation): %.2f%%\n", train.n < 10000 ? train.n : 10000, 100.0 * train_acc);
    if (have_test) printf("test accuracy: %.2f%% (%d images)\n", 100.0 * judge_accuracy(&j, &test, 0), test.n);
    if (judge_save(out, &j, err, sizeof(err))) die("%s", err);
    fprintf(stderr, "ddpm judge: trained in %.1f s, saved %s\n", t_train, out);
    judge_free(&j);
    dataset_free(&train);
    if (have_test) dataset_free(&test);
    return 0;
}
