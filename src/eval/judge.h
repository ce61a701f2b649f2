// judge.h: the MNIST "judge", a small CNN classifier whose penultimate activations are the
// features of the sample-quality metrics (metrics.h), trained and run with the U-Net's layers.
//
//   x[1,S,S] -> conv3x3 p1 (c1) -> SiLU -> conv4x4 s2 p1 (c2, S/2) -> SiLU
//            -> conv3x3 p1 (c2) -> SiLU -> conv4x4 s2 p1 (c3, S/4) -> SiLU
//            -> flatten -> linear (feat) -> SiLU = FEATURES -> linear (classes) -> softmax
// Default: S = 28, c1 16, c2 32, c3 64, feat 128, classes 10 (about 453k parameters).
// Inputs are in [-1, 1] (dataset_batch). As in unet.h: all parameters in one buffer (grads
// mirror it), activations in one slab allocated once for a batch size; forward/backward never allocate.
//
// models/judge.bin (little-endian):
//   char magic[8] = "DDPMJUDG"; uint32 version = 1
//   int32 in_size, c1, c2, c3, feat, classes; uint64 n_params; float params[n_params]
//   uint32 crc32 (zlib) of every byte before it
#ifndef DDPM_JUDGE_H
#define DDPM_JUDGE_H

#include <stddef.h>
#include <stdint.h>

#include "data/data.h"
#include "core/rng.h"

typedef struct {
    int in_size;      // S: input images are S x S, one channel; a multiple of 4
    int c1, c2, c3;   // conv channels (full res, half res, quarter res)
    int feat;         // penultimate width = feature dimension of the metrics
    int classes;
} JudgeConfig;

typedef struct {
    JudgeConfig cfg;
    size_t n_params;
    float *params, *grads;
    // parameter offsets: conv1..conv4, fc1 (-> features), fc2 (-> logits)
    size_t w1, b1, w2, b2, w3, b3, w4, b4, w5, b5, w6, b6;
    // per-image activation offsets (multiply by B): h = pre-activation, s = SiLU(h)
    size_t acts_per_image;
    size_t a_x, a_h1, a_s1, a_h2, a_s2, a_h3, a_s3, a_h4, a_s4, a_h5, a_feat, a_logits, a_probs;
    size_t ws_per_thread;
    int B, B_last;
    float *acts, *dacts, *ws; // dacts only with judge_alloc_acts(.., train = 1)
    int *labels;              // [B] labels of the last forward (if given)
} Judge;

void judge_default_config(JudgeConfig *c);
// NULL if c is valid, else a static description of the problem
const char *judge_config_error(const JudgeConfig *c);
void judge_build(Judge *j, const JudgeConfig *c);   // layout + zeroed params/grads (dies on a bad config)
void judge_init_params(Judge *j, Rng *rng);         // PyTorch default: U(+-1/sqrt(fan_in)) for w and b
void judge_alloc_acts(Judge *j, int B, int train);  // (re)allocates if B or train grew
// x[B, S*S] -> probabilities (a pointer into the activations, [B, classes]); returns the mean
// cross-entropy if labels != NULL, else 0. Features of the batch: judge_feat(j), [B, feat].
float judge_forward(Judge *j, const float *x, const int *labels, int B);
const float *judge_probs(const Judge *j);
const float *judge_feat(const Judge *j);
void judge_zero_grad(Judge *j);
// accumulates parameter gradients of the mean cross-entropy of the last forward (needs labels)
void judge_backward(Judge *j);
void judge_free(Judge *j);

// features[n, feat] and/or probs[n, classes] (either may be NULL) of n images x[n, S*S], in batches of j->B
void judge_embed(Judge *j, const float *x, long n, float *feats, float *probs);
// the same for uint8 images (pixels 0..255 -> 2 p/255 - 1, as dataset_batch)
void judge_embed_u8(Judge *j, const uint8_t *px, long n, float *feats, float *probs);
// share of the first n images of d classified correctly (n <= 0 or > d->n: all)
double judge_accuracy(Judge *j, const Dataset *d, int n);

typedef struct {
    int epochs, batch;
    float lr;          // Adam, cosine-decayed to 0 over the run
    uint64_t seed;     // init, data order, augmentation
    int shift;         // augmentation: random translation by up to +-shift pixels (0 = none)
    int verbose;       // progress to stderr
} JudgeTrainOptions;

// Train j (already built and initialised) on d with Adam. Returns the mean loss of the last epoch.
double judge_train(Judge *j, const Dataset *d, const JudgeTrainOptions *o);

// Atomic save (temp file + rename); strict load (magic, version, sizes, CRC, config), building j.
// Both return 0, or -1 with a one-line message naming the file in err.
int judge_save(const char *path, const Judge *j, char *err, size_t errlen);
int judge_load(const char *path, Judge *j, char *err, size_t errlen);

#endif
