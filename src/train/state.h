// state.h: the state of a training run: its hyperparameters and how far it has come. The trainer
// owns it; a checkpoint stores it.
#ifndef DDPM_STATE_H
#define DDPM_STATE_H

#include <stdint.h>

#include "core/rng.h"

typedef struct {
    // hyperparameters
    int32_t batch;
    uint64_t seed;
    float lr, beta1, beta2, eps;
    float ema_decay;       // 0 = no EMA
    int32_t warmup;        // learning-rate warm-up steps (0 = none)
    int64_t lr_decay_steps; // cosine decay of the lr to 0 at this step (0 = constant lr)
    float grad_clip;       // clip the global gradient L2 norm to this (0 = off)
    int32_t precision;     // of the GEMM inputs: 0 fp32, 1 bf16 (fp32 accumulation, weights and Adam in fp32)
    // progress
    int64_t step;          // optimizer steps done (= Adam's step count)
    int64_t epoch;         // current epoch (0-based)
    int64_t epoch_pos;     // images of this epoch already used (the data cursor)
    int64_t n_data;        // training set size the data order was made for
    Rng noise_rng;         // draws t and eps for each step
} TrainState;

#endif
