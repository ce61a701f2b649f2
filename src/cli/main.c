// main.c: the ddpm command line: train, sample, info, bench.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "train/checkpoint.h"
#include "cli/cli.h"
#include "core/threads.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/config.h"
#include "data/data.h"
#include "data/image.h"
#include "nn/layers.h"
#include "diffusion/sample.h"
#include "train/trainer.h"
#include "model/unet.h"

// ---------------------------------------------------------------------------------------
static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void print_config(FILE *f, const ModelConfig *c) {
    char text[4096];
    config_to_text(c, text, sizeof(text));
    fputs(text, f);
}

// ---------------------------------------------------------------------------------------
// ddpm info

static const char *INFO_HELP =
    "usage: ddpm info (--config FILE | --model CKPT)\n"
    "Print a model configuration, its parameter count and cost; with --model also the\n"
    "training state (step, epoch) and hyperparameters stored in the checkpoint.\n"
    "  --config FILE   a model config (models/*.cfg)\n"
    "  --model CKPT    a checkpoint written by 'ddpm train'\n";

static void print_model_summary(const ModelConfig *c) {
    Unet m;
    unet_build(&m, c);
    print_config(stdout, c);
    double macs = unet_forward_macs(&m);
    printf("tensors: %d\n", m.n_tensors);
    printf("parameters: %zu\n", m.n_params);
    printf("forward GFLOP/image: %.4f\n", 2.0 * macs / 1e9);
    printf("train step GFLOP/image: %.4f\n", 6.0 * macs / 1e9);
    unet_free(&m);
}

static int cmd_info(int argc, char **argv) {
    cli_set_command("ddpm info");
    const char *config = NULL, *model = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(INFO_HELP, stdout); return 0; }
        else if (!strcmp(argv[i], "--config")) config = need_value(argc, argv, &i);
        else if (!strcmp(argv[i], "--model")) model = need_value(argc, argv, &i);
        else usage_error("unknown option '%s'", argv[i]);
    }
    if (!!config == !!model) usage_error("give exactly one of --config FILE or --model CKPT");
    if (config) {
        ModelConfig c;
        config_load(&c, config);
        print_model_summary(&c);
        return 0;
    }
    Checkpoint ck;
    char err[512];
    if (checkpoint_load(model, &ck, err, sizeof(err))) die("%s", err);
    print_model_summary(&ck.cfg);
    const TrainState *s = &ck.st;
    printf("step: %lld\nepoch: %lld\nepoch_pos: %lld\ntrain images: %lld\n", (long long)s->step, (long long)s->epoch,
           (long long)s->epoch_pos, (long long)s->n_data);
    printf("lr decay: %s\ngrad clip: %g\n", s->lr_decay_steps > 0 ? "cosine" : "none", s->grad_clip);
    if (s->lr_decay_steps > 0) printf("lr decay steps: %lld\n", (long long)s->lr_decay_steps);
    printf("batch: %d\nlr: %g\nwarmup: %d\nadam: beta1 %g beta2 %g eps %g\nseed: %llu\nema: %s",
           s->batch, s->lr, s->warmup, s->beta1, s->beta2, s->eps, (unsigned long long)s->seed, s->ema_decay > 0 ? "" : "off\n");
    if (s->ema_decay > 0) printf("decay %g\n", s->ema_decay);
    checkpoint_free(&ck);
    return 0;
}

// ---------------------------------------------------------------------------------------
// ddpm train

static const char *TRAIN_HELP =
    "usage: ddpm train --config FILE [options]        start a run\n"
    "       ddpm train --resume [CKPT] [options]      continue a run exactly\n"
    "Train the U-Net noise predictor on MNIST-format data (DDPM, MSE on the noise, Adam).\n"
    "  --config FILE      model config (e.g. models/small.cfg)\n"
    "  --data DIR         MNIST IDX files (gz or not), or a folder of PNG/JPEG images (default data)\n"
    "  --out CKPT         checkpoint to write (default models/ddpm.ckpt)\n"
    "  --steps N          total optimiser steps of the run (absolute, also when resuming)\n"
    "  --epochs N         total epochs instead (an epoch = floor(images / batch) steps)\n"
    "  --batch N          images per step (default 64)\n"
    "  --lr X             Adam learning rate (default 1e-4)\n"
    "  --warmup N         linear learning-rate warm-up over N steps (default 0)\n"
    "  --lr-decay none|cosine  after the warm-up keep the lr constant (default), or decay it\n"
    "                     as lr (1 + cos(pi p)) / 2 to 0 at the run's last step (--steps/--epochs)\n"
    "  --grad-clip X      clip the global gradient L2 norm to X (default 0 = off)\n"
    "  --ema X            EMA decay of the weights used for sampling, 0 = off (default 0.999)\n"
    "  --seed S           seed of init, data order and noise (default 0)\n"
    "  --save-every N     also save every N steps (default 500; 0 = only at the end)\n"
    "  --keep-every N     also keep a copy of the checkpoint every N steps as OUT_stepNNNNNNN.ckpt\n"
    "                     (OUT without .ckpt; default 0 = off), e.g. for a quality-vs-time curve\n"
    "  --limit N          train on the first N images only\n"
    "  --threads N        OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
    "  --log FILE.csv     append step, epoch, loss, images/s, wall time to a CSV file\n"
    "  --log-every N      progress line / CSV row every N steps (default 50); the CSV also has\n"
    "                     the mean loss in 10 buckets of t (loss_t0 = t < T/10, ...)\n"
    "  --sample-every N   write a fixed-seed grid of 64 samples (EMA weights, DDIM 50 steps,\n"
    "                     clipped) to DIR/step_NNNNNNN.png every N steps (default 0 = off)\n"
    "  --sample-dir DIR   where --sample-every writes (default samples)\n"
    "  --resume [CKPT]    continue from CKPT (default: the --out file); config and\n"
    "                     hyperparameters come from the checkpoint\n"
    "SIGINT/SIGTERM finish the current step, save, and exit with status 130.\n"
    "Same seed and thread count give byte-identical checkpoints, resumed or not.\n";

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

static int cmd_train(int argc, char **argv) {
    cli_set_command("ddpm train");
    const char *config = NULL, *data_dir = "data", *out = "models/ddpm.ckpt", *log_path = NULL, *resume = NULL;
    long steps = -1, epochs = -1, batch = -1, seed = -1, save_every = 500, limit = 0, threads = 0, warmup = -1, log_every = 50;
    long sample_every = 0, keep_every = 0;
    const char *sample_dir = "samples";
    double lr = -1, ema = -1, grad_clip = -1;
    int resume_flag = 0, lr_decay = -1; // -1 unset, 0 none, 1 cosine
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(TRAIN_HELP, stdout); return 0; }
        else if (!strcmp(a, "--config")) config = need_value(argc, argv, &i);
        else if (!strcmp(a, "--data")) data_dir = need_value(argc, argv, &i);
        else if (!strcmp(a, "--out")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--steps")) steps = parse_long(a, need_value(argc, argv, &i), 1, 1000000000L);
        else if (!strcmp(a, "--epochs")) epochs = parse_long(a, need_value(argc, argv, &i), 1, 1000000L);
        else if (!strcmp(a, "--batch")) batch = parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--lr")) lr = parse_double(a, need_value(argc, argv, &i), 1e-12, 10.0);
        else if (!strcmp(a, "--warmup")) warmup = parse_long(a, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(a, "--lr-decay")) {
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "none")) lr_decay = 0;
            else if (!strcmp(v, "cosine")) lr_decay = 1;
            else usage_error("option --lr-decay: '%s' is not none or cosine", v);
        } else if (!strcmp(a, "--grad-clip")) grad_clip = parse_double(a, need_value(argc, argv, &i), 0.0, 1e30);
        else if (!strcmp(a, "--ema")) ema = parse_double(a, need_value(argc, argv, &i), 0.0, 0.999999);
        else if (!strcmp(a, "--seed")) seed = parse_long(a, need_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (!strcmp(a, "--save-every")) save_every = parse_long(a, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(a, "--keep-every")) keep_every = parse_long(a, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(a, "--limit")) limit = parse_long(a, need_value(argc, argv, &i), 1, 100000000L);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(a, "--log")) log_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--log-every")) log_every = parse_long(a, need_value(argc, argv, &i), 1, 1000000000L);
        else if (!strcmp(a, "--sample-every")) sample_every = parse_long(a, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(a, "--sample-dir")) sample_dir = need_value(argc, argv, &i);
        else if (!strcmp(a, "--resume")) {
            resume_flag = 1;
            if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) resume = argv[++i];
        } else usage_error("unknown option '%s'", a);
    }
    if (steps > 0 && epochs > 0) usage_error("give --steps or --epochs, not both");
    if (!resume_flag && !config) usage_error("--config FILE is required (or --resume to continue a run)");
    set_threads((int)threads);
    if (resume_flag && !resume) resume = out;

    // checkpoint first (cheap to validate), then data
    Checkpoint ck;
    ModelConfig cfg;
    TrainState st;
    memset(&st, 0, sizeof(st));
    char err[600];
    if (resume_flag) {
        if (checkpoint_load(resume, &ck, err, sizeof(err))) die("%s", err);
        cfg = ck.cfg;
        st = ck.st;
        if (config) {
            ModelConfig given;
            config_load(&given, config);
            char a[4096], b[4096];
            config_to_text(&given, a, sizeof(a));
            config_to_text(&cfg, b, sizeof(b));
            if (strcmp(a, b)) die("--config %s differs from the model in checkpoint %s", config, resume);
        }
        if (batch > 0 && batch != st.batch) die("--batch %ld contradicts the checkpoint's batch %d (%s)", batch, st.batch, resume);
        if (lr > 0 && (float)lr != st.lr) die("--lr %g contradicts the checkpoint's lr %g (%s)", lr, st.lr, resume);
        if (seed >= 0 && (uint64_t)seed != st.seed) die("--seed %ld contradicts the checkpoint's seed %llu (%s)", seed, (unsigned long long)st.seed, resume);
        if (ema >= 0 && (float)ema != st.ema_decay) die("--ema %g contradicts the checkpoint's EMA decay %g (%s)", ema, st.ema_decay, resume);
        if (warmup >= 0 && warmup != st.warmup) die("--warmup %ld contradicts the checkpoint's warm-up %d (%s)", warmup, st.warmup, resume);
        if (grad_clip >= 0 && (float)grad_clip != st.grad_clip)
            die("--grad-clip %g contradicts the checkpoint's %g (%s)", grad_clip, st.grad_clip, resume);
        if (lr_decay >= 0 && lr_decay != (st.lr_decay_steps > 0))
            die("--lr-decay %s contradicts the checkpoint (%s)", lr_decay ? "cosine" : "none", resume);
    } else {
        config_load(&cfg, config);
        st.batch = batch > 0 ? (int)batch : 64;
        st.lr = lr > 0 ? (float)lr : 1e-4f;
        st.beta1 = 0.9f;
        st.beta2 = 0.999f;
        st.eps = 1e-8f;
        st.ema_decay = ema >= 0 ? (float)ema : 0.999f;
        st.warmup = warmup >= 0 ? (int)warmup : 0;
        st.grad_clip = grad_clip >= 0 ? (float)grad_clip : 0.0f;
        st.seed = seed >= 0 ? (uint64_t)seed : 0;
    }
    if (cfg.im_channels != 1) die("%s: im_channels = %d, but the data loader reads 1-channel (grayscale) images",
                                  config ? config : resume, cfg.im_channels);
    Dataset data;
    if (dataset_load(&data, data_dir, 0, cfg.im_size, err, sizeof(err))) die("%s", err);
    if (limit > 0 && limit < data.n) data.n = (int)limit;
    if (data.n < st.batch) die("%s: %d training images, fewer than one batch of %d", data_dir, data.n, st.batch);
    if (resume_flag && st.n_data != data.n)
        die("the data has %d images but checkpoint %s was trained on %lld (use the same --data/--limit)", data.n, resume, (long long)st.n_data);
    st.n_data = data.n;
    long spe = data.n / st.batch;
    long total = steps > 0 ? steps : epochs > 0 ? epochs * spe : (resume_flag ? -1 : spe);
    if (total < 0) usage_error("give the run's total length with --steps N or --epochs N");
    if (!resume_flag && lr_decay == 1) {
        if (total <= st.warmup) usage_error("--lr-decay cosine needs more steps (%ld) than --warmup (%d)", total, st.warmup);
        st.lr_decay_steps = total;
    }
    if (resume_flag && st.lr_decay_steps > 0 && total != st.lr_decay_steps)
        die("the run's length %ld differs from the %lld steps its learning rate decays over (%s): resume with --steps %lld",
            total, (long long)st.lr_decay_steps, resume, (long long)st.lr_decay_steps);

    Trainer tr;
    trainer_init(&tr, &cfg, &st, &data, resume_flag ? &ck : NULL);
    if (resume_flag) checkpoint_free(&ck);
    double macs = unet_forward_macs(&tr.model);
    fprintf(stderr, "ddpm train: %s, %zu parameters, %.3f GFLOP/image fwd | %d images, batch %d, %ld steps/epoch | %d threads\n",
            resume_flag ? "resuming" : "new run", tr.model.n_params, 2e-9 * macs, data.n, st.batch, spe, threads_in_use());
    if (tr.st.step >= total) {
        fprintf(stderr, "ddpm train: checkpoint is at step %lld, the run's total is %ld: nothing to do\n", (long long)tr.st.step, total);
        trainer_free(&tr);
        dataset_free(&data);
        return 0;
    }
    fprintf(stderr, "ddpm train: step %lld -> %ld (epoch %lld), lr %g (%s), warm-up %d, grad clip %g, EMA %g, seed %llu -> %s\n",
            (long long)tr.st.step, total, (long long)tr.st.epoch, tr.st.lr, tr.st.lr_decay_steps > 0 ? "cosine decay" : "constant",
            tr.st.warmup, tr.st.grad_clip, tr.st.ema_decay, (unsigned long long)tr.st.seed, out);

    FILE *log = NULL;
    if (log_path) {
        log = fopen(log_path, resume_flag ? "a" : "w");
        if (!log) die("%s: cannot open log file: %s", log_path, strerror(errno));
        if (ftell(log) == 0) {
            fprintf(log, "step,epoch,loss,images_per_s,wall_s");
            for (int k = 0; k < TRAIN_T_BUCKETS; k++) fprintf(log, ",loss_t%d", k);
            fputs(",lr,grad_norm", log);
            fputc('\n', log);
        }
    }
    // progress pictures: a second model instance, so sampling never touches the training activations
    Unet viewer;
    int D = cfg.im_channels * cfg.im_size * cfg.im_size;
    float *view_x = NULL;
    if (sample_every > 0) {
        unet_build(&viewer, &cfg);
        view_x = alignedCalloc((size_t)64 * D * sizeof(float));
        if (mkdir(sample_dir, 0755) != 0 && errno != EEXIST) die("%s: cannot create directory: %s", sample_dir, strerror(errno));
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int tty = isatty(2);
    double t0 = now_seconds(), t_window = t0, smooth = -1, loss_sum = 0;
    long start_step = tr.st.step, window_steps = 0;
    int status = 0;
    while (tr.st.step < total) {
        float loss = trainer_step(&tr);
        if (!isfinite(loss)) {
            fprintf(stderr, "\nddpm train: loss is %s at step %lld; stopping. The last good checkpoint (%s) is unchanged.\n",
                    isnan(loss) ? "NaN" : "infinite", (long long)tr.st.step + 1, out);
            status = 1;
            break;
        }
        smooth = smooth < 0 ? loss : 0.98 * smooth + 0.02 * loss;
        loss_sum += loss;
        window_steps++;
        long step = tr.st.step;
        double now = now_seconds();
        int last = step == total;
        if (step % log_every == 0 || last || (tty && now - t_window > 0.5)) {
            double ips = (double)(step - start_step) * st.batch / (now - t0);
            char eta[32];
            fmt_time(eta, sizeof(eta), (double)(total - step) * st.batch / ips);
            float lr_now = train_lr_at(&tr.st, step - 1);
            if (tty) fprintf(stderr, "\rstep %ld/%ld | epoch %lld | loss %.4f | lr %.2e | |g| %.3f | %.1f img/s | ETA %s   ",
                             step, total, (long long)tr.st.epoch, smooth, lr_now, tr.last_grad_norm, ips, eta);
            if (step % log_every == 0 || last) {
                if (!tty) fprintf(stderr, "step %ld/%ld | epoch %lld | loss %.4f | lr %.2e | |g| %.3f | %.1f img/s | ETA %s\n",
                                  step, total, (long long)tr.st.epoch, smooth, lr_now, tr.last_grad_norm, ips, eta);
                if (log) {
                    fprintf(log, "%ld,%lld,%.6f,%.2f,%.2f", step, (long long)tr.st.epoch, loss_sum / window_steps, ips, now - t0);
                    for (int k = 0; k < TRAIN_T_BUCKETS; k++) {
                        fprintf(log, ",%.6f", tr.bucket_count[k] ? tr.bucket_loss[k] / tr.bucket_count[k] : NAN);
                        tr.bucket_loss[k] = 0;
                        tr.bucket_count[k] = 0;
                    }
                    fprintf(log, ",%.6e,%.6f", lr_now, tr.last_grad_norm);
                    fputc('\n', log);
                    fflush(log);
                }
                loss_sum = 0;
                window_steps = 0;
            }
            t_window = now;
        }
        if (sample_every > 0 && (step % sample_every == 0 || last)) {
            memcpy(viewer.params, tr.ema ? tr.ema : tr.model.params, viewer.n_params * sizeof(float));
            SampleOptions so = {.sampler = SAMPLER_DDIM, .ddim_steps = 50, .clip = 1, .seed = 0, .n = 64, .batch = 64};
            sample_images(&viewer, &tr.sched, &so, view_x, NULL);
            char path[4200];
            snprintf(path, sizeof(path), "%s/step_%07ld.png", sample_dir, step);
            if (write_png_grid(path, view_x, 64, cfg.im_channels, cfg.im_size, cfg.im_size, 8, 2, err, sizeof(err)))
                fprintf(stderr, "\nddpm train: %s\n", err);
        }
        if ((save_every > 0 && step % save_every == 0) || last || stop_signal) {
            if (trainer_save(&tr, out, err, sizeof(err))) {
                fprintf(stderr, "\n");
                die("%s", err);
            }
        }
        if (keep_every > 0 && step % keep_every == 0) {
            char kept[4200];
            size_t len = strlen(out);
            int base = len > 5 && !strcmp(out + len - 5, ".ckpt") ? (int)(len - 5) : (int)len;
            snprintf(kept, sizeof(kept), "%.*s_step%07ld.ckpt", base, out, step);
            if (trainer_save(&tr, kept, err, sizeof(err))) {
                fprintf(stderr, "\n");
                die("%s", err);
            }
        }
        if (stop_signal) {
            fprintf(stderr, "\nddpm train: interrupted by signal %d at step %ld; checkpoint saved to %s (continue with --resume)\n",
                    (int)stop_signal, step, out);
            status = 130;
            break;
        }
    }
    if (tty) fputc('\n', stderr);
    if (status == 0)
        fprintf(stderr, "ddpm train: done, step %lld, %.1f s, checkpoint %s\n", (long long)tr.st.step, now_seconds() - t0, out);
    if (log) fclose(log);
    if (sample_every > 0) {
        unet_free(&viewer);
        free(view_x);
    }
    trainer_free(&tr);
    dataset_free(&data);
    return status;
}

// ---------------------------------------------------------------------------------------
// ddpm sample

static const char *SAMPLE_HELP =
    "usage: ddpm sample --model CKPT [options]\n"
    "Generate images with the reverse process and write them as a PNG grid.\n"
    "  --model CKPT        checkpoint written by 'ddpm train'\n"
    "  --n N               number of images (default 100)\n"
    "  --rows R            rows of the grid (default 10)\n"
    "  --seed S            sampling seed (default 0); image i depends only on (seed, i)\n"
    "  --sampler ddpm|ddim ancestral DDPM over all T steps (default) or DDIM\n"
    "  --sigma beta|posterior  DDPM noise: sigma_t^2 = beta_t (default) or the posterior variance\n"
    "  --steps K           DDIM steps (default 100)\n"
    "  --eta E             DDIM eta, 0 = deterministic (default 0)\n"
    "  --no-ema            sample with the raw weights instead of their EMA\n"
    "  --clip              clip the x0 estimate to [-1, 1] in every step (DDPM: posterior mean\n"
    "                      from the clipped x0; DDIM: clipped x0 in the update)\n"
    "  --out FILE.png      grid to write (default samples.png)\n"
    "  --idx FILE          also write the samples as an MNIST IDX image file (uint8)\n"
    "  --strip FILE.png    also write the x0 estimate of the first --strip-n samples at 10 points\n"
    "                      of the reverse process (one row per sample)\n"
    "  --strip-n N         rows of the strip (default 8)\n"
    "  --batch N           images per forward pass (default 100)\n"
    "  --threads N         OpenMP threads\n";

static int cmd_sample(int argc, char **argv) {
    cli_set_command("ddpm sample");
    const char *model = NULL, *out = "samples.png", *idx = NULL, *strip_path = NULL;
    SampleOptions opt = {.sampler = SAMPLER_DDPM, .sigma = SIGMA_BETA, .ddim_steps = 100, .n = 100, .batch = 100,
                         .strip_n = 8, .strip_k = 10, .progress = 1};
    long rows = 10, threads = 0;
    int no_ema = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(SAMPLE_HELP, stdout); return 0; }
        else if (!strcmp(a, "--model")) model = need_value(argc, argv, &i);
        else if (!strcmp(a, "--n")) opt.n = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000000);
        else if (!strcmp(a, "--rows")) rows = parse_long(a, need_value(argc, argv, &i), 1, 100000);
        else if (!strcmp(a, "--seed")) opt.seed = (uint64_t)parse_long(a, need_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (!strcmp(a, "--sampler")) {
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "ddpm")) opt.sampler = SAMPLER_DDPM;
            else if (!strcmp(v, "ddim")) opt.sampler = SAMPLER_DDIM;
            else usage_error("option --sampler: '%s' is not ddpm or ddim", v);
        } else if (!strcmp(a, "--sigma")) {
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "beta")) opt.sigma = SIGMA_BETA;
            else if (!strcmp(v, "posterior")) opt.sigma = SIGMA_POSTERIOR;
            else usage_error("option --sigma: '%s' is not beta or posterior", v);
        } else if (!strcmp(a, "--steps")) opt.ddim_steps = (int)parse_long(a, need_value(argc, argv, &i), 1, 100000);
        else if (!strcmp(a, "--eta")) opt.eta = (float)parse_double(a, need_value(argc, argv, &i), 0.0, 10.0);
        else if (!strcmp(a, "--no-ema")) no_ema = 1;
        else if (!strcmp(a, "--clip")) opt.clip = 1;
        else if (!strcmp(a, "--out")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--idx")) idx = need_value(argc, argv, &i);
        else if (!strcmp(a, "--strip")) strip_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--strip-n")) opt.strip_n = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(a, "--batch")) opt.batch = (int)parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, 1024);
        else usage_error("unknown option '%s'", a);
    }
    if (!model) usage_error("--model CKPT is required");
    set_threads((int)threads);
    Checkpoint ck;
    Unet m;
    Schedule s;
    char err[600];
    int use_ema = load_model_for_sampling(model, no_ema, &ck, &m, &s);
    int C = ck.cfg.im_channels, S = ck.cfg.im_size, D = C * S * S;
    if (opt.strip_n > opt.n) opt.strip_n = opt.n;
    float *x = alignedCalloc((size_t)opt.n * D * sizeof(float));
    float *strip = strip_path ? alignedCalloc((size_t)opt.strip_n * opt.strip_k * D * sizeof(float)) : NULL;
    fprintf(stderr, "ddpm sample: %d images, %s%s, %s weights, step %lld checkpoint, %d threads\n", opt.n,
            opt.sampler == SAMPLER_DDIM ? "DDIM" : "DDPM",
            opt.sampler == SAMPLER_DDIM ? "" : (opt.sigma == SIGMA_BETA ? " (sigma^2 = beta)" : " (posterior sigma)"),
            use_ema ? "EMA" : "raw", (long long)ck.st.step, threads_in_use());
    double t0 = now_seconds();
    sample_images(&m, &s, &opt, x, strip);
    long cols = (opt.n + rows - 1) / rows;
    if (write_png_grid(out, x, opt.n, C, S, S, (int)cols, 2, err, sizeof(err))) die("%s", err);
    if (idx) {
        if (C != 1) die("--idx writes 1-channel images; this model has %d channels", C);
        uint8_t *px = mallocCheck((size_t)opt.n * D);
        for (long i = 0; i < (long)opt.n * D; i++) px[i] = to_u8(x[i]);
        if (idx_write_images(idx, px, opt.n, S, S, err, sizeof(err))) die("%s", err);
        free(px);
    }
    if (strip && write_png_grid(strip_path, strip, opt.strip_n * opt.strip_k, C, S, S, opt.strip_k, 2, err, sizeof(err)))
        die("%s", err);
    fprintf(stderr, "ddpm sample: wrote %s%s%s%s%s in %.1f s\n", out, idx ? ", " : "", idx ? idx : "",
            strip_path ? ", " : "", strip_path ? strip_path : "", now_seconds() - t0);
    free(x); free(strip);
    schedule_free(&s);
    unet_free(&m);
    checkpoint_free(&ck);
    return 0;
}

// ---------------------------------------------------------------------------------------
// ddpm bench

static const char *BENCH_HELP =
    "usage: ddpm bench --config FILE [--batch 64] [--threads N] [--steps K] [--sample-batch 100]\n"
    "Time K training steps (noising, forward, MSE, backward, Adam) and K sampling forward passes\n"
    "after a warm-up, on random data; report images/s, GFLOP/s against the analytic FLOP count,\n"
    "the machine's FMA peak measured in the same run, and peak memory. Each step is timed and the\n"
    "median is reported (machines are shared and noisy); the peak is the best of three bursts.\n";

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

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
// FMA throughput: 10 independent accumulator chains of 8 floats, per thread
static double fma_peak_gflops(void) {
    double t0 = now_seconds();
    long iters = 20000000;
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
        __m256 a[10], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
        for (int k = 0; k < 10; k++) a[k] = _mm256_set1_ps((float)k);
        for (long i = 0; i < iters; i++)
            for (int k = 0; k < 10; k++) a[k] = _mm256_fmadd_ps(a[k], x, y);
        float s[8];
        for (int k = 1; k < 10; k++) a[0] = _mm256_add_ps(a[0], a[k]);
        _mm256_storeu_ps(s, a[0]);
        sink += s[0];
    }
    double dt = now_seconds() - t0;
    if (sink == 12345.0f) fprintf(stderr, " ");
    return 2.0 * 8 * 10 * (double)iters * threads_in_use() / dt / 1e9;
}
#else
static double fma_peak_gflops(void) {
    double t0 = now_seconds();
    long iters = 20000000;
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
        float a[32];
        for (int k = 0; k < 32; k++) a[k] = (float)k;
        for (long i = 0; i < iters; i++)
            for (int k = 0; k < 32; k++) a[k] = a[k] * 0.999999f + 1e-7f;
        for (int k = 0; k < 32; k++) sink += a[k];
    }
    double dt = now_seconds() - t0;
    if (sink == 12345.0f) fprintf(stderr, " ");
    return 2.0 * 32 * (double)iters * threads_in_use() / dt / 1e9;
}
#endif

static int cmd_bench(int argc, char **argv) {
    cli_set_command("ddpm bench");
    const char *config = NULL;
    long batch = 64, threads = 0, steps = 5, sample_batch = 100;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(BENCH_HELP, stdout); return 0; }
        else if (!strcmp(a, "--config")) config = need_value(argc, argv, &i);
        else if (!strcmp(a, "--batch")) batch = parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, 1024);
        else if (!strcmp(a, "--steps")) steps = parse_long(a, need_value(argc, argv, &i), 1, 100000);
        else if (!strcmp(a, "--sample-batch")) sample_batch = parse_long(a, need_value(argc, argv, &i), 1, 65536);
        else usage_error("unknown option '%s'", a);
    }
    if (!config) usage_error("--config FILE is required");
    set_threads((int)threads);
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
    printf("threads %d, batch %ld, sample batch %ld, %ld timed steps\n", threads_in_use(), batch, sample_batch, steps);
    // The machine is shared: each step is timed, and the median step is reported (with the mean
    // and the fastest); the FMA peak is the best of three bursts, before, between and after.
    double *dt = callocCheck(steps, sizeof(double));
    double peak = fma_peak_gflops();
    trainer_step(&tr); // warm-up
    for (long k = 0; k < steps; k++) {
        double t0 = now_seconds();
        trainer_step(&tr);
        dt[k] = now_seconds() - t0;
    }
    double mean_train, min_train, dt_train = median_of(dt, steps, &mean_train, &min_train);
    double train_ips = batch / dt_train, train_gflops = 6e-9 * macs * train_ips;
    printf("train:  %.1f ms/step  %.1f images/s  %.1f GFLOP/s   (median of %ld steps; mean %.1f, fastest %.1f ms)\n",
           1e3 * dt_train, train_ips, train_gflops, steps, 1e3 * mean_train, 1e3 * min_train);
    double p2 = fma_peak_gflops();
    if (p2 > peak) peak = p2;
    // sampling: forward passes at the sampling batch size
    unet_alloc_acts(&tr.model, (int)sample_batch, 0);
    float *x = alignedCalloc((size_t)sample_batch * cfg.im_size * cfg.im_size * sizeof(float));
    int *t = callocCheck(sample_batch, sizeof(int));
    Rng r;
    rng_seed(&r, 1);
    rng_fill_normal(&r, x, sample_batch * cfg.im_size * cfg.im_size);
    for (long b = 0; b < sample_batch; b++) t[b] = 500;
    unet_forward(&tr.model, x, t, (int)sample_batch);
    for (long k = 0; k < steps; k++) {
        double t0 = now_seconds();
        unet_forward(&tr.model, x, t, (int)sample_batch);
        dt[k] = now_seconds() - t0;
    }
    double mean_sample, min_sample, dt_sample = median_of(dt, steps, &mean_sample, &min_sample);
    double sample_ips = sample_batch / dt_sample;
    printf("sample: %.1f ms/step  %.1f image-steps/s  %.1f GFLOP/s   (median; mean %.1f, fastest %.1f ms)\n",
           1e3 * dt_sample, sample_ips, 2e-9 * macs * sample_ips, 1e3 * mean_sample, 1e3 * min_sample);
    p2 = fma_peak_gflops();
    if (p2 > peak) peak = p2;
    free(dt);
    double rss = peak_rss_mb();
    printf("FMA peak (measured, %d threads, best of 3): %.1f GFLOP/s; training efficiency %.1f%%\n", threads_in_use(), peak,
           100 * train_gflops / peak);
    printf("peak RSS: %.0f MB\n", rss);
    printf("train_img_s=%.2f sample_img_steps_s=%.2f gflops=%.2f peak_gflops=%.2f efficiency=%.4f peak_rss_mb=%.0f\n",
           train_ips, sample_ips, train_gflops, peak, train_gflops / peak, rss);
    free(x); free(t);
    trainer_free(&tr);
    free(data.pixels); free(data.labels);
    return 0;
}

// ---------------------------------------------------------------------------------------

static const char *MAIN_HELP =
    "ddpm: a denoising diffusion probabilistic model (DDPM) for MNIST in pure C.\n"
    "usage: ddpm <command> [options]   ('ddpm <command> --help' for its options)\n"
    "  train    train the U-Net on MNIST (or an image folder); checkpoints, exact resume\n"
    "  sample   generate a PNG grid (DDPM or DDIM), an IDX file, a denoising strip\n"
    "  info     print a config or checkpoint: parameters, FLOPs, training state\n"
    "  bench    measure training and sampling speed against the machine's FMA peak\n"
    "  judge    train the MNIST classifier used by eval (models/judge.bin)\n"
    "  eval     sample and score: FLD, Inception Score, confident share, class histogram\n";

int main(int argc, char **argv) {
    if (argc < 2) { fputs(MAIN_HELP, stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { fputs(MAIN_HELP, stdout); return 0; }
    if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
    if (!strcmp(cmd, "sample")) return cmd_sample(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "judge")) return cmd_judge(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    fprintf(stderr, "ddpm: unknown command '%s' (see 'ddpm --help')\n", cmd);
    return 2;
}
