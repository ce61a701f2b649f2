// cli_judge.c: 'ddpm judge' trains the MNIST classifier of judge.h; 'ddpm eval' scores samples
// (from a checkpoint or an IDX file) with it: FLD, IS, confident share, class histogram (metrics.h).
#define _POSIX_C_SOURCE 200809L
#include "cli/commands.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "train/checkpoint.h"
#include "cli/cli.h"
#include "core/threads.h"
#include "core/common.h"
#include "data/data.h"
#include "diffusion/diffusion.h"
#include "data/image.h"
#include "eval/judge.h"
#include "eval/metrics.h"
#include "diffusion/sample.h"
#include "model/unet.h"

// ---------------------------------------------------------------------------------------
// ddpm judge

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
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, 1024);
        else usage_error("unknown option '%s'", a);
    }
    set_threads((int)threads);
    JudgeConfig cfg;
    judge_default_config(&cfg);
    char err[600];
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

// ---------------------------------------------------------------------------------------
// ddpm eval

static const char *EVAL_HELP =
    "usage: ddpm eval --model CKPT [options]   sample from a checkpoint and score the samples\n"
    "       ddpm eval --idx FILE [options]     score the images of an IDX file (e.g. from 'ddpm sample --idx')\n"
    "Scores images with the MNIST judge (models/judge.bin, 'ddpm judge'):\n"
    "  FLD        Frechet distance between Gaussian fits of the judge's 128-d features of the images\n"
    "             and of the 10k MNIST test images (lower is better; like FID)\n"
    "  IS         exp(mean KL(p(y|x) || p(y))) of the judge's class probabilities (1..10, higher is better)\n"
    "  confident  share of images the judge classifies with p >= 0.9; and the histogram of the classes\n"
    "The same for the first n images of a fixed shuffle of the MNIST training split is printed as the\n"
    "reference row. Samples are quantised to 8 bits first, so --model and --idx of the same images agree.\n"
    "The last line of the output is machine-readable: fld=.. is=.. confident=.. real_fld=.. real_is=.. real_confident=..\n"
    "  --model CKPT        checkpoint written by 'ddpm train'\n"
    "  --idx FILE          IDX image file (gz or plain) instead of sampling\n"
    "  --n N               images to sample (default 1000); with --idx: score the first N (default all)\n"
    "  --judge FILE        the judge (default models/judge.bin)\n"
    "  --data DIR          MNIST IDX files: the test split is the FLD reference, the train split\n"
    "                      gives the real row (default data)\n"
    "  --threads N         OpenMP threads\n"
    "sampling (with --model; as 'ddpm sample'):\n"
    "  --seed S            sampling seed (default 0)\n"
    "  --sampler ddpm|ddim ancestral DDPM over all T steps (default) or DDIM\n"
    "  --sigma beta|posterior  DDPM noise: sigma_t^2 = beta_t (default) or the posterior variance\n"
    "  --steps K           DDIM steps (default 100)\n"
    "  --eta E             DDIM eta (default 0)\n"
    "  --no-ema            sample with the raw weights instead of their EMA\n"
    "  --clip              clip the x0 estimate to [-1, 1] in every step\n"
    "  --batch N           images per forward pass (default 100)\n";

#define REAL_SHUFFLE_SEED 20240601u // the real reference row: the same training images every time

typedef struct {
    double fld, is, conf;
    long *hist;
} Scores;

static void score(Scores *s, const float *feats, const float *probs, long n, int F, int C, const double *mu_t,
                  const double *S_t) {
    size_t dd = (size_t)F * F;
    double *mu = mallocCheck((size_t)F * sizeof(double)), *S = mallocCheck(dd * sizeof(double));
    gaussian_fit(feats, n, F, mu, S);
    s->fld = frechet_distance(mu, S, mu_t, S_t, F);
    s->is = inception_score(probs, n, C);
    s->conf = confident_share(probs, n, C, 0.9);
    s->hist = callocCheck((size_t)C, sizeof(long));
    class_histogram(probs, n, C, s->hist);
    free(mu); free(S);
}

int cmd_eval(int argc, char **argv) {
    cli_set_command("ddpm eval");
    const char *model = NULL, *idx = NULL, *judge_path = "models/judge.bin", *data_dir = "data";
    SampleOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.sampler = SAMPLER_DDPM;
    opt.sigma = SIGMA_BETA;
    opt.ddim_steps = 100;
    opt.batch = 100;
    opt.progress = 1; // no strip (strip_n = 0)
    long threads = 0, n_arg = 0;
    int no_ema = 0;
    const char *sampling_flag = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(EVAL_HELP, stdout); return 0; }
        else if (!strcmp(a, "--model")) model = need_value(argc, argv, &i);
        else if (!strcmp(a, "--idx")) idx = need_value(argc, argv, &i);
        else if (!strcmp(a, "--n")) n_arg = parse_long(a, need_value(argc, argv, &i), 1, 1000000);
        else if (!strcmp(a, "--judge")) judge_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--data")) data_dir = need_value(argc, argv, &i);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(a, "--seed")) { sampling_flag = a; opt.seed = (uint64_t)parse_long(a, need_value(argc, argv, &i), 0, 0x7fffffffffffffffL); }
        else if (!strcmp(a, "--sampler")) {
            sampling_flag = a;
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "ddpm")) opt.sampler = SAMPLER_DDPM;
            else if (!strcmp(v, "ddim")) opt.sampler = SAMPLER_DDIM;
            else usage_error("option --sampler: '%s' is not ddpm or ddim", v);
        } else if (!strcmp(a, "--sigma")) {
            sampling_flag = a;
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "beta")) opt.sigma = SIGMA_BETA;
            else if (!strcmp(v, "posterior")) opt.sigma = SIGMA_POSTERIOR;
            else usage_error("option --sigma: '%s' is not beta or posterior", v);
        } else if (!strcmp(a, "--steps")) { sampling_flag = a; opt.ddim_steps = (int)parse_long(a, need_value(argc, argv, &i), 1, 100000); }
        else if (!strcmp(a, "--eta")) { sampling_flag = a; opt.eta = (float)parse_double(a, need_value(argc, argv, &i), 0.0, 10.0); }
        else if (!strcmp(a, "--no-ema")) { sampling_flag = a; no_ema = 1; }
        else if (!strcmp(a, "--clip")) { sampling_flag = a; opt.clip = 1; }
        else if (!strcmp(a, "--batch")) { sampling_flag = a; opt.batch = (int)parse_long(a, need_value(argc, argv, &i), 1, 65536); }
        else usage_error("unknown option '%s'", a);
    }
    if (!!model == !!idx) usage_error("give exactly one of --model CKPT or --idx FILE");
    if (idx && sampling_flag) usage_error("option %s applies to --model (sampling) only", sampling_flag);
    set_threads((int)threads);
    char err[600];

    // the judge and the images, cheapest checks first
    Judge J;
    if (judge_load(judge_path, &J, err, sizeof(err))) die("%s", err);
    int S = J.cfg.in_size, F = J.cfg.feat, C = J.cfg.classes;
    size_t D = (size_t)S * S;
    // the reference data before sampling (which can take long)
    Dataset test, train;
    if (dataset_load(&test, data_dir, 1, S, err, sizeof(err))) die("%s", err);
    if (dataset_load(&train, data_dir, 0, S, err, sizeof(err))) die("%s", err);
    uint8_t *px = NULL;
    long n = 0;
    char source[700];
    if (idx) {
        int ni, h, w;
        if (idx_read_images(idx, &px, &ni, &h, &w, err, sizeof(err))) die("%s", err);
        if (h != S || w != S) die("%s: images are %dx%d, the judge (%s) takes %dx%d", idx, h, w, judge_path, S, S);
        n = n_arg > 0 && n_arg < ni ? n_arg : ni;
        snprintf(source, sizeof source, "%s (%ld images)", idx, n);
    } else {
        Checkpoint ck;
        Unet m;
        Schedule sch;
        int use_ema = load_model_for_sampling(model, no_ema, &ck, &m, &sch);
        if (ck.cfg.im_channels != 1 || ck.cfg.im_size != S)
            die("%s: the model makes %dx%dx%d images, the judge (%s) takes 1x%dx%d", model, ck.cfg.im_channels,
                ck.cfg.im_size, ck.cfg.im_size, judge_path, S, S);
        n = n_arg > 0 ? n_arg : 1000;
        opt.n = (int)n;
        float *x = alignedCalloc((size_t)n * D * sizeof(float));
        fprintf(stderr, "ddpm eval: sampling %ld images, %s%s, %s weights, step %lld checkpoint, %d threads\n", n,
                opt.sampler == SAMPLER_DDIM ? "DDIM" : "DDPM",
                opt.sampler == SAMPLER_DDIM ? "" : (opt.sigma == SIGMA_BETA ? " (sigma^2 = beta)" : " (posterior sigma)"),
                use_ema ? "EMA" : "raw", (long long)ck.st.step, threads_in_use());
        double t0 = now_seconds();
        sample_images(&m, &sch, &opt, x, NULL);
        fprintf(stderr, "ddpm eval: sampled in %.1f s\n", now_seconds() - t0);
        px = mallocCheck((size_t)n * D);
        for (size_t k = 0; k < (size_t)n * D; k++) px[k] = to_u8(x[k]); // as 'ddpm sample --idx' writes them
        free(x);
        if (opt.sampler == SAMPLER_DDIM)
            snprintf(source, sizeof source, "%s step %lld, %s, DDIM %d steps eta %g%s, seed %llu (%ld images)", model,
                     (long long)ck.st.step, use_ema ? "EMA" : "raw", opt.ddim_steps, opt.eta, opt.clip ? ", clip" : "",
                     (unsigned long long)opt.seed, n);
        else
            snprintf(source, sizeof source, "%s step %lld, %s, DDPM sigma %s%s, seed %llu (%ld images)", model, (long long)ck.st.step,
                     use_ema ? "EMA" : "raw", opt.sigma == SIGMA_BETA ? "beta" : "posterior", opt.clip ? ", clip" : "",
                     (unsigned long long)opt.seed, n);
        schedule_free(&sch);
        unet_free(&m);
        checkpoint_free(&ck);
    }

    long n_real = n < train.n ? n : train.n;
    judge_alloc_acts(&J, 100, 0);
    double t0 = now_seconds();
    // reference: the test split
    float *tf = mallocCheck((size_t)test.n * F * sizeof(float)), *tp = mallocCheck((size_t)test.n * C * sizeof(float));
    judge_embed_u8(&J, test.pixels, test.n, tf, tp);
    long correct = 0, labelled = 0;
    for (int i = 0; i < test.n; i++) {
        if (test.labels[i] >= C) continue;
        int a = 0;
        for (int c = 1; c < C; c++) if (tp[(size_t)i * C + c] > tp[(size_t)i * C + a]) a = c;
        correct += a == test.labels[i];
        labelled++;
    }
    double *mu_t = mallocCheck((size_t)F * sizeof(double)), *S_t = mallocCheck((size_t)F * F * sizeof(double));
    gaussian_fit(tf, test.n, F, mu_t, S_t);
    // the images
    float *sf = mallocCheck((size_t)n * F * sizeof(float)), *sp = mallocCheck((size_t)n * C * sizeof(float));
    judge_embed_u8(&J, px, n, sf, sp);
    // the real row: the first n_real of a fixed shuffle of the training split
    int *order = mallocCheck((size_t)train.n * sizeof(int));
    for (int i = 0; i < train.n; i++) order[i] = i;
    Rng r;
    rng_seed(&r, REAL_SHUFFLE_SEED);
    rng_shuffle(&r, order, train.n);
    uint8_t *rpx = mallocCheck((size_t)n_real * D);
    for (long i = 0; i < n_real; i++) memcpy(rpx + (size_t)i * D, train.pixels + (size_t)order[i] * D, D);
    float *rf = mallocCheck((size_t)n_real * F * sizeof(float)), *rp = mallocCheck((size_t)n_real * C * sizeof(float));
    judge_embed_u8(&J, rpx, n_real, rf, rp);
    Scores smp, real;
    score(&smp, sf, sp, n, F, C, mu_t, S_t);
    score(&real, rf, rp, n_real, F, C, mu_t, S_t);
    fprintf(stderr, "ddpm eval: judged %ld + %ld + %d images in %.1f s\n", n, n_real, test.n, now_seconds() - t0);
    fflush(stderr);

    printf("images:  %s\n", source);
    printf("judge:   %s (%d-d features; accuracy on the %ld labelled test images %.2f%%)\n", judge_path, F, labelled,
           labelled ? 100.0 * correct / labelled : 0.0);
    printf("FLD against the %d MNIST test images (%s)\n\n", test.n, data_dir);
    printf("%-14s %7s %9s %7s %10s\n", "", "n", "FLD", "IS", "p>=0.9");
    printf("%-14s %7ld %9.3f %7.3f %9.1f%%\n", "samples", n, smp.fld, smp.is, 100.0 * smp.conf);
    printf("%-14s %7ld %9.3f %7.3f %9.1f%%\n\n", "real (train)", n_real, real.fld, real.is, 100.0 * real.conf);
    printf("%-14s", "class");
    for (int c = 0; c < C; c++) printf(" %5d", c);
    printf("\n%-14s", "samples");
    for (int c = 0; c < C; c++) printf(" %5ld", smp.hist[c]);
    printf("\n%-14s", "real (train)");
    for (int c = 0; c < C; c++) printf(" %5ld", real.hist[c]);
    printf("\n\nfld=%.4f is=%.4f confident=%.4f real_fld=%.4f real_is=%.4f real_confident=%.4f\n", smp.fld, smp.is, smp.conf,
           real.fld, real.is, real.conf);

    free(smp.hist); free(real.hist);
    free(tf); free(tp); free(sf); free(sp); free(rf); free(rp); free(rpx); free(order); free(px);
    free(mu_t); free(S_t);
    dataset_free(&test);
    dataset_free(&train);
    judge_free(&J);
    return 0;
}
