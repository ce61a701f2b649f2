// eval.c: ddpm eval: sample from a checkpoint (or read an IDX file) and score the images with the judge.
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
#include "data/image.h"
#include "diffusion/sample.h"
#include "eval/judge.h"
#include "eval/metrics.h"
#include "model/unet.h"
#include "train/checkpoint.h"

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
    "(and label_match=.. with --label or --labels all: the share judged as the requested class)\n"
    "  --model CKPT        checkpoint written by 'ddpm train'\n"
    "  --idx FILE          IDX image file (gz or plain) instead of sampling\n"
    "  --n N               images to sample (default 1000); with --idx: score the first N (default all)\n"
    "  --judge FILE        the judge (default models/judge.bin, or the installed copy)\n"
    "  --data DIR          MNIST IDX files: the test split is the FLD reference, the train split\n"
    "                      gives the real row (default data)\n"
    "  --threads N         OpenMP threads\n"
    "sampling (with --model; as 'ddpm sample'):\n";

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
    const char *model = NULL, *idx = NULL, *judge_path = shipped_file("models/judge.bin"), *data_dir = "data";
    SampleArgs sa;
    sample_args_default(&sa); // no strip (strip_n = 0)
    SampleOptions *o = &sa.opt;
    long threads = 0, n_arg = 0;
    int precision = 0;
    const char *sampling_flag = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(EVAL_HELP, stdout); fputs(SAMPLE_FLAGS_HELP, stdout); fputs(PRECISION_HELP, stdout); return 0; }
        else if (!strcmp(a, "--model")) model = need_value(argc, argv, &i);
        else if (!strcmp(a, "--idx")) idx = need_value(argc, argv, &i);
        else if (!strcmp(a, "--n")) n_arg = parse_long(a, need_value(argc, argv, &i), 1, 1000000);
        else if (!strcmp(a, "--judge")) judge_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--data")) data_dir = need_value(argc, argv, &i);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, MAX_THREADS);
        else if (!strcmp(a, "--precision")) precision = parse_precision(need_value(argc, argv, &i));
        else if (parse_sample_flag(&sa, argc, argv, &i)) sampling_flag = a;
        else usage_error("unknown option '%s'", a);
    }
    if (!!model == !!idx) usage_error("give exactly one of --model CKPT or --idx FILE");
    if (idx && sampling_flag) usage_error("option %s applies to --model (sampling) only", sampling_flag);
    set_threads((int)threads);
    use_precision(precision);
    char err[ERR_LEN];

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
    int *want = NULL; // the requested class of each sample (class-conditional models)
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
        int use_ema = load_model_for_sampling(model, NULL, sa.no_ema, &ck, &m, &sch);
        if (ck.cfg.im_channels != 1 || ck.cfg.im_size != S)
            die("%s: the model makes %dx%dx%d images, the judge (%s) takes 1x%dx%d", model, ck.cfg.im_channels,
                ck.cfg.im_size, ck.cfg.im_size, judge_path, S, S);
        n = n_arg > 0 ? n_arg : 1000;
        o->n = (int)n;
        // --labels all: classes in equal shares (image i of class i mod num_classes)
        sample_args_finish(&sa, &ck.cfg, 1, model);
        if (sa.labels) {
            want = mallocCheck((size_t)n * sizeof(int));
            for (long i = 0; i < n; i++) want[i] = sa.labels[i];
        }
        float *x = alignedCalloc((size_t)n * D * sizeof(float));
        print_sampling_banner("ddpm eval", n, o, use_ema, (long long)ck.st.step);
        double t0 = now_seconds();
        sample_unet(&m, &sch, o, x, NULL);
        fprintf(stderr, "ddpm eval: sampled in %.1f s\n", now_seconds() - t0);
        px = mallocCheck((size_t)n * D);
        for (size_t k = 0; k < (size_t)n * D; k++) px[k] = to_u8(x[k]); // as 'ddpm sample --idx' writes them
        free(x);
        char how[200];
        sample_describe(how, sizeof how, o);
        snprintf(source, sizeof source, "%s step %lld, %s weights, %s, seed %llu (%ld images)", model, (long long)ck.st.step,
                 use_ema ? "EMA" : "raw", how, (unsigned long long)o->seed, n);
        sample_args_free(&sa);
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
    double match = -1;
    if (want) { // the share of samples the judge classifies as the class they were asked for
        long hit = 0;
        for (long i = 0; i < n; i++) {
            int a = 0;
            for (int c = 1; c < C; c++) if (sp[(size_t)i * C + c] > sp[(size_t)i * C + a]) a = c;
            hit += a == want[i];
        }
        match = (double)hit / (double)n;
        printf("\n\nrequested class: %.1f%% of the samples are judged as the class they were sampled for", 100.0 * match);
    }
    printf("\n\nfld=%.4f is=%.4f confident=%.4f real_fld=%.4f real_is=%.4f real_confident=%.4f", smp.fld, smp.is, smp.conf,
           real.fld, real.is, real.conf);
    if (want) printf(" label_match=%.4f", match);
    printf("\n");

    free(smp.hist); free(real.hist);
    free(tf); free(tp); free(sf); free(sp); free(rf); free(rp); free(rpx); free(order); free(px); free(want);
    free(mu_t); free(S_t);
    dataset_free(&test);
    dataset_free(&train);
    judge_free(&J);
    return 0;
}
