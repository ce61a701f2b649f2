// cli.h: command-line helpers shared by the ddpm commands. Every bad flag or value is a
// one-line message naming the command and exit status 2.
#ifndef DDPM_CLI_H
#define DDPM_CLI_H

#define MAX_THREADS 256 // --threads: more than any machine this program targets (TUNER_MAX)

void cli_set_command(const char *name); // "ddpm train", used in messages
void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
const char *need_value(int argc, char **argv, int *i); // the value after argv[*i]
long parse_long(const char *opt, const char *s, long lo, long hi);
double parse_double(const char *opt, const char *s, double lo, double hi);


// A file the program ships (e.g. "models/judge.bin"): rel itself if it exists (a run from the
// source tree), else the installed copy under DDPM_DATADIR (make install), else rel.
const char *shipped_file(const char *rel);

// --precision fp32|bf16 (train, sample, eval, bench): the precision of the GEMM inputs. bf16
// needs AVX512_BF16 and the fast layers; otherwise a one-line error and exit 2. Returns 0 or 1.
int parse_precision(const char *value);
// make it the precision of every GEMM from now on
void use_precision(int precision);
extern const char *PRECISION_HELP;

// Refuse (exit 2) an output that is the same file as an input or another output: each of the
// n (flag, path) pairs after the first is checked against the first; NULL paths are skipped.
void refuse_same_file(const char *out_flag, const char *out, int n, ...);
// ... or one of the MNIST files in a data directory
void refuse_data_file(const char *out_flag, const char *out, const char *data_dir);
// an output the atomic write would refuse (a directory, a device, ...), before any work is done
void refuse_bad_output(const char *path);

// ---- sampling, shared by 'ddpm sample', 'ddpm eval' and the preview grids of 'ddpm train'
#include "diffusion/sample.h"
#include "model/unet.h"
#include "train/checkpoint.h"

// the sampling flags of a command, and what they ask of a model
// class-conditional models: --labels random (the default without --label: image i's class drawn
// uniformly from (seed, i)), all (one row per class), none (the null label: the unconditional
// model); --label L (every image of class L)
enum { LABELS_RANDOM = 0, LABELS_ALL = 1, LABELS_NONE = 2, LABELS_ONE = 3 };
typedef struct {
    SampleOptions opt;
    int no_ema;
    int steps_given, guidance_given;
    int label;          // --label L, -1: none
    int labels_all;     // --labels all: one row per class
    int labels_mode;    // LABELS_*: what a class-conditional model samples
    int labels_given;   // --labels or --label was given
    int *labels;        // [n] made by sample_args_finish (NULL: unconditional)
} SampleArgs;
// the defaults (docs/QUALITY.md has the measurements behind them): DPM++ 2M with the x0
// estimate clipped to [-1, 1], SAMPLE_DEFAULT_NFE network evaluations per image (guidance
// included), guidance SAMPLE_DEFAULT_GUIDANCE for class-conditional models given labels
#define SAMPLE_DEFAULT_NFE 50
#define SAMPLE_DEFAULT_GUIDANCE 1.25f
void sample_args_default(SampleArgs *a);
// If argv[*i] is a sampling flag (--seed --sampler --sigma --steps --eta --rho --clip --no-clip
// --no-ema --batch --label --labels --guidance), parse it (and its value) into a and return 1; else 0.
int parse_sample_flag(SampleArgs *a, int argc, char **argv, int *i);
// Once the model is loaded and opt.n is known: the model's objective and classes into opt, the
// default step count of the sampler, and the labels (--labels all: image i gets class i / cols,
// one row of the grid per class; random: from (seed, i)). A label for an unconditional model is a
// usage error.
void sample_args_finish(SampleArgs *a, const ModelConfig *c, int cols, const char *model);
void sample_args_free(SampleArgs *a);
// the --help lines of those flags
extern const char *SAMPLE_FLAGS_HELP;
// Load a checkpoint for sampling: builds m with the EMA weights (or the raw ones if no_ema or
// the run kept no EMA) and its schedule. Exits with a one-line message on any error.
// Returns 1 if the EMA weights are used. ck keeps the training state (ck->st) for reports.
// A safetensors file (ddpm export) is read too: its weights as they are, the config from
// config (a file) if given, else from its ddpm_config metadata; ck then has only cfg and st.step.
int load_model_for_sampling(const char *path, const char *config, int no_ema, Checkpoint *ck, Unet *m, Schedule *s);
// Build m from a safetensors file (config as above): every tensor of the config present with its
// shape, nothing else. *step = its ddpm_step metadata (0 if none). Returns 1 if its
// ddpm_weights metadata says "ema". Exits with a one-line message on any error.
int load_safetensors_model(const char *path, const char *config, Unet *m, long long *step);
// sample_images with the U-Net m as the network (its activations sized for the batch); the
// objective and classes of opt are taken from m's config
void sample_unet(Unet *m, const Schedule *s, const SampleOptions *opt, float *x, float *strip);
// "CMD: N images, <sampler>, EMA|raw weights, step S checkpoint, T threads" on stderr
void print_sampling_banner(const char *cmd, long n, const SampleOptions *opt, int use_ema, long long step);

#endif
