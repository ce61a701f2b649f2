// export.c: ddpm export: a model's weights as a safetensors file for PyTorch, and the U-Net's
// output on a fixed input (to check a PyTorch copy of the model against this one).
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/config.h"
#include "core/threads.h"
#include "core/torch_rng.h"
#include "model/safetensors.h"
#include "model/unet.h"
#include "train/checkpoint.h"

static const char *EXPORT_HELP =
    "usage: ddpm export --model MODEL --out FILE.safetensors [--raw]\n"
    "       ddpm export --model MODEL --forward FILE.bin [--forward-n N] [--forward-seed S]\n"
    "Write a model's weights as safetensors (F32, the PyTorch state_dict names and shapes of\n"
    "tools/unet_torch.py = DDPM-Pytorch's models/unet_base.py; the config in the metadata), or\n"
    "the U-Net's output on a fixed input.\n"
    "  --model MODEL       checkpoint written by 'ddpm train', or a safetensors file\n"
    "  --config FILE       the model config of a safetensors MODEL without ddpm_config metadata\n"
    "  --out FILE          the safetensors file to write\n"
    "  --raw               export the raw weights instead of their EMA (a checkpoint without EMA\n"
    "                      has only the raw ones)\n"
    "  --forward FILE      write eps_theta(x, t) for x = torch.randn(N, C, H, W) after\n"
    "                      torch.manual_seed(S) (PyTorch's random numbers) and t_i evenly spaced\n"
    "                      over [0, T-1]; layout: char[8] \"DDPMFWD1\", int32 N, C, H, W, int32 t[N],\n"
    "                      float32 x[N*C*H*W], float32 out[N*C*H*W] (little-endian); see\n"
    "                      tools/check_safetensors_torch.py\n"
    "  --forward-n N       images of the fixed input (default 4)\n"
    "  --forward-seed S    its seed (default 0)\n"
    "  --threads N         OpenMP threads\n";

static void write_forward(const char *path, Unet *m, int n, uint64_t seed) {
    const ModelConfig *c = &m->cfg;
    int C = c->im_channels, S = c->im_size, T = c->num_timesteps;
    size_t D = (size_t)C * S * S;
    float *x = alignedCalloc((size_t)n * D * sizeof(float));
    int *t = mallocCheck((size_t)n * sizeof(int));
    float *tf = mallocCheck((size_t)n * sizeof(float));
    TorchGen g;
    torch_manual_seed(&g, seed);
    torch_randn(&g, x, (long)(n * D));
    for (int i = 0; i < n; i++) t[i] = n > 1 ? (int)((long long)i * (T - 1) / (n - 1)) : T - 1;
    unet_alloc_acts(m, n, 0);
    for (int i = 0; i < n; i++) tf[i] = (float)t[i];
    const float *out = unet_forward(m, x, tf, NULL, n); // class-conditional models: the null label
    size_t bytes = 8 + 16 + (size_t)n * 4 + 2 * (size_t)n * D * 4;
    unsigned char *buf = mallocCheck(bytes), *p = buf;
    int32_t hdr[4] = {n, C, S, S};
    memcpy(p, "DDPMFWD1", 8); p += 8;
    memcpy(p, hdr, 16); p += 16;
    for (int i = 0; i < n; i++) { int32_t v = t[i]; memcpy(p, &v, 4); p += 4; }
    memcpy(p, x, (size_t)n * D * 4); p += (size_t)n * D * 4;
    memcpy(p, out, (size_t)n * D * 4);
    char err[ERR_LEN];
    if (write_file_atomic(path, buf, bytes, err, sizeof err)) die("%s", err);
    free(buf); free(x); free(t); free(tf);
}

int cmd_export(int argc, char **argv) {
    cli_set_command("ddpm export");
    const char *model = NULL, *config = NULL, *out = NULL, *forward = NULL;
    int raw = 0;
    long fwd_n = 4, fwd_seed = 0, threads = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(EXPORT_HELP, stdout); return 0; }
        else if (!strcmp(a, "--model")) model = need_value(argc, argv, &i);
        else if (!strcmp(a, "--config")) config = need_value(argc, argv, &i);
        else if (!strcmp(a, "--out")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--raw")) raw = 1;
        else if (!strcmp(a, "--forward")) forward = need_value(argc, argv, &i);
        else if (!strcmp(a, "--forward-n")) fwd_n = parse_long(a, need_value(argc, argv, &i), 1, 256);
        else if (!strcmp(a, "--forward-seed")) fwd_seed = parse_long(a, need_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, MAX_THREADS);
        else usage_error("unknown option '%s'", a);
    }
    if (!model) usage_error("--model MODEL is required");
    if (!out && !forward) usage_error("give --out FILE.safetensors or --forward FILE");
    refuse_same_file("--out", out, 3, "--model", model, "--config", config, "--forward", forward);
    refuse_same_file("--forward", forward, 2, "--model", model, "--config", config);
    refuse_bad_output(out);
    refuse_bad_output(forward);
    set_threads((int)threads);

    Unet m;
    long long step = 0;
    const char *weights = "as given";
    if (safetensors_sniff(model)) {
        if (raw) usage_error("--raw is for checkpoints: a safetensors file holds one set of weights");
        int ema = load_safetensors_model(model, config, &m, &step);
        weights = ema ? "ema" : "raw";
    } else {
        if (config) usage_error("--config is for safetensors files; a checkpoint carries its config");
        Checkpoint ck;
        char err[ERR_LEN];
        if (checkpoint_load(model, &ck, err, sizeof err)) die("%s", err);
        unet_build(&m, &ck.cfg);
        if (m.n_params != ck.n_params) die("%s: %zu parameters, its config builds %zu", model, ck.n_params, m.n_params);
        int ema = ck.ema && !raw;
        memcpy(m.params, ema ? ck.ema : ck.params, m.n_params * sizeof(float));
        weights = ema ? "ema" : "raw";
        step = ck.st.step;
        checkpoint_free(&ck);
    }
    if (out) {
        char cfg_text[4096], step_text[32];
        config_to_text(&m.cfg, cfg_text, sizeof cfg_text);
        snprintf(step_text, sizeof step_text, "%lld", step);
        const char *meta[] = {"format", "pt", "ddpm_config", cfg_text, "ddpm_weights", weights, "ddpm_step", step_text};
        char err[ERR_LEN];
        if (safetensors_write(out, &m, m.params, meta, 4, err, sizeof err)) die("%s", err);
        fprintf(stderr, "ddpm export: %s: %d tensors, %zu parameters (%s weights, step %lld)\n", out, m.n_tensors, m.n_params,
                weights, step);
    }
    if (forward) {
        write_forward(forward, &m, (int)fwd_n, (uint64_t)fwd_seed);
        fprintf(stderr, "ddpm export: %s: the output of %ld images (seed %ld)\n", forward, fwd_n, fwd_seed);
    }
    unet_free(&m);
    return 0;
}
