// main.c: the ddpm command line: one command per file in src/cli/.
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "train/dist.h"

static const char *MAIN_HELP =
    "ddpm: a denoising diffusion probabilistic model (DDPM) for MNIST in pure C.\n"
    "usage: ddpm <command> [options]   ('ddpm <command> --help' for its options)\n"
    "  train    train the U-Net on MNIST (or an image folder); checkpoints, exact resume\n"
    "  sample   generate a PNG grid (DDPM or DDIM), an IDX file, a denoising strip\n"
    "  info     print a config or checkpoint: parameters, FLOPs, training state\n"
    "  bench    measure training and sampling speed against the machine's FMA peak\n"
    "  judge    train the MNIST classifier used by eval (models/judge.bin)\n"
    "  eval     sample and score: FLD, Inception Score, confident share, class histogram\n"
    "  export   write a model's weights as safetensors (PyTorch state_dict names)\n";

static int run(int argc, char **argv) {
    if (argc < 2) { fputs(MAIN_HELP, stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { fputs(MAIN_HELP, stdout); return 0; }
    if (!strcmp(cmd, "train")) return cmd_train(argc, argv);
    if (!strcmp(cmd, "sample")) return cmd_sample(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "judge")) return cmd_judge(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "export")) return cmd_export(argc, argv);
    fprintf(stderr, "ddpm: unknown command '%s' (see 'ddpm --help')\n", cmd);
    return 2;
}

// under mpirun (make MPI=1) every rank runs the command; train and sample share the work
int main(int argc, char **argv) {
    // past a file-size limit (ulimit -f) a write fails with EFBIG, reported like a full disk,
    // instead of the signal killing the process without a word
    signal(SIGXFSZ, SIG_IGN);
    dist_init(&argc, &argv);
    int rc = run(argc, argv);
    dist_finalize();
    return rc;
}
