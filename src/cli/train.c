// train.c: ddpm train: start or resume a run; progress, CSV log, preview grids, checkpoints, signals.
#define _DEFAULT_SOURCE // flock
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/config.h"
#include "core/threads.h"
#include "data/data.h"
#include "data/image.h"
#include "diffusion/sample.h"
#include "model/unet.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/trainer.h"

static const char *TRAIN_HELP =
    "usage: ddpm train --config FILE [options]        start a run\n"
    "       ddpm train --resume [CKPT] [options]      continue a run exactly\n"
    "Train the U-Net noise predictor on MNIST-format data (DDPM, MSE on the noise, Adam).\n"
    "  --config FILE      model config (e.g. models/small.cfg)\n"
    "  --init FILE        start the new run from the weights of a safetensors file ('ddpm export',\n"
    "                     tools/ddpm_pytorch_to_safetensors.py): fine-tuning; the config comes from\n"
    "                     its metadata, or from --config; Adam starts afresh, the EMA from the weights\n"
    "  --data DIR         MNIST IDX files (gz or not), or a folder of PNG/JPEG images (default data)\n"
    "  --out CKPT         checkpoint to write (default models/ddpm.ckpt; with --resume, the\n"
    "                     checkpoint resumed from)\n"
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
    "  --sample-every N   write a fixed-seed grid of 64 samples (EMA weights, DPM++ 25 steps,\n"
    "                     clipped) to DIR/step_NNNNNNN.png every N steps (default 0 = off)\n"
    "  --sample-dir DIR   where --sample-every writes (default samples)\n"
    "  --resume [CKPT]    continue from CKPT (default: the --out file) and keep writing it; config and\n"
    "                     hyperparameters come from the checkpoint\n"
    "  --precision fp32|bf16  matrix products in fp32 (default) or with bf16 inputs and fp32\n"
    "                     accumulation (AVX512_BF16 CPUs); kept in the checkpoint\n"
    "SIGINT/SIGTERM/SIGUSR1 finish the current step, save, and exit with status 130.\n"
    "Same seed and thread count give byte-identical checkpoints, resumed or not.\n"
    "Under mpirun (make MPI=1) the ranks share each batch; rank 0 logs and saves (README).\n";

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

// the command line (-1: not given)
typedef struct {
    const char *config, *data_dir, *out, *log_path, *resume, *sample_dir, *init;
    long steps, epochs, batch, seed, save_every, keep_every, limit, threads, warmup, log_every, sample_every;
    double lr, ema, grad_clip;
    int resume_flag, lr_decay; // lr_decay: -1 unset, 0 none, 1 cosine
    int precision;             // -1 unset, 0 fp32, 1 bf16
} TrainArgs;

// returns 1 if --help was printed
static int parse_args(TrainArgs *a, int argc, char **argv) {
    *a = (TrainArgs){.data_dir = "data", .sample_dir = "samples", .steps = -1, .epochs = -1, .batch = -1, .seed = -1,
                     .save_every = 500, .warmup = -1, .log_every = 50, .lr = -1, .ema = -1, .grad_clip = -1,
                     .lr_decay = -1, .precision = -1};
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) { fputs(TRAIN_HELP, stdout); return 1; }
        else if (!strcmp(o, "--config")) a->config = need_value(argc, argv, &i);
        else if (!strcmp(o, "--init")) a->init = need_value(argc, argv, &i);
        else if (!strcmp(o, "--data")) a->data_dir = need_value(argc, argv, &i);
        else if (!strcmp(o, "--out")) a->out = need_value(argc, argv, &i);
        else if (!strcmp(o, "--steps")) a->steps = parse_long(o, need_value(argc, argv, &i), 1, 1000000000L);
        else if (!strcmp(o, "--epochs")) a->epochs = parse_long(o, need_value(argc, argv, &i), 1, 1000000L);
        else if (!strcmp(o, "--batch")) a->batch = parse_long(o, need_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(o, "--lr")) a->lr = parse_double(o, need_value(argc, argv, &i), 1e-12, 10.0);
        else if (!strcmp(o, "--warmup")) a->warmup = parse_long(o, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(o, "--lr-decay")) {
            const char *v = need_value(argc, argv, &i);
            if (!strcmp(v, "none")) a->lr_decay = 0;
            else if (!strcmp(v, "cosine")) a->lr_decay = 1;
            else usage_error("option --lr-decay: '%s' is not none or cosine", v);
        } else if (!strcmp(o, "--grad-clip")) a->grad_clip = parse_double(o, need_value(argc, argv, &i), 0.0, 1e30);
        else if (!strcmp(o, "--ema")) a->ema = parse_double(o, need_value(argc, argv, &i), 0.0, 0.999999);
        else if (!strcmp(o, "--seed")) a->seed = parse_long(o, need_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (!strcmp(o, "--save-every")) a->save_every = parse_long(o, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(o, "--keep-every")) a->keep_every = parse_long(o, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(o, "--limit")) a->limit = parse_long(o, need_value(argc, argv, &i), 1, 100000000L);
        else if (!strcmp(o, "--threads")) a->threads = parse_long(o, need_value(argc, argv, &i), 1, MAX_THREADS);
        else if (!strcmp(o, "--log")) a->log_path = need_value(argc, argv, &i);
        else if (!strcmp(o, "--log-every")) a->log_every = parse_long(o, need_value(argc, argv, &i), 1, 1000000000L);
        else if (!strcmp(o, "--sample-every")) a->sample_every = parse_long(o, need_value(argc, argv, &i), 0, 1000000000L);
        else if (!strcmp(o, "--sample-dir")) a->sample_dir = need_value(argc, argv, &i);
        else if (!strcmp(o, "--precision")) a->precision = parse_precision(need_value(argc, argv, &i));
        else if (!strcmp(o, "--resume")) {
            a->resume_flag = 1;
            if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) a->resume = argv[++i];
        } else usage_error("unknown option '%s'", o);
    }
    if (a->steps > 0 && a->epochs > 0) usage_error("give --steps or --epochs, not both");
    if (!a->resume_flag && !a->config && !a->init) usage_error("--config FILE is required (or --resume to continue a run)");
    if (a->resume_flag && a->init) usage_error("--init starts a new run; --resume continues one: give one of them");
    // a resumed run continues the file it came from, unless --out says otherwise
    if (a->resume_flag && !a->resume) a->resume = a->out ? a->out : "models/ddpm.ckpt";
    if (!a->out) a->out = a->resume_flag ? a->resume : "models/ddpm.ckpt";
    refuse_same_file("--out", a->out, 3, "--config", a->config, "--log", a->log_path, "--init", a->init);
    refuse_same_file("--log", a->log_path, 2, "--config", a->config, "--resume", a->resume);
    refuse_data_file("--out", a->out, a->data_dir);
    refuse_data_file("--log", a->log_path, a->data_dir);
    refuse_bad_output(a->out);
    return 0;
}

// The run's model and state: from the checkpoint (every flag given must agree with it), or new
// from the config and the flags. ck is loaded (and must be freed) when resuming. With --init,
// *init_w receives the file's weights (malloc'ed; NULL otherwise).
static void init_run(const TrainArgs *a, Checkpoint *ck, ModelConfig *cfg, TrainState *st, float **init_w) {
    memset(st, 0, sizeof(*st));
    char err[ERR_LEN];
    *init_w = NULL;
    if (!a->resume_flag) {
        if (a->init) {
            Unet w;
            load_safetensors_model(a->init, a->config, &w, NULL);
            *cfg = w.cfg;
            *init_w = mallocCheck(w.n_params * sizeof(float));
            memcpy(*init_w, w.params, w.n_params * sizeof(float));
            unet_free(&w);
        } else config_load(cfg, a->config);
        st->batch = a->batch > 0 ? (int)a->batch : 64;
        st->lr = a->lr > 0 ? (float)a->lr : 1e-4f;
        st->beta1 = 0.9f;
        st->beta2 = 0.999f;
        st->eps = 1e-8f;
        st->ema_decay = a->ema >= 0 ? (float)a->ema : 0.999f;
        st->warmup = a->warmup >= 0 ? (int)a->warmup : 0;
        st->grad_clip = a->grad_clip >= 0 ? (float)a->grad_clip : 0.0f;
        st->seed = a->seed >= 0 ? (uint64_t)a->seed : 0;
        st->precision = a->precision > 0;
        return;
    }
    const char *r = a->resume;
    if (checkpoint_load(r, ck, err, sizeof(err))) die("%s", err);
    *cfg = ck->cfg;
    *st = ck->st;
    if (a->config) {
        ModelConfig given;
        config_load(&given, a->config);
        char x[4096], y[4096];
        config_to_text(&given, x, sizeof(x));
        config_to_text(cfg, y, sizeof(y));
        if (strcmp(x, y)) die("--config %s differs from the model in checkpoint %s", a->config, r);
    }
    if (a->batch > 0 && a->batch != st->batch) die("--batch %ld contradicts the checkpoint's batch %d (%s)", a->batch, st->batch, r);
    if (a->lr > 0 && (float)a->lr != st->lr) die("--lr %g contradicts the checkpoint's lr %g (%s)", a->lr, st->lr, r);
    if (a->seed >= 0 && (uint64_t)a->seed != st->seed)
        die("--seed %ld contradicts the checkpoint's seed %llu (%s)", a->seed, (unsigned long long)st->seed, r);
    if (a->ema >= 0 && (float)a->ema != st->ema_decay)
        die("--ema %g contradicts the checkpoint's EMA decay %g (%s)", a->ema, st->ema_decay, r);
    if (a->warmup >= 0 && a->warmup != st->warmup)
        die("--warmup %ld contradicts the checkpoint's warm-up %d (%s)", a->warmup, st->warmup, r);
    if (a->grad_clip >= 0 && (float)a->grad_clip != st->grad_clip)
        die("--grad-clip %g contradicts the checkpoint's %g (%s)", a->grad_clip, st->grad_clip, r);
    if (a->precision >= 0 && a->precision != st->precision)
        die("--precision %s contradicts the checkpoint's %s (%s)", a->precision ? "bf16" : "fp32", st->precision ? "bf16" : "fp32", r);
    if (st->precision) parse_precision("bf16"); // the CPU (and build) must run the run's precision
    if (a->lr_decay >= 0 && a->lr_decay != (st->lr_decay_steps > 0))
        die("--lr-decay %s contradicts the checkpoint (%s)", a->lr_decay ? "cosine" : "none", r);
}

// ---- the side effects of the training loop: CSV log, preview grids, checkpoints

static void save_or_die(const Trainer *tr, const char *path) {
    char err[ERR_LEN];
    if (trainer_save(tr, path, err, sizeof(err))) {
        fprintf(stderr, "\n");
        die("%s", err);
    }
}

typedef struct {
    FILE *f;
    double loss_sum; // since the last row
    long steps;
} CsvLog;

static void csv_open(CsvLog *l, const char *path, int append) {
    memset(l, 0, sizeof(*l));
    if (!path) return;
    l->f = fopen(path, append ? "a" : "w");
    if (!l->f) die("%s: cannot open log file: %s", path, strerror(errno));
    if (ftell(l->f) == 0) {
        fprintf(l->f, "step,epoch,loss,images_per_s,wall_s");
        for (int k = 0; k < TRAIN_T_BUCKETS; k++) fprintf(l->f, ",loss_t%d", k);
        fputs(",lr,grad_norm\n", l->f);
    }
}

// one row: the mean loss since the last row, speed, time, the loss by t bucket (then reset), lr, |g|.
// A failed write (a full disk) saves the checkpoint and stops the run with the error.
static void csv_row(CsvLog *l, Trainer *tr, long step, double ips, double wall, float lr, const char *log_path,
                    const char *out) {
    if (l->f) {
        clearerr(l->f);
        fprintf(l->f, "%ld,%lld,%.6f,%.2f,%.2f", step, (long long)tr->st.epoch, l->loss_sum / l->steps, ips, wall);
        for (int k = 0; k < TRAIN_T_BUCKETS; k++) {
            fprintf(l->f, ",%.6f", tr->bucket_count[k] ? tr->bucket_loss[k] / tr->bucket_count[k] : NAN);
            tr->bucket_loss[k] = 0;
            tr->bucket_count[k] = 0;
        }
        fprintf(l->f, ",%.6e,%.6f\n", lr, tr->last_grad_norm);
        if (fflush(l->f) != 0 || ferror(l->f)) {
            int e = errno;
            save_or_die(tr, out);
            fprintf(stderr, "\n");
            die("%s: cannot write the log: %s; stopped at step %ld, checkpoint saved to %s", log_path, strerror(e), step, out);
        }
    }
    l->loss_sum = 0;
    l->steps = 0;
}

// progress grids: a second model instance, so sampling never touches the training activations
typedef struct {
    Unet m;
    float *x;
    const char *dir;
} Preview;

static void preview_init(Preview *p, const ModelConfig *cfg, const char *dir) {
    unet_build(&p->m, cfg);
    p->x = alignedCalloc((size_t)64 * cfg->im_channels * cfg->im_size * cfg->im_size * sizeof(float));
    p->dir = dir;
    if (dist_root() && mkdir(dir, 0755) != 0 && errno != EEXIST) die("%s: cannot create directory: %s", dir, strerror(errno));
}

// DIR/step_NNNNNNN.png: 64 samples of the EMA weights (DPM++ 2M 25 steps, clipped, seed 0; class-
// conditional models: row r of class r mod num_classes, guided); under MPI each rank samples its
// share of the 64 (image i depends only on i) and rank 0 writes the grid
static void preview_write(Preview *p, const Trainer *tr, long step) {
    memcpy(p->m.params, tr->ema ? tr->ema : tr->model.params, p->m.n_params * sizeof(float));
    int labels[64], nc = p->m.cfg.num_classes;
    for (int i = 0; i < 64; i++) labels[i] = nc > 0 ? (i / 8) % nc : 0;
    int lo, hi;
    dist_slice(64, &lo, &hi);
    size_t D = (size_t)p->m.cfg.im_channels * p->m.cfg.im_size * p->m.cfg.im_size;
    SampleOptions so = {.sampler = SAMPLER_DPMPP2M, .steps = 25, .rho = 7.0f, .clip = 1, .seed = 0, .n = hi - lo,
                        .first = lo, .batch = 64, .labels = nc > 0 ? labels + lo : NULL, .guidance = SAMPLE_DEFAULT_GUIDANCE};
    if (so.n > 0) sample_unet(&p->m, &tr->sched, &so, p->x + lo * D, NULL);
    dist_gather_rows_root(p->x, 64, D);
    if (!dist_root()) return;
    char path[4200], err[600];
    snprintf(path, sizeof(path), "%s/step_%07ld.png", p->dir, step);
    const ModelConfig *c = &p->m.cfg;
    if (write_png_grid(path, p->x, 64, c->im_channels, c->im_size, c->im_size, 8, 2, err, sizeof(err)))
        fprintf(stderr, "\nddpm train: %s\n", err);
}

static void preview_free(Preview *p) {
    unet_free(&p->m);
    free(p->x);
}

// a kept copy: OUT_stepNNNNNNN.ckpt (OUT without its .ckpt)
static void keep_copy(const Trainer *tr, const char *out, long step) {
    char kept[4200];
    size_t len = strlen(out);
    int base = len > 5 && !strcmp(out + len - 5, ".ckpt") ? (int)(len - 5) : (int)len;
    snprintf(kept, sizeof(kept), "%.*s_step%07ld.ckpt", base, out, step);
    save_or_die(tr, kept);
}

// Steps until `total`, a signal or a non-finite loss. Returns the exit status (0, 130, 1).
static int train_loop(Trainer *tr, long total, const TrainArgs *a, CsvLog *log, Preview *pv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); // mpirun forwards it to every rank (it kills them 1 s after SIGTERM)
    int tty = isatty(2), B = tr->st.batch;
    double t0 = now_seconds(), t_window = t0, smooth = -1;
    double t_rate = t0, recent = 0; // images/s over the last seconds (speed and ETA follow the machine's load)
    long rate_step = tr->st.step;
    long start_step = tr->st.step;
    int status = 0, root = dist_root();
    ThreadTuner tu;
    tuner_init(&tu, threads_in_use());
    while (tr->st.step < total) {
        tuner_begin(&tu);
        float loss = trainer_step(tr);
        tuner_end(&tu, B);
        stop_signal = dist_max_int(stop_signal); // a signal to any rank stops every rank
        if (!isfinite(loss)) { // the loss of the global batch: every rank stops here
            if (root)
                fprintf(stderr, "\nddpm train: loss is %s at step %lld; stopping. The last good checkpoint (%s) is unchanged.\n",
                    isnan(loss) ? "NaN" : "infinite", (long long)tr->st.step + 1, a->out);
            status = 1;
            break;
        }
        smooth = smooth < 0 ? loss : 0.98 * smooth + 0.02 * loss;
        log->loss_sum += loss;
        log->steps++;
        long step = tr->st.step;
        double now = now_seconds();
        int last = step == total, row = step % a->log_every == 0 || last;
        if (root && (row || (tty && now - t_window > 0.5))) {
            double ips = (double)(step - start_step) * B / (now - t0);
            if (now - t_rate >= 2.0 || recent == 0) { // a window of at least 2 s, smoothed
                double w = (double)(step - rate_step) * B / (now - t_rate);
                recent = recent > 0 ? 0.5 * recent + 0.5 * w : w;
                t_rate = now;
                rate_step = step;
            }
            double shown = recent > 0 ? recent : ips; // the progress line shows the recent speed
            char eta[32];
            fmt_time(eta, sizeof(eta), (double)(total - step) * B / shown);
            float lr_now = train_lr_at(&tr->st, step - 1);
            char busy[48] = ""; // the machine is busy: fewer threads are faster (threads.h)
            if (tu.cur < tu.max) snprintf(busy, sizeof busy, " | %d of %d threads", tu.cur, tu.max);
            if (tty || row)
                fprintf(stderr, "%sstep %ld/%ld | epoch %lld | loss %.4f | lr %.2e | |g| %.3f | %.1f img/s%s | ETA %s%s",
                        tty ? "\r" : "", step, total, (long long)tr->st.epoch, smooth, lr_now, tr->last_grad_norm, shown, busy,
                        eta, tty ? "   " : "\n");
            if (row) csv_row(log, tr, step, ips, now - t0, lr_now, a->log_path, a->out);
            t_window = now;
        }
        if (a->sample_every > 0 && (step % a->sample_every == 0 || last)) preview_write(pv, tr, step);
        if (root && ((a->save_every > 0 && step % a->save_every == 0) || last || stop_signal)) save_or_die(tr, a->out);
        if (root && a->keep_every > 0 && step % a->keep_every == 0) keep_copy(tr, a->out, step);
        if (stop_signal) {
            if (root)
                fprintf(stderr, "\nddpm train: interrupted by signal %d at step %ld; checkpoint saved to %s (continue with --resume)\n",
                    (int)stop_signal, step, a->out);
            status = 130;
            break;
        }
    }
    if (tty && root) fputc('\n', stderr);
    set_threads(tu.max);
    if (status == 0 && root)
        fprintf(stderr, "ddpm train: done, step %lld, %.1f s, checkpoint %s\n", (long long)tr->st.step, now_seconds() - t0, a->out);
    return status;
}

// One writer per checkpoint: an exclusive lock (flock) on OUT.lock, held until the process ends
// (the kernel drops it if the process dies). A second 'ddpm train' on the same OUT gets a clear
// error. With the lock held, temp files OUT.tmp.XXXXXX that a killed save left are removed.
static char lock_path[4200];
static void remove_lock(void) { unlink(lock_path); }

static void lock_checkpoint(const char *out) {
    snprintf(lock_path, sizeof lock_path, "%s.lock", out);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die("%s: cannot create the lock file %s: %s", out, lock_path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        die("%s: another 'ddpm train' (pid %s) is writing this checkpoint (lock %s)", out, *pid ? pid : "?", lock_path);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) { /* the pid is only informative */ }
    atexit(remove_lock); // fd stays open (and locked) until exit
    // stale temp files of this checkpoint: OUT.tmp.XXXXXX (write_file_atomic)
    char dir[4200], base[4200];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    snprintf(base, sizeof base, "%s.tmp.", slash ? slash + 1 : out);
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    DIR *d = opendir(*dir ? dir : "/");
    if (!d) return;
    size_t bl = strlen(base);
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, base, bl) || strlen(e->d_name) != bl + 6) continue;
        char stale[8500];
        snprintf(stale, sizeof stale, "%s/%s", *dir ? dir : "", e->d_name);
        if (unlink(stale) == 0) fprintf(stderr, "ddpm train: removed %s (left by an interrupted save)\n", stale);
    }
    closedir(d);
}

int cmd_train(int argc, char **argv) {
    cli_set_command("ddpm train");
    TrainArgs a;
    if (parse_args(&a, argc, argv)) return 0;
    set_threads((int)a.threads);
    int root = dist_root(), ranks = dist_size();
    if (root) lock_checkpoint(a.out); // rank 0 alone writes

    // checkpoint first (cheap to validate), then data
    Checkpoint ck;
    ModelConfig cfg;
    TrainState st;
    float *init_w;
    init_run(&a, &ck, &cfg, &st, &init_w);
    const char *src = a.resume_flag ? a.resume : a.init ? a.init : a.config;
    if (cfg.im_channels != 1) die("%s: im_channels = %d, but the data loader reads 1-channel (grayscale) images", src, cfg.im_channels);
    Dataset data;
    char err[ERR_LEN];
    if (dataset_load(&data, a.data_dir, 0, cfg.im_size, err, sizeof(err))) die("%s", err);
    if (a.limit > 0 && a.limit < data.n) data.n = (int)a.limit;
    if (data.n < st.batch) die("%s: %d training images, fewer than one batch of %d", a.data_dir, data.n, st.batch);
    if (st.batch < ranks) die("batch %d is smaller than the %d MPI ranks: every rank needs an image of each batch", st.batch, ranks);
    if (a.resume_flag && st.n_data != data.n)
        die("the data has %d images but checkpoint %s was trained on %lld (use the same --data/--limit)", data.n, a.resume,
            (long long)st.n_data);
    st.n_data = data.n;
    long spe = data.n / st.batch;
    long total = a.steps > 0 ? a.steps : a.epochs > 0 ? a.epochs * spe : (a.resume_flag ? -1 : spe);
    if (total < 0) usage_error("give the run's total length with --steps N or --epochs N");
    if (!a.resume_flag && a.lr_decay == 1) {
        if (total <= st.warmup) usage_error("--lr-decay cosine needs more steps (%ld) than --warmup (%d)", total, st.warmup);
        st.lr_decay_steps = total;
    }
    if (a.resume_flag && st.lr_decay_steps > 0 && total != st.lr_decay_steps)
        die("the run's length %ld differs from the %lld steps its learning rate decays over (%s): resume with --steps %lld",
            total, (long long)st.lr_decay_steps, a.resume, (long long)st.lr_decay_steps);

    use_precision(st.precision);
    Trainer tr;
    trainer_init(&tr, &cfg, &st, &data, a.resume_flag ? &ck : NULL);
    if (a.resume_flag) checkpoint_free(&ck);
    if (init_w) { // fine-tuning: the file's weights (and the EMA from them) instead of the init
        memcpy(tr.model.params, init_w, tr.model.n_params * sizeof(float));
        if (tr.ema) memcpy(tr.ema, init_w, tr.model.n_params * sizeof(float));
        free(init_w);
    }
    double macs = unet_forward_macs(&tr.model);
    char par[64] = ""; // under MPI: ranks and the images of a batch per rank
    if (ranks > 1) snprintf(par, sizeof par, " | %d MPI ranks, %d-%d images each", ranks, st.batch / ranks, dist_slice_max(st.batch));
    const ModelConfig *mc = &tr.model.cfg;
    if (root) {
        fprintf(stderr, "ddpm train: %s, %zu parameters, %.3f GFLOP/image fwd | %d images, batch %d, %ld steps/epoch | %d threads%s\n",
                a.resume_flag ? "resuming" : a.init ? "new run from the weights of --init" : "new run", tr.model.n_params,
                2e-9 * macs, data.n, st.batch, spe, threads_in_use(), par);
        char extra[200] = "";
        if (mc->objective == OBJECTIVE_EDM) snprintf(extra, sizeof extra, " (sigma_data %.4f)", mc->sigma_data);
        fprintf(stderr, "ddpm train: objective %s%s, %s noise levels", objective_name(mc->objective), extra,
                sigma_sampling_name(mc->sigma_sampling));
        if (mc->sigma_sampling == SIGMA_SAMPLING_LOGNORMAL) fprintf(stderr, " (P_mean %g, P_std %g)", mc->p_mean, mc->p_std);
        if (mc->min_snr_gamma > 0) fprintf(stderr, ", Min-SNR-%g weights", mc->min_snr_gamma);
        if (mc->num_classes > 0) fprintf(stderr, ", %d classes (labels dropped with p %g)", mc->num_classes, mc->p_uncond);
        fputc('\n', stderr);
    }
    int status = 0;
    if (tr.st.step >= total) {
        if (root) fprintf(stderr, "ddpm train: checkpoint is at step %lld, the run's total is %ld: nothing to do\n", (long long)tr.st.step, total);
    } else {
        if (root)
            fprintf(stderr, "ddpm train: step %lld -> %ld (epoch %lld), lr %g (%s), warm-up %d, grad clip %g, EMA %g, seed %llu, %s -> %s\n",
                (long long)tr.st.step, total, (long long)tr.st.epoch, tr.st.lr, tr.st.lr_decay_steps > 0 ? "cosine decay" : "constant",
                tr.st.warmup, tr.st.grad_clip, tr.st.ema_decay, (unsigned long long)tr.st.seed, tr.st.precision ? "bf16" : "fp32",
                a.out);
        CsvLog log;
        csv_open(&log, root ? a.log_path : NULL, a.resume_flag);
        Preview pv;
        if (a.sample_every > 0) preview_init(&pv, &cfg, a.sample_dir);
        status = train_loop(&tr, total, &a, &log, &pv);
        if (log.f && fclose(log.f) != 0 && status == 0) {
            fprintf(stderr, "ddpm train: %s: cannot write the log: %s\n", a.log_path, strerror(errno));
            status = 1;
        }
        if (a.sample_every > 0) preview_free(&pv);
    }
    trainer_free(&tr);
    dataset_free(&data);
    return status;
}
