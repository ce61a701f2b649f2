// unet.h: the noise predictor eps_theta(x_t, t): the U-Net of explainingai-code/DDPM-Pytorch
// (models/unet_base.py), configurable, with a hand-written backward pass.
//
// All parameters live in ONE contiguous buffer in the PyTorch state_dict order (so a
// checkpoint, Adam and an export are each one loop over n_params); gradients mirror it.
// Activations (and their gradients) live in one slab sized for a batch of B images,
// allocated once by unet_alloc_acts(); forward/backward never allocate.
#ifndef DDPM_UNET_H
#define DDPM_UNET_H

#include <stddef.h>

#include "core/config.h"
#include "core/rng.h"

typedef enum { INIT_UNIFORM_FAN_IN, INIT_XAVIER, INIT_ONE, INIT_ZERO, INIT_NORMAL } InitKind;

typedef struct {
    char name[96];   // PyTorch state_dict key, e.g. "downs.0.resnet_conv_first.1.2.weight"
    size_t offset;   // into params
    size_t numel;    // the product of shape
    int ndim, shape[4]; // PyTorch's shape, e.g. conv [out, in, k, k], ConvTranspose2d [in, out, k, k]
    InitKind init;
    int fan_in, fan_out;
} ParamTensor;

// A ResNet layer: out = conv2(silu(gn2(conv1(silu(gn1(x))) + lin(silu(temb))))) + conv1x1(x)
typedef struct {
    int cin, cout, H, W;
    size_t gn1_w, gn1_b, conv1_w, conv1_b, temb_w, temb_b, gn2_w, gn2_b, conv2_w, conv2_b, res_w, res_b;
    // activation offsets (per image; multiply by B)
    size_t in, mean1, rstd1, act1, tproj, h1, mean2, rstd2, act2, out; // GroupNorm outputs are recomputed
    // gradients of the layer-internal activations: offsets into the shared scratch
    size_t g_gn1, g_act1, g_tproj, g_h1, g_gn2, g_act2, g_sums, zeroed, scratch;
} ResnetLayer;

// An attention layer: out = x + MHA(gn(x)) over the H*W positions
typedef struct {
    int C, H, W, heads;
    size_t norm_w, norm_b, in_w, in_b, out_w, out_b;
    size_t in, gn, mean, rstd, qkv, o, lse, out;
    size_t g_gn, scratch; // gradient of gn in the shared scratch
} AttnLayer;

typedef enum { BLOCK_DOWN, BLOCK_MID, BLOCK_UP } BlockKind;

typedef struct {
    BlockKind kind;
    int cin, cout;
    int H, W;            // spatial size of the ResNet/attention layers
    int n_res, n_attn;
    ResnetLayer *res;
    AttnLayer *attn;
    int resample;        // down: conv 4x4 s2 after the layers; up: convT 4x4 s2 before the concat
    size_t samp_w, samp_b;
    int samp_c;          // channels of the resampling conv
    size_t in, skip, up, cat, out; // activation offsets (skip/up/cat for up blocks)
} Block;

typedef struct {
    ModelConfig cfg;
    // parameters
    size_t n_params;
    float *params, *grads;
    ParamTensor *tensors;
    int n_tensors, cap_tensors;
    // structure
    size_t t1_w, t1_b, t2_w, t2_b, class_emb, conv_in_w, conv_in_b, norm_out_w, norm_out_b, conv_out_w, conv_out_b;
    int n_blocks;
    Block *blocks;
    // per-image activation layout
    size_t acts_per_image;
    size_t a_x, a_temb_sin, a_t1, a_t1act, a_temb, a_tact, a_conv_in, a_gn_out, a_mean_out, a_rstd_out,
           a_act_out, a_out;
    size_t ws_per_thread; // scratch floats one thread needs, max over layers
    // gradients: only tensors that cross layers (layer inputs/outputs, skips, the time path)
    // have their own; layer-internal gradients share one scratch region, reused layer by layer
    size_t grads_per_image, scratch_per_image;
    int n_gmap, cap_gmap;
    size_t (*gmap)[2];    // (activation offset, gradient offset) pairs
    // batch state
    int B;               // activations allocated for this many images
    int ws_threads;      // the layer workspace ws has room for this many threads
    int B_last;          // batch size of the last forward
    float *acts, *dacts, *dscratch, *ws; // dacts/dscratch only when allocated for training
    float *t;            // [B] timesteps of the last forward
    int *y;              // [B] labels of the last forward (class-conditional models)
} Unet;

void unet_build(Unet *m, const ModelConfig *c);          // layout + zeroed params/grads
// the parameter count and the activation floats per training image of a config, without
// allocating either (to check a file against its config before trusting its sizes)
void unet_size(const ModelConfig *c, size_t *n_params, size_t *floats_per_image);
void unet_init_params(Unet *m, Rng *rng);                // PyTorch default init
// once per batch size and thread count (no-op if both fit: call it again after set_threads);
// with_grads = 0 for sampling (forward only)
void unet_alloc_acts(Unet *m, int B, int with_grads);
// x[B, C, S, S], t[B] (timesteps, may be fractional), y[B] (class labels 0..num_classes, where
// num_classes is the null label; NULL = all null; ignored by unconditional models)
// -> output (a pointer into the activations, [B, C, S, S])
float *unet_forward(Unet *m, const float *x, const float *t, const int *y, int B);
void unet_zero_grad(Unet *m);
// accumulates parameter gradients for dL/d(output) = dout [B, C, S, S] (B as in the last forward)
void unet_backward(Unet *m, const float *dout);
void unet_free(Unet *m);
// analytic cost: multiply-accumulates of one image's forward (conv, linear, attention QK^T and PV)
double unet_forward_macs(const Unet *m);

#endif
