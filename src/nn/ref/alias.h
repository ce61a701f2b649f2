// alias.h: `make REF=1` (-DDDPM_REF): every caller of layers.h outside src/nn gets the plain
// reference twin (nn/ref/ref.h) under the fast layer's name. Included at the end of layers.h,
// except in the files that define the layers (DDPM_NN_IMPL). The *_ws_floats sizing functions
// are not aliased: callers keep sizing `ws` for the fast layers, which the twins accept.
#ifndef DDPM_REF_ALIAS_H
#define DDPM_REF_ALIAS_H

#include "nn/ref/ref.h"

#define conv2d_forward conv2d_forward_ref
#define conv2d_backward conv2d_backward_ref
#define conv_transpose2d_forward conv_transpose2d_forward_ref
#define conv_transpose2d_backward conv_transpose2d_backward_ref
#define groupnorm_forward groupnorm_forward_ref
#define groupnorm_silu_forward groupnorm_silu_forward_ref
#define groupnorm_backward groupnorm_backward_ref
#define silu_forward silu_forward_ref
#define silu_backward silu_backward_ref
#define silu_backward_groupnorm silu_backward_groupnorm_ref
#define groupnorm_silu_backward groupnorm_silu_backward_ref
#define linear_forward linear_forward_ref
#define linear_backward linear_backward_ref
#define attention_forward attention_forward_ref
#define attention_backward attention_backward_ref
#define timestep_embedding timestep_embedding_ref
#define embedding_add_forward embedding_add_forward_ref
#define embedding_add_backward embedding_add_backward_ref
#define array_zero array_zero_ref
#define array_copy array_copy_ref
#define array_add array_add_ref
#define concat_channels_forward concat_channels_forward_ref
#define concat_channels_backward concat_channels_backward_ref
#define add_bias_bc_forward add_bias_bc_forward_ref
#define add_bias_bc_backward add_bias_bc_backward_ref
#define mse_forward mse_forward_ref
#define mse_backward mse_backward_ref
#define softmax_cross_entropy_forward softmax_cross_entropy_forward_ref
#define softmax_cross_entropy_backward softmax_cross_entropy_backward_ref

#endif
