// bench.c: ddpm bench: training and sampling speed against the FMA peak measured in the same run.
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
#include "model/unet.h"
#include "train/trainer.h"
#include "kernels/gemm.h"
#include "kernels/peak.h"

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static const char *BENCH_HELP =
    "usage: ddpm bench --config FILE [--batch 64] [--threads N] [--steps K] [--sample-batch 100]\n"
    "                  [--precision fp32|bf16]\n"
    "Time K training steps (noising, forward, MSE, backward, Adam) and K sampling forward passes\n"
    "after a warm-up, on random data; report images/s, GFLOP/s against the analytic FLOP count,\n"
    "the machine's FMA peak measured in the same run with its widest vectors (AVX-512, AVX2 or\n"
    "plain C), and peak memory. Each step is timed and the median is reported (machines are shared\n"
    "and noisy); the peak is the best of three bursts. DDPM_ISA=avx2 (or generic) runs the GEMMs of a\n"
    "narrower instruction set, for comparison; --precision bf16 times bf16 products (AVX512_BF16).\n";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// median of t[n] (sorts t), with the mean and the minimum
static double median_of(double *t, long n, double *mean, double *min) {
    double s = 0;
    for (long i = 0; i < n; i++) s += t[i];
    *mean = s / n;
    qsort(t, n, sizeof(double), cmp_double);
    *min = t[0];
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

// the FMA peak with the widest vectors this CPU has (the first GEMM variant it supports)
static const char *widest_isa(void) {
    for (int i = 0; i < gemm_variant_count(); i++)
        if (gemm_variant_supported(i)) return gemm_variant_name(i);
    return "generic";
}

int cmd_bench(int argc, char **argv) {
    cli_set_command("ddpm bench");
    const char *config = NULL;
    long batch = 64, threads = 0, steps = 5, sample_batch = 100;
    int precision = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(BENCH_HELP, stdout); return 0; }
        else if (!strcmp(a, "--config")) config = need_value(argc, argv, &i);
        else if (!strcmp(a, "--batch")) batch = parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, MAX_THREADS);
        else if (!strcmp(a, "--steps")) steps = parse_long(a, need_value(argc, argv, &i), 1, 100000);
        else if (!strcmp(a, "--precision")) precision = parse_precision(need_value(argc, argv, &i));
        else if (!strcmp(a, "--sample-batch")) sample_batch = parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else usage_error("unknown option '%s'", a);
    }
    if (!config) usage_error("--config FILE is required");
    set_threads((int)threads);
    use_precision(precision);
    ModelConfig cfg;
    config_load(&cfg, config);
    // a synthetic dataset: the benchmark measures compute, not I/O
    Dataset data = {0};
    data.n = (int)batch * 4;
    data.h = data.w = cfg.im_size;
    data.pixels = callocCheck((size_t)data.n * cfg.im_size * cfg.im_size, 1);
    data.labels = callocCheck(data.n, 1);
    for (long i = 0; i < (long)data.n * cfg.im_size * cfg.im_size; i++) data.pixels[i] = (uint8_t)(i * 37 % 251);
    if (cfg.im_channels != 1) die("bench supports 1-channel configs");
    TrainState st = {0};
    st.batch = (int)batch; st.lr = 1e-4f; st.beta1 = 0.9f; st.beta2 = 0.999f; st.eps = 1e-8f; st.ema_decay = 0.999f;
    st.n_data = data.n;
    Trainer tr;
    trainer_init(&tr, &cfg, &st, &data, NULL);
    double macs = unet_forward_macs(&tr.model);
    printf("config %s: %zu parameters, %.4f GFLOP/image forward, %.4f GFLOP/image training step\n", config,
           tr.model.n_params, 2e-9 * macs, 6e-9 * macs);
    printf("threads %d, batch %ld, sample batch %ld, %ld timed steps, GEMM kernels %s\n", threads_in_use(), batch,
           sample_batch, steps, gemm_isa());
    // The machine is shared: each step is timed, and the median step is reported (with the mean
    // and the fastest); the FMA peak is the best of three bursts, before, between and after.
    double *dt = callocCheck(steps, sizeof(double));
    const char *wide = widest_isa();
    double peak = fma_peak_gflops(wide);
    // the thread count adapts to a busy machine, as in 'ddpm train' and 'ddpm sample' (threads.h)
    ThreadTuner tu;
    tuner_init(&tu, threads_in_use());
    tuner_begin(&tu);
    trainer_step(&tr); // warm-up
    tuner_end(&tu, batch);
    for (long k = 0; k < steps; k++) {
        tuner_begin(&tu);
        double t0 = now_seconds();
        trainer_step(&tr);
        dt[k] = now_seconds() - t0;
        tuner_end(&tu, batch);
    }
    int train_threads = tu.cur;
    set_threads(tu.max);
    double mean_train, min_train, dt_train = median_of(dt, steps, &mean_train, &min_train);
    double train_ips = batch / dt_train, train_gflops = 6e-9 * macs * train_ips;
    printf("train:  %.1f ms/step  %.1f images/s  %.1f GFLOP/s   (median of %ld steps; mean %.1f, fastest %.1f ms)\n",
           1e3 * dt_train, train_ips, train_gflops, steps, 1e3 * mean_train, 1e3 * min_train);
    double p2 = fma_peak_gflops(wide);
    if (p2 > peak) peak = p2;
    // sampling: forward passes at the sampling batch size
    unet_alloc_acts(&tr.model, (int)sample_batch, 0);
    float *x = alignedCalloc((size_t)sample_batch * cfg.im_size * cfg.im_size * sizeof(float));
    float *t = callocCheck(sample_batch, sizeof(float));
    Rng r;
    rng_seed(&r, 1);
    rng_fill_normal(&r, x, sample_batch * cfg.im_size * cfg.im_size);
    for (long b = 0; b < sample_batch; b++) t[b] = 500;
    tuner_init(&tu, threads_in_use());
    tuner_begin(&tu);
    unet_forward(&tr.model, x, t, NULL, (int)sample_batch);
    tuner_end(&tu, sample_batch);
    for (long k = 0; k < steps; k++) {
        tuner_begin(&tu);
        double t0 = now_seconds();
        unet_forward(&tr.model, x, t, NULL, (int)sample_batch);
        dt[k] = now_seconds() - t0;
        tuner_end(&tu, sample_batch);
    }
    int sample_threads = tu.cur;
    set_threads(tu.max);
    double mean_sample, min_sample, dt_sample = median_of(dt, steps, &mean_sample, &min_sample);
    double sample_ips = sample_batch / dt_sample;
    printf("sample: %.1f ms/step  %.1f image-steps/s  %.1f GFLOP/s   (median; mean %.1f, fastest %.1f ms)\n",
           1e3 * dt_sample, sample_ips, 2e-9 * macs * sample_ips, 1e3 * mean_sample, 1e3 * min_sample);
    p2 = fma_peak_gflops(wide);
    if (p2 > peak) peak = p2;
    free(dt);
    double rss = peak_rss_mb();
    printf("FMA peak (measured with %s vectors, %d threads, best of 3): %.1f GFLOP/s; training efficiency %.1f%%\n", wide,
           threads_in_use(), peak, 100 * train_gflops / peak);
    printf("peak RSS: %.0f MB\n", rss);
    printf("train_img_s=%.2f sample_img_steps_s=%.2f gflops=%.2f peak_gflops=%.2f efficiency=%.4f peak_rss_mb=%.0f isa=%s "
           "peak_isa=%s train_threads=%d sample_threads=%d precision=%s train_mean_img_s=%.2f sample_mean_img_steps_s=%.2f\n",
           train_ips, sample_ips, train_gflops, peak, train_gflops / peak, rss, gemm_isa(), wide, train_threads,
           sample_threads, precision ? "bf16" : "fp32", batch / mean_train, sample_batch / mean_sample);
    free(x); free(t);
    trainer_free(&tr);
    free(data.pixels); free(data.labels);
    return 0;
}
