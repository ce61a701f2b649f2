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

void sample_args_default(SampleArgs *a) {
    memset(a, 0, sizeof(*a));
    SampleOptions *o = &a->opt;
    o->sampler = SAMPLER_DPMPP2M;
    o->sigma = SIGMA_BETA;
    o->clip = 1;
    o->rho = 7.0f;
    o->guidance = SAMPLE_DEFAULT_GUIDANCE;
    o->batch = 100;
    o->progress = 1;
    a->label = -1;
}

const char *SAMPLE_FLAGS_HELP =
    "  --seed S            sampling seed (default 0); image i depends only on (seed, i)\n"
    "  --sampler NAME      dpm++ (DPM-Solver++(2M), the default), heun (EDM's 2nd order), ddim,\n"
    "                      or ddpm (ancestral, all T steps)\n"
    "  --steps K           steps of dpm++, heun or ddim (default: 50 network evaluations per image,\n"
    "                      guidance included: dpm++/ddim 50, heun 25; 25 and 13 with guidance)\n"
    "  --rho R             Karras sigma spacing of dpm++ and heun (default 7)\n"
    "  --sigma beta|posterior  DDPM noise: sigma_t^2 = beta_t (default) or the posterior variance\n"
    "  --eta E             DDIM eta, 0 = deterministic (default 0)\n"
    "  --no-clip           do not clip the x0 estimate to [-1, 1] in each step (clipping is the\n"
    "                      default; --clip is accepted and changes nothing)\n"
    "  --no-ema            sample with the raw weights instead of their EMA\n"
    "  --batch N           images per forward pass (default 100)\n"
    "class-conditional models (num_classes in the config):\n"
    "  --label L           every image of class L\n"
    "  --labels random     each image's class drawn uniformly from (seed, i) (the default)\n"
    "  --labels all        one row of the grid per class\n"
    "  --labels none       the null label: the unconditional model\n"
    "  --guidance W        classifier-free guidance F_u + W (F_c - F_u) (default 1.25; 1 = no guidance)\n"
    "  --noise ddpmc|torch the random numbers: ddpm.c's, one stream per image (default), or\n"
    "                      PyTorch's: torch.manual_seed(S), then x_T and each step's z drawn as\n"
    "                      torch.randn(batch, C, H, W); the images then depend on --batch\n";

int parse_sample_flag(SampleArgs *sa, int argc, char **argv, int *i) {
    SampleOptions *o = &sa->opt;
    const char *a = argv[*i];
    if (!strcmp(a, "--seed")) o->seed = (uint64_t)parse_long(a, need_value(argc, argv, i), 0, 0x7fffffffffffffffL);
    else if (!strcmp(a, "--sampler")) {
        const char *v = need_value(argc, argv, i);
        int ok;
        o->sampler = sampler_from_name(v, &ok);
        if (!ok) usage_error("option --sampler: '%s' is not dpm++, heun, ddim or ddpm", v);
    } else if (!strcmp(a, "--sigma")) {
        const char *v = need_value(argc, argv, i);
        if (!strcmp(v, "beta")) o->sigma = SIGMA_BETA;
        else if (!strcmp(v, "posterior")) o->sigma = SIGMA_POSTERIOR;
        else usage_error("option --sigma: '%s' is not beta or posterior", v);
    } else if (!strcmp(a, "--steps")) {
        o->steps = (int)parse_long(a, need_value(argc, argv, i), 1, 100000);
        sa->steps_given = 1;
    } else if (!strcmp(a, "--eta")) o->eta = (float)parse_double(a, need_value(argc, argv, i), 0.0, 10.0);
    else if (!strcmp(a, "--rho")) o->rho = (float)parse_double(a, need_value(argc, argv, i), 0.1, 100.0);
    else if (!strcmp(a, "--clip")) o->clip = 1;
    else if (!strcmp(a, "--no-clip")) o->clip = 0;
    else if (!strcmp(a, "--no-ema")) sa->no_ema = 1;
    else if (!strcmp(a, "--batch")) {
        o->batch = (int)parse_long(a, need_value(argc, argv, i), 1, 65536);
        o->batch_given = 1;
    } else if (!strcmp(a, "--noise")) {
        const char *v = need_value(argc, argv, i);
        if (!strcmp(v, "ddpmc")) o->noise = NOISE_DDPMC;
        else if (!strcmp(v, "torch")) o->noise = NOISE_TORCH;
        else usage_error("option --noise: '%s' is not ddpmc or torch", v);
    }
    else if (!strcmp(a, "--label")) {
        if (sa->labels_given) usage_error("give one of --label L or --labels all|random|none");
        sa->label = (int)parse_long(a, need_value(argc, argv, i), 0, CFG_MAX_CLASSES - 1);
        sa->labels_mode = LABELS_ONE;
        sa->labels_given = 1;
    } else if (!strcmp(a, "--labels")) {
        const char *v = need_value(argc, argv, i);
        if (sa->labels_given) usage_error("give one of --label L or --labels all|random|none");
        if (!strcmp(v, "all")) sa->labels_mode = LABELS_ALL;
        else if (!strcmp(v, "random")) sa->labels_mode = LABELS_RANDOM;
        else if (!strcmp(v, "none")) sa->labels_mode = LABELS_NONE;
        else usage_error("option --labels: '%s' is not all, random or none", v);
        sa->labels_all = sa->labels_mode == LABELS_ALL;
        sa->labels_given = 1;
    } else if (!strcmp(a, "--guidance")) {
        o->guidance = (float)parse_double(a, need_value(argc, argv, i), 0.0, 100.0);
        sa->guidance_given = 1;
    } else return 0;
    return 1;
}

void sample_args_finish(SampleArgs *a, const ModelConfig *c, int cols, const char *model) {
    SampleOptions *o = &a->opt;
    o->objective = c->objective;
    o->sigma_data = c->sigma_data;
    o->num_classes = c->num_classes;
    if (a->labels_given && c->num_classes == 0)
        usage_error("%s: --label%s needs a class-conditional model (num_classes in its config); this one is not",
                    model, a->labels_mode == LABELS_ONE ? "" : "s");
    if (a->label >= c->num_classes && c->num_classes > 0)
        usage_error("--label %d: %s has classes 0..%d", a->label, model, c->num_classes - 1);
    int want = c->num_classes > 0 && a->labels_mode != LABELS_NONE;
    if (a->guidance_given && !want)
        usage_error("--guidance applies to a class-conditional model sampled with labels (not --labels none)");
    if (want) {
        a->labels = mallocCheck((size_t)o->n * sizeof(int));
        for (int i = 0; i < o->n; i++) {
            if (a->labels_mode == LABELS_ONE) a->labels[i] = a->label;
            else if (a->labels_mode == LABELS_ALL) a->labels[i] = (i / (cols > 0 ? cols : 1)) % c->num_classes;
            else { // uniform from (seed, i): splitmix64 of both
                uint64_t z = o->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i + 0x632BE59BD9B4E019ULL;
                z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
                z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
                z ^= z >> 31;
                a->labels[i] = (int)(z % (uint64_t)c->num_classes);
            }
        }
        o->labels = a->labels;
    }
    if (!a->steps_given) {
        int per = want && o->guidance != 1.0f ? 2 : 1, nfe = SAMPLE_DEFAULT_NFE / per;
        o->steps = o->sampler == SAMPLER_HEUN ? (nfe + 1) / 2 : nfe;
    }
}

void sample_args_free(SampleArgs *a) {
    free(a->labels);
    a->labels = NULL;
    a->opt.labels = NULL;
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

static const float *unet_network(void *ctx, const float *x, const float *t, const int *y, int n) {
    UnetDenoiser *d = ctx;
    tuner_begin(&d->tu);
    const float *out = unet_forward(d->m, x, t, y, n);
    tuner_end(&d->tu, n);
    return out;
}

void sample_unet(Unet *m, const Schedule *s, const SampleOptions *opt_in, float *x, float *strip) {
    SampleOptions opt = *opt_in;
    opt.objective = m->cfg.objective;
    opt.sigma_data = m->cfg.sigma_data;
    opt.num_classes = m->cfg.num_classes;
    unet_alloc_acts(m, sample_max_batch(&opt), 0);
    int D = m->cfg.im_channels * m->cfg.im_size * m->cfg.im_size;
    UnetDenoiser d = {.m = m};
    tuner_init(&d.tu, threads_in_use());
    sample_images(unet_network, &d, D, s, &opt, x, strip);
    set_threads(d.tu.max);
}

void print_sampling_banner(const char *cmd, long n, const SampleOptions *opt, int use_ema, long long step) {
    char how[200];
    sample_describe(how, sizeof how, opt);
    fprintf(stderr, "%s: %ld images, %s, %s weights, step %lld checkpoint, %d threads\n", cmd, n, how,
            use_ema ? "EMA" : "raw", step, threads_in_use());
}
