// cli.c: argument parsing helpers shared by the commands.
#define _POSIX_C_SOURCE 200809L
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "model/safetensors.h"

static const char *cmd_name = "ddpm";

void cli_set_command(const char *name) { cmd_name = name; }

void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cmd_name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see '%s --help')\n", cmd_name);
    va_end(ap);
    exit(2);
}

const char *need_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) usage_error("option %s needs a value", argv[*i]);
    return argv[++*i];
}

long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) usage_error("option %s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

double parse_double(const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) usage_error("option %s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

#ifndef DDPM_DATADIR
#define DDPM_DATADIR "/usr/local/share/ddpm"
#endif

const char *shipped_file(const char *rel) {
    static char path[4096];
    if (access(rel, F_OK) == 0) return rel;
    snprintf(path, sizeof path, "%s/%s", DDPM_DATADIR, rel);
    return access(path, F_OK) == 0 ? path : rel;
}

void refuse_same_file(const char *out_flag, const char *out, int n, ...) {
    if (!out) return;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *flag = va_arg(ap, const char *), *path = va_arg(ap, const char *);
        if (path && same_file(out, path)) {
            va_end(ap);
            usage_error("%s %s is the same file as %s %s: refusing to overwrite it", out_flag, out, flag, path);
        }
    }
    va_end(ap);
}

void refuse_data_file(const char *out_flag, const char *out, const char *data_dir) {
    static const char *names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                  "t10k-labels-idx1-ubyte"};
    char path[4200];
    for (int i = 0; i < 8 && out && data_dir; i++) {
        snprintf(path, sizeof path, "%s/%s%s", data_dir, names[i / 2], i % 2 ? ".gz" : "");
        if (same_file(out, path)) usage_error("%s %s is the data file %s: refusing to overwrite it", out_flag, out, path);
    }
}

void refuse_bad_output(const char *path) {
    char err[ERR_LEN];
    if (path && output_check(path, NULL, err, sizeof err)) die("%s", err);
}

const char *PRECISION_HELP =
    "  --precision fp32|bf16  precision of the matrix products: fp32 (default), or bf16 inputs with\n"
    "                      fp32 accumulation (weights, Adam and EMA stay fp32); bf16 needs a CPU\n"
    "                      with AVX512_BF16\n";

int parse_precision(const char *v) {
    if (!strcmp(v, "fp32")) return 0;
    if (strcmp(v, "bf16")) usage_error("option --precision: '%s' is not fp32 or bf16", v);
#ifdef DDPM_REF
    usage_error("--precision bf16: this ddpm was built with REF=1 (plain reference layers, fp32 only)");
#endif
    if (!gemm_bf16_supported())
        usage_error("--precision bf16: this CPU has no AVX512_BF16 instructions (fp32 only)");
    return 1;
}

void use_precision(int precision) {
    if (gemm_set_precision(precision ? GEMM_BF16 : GEMM_FP32)) die("bf16 matrix products need AVX512_BF16, which this CPU lacks");
}

void sample_options_default(SampleOptions *o) {
    memset(o, 0, sizeof(*o));
    o->sampler = SAMPLER_DDPM;
    o->sigma = SIGMA_BETA;
    o->clip = 1;
    o->ddim_steps = 100;
    o->batch = 100;
    o->progress = 1;
}

const char *SAMPLE_FLAGS_HELP =
    "  --seed S            sampling seed (default 0); image i depends only on (seed, i)\n"
    "  --sampler ddpm|ddim ancestral DDPM over all T steps (default) or DDIM\n"
    "  --sigma beta|posterior  DDPM noise: sigma_t^2 = beta_t (default) or the posterior variance\n"
    "  --steps K           DDIM steps (default 100)\n"
    "  --eta E             DDIM eta, 0 = deterministic (default 0)\n"
    "  --no-clip           do not clip the x0 estimate to [-1, 1] in each step (clipping is the\n"
    "                      default: DDPM takes the posterior mean from the clipped x0, DDIM the\n"
    "                      clipped x0 in its update; --clip is accepted and changes nothing)\n"
    "  --no-ema            sample with the raw weights instead of their EMA\n"
    "  --batch N           images per forward pass (default 100)\n"
    "  --noise ddpmc|torch the random numbers: ddpm.c's, one stream per image (default), or\n"
    "                      PyTorch's: torch.manual_seed(S), then x_T and each step's z drawn as\n"
    "                      torch.randn(batch, C, H, W); the images then depend on --batch\n";

int parse_sample_flag(SampleOptions *o, int *no_ema, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "--seed")) o->seed = (uint64_t)parse_long(a, need_value(argc, argv, i), 0, 0x7fffffffffffffffL);
    else if (!strcmp(a, "--sampler")) {
        const char *v = need_value(argc, argv, i);
        if (!strcmp(v, "ddpm")) o->sampler = SAMPLER_DDPM;
        else if (!strcmp(v, "ddim")) o->sampler = SAMPLER_DDIM;
        else usage_error("option --sampler: '%s' is not ddpm or ddim", v);
    } else if (!strcmp(a, "--sigma")) {
        const char *v = need_value(argc, argv, i);
        if (!strcmp(v, "beta")) o->sigma = SIGMA_BETA;
        else if (!strcmp(v, "posterior")) o->sigma = SIGMA_POSTERIOR;
        else usage_error("option --sigma: '%s' is not beta or posterior", v);
    } else if (!strcmp(a, "--steps")) o->ddim_steps = (int)parse_long(a, need_value(argc, argv, i), 1, 100000);
    else if (!strcmp(a, "--eta")) o->eta = (float)parse_double(a, need_value(argc, argv, i), 0.0, 10.0);
    else if (!strcmp(a, "--clip")) o->clip = 1;
    else if (!strcmp(a, "--no-clip")) o->clip = 0;
    else if (!strcmp(a, "--no-ema")) *no_ema = 1;
    else if (!strcmp(a, "--batch")) {
        o->batch = (int)parse_long(a, need_value(argc, argv, i), 1, 65536);
        o->batch_given = 1;
    } else if (!strcmp(a, "--noise")) {
        const char *v = need_value(argc, argv, i);
        if (!strcmp(v, "ddpmc")) o->noise = NOISE_DDPMC;
        else if (!strcmp(v, "torch")) o->noise = NOISE_TORCH;
        else usage_error("option --noise: '%s' is not ddpmc or torch", v);
    }
    else return 0;
    return 1;
}

int load_safetensors_model(const char *path, const char *config, Unet *m, long long *step) {
    char err[ERR_LEN];
    SafeTensors st;
    if (safetensors_read(&st, path, err, sizeof err)) die("%s", err);
    ModelConfig cfg;
    const char *text = safetensors_meta(&st, "ddpm_config");
    if (config) config_load(&cfg, config);
    else if (!text) die("%s: no ddpm_config in its __metadata__: give the model's config with --config FILE", path);
    else if (config_parse(&cfg, text, path, err, sizeof err)) die("%s (its ddpm_config metadata)", err);
    unet_build(m, &cfg);
    if (safetensors_to_params(&st, path, m, m->params, err, sizeof err)) die("%s", err);
    const char *w = safetensors_meta(&st, "ddpm_weights"), *sp = safetensors_meta(&st, "ddpm_step");
    if (step) *step = sp ? atoll(sp) : 0;
    int ema = w && !strcmp(w, "ema");
    safetensors_free(&st);
    return ema;
}

int load_model_for_sampling(const char *path, const char *config, int no_ema, Checkpoint *ck, Unet *m, Schedule *s) {
    char err[ERR_LEN];
    if (safetensors_sniff(path)) {
        memset(ck, 0, sizeof(*ck));
        long long step;
        int ema = load_safetensors_model(path, config, m, &step);
        ck->cfg = m->cfg;
        ck->st.step = step;
        schedule_init(s, &ck->cfg);
        return ema;
    }
    if (config) die("%s: --config is for safetensors files; a checkpoint carries its config", path);
    if (checkpoint_load(path, ck, err, sizeof(err))) die("%s", err);
    unet_build(m, &ck->cfg);
    if (m->n_params != ck->n_params) die("%s: %zu parameters, its config builds %zu", path, ck->n_params, m->n_params);
    int use_ema = ck->ema && !no_ema;
    memcpy(m->params, use_ema ? ck->ema : ck->params, m->n_params * sizeof(float));
    schedule_init(s, &ck->cfg);
    return use_ema;
}

typedef struct {
    Unet *m;
    ThreadTuner tu;
} UnetDenoiser;

static const float *unet_denoiser(void *ctx, const float *x, const int *t, int n) {
    UnetDenoiser *d = ctx;
    tuner_begin(&d->tu);
    const float *eps = unet_forward(d->m, x, t, n);
    tuner_end(&d->tu, n);
    return eps;
}

void sample_unet(Unet *m, const Schedule *s, const SampleOptions *opt, float *x, float *strip) {
    int B = opt->batch < opt->n ? opt->batch : opt->n;
    unet_alloc_acts(m, B > 0 ? B : 1, 0);
    int D = m->cfg.im_channels * m->cfg.im_size * m->cfg.im_size;
    UnetDenoiser d = {.m = m};
    tuner_init(&d.tu, threads_in_use());
    sample_images(unet_denoiser, &d, D, s, opt, x, strip);
    set_threads(d.tu.max);
}

void print_sampling_banner(const char *cmd, long n, const SampleOptions *opt, int use_ema, long long step) {
    char how[200];
    sample_describe(how, sizeof how, opt);
    fprintf(stderr, "%s: %ld images, %s, %s weights, step %lld checkpoint, %d threads\n", cmd, n, how,
            use_ema ? "EMA" : "raw", step, threads_in_use());
}
