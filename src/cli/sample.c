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
    "  --model CKPT        checkpoint written by 'ddpm train'\n"
    "  --n N               number of images (default 100)\n"
    "  --rows R            rows of the grid (default 10)\n"
    "  --out FILE.png      grid to write (default samples.png)\n"
    "  --idx FILE          also write the samples as an MNIST IDX image file (uint8)\n"
    "  --strip FILE.png    also write the x0 estimate of the first --strip-n samples at 10 points\n"
    "                      of the reverse process (one row per sample)\n"
    "  --strip-n N         rows of the strip (default 8)\n"
    "  --threads N         OpenMP threads\n"
    "Under mpirun (make MPI=1) each rank samples a share of the images (the same images); rank 0 writes.\n"
    "sampling:\n";

int cmd_sample(int argc, char **argv) {
    cli_set_command("ddpm sample");
    const char *model = NULL, *out = "samples.png", *idx = NULL, *strip_path = NULL;
    SampleOptions opt;
    sample_options_default(&opt);
    opt.n = 100;
    opt.strip_n = 8;
    opt.strip_k = 10;
    long rows = 10, threads = 0;
    int no_ema = 0, precision = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(SAMPLE_HELP, stdout); fputs(SAMPLE_FLAGS_HELP, stdout); fputs(PRECISION_HELP, stdout); return 0; }
        else if (!strcmp(a, "--model")) model = need_value(argc, argv, &i);
        else if (!strcmp(a, "--n")) opt.n = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000000);
        else if (!strcmp(a, "--rows")) rows = parse_long(a, need_value(argc, argv, &i), 1, 100000);
        else if (!strcmp(a, "--precision")) precision = parse_precision(need_value(argc, argv, &i));
        else if (parse_sample_flag(&opt, &no_ema, argc, argv, &i)) continue;
        else if (!strcmp(a, "--out")) out = need_value(argc, argv, &i);
        else if (!strcmp(a, "--idx")) idx = need_value(argc, argv, &i);
        else if (!strcmp(a, "--strip")) strip_path = need_value(argc, argv, &i);
        else if (!strcmp(a, "--strip-n")) opt.strip_n = (int)parse_long(a, need_value(argc, argv, &i), 1, 1000);
        else if (!strcmp(a, "--threads")) threads = parse_long(a, need_value(argc, argv, &i), 1, MAX_THREADS);
        else usage_error("unknown option '%s'", a);
    }
    if (!model) usage_error("--model CKPT is required");
    refuse_same_file("--out", out, 3, "--model", model, "--idx", idx, "--strip", strip_path);
    refuse_same_file("--idx", idx, 2, "--model", model, "--strip", strip_path);
    refuse_same_file("--strip", strip_path, 1, "--model", model);
    refuse_bad_output(out);
    refuse_bad_output(idx);
    refuse_bad_output(strip_path);
    set_threads((int)threads);
    use_precision(precision);
    Checkpoint ck;
    Unet m;
    Schedule s;
    char err[ERR_LEN];
    int use_ema = load_model_for_sampling(model, no_ema, &ck, &m, &s);
    int C = ck.cfg.im_channels, S = ck.cfg.im_size, D = C * S * S;
    if (opt.strip_n > opt.n) opt.strip_n = opt.n;
    float *x = alignedCalloc((size_t)opt.n * D * sizeof(float));
    float *strip = strip_path ? alignedCalloc((size_t)opt.strip_n * opt.strip_k * D * sizeof(float)) : NULL;
    int root = dist_root();
    if (root) print_sampling_banner("ddpm sample", opt.n, &opt, use_ema, (long long)ck.st.step);
    double t0 = now_seconds();
    // image i depends only on (seed, i): rank r samples images [lo, hi), rank 0 gathers them
    int lo, hi;
    dist_slice(opt.n, &lo, &hi);
    SampleOptions mine = opt;
    mine.first = lo;
    mine.n = hi - lo;
    mine.progress = opt.progress && root;
    if (mine.n > 0) sample_unet(&m, &s, &mine, x + (size_t)lo * D, strip);
    dist_gather_rows_root(x, opt.n, (size_t)D);
    // strip rows are images 0 .. strip_n - 1, each written by one rank into zeros: the sum is a gather
    if (strip) dist_sum_floats(strip, (size_t)opt.strip_n * opt.strip_k * D);
    if (!root) goto done;
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
done:
    free(x); free(strip);
    schedule_free(&s);
    unet_free(&m);
    checkpoint_free(&ck);
    return 0;
}
