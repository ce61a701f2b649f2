// sample.c: ddpm sample: a PNG grid, an IDX file and a denoising strip from a checkpoint.
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
#include "data/data.h"
#include "data/image.h"
#include "diffusion/sample.h"
#include "model/unet.h"
#include "train/checkpoint.h"
#include "train/dist.h"

static const char *SAMPLE_HELP =
    "usage: ddpm sample --model CKPT [options]\n"
    "Generate images with the reverse process and write them as a PNG grid.\n"
    "  --model CKPT        checkpoint written by 'ddpm train', or a safetensors file ('ddpm export',\n"
    "                      tools/ddpm_pytorch_to_safetensors.py)\n"
    "  --config FILE       the model config of a safetensors file without ddpm_config metadata\n"
    "  --n N               number of images (default 100)\n"
    "  --rows R            rows of the grid (default 10; with --labels all, the number of classes)\n"
    "  --out FILE.png      grid to write (default samples.png)\n"
    "  --idx FILE          also write the samples as an MNIST IDX image file (uint8)\n"
    "  --floats FILE       also write the samples as raw float32 [n, C, H, W] in [-1, 1] (little-endian)\n"
    "  --strip FILE.png    also write the x0 estimate of the first --strip-n samples at 10 points\n"
    "                      of the reverse process (one row per sample)\n"
    "  --strip-n N         rows of the strip (default 8)\n"
    "  --threads N         OpenMP threads\n"
    "Under mpirun (make MPI=1) each rank samples a share of the images (the same images); rank 0 writes.\n"
    "sampling:\n";

int cmd_sample(int argc, char **argv) {
    cli_set_command("ddpm sample");
    const char *model = NULL, *config = NULL, *out = "samples.png", *idx = NULL, *strip_path = NULL, *floats = NULL;
    SampleArgs sa;
    sample_args_default(&sa);
    SampleOptions *o = &sa.opt;
    o->n = 100;
    o->strip_n = 8;
    o->strip_k = 10;
    long rows = 10, threads = 0;
    int rows_given = 0;
    int precision = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(SAMPLE_HELP, stdout); fputs(SAMPLE_FLAGS_HELP, stdout); fputs(PRECISION_HELP, stdout); return 0; }
        else if (!strcmp(a, "--model")) model = need_value(argc, argv, &i);
        else if (!strcmp(a, "--config")) config = need_value(argc, argv, &i);
        else if (!strcmp(a, "--n")) o->n = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000000);
        else if (!strcmp(a, "--rows")) { rows = parse_long(a, need_value(argc, argv, &i), 1, 100000); rows_given = 1; }
        else if (!strcmp(a, "--precision")) precision = parse_precision(need_value(argc, argv, &i));
        else if (parse_sample_flag(&sa, argc, argv, &i)) continue;
        else if (!strcmp(a, "--out")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--idx")) idx = need_value(argc, argv, &i);
        else if (!strcmp(a, "--floats")) floats = need_value(argc, argv, &i);
        else if (!strcmp(a, "--strip")) strip_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--strip-n")) o->strip_n = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, MAX_THREADS);
        else usage_error("unknown option '%s'", a);
    }
    if (!model) usage_error("--model CKPT is required");
    if (o->noise == NOISE_TORCH && !o->batch_given) o->batch = o->n; // one tensor, as sample_ddpm.py
    refuse_same_file("--out", out, 4, "--model", model, "--idx", idx, "--strip", strip_path, "--config", config);
    refuse_same_file("--idx", idx, 2, "--model", model, "--strip", strip_path);
    refuse_same_file("--strip", strip_path, 1, "--model", model);
    refuse_bad_output(out);
    refuse_bad_output(idx);
    refuse_bad_output(strip_path);
    refuse_same_file("--floats", floats, 5, "--model", model, "--out", out, "--idx", idx, "--strip", strip_path, "--config", config);
    refuse_bad_output(floats);
    set_threads((int)threads);
    use_precision(precision);
    Checkpoint ck;
    Unet m;
    Schedule s;
    char err[ERR_LEN];
    int use_ema = load_model_for_sampling(model, config, sa.no_ema, &ck, &m, &s);
    int C = ck.cfg.im_channels, S = ck.cfg.im_size, D = C * S * S;
    if (o->strip_n > o->n) o->strip_n = o->n;
    if (sa.labels_all && !rows_given) rows = ck.cfg.num_classes;
    long cols = (o->n + rows - 1) / rows;
    sample_args_finish(&sa, &ck.cfg, (int)cols, model);
    float *x = alignedCalloc((size_t)o->n * D * sizeof(float));
    float *strip = strip_path ? alignedCalloc((size_t)o->strip_n * o->strip_k * D * sizeof(float)) : NULL;
    int root = dist_root();
    if (o->noise == NOISE_TORCH && dist_size() > 1)
        usage_error("--noise torch draws one PyTorch stream for the whole run: run it on one process, not %d ranks", dist_size());
    if (root) print_sampling_banner("ddpm sample", o->n, o, use_ema, (long long)ck.st.step);
    double t0 = now_seconds();
    // image i depends only on (seed, i) (and its label): rank r samples images [lo, hi), rank 0 gathers them
    int lo, hi;
    dist_slice(o->n, &lo, &hi);
    SampleOptions mine = *o;
    mine.first = lo;
    mine.n = hi - lo;
    mine.labels = o->labels ? o->labels + lo : NULL;
    mine.progress = o->progress && root;
    if (mine.n > 0) sample_unet(&m, &s, &mine, x + (size_t)lo * D, strip);
    dist_gather_rows_root(x, o->n, (size_t)D);
    // strip rows are images 0 .. strip_n - 1, each written by one rank into zeros: the sum is a gather
    if (strip) dist_sum_floats(strip, (size_t)o->strip_n * o->strip_k * D);
    if (!root) goto done;
    if (write_png_grid(out, x, o->n, C, S, S, (int)cols, 2, err, sizeof(err))) die("%s", err);
    if (idx) {
        if (C != 1) die("--idx writes 1-channel images; this model has %d channels", C);
        uint8_t *px = mallocCheck((size_t)o->n * D);
        for (long i = 0; i < (long)o->n * D; i++) px[i] = to_u8(x[i]);
        if (idx_write_images(idx, px, o->n, S, S, err, sizeof(err))) die("%s", err);
        free(px);
    }
    if (floats && write_file_atomic(floats, x, (size_t)o->n * D * sizeof(float), err, sizeof(err))) die("%s", err);
    if (strip && write_png_grid(strip_path, strip, o->strip_n * o->strip_k, C, S, S, o->strip_k, 2, err, sizeof(err)))
        die("%s", err);
    fprintf(stderr, "ddpm sample: wrote %s%s%s%s%s in %.1f s\n", out, idx ? ", " : "", idx ? idx : "",
            strip_path ? ", " : "", strip_path ? strip_path : "", now_seconds() - t0);
done:
    free(x); free(strip);
    sample_args_free(&sa);
    schedule_free(&s);
    unet_free(&m);
    checkpoint_free(&ck);
    return 0;
}
