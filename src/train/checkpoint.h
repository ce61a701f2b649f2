// checkpoint.h: everything needed to continue a training run exactly, in one file.
//
// Layout (little-endian):
//   char magic[8] = "DDPMCKPT"; uint32 version = 3 (versions 1 and 2, without lr_decay_steps
//   and grad_clip or without precision, are still read)
//   uint32 cfg_len; char cfg[cfg_len]            canonical model config text (config_to_text)
//   TrainState fields, each written explicitly (see checkpoint.c)
//   uint64 n_params; float params[n], adam_m[n], adam_v[n]; (if has_ema) float ema[n]
//   uint32 crc32 (zlib) of every byte before it
// No paths or timestamps: equal training state gives byte-identical files.
// Saved atomically: temp file in the same directory, fsync, rename, fsync(dir).
#ifndef DDPM_CHECKPOINT_H
#define DDPM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "train/state.h"

typedef struct {
    ModelConfig cfg;
    TrainState st;
    size_t n_params;
    float *params, *m, *v, *ema; // ema is NULL when st.ema_decay == 0
} Checkpoint;

// 0 on success; -1 with a one-line message in err (the previous file at path is untouched).
// Refuses a state with a non-finite value in any array, or a field out of range (see the loader).
int checkpoint_save(const char *path, const ModelConfig *cfg, const TrainState *st, const float *params,
                    const float *m, const float *v, const float *ema, size_t n_params, char *err, size_t errlen);
// Reads and fully validates (magic, version, CRC, config, sizes). Allocates the arrays.
int checkpoint_load(const char *path, Checkpoint *ck, char *err, size_t errlen);
void checkpoint_free(Checkpoint *ck);

#endif
