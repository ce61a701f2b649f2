// config.h: the model (U-Net + noise schedule) configuration, read from a plain-text
// `key = value` file (one per line, `#` starts a comment, lists are comma separated).
#ifndef DDPM_CONFIG_H
#define DDPM_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define CFG_MAX_LEVELS 8
// what this program can sensibly run (memory and time per image stay within a desktop's reach);
// a config or checkpoint outside them is rejected with the bound in the message
#define CFG_MAX_IM_CHANNELS 4
#define CFG_MAX_IM_SIZE 256
#define CFG_MAX_CHANNELS 2048
#define CFG_MAX_TIME_EMB_DIM 4096
#define CFG_MAX_LAYERS 16
#define CFG_MAX_HEADS 64
#define CFG_MAX_TIMESTEPS 100000

typedef enum { SCHEDULE_LINEAR = 0, SCHEDULE_COSINE = 1, SCHEDULE_CONSTANT = 2 } ScheduleKind;
// what the network predicts (see diffusion/objective.h): the noise, v = a eps - s x0, or EDM's F
typedef enum { OBJECTIVE_EPS = 0, OBJECTIVE_V = 1, OBJECTIVE_EDM = 2 } ObjectiveKind;
// how training draws the noise level: t uniform on {0..T-1}, or ln sigma ~ N(p_mean, p_std^2)
typedef enum { SIGMA_SAMPLING_UNIFORM = 0, SIGMA_SAMPLING_LOGNORMAL = 1 } SigmaSampling;
#define CFG_MAX_CLASSES 1000

typedef struct {
    // U-Net (names as in explainingai-code/DDPM-Pytorch's model config)
    int im_channels, im_size;
    int n_down;                          // number of entries in down_channels
    int down_channels[CFG_MAX_LEVELS];
    int n_mid;                           // number of entries in mid_channels
    int mid_channels[CFG_MAX_LEVELS];
    int down_sample[CFG_MAX_LEVELS];     // n_down - 1 flags
    int down_attn[CFG_MAX_LEVELS];       // n_down - 1 flags (optional key, default all 1)
    int time_emb_dim;
    int num_down_layers, num_mid_layers, num_up_layers;
    int num_heads;
    // noise schedule (optional keys)
    ScheduleKind schedule;               // schedule = linear | cosine | constant
    int num_timesteps;                   // num_timesteps (T), default 1000
    float beta_start, beta_end;          // linear: default 1e-4, 0.02
    float beta;                          // constant: default 0.02
    float cosine_s;                      // cosine: default 0.008
    // training objective (optional keys)
    ObjectiveKind objective;             // objective = eps | v | edm, default eps
    SigmaSampling sigma_sampling;        // sigma_sampling = uniform | lognormal (default: lognormal for edm)
    float p_mean, p_std;                 // lognormal: default -1.2, 1.2
    float sigma_data;                    // edm: the data's standard deviation (0 = measure it when training starts)
    float min_snr_gamma;                 // loss weight min(SNR, gamma) on |D - x0|^2 (0 = off)
    // class conditioning (optional keys)
    int num_classes;                     // 0 = unconditional; else labels 0..num_classes-1 plus a null label
    float p_uncond;                      // training: share of labels replaced by the null label (default 0.1)
} ModelConfig;

// Parse config text. `name` is used in error messages ("name:LINE: ...").
// Returns 0 on success; on failure writes a one-line message into err and returns -1.
int config_parse(ModelConfig *c, const char *text, const char *name, char *err, size_t errlen);
// Read and parse a file; on any error prints a one-line message and exits(1).
void config_load(ModelConfig *c, const char *path);
// Checks the structural constraints (group/heads divisibility, sizes). 0 ok, -1 + err.
int config_validate(const ModelConfig *c, char *err, size_t errlen);
// Canonical text form (parsable by config_parse); returns the length written.
int config_to_text(const ModelConfig *c, char *buf, size_t buflen);
const char *schedule_name(ScheduleKind k);
const char *objective_name(ObjectiveKind k);
const char *sigma_sampling_name(SigmaSampling k);

#endif
