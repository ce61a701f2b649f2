// info.c: ddpm info: a config or a checkpoint, its parameters and cost, the training state.
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
#include "kernels/gemm.h"
#include "model/unet.h"
#include "train/checkpoint.h"

static void print_config(FILE *f, const ModelConfig *c) {
    char text[4096];
    config_to_text(c, text, sizeof(text));
    fputs(text, f);
}

static const char *INFO_HELP =
    "usage: ddpm info (--config FILE | --model CKPT)\n"
    "Print a model configuration, its parameter count and cost, and the kernels this CPU runs;\n"
    "with --model also the training state (step, epoch) and hyperparameters stored in the checkpoint.\n"
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
#ifdef DDPM_REF
    printf("layers: reference (make REF=1: plain loops, fp32)\n");
#else
    printf("layers: fast (bf16 products: %s)\n", gemm_bf16_supported() ? "yes" : "no, this CPU lacks AVX512_BF16");
#endif
    printf("kernels: %s (this CPU runs:", gemm_isa());
    for (int i = 0; i < gemm_variant_count(); i++)
        if (gemm_variant_supported(i)) printf(" %s", gemm_variant_name(i));
    printf("; DDPM_ISA selects one)\n");
    unet_free(&m);
}

int cmd_info(int argc, char **argv) {
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
    char err[ERR_LEN];
    if (checkpoint_load(model, &ck, err, sizeof(err))) die("%s", err);
    print_model_summary(&ck.cfg);
    const TrainState *s = &ck.st;
    printf("step: %lld\nepoch: %lld\nepoch_pos: %lld\ntrain images: %lld\n", (long long)s->step, (long long)s->epoch,
           (long long)s->epoch_pos, (long long)s->n_data);
    printf("precision: %s\n", s->precision ? "bf16" : "fp32");
    printf("lr decay: %s\ngrad clip: %g\n", s->lr_decay_steps > 0 ? "cosine" : "none", s->grad_clip);
    if (s->lr_decay_steps > 0) printf("lr decay steps: %lld\n", (long long)s->lr_decay_steps);
    printf("batch: %d\nlr: %g\nwarmup: %d\nadam: beta1 %g beta2 %g eps %g\nseed: %llu\nema: %s",
           s->batch, s->lr, s->warmup, s->beta1, s->beta2, s->eps, (unsigned long long)s->seed, s->ema_decay > 0 ? "" : "off\n");
    if (s->ema_decay > 0) printf("decay %g\n", s->ema_decay);
    checkpoint_free(&ck);
    return 0;
}
