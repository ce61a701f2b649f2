// train.h: the DDPM training engine (no CLI): one step = sample a batch in the epoch's
// shuffled order, draw a noise level (t ~ U{0..T-1}, or a log-normal sigma) and eps ~ N(0, I)
// per image (and drop labels to the null label), noise, predict, weighted MSE against the
// objective's target (diffusion/objective.h), backprop, Adam (with optional warm-up), EMA.
// Under MPI (dist.h) each rank runs the forward and backward of its share of the batch, and every
// rank takes the same Adam step.
#ifndef DDPM_TRAIN_H
#define DDPM_TRAIN_H

#include "train/checkpoint.h"
#include "train/state.h"
#include "data/data.h"
#include "diffusion/diffusion.h"
#include "model/unet.h"

#define TRAIN_T_BUCKETS 10 // loss by t in [k T/10, (k+1) T/10)

typedef struct {
    Unet model;
    Schedule sched;
    TrainState st;
    float *m, *v, *ema;        // Adam moments and the EMA of the parameters (NULL if off)
    const Dataset *data;
    int *perm;                 // [n_data] the data order of epoch perm_epoch
    int64_t perm_epoch;
    float *x0, *eps, *xt, *target, *dout; // [B, D] batch buffers
    float *t;                  // [B] timesteps the network sees
    double *sigma, *weight;    // [B] noise levels and loss weights
    int *y;                    // [B] labels (class-conditional models), null label = num_classes
    double *row_loss;          // [B] per-image sum of squared errors of the last step
    float last_loss;
    double last_grad_norm;     // global L2 norm of the last step's gradient (before clipping)
    // diagnostics (not part of the state): per-image loss summed by t bucket since the last reset
    double bucket_loss[TRAIN_T_BUCKETS];
    long bucket_count[TRAIN_T_BUCKETS];
} Trainer;

// New run (ck == NULL: parameters initialised from st->seed) or continue from a checkpoint.
// A new edm run with sigma_data = 0 measures it on the data first (the model's config records it).
// A class-conditional config needs every training label in [0, num_classes).
void trainer_init(Trainer *tr, const ModelConfig *cfg, const TrainState *st, const Dataset *data, const Checkpoint *ck);
// One optimisation step. Returns the batch loss (computed before the update). If the loss is
// not finite, nothing is updated and the state is unchanged except for the noise RNG.
float trainer_step(Trainer *tr);
int trainer_save(const Trainer *tr, const char *path, char *err, size_t errlen);
void trainer_free(Trainer *tr);
// the permutation of the training set for an epoch: a function of (seed, epoch) only
void epoch_permutation(int *perm, int64_t n, uint64_t seed, int64_t epoch);
// learning rate of the update at 0-based step: linear warm-up to st->lr over st->warmup steps,
// then constant, or (st->lr_decay_steps > 0) cosine decay to 0 at step lr_decay_steps
float train_lr_at(const TrainState *st, int64_t step);
// sqrt(sum g_i^2), summed in double in a fixed order (deterministic for any thread count)
double grad_global_norm(const float *g, size_t n);
// EMA decay with warm-up: min(decay, (1 + step) / (10 + step))
float ema_decay_at(float decay, int64_t step);
// the standard deviation of all training pixels in [-1, 1] (EDM's sigma_data)
double dataset_sigma(const Dataset *d);

#endif
