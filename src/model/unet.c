// unet.c: layout, initialisation, forward and backward of the configurable U-Net.
//
//   x -> conv_in -> DownBlocks (each input pushed as a skip) -> MidBlocks
//     -> UpBlocks (pop skip; [convT(x), skip] concat) -> GroupNorm -> SiLU -> conv_out
//   t -> sinusoidal embedding -> Linear -> SiLU -> Linear (+ E[y], class-conditional models) = temb;
//        every ResNet layer adds Linear(SiLU(temb)) as a per-channel bias.
#include "model/unet.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "core/common.h"
#include "core/threads.h"
#include "nn/layers.h"

#define GROUPS 8
#define OUT_CH 16 // channels of the last UpBlock (fixed in the reference)

// ---------------------------------------------------------------------------------------
// layout: parameters are registered in state_dict order; activations get per-image offsets

// shape: up to 4 dims, PyTorch's (the unused ones 0); numel is their product
static size_t add_param(Unet *m, InitKind init, int fan_in, int fan_out, int d0, int d1, int d2, int d3, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));
static size_t add_param(Unet *m, InitKind init, int fan_in, int fan_out, int d0, int d1, int d2, int d3, const char *fmt, ...) {
    if (m->n_tensors == m->cap_tensors) {
        m->cap_tensors = m->cap_tensors ? 2 * m->cap_tensors : 64;
        ParamTensor *t = mallocCheck((size_t)m->cap_tensors * sizeof(ParamTensor));
        if (m->n_tensors) memcpy(t, m->tensors, (size_t)m->n_tensors * sizeof(ParamTensor));
        free(m->tensors);
        m->tensors = t;
    }
    ParamTensor *p = &m->tensors[m->n_tensors++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof(p->name), fmt, ap);
    va_end(ap);
    int dims[4] = {d0, d1, d2, d3};
    size_t numel = 1;
    p->ndim = 0;
    for (int k = 0; k < 4 && dims[k] > 0; k++) {
        p->shape[p->ndim++] = dims[k];
        numel *= (size_t)dims[k];
    }
    p->offset = m->n_params;
    p->numel = numel;
    p->init = init;
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    m->n_params += numel;
    return p->offset;
}


// an activation without a gradient of its own (layer-internal, or none needed)
static size_t add_act(Unet *m, size_t numel_per_image) {
    size_t off = m->acts_per_image;
    m->acts_per_image += round16(numel_per_image);
    return off;
}

// an activation whose gradient crosses layers: it gets a slot in dacts
static size_t add_act_g(Unet *m, size_t numel_per_image) {
    size_t off = add_act(m, numel_per_image);
    if (m->n_gmap == m->cap_gmap) {
        m->cap_gmap = m->cap_gmap ? 2 * m->cap_gmap : 128;
        size_t (*g)[2] = mallocCheck((size_t)m->cap_gmap * sizeof(*g));
        if (m->n_gmap) memcpy(g, m->gmap, (size_t)m->n_gmap * sizeof(*g));
        free(m->gmap);
        m->gmap = g;
    }
    m->gmap[m->n_gmap][0] = off;
    m->gmap[m->n_gmap][1] = m->grads_per_image;
    m->n_gmap++;
    m->grads_per_image += round16(numel_per_image);
    return off;
}

static size_t grad_offset(const Unet *m, size_t act_off) {
    for (int i = m->n_gmap - 1; i >= 0; i--)
        if (m->gmap[i][0] == act_off) return m->gmap[i][1];
    die("internal error: activation %zu has no gradient slot", act_off);
}

// layer-internal gradient slots: offsets from 0 in the shared scratch
static size_t add_scratch(size_t *used, size_t numel_per_image) {
    size_t off = *used;
    *used += round16(numel_per_image);
    return off;
}
static void need_scratch(Unet *m, size_t used) {
    if (used > m->scratch_per_image) m->scratch_per_image = used;
}

static void need_ws(Unet *m, size_t floats) {
    if (floats > m->ws_per_thread) m->ws_per_thread = floats;
}

// conv weight [co, ci, k, k] and bias, PyTorch default init U(+-1/sqrt(ci k k))
static void add_conv(Unet *m, size_t *w, size_t *b, int ci, int co, int k, const char *prefix) {
    *w = add_param(m, INIT_UNIFORM_FAN_IN, ci * k * k, 0, co, ci, k, k, "%s.weight", prefix);
    *b = add_param(m, INIT_UNIFORM_FAN_IN, ci * k * k, 0, co, 0, 0, 0, "%s.bias", prefix);
}

// nn.Linear weight [out, in] and bias, U(+-1/sqrt(in))
static void add_linear(Unet *m, size_t *w, size_t *b, int in, int out, const char *prefix) {
    *w = add_param(m, INIT_UNIFORM_FAN_IN, in, 0, out, in, 0, 0, "%s.weight", prefix);
    *b = add_param(m, INIT_UNIFORM_FAN_IN, in, 0, out, 0, 0, 0, "%s.bias", prefix);
}

static void add_groupnorm(Unet *m, size_t *w, size_t *b, int c, const char *prefix) {
    *w = add_param(m, INIT_ONE, 0, 0, c, 0, 0, 0, "%s.weight", prefix);
    *b = add_param(m, INIT_ZERO, 0, 0, c, 0, 0, 0, "%s.bias", prefix);
}

// the parameters of one block, in the reference module's registration order
static void layout_block_params(Unet *m, Block *bk, const char *pre) {
    char name[96];
    int D = m->cfg.time_emb_dim;
    for (int i = 0; i < bk->n_res; i++) {
        ResnetLayer *r = &bk->res[i];
        snprintf(name, sizeof(name), "%s.resnet_conv_first.%d.0", pre, i);
        add_groupnorm(m, &r->gn1_w, &r->gn1_b, r->cin, name);
        snprintf(name, sizeof(name), "%s.resnet_conv_first.%d.2", pre, i);
        add_conv(m, &r->conv1_w, &r->conv1_b, r->cin, r->cout, 3, name);
    }
    for (int i = 0; i < bk->n_res; i++) {
        ResnetLayer *r = &bk->res[i];
        snprintf(name, sizeof(name), "%s.t_emb_layers.%d.1", pre, i);
        add_linear(m, &r->temb_w, &r->temb_b, D, r->cout, name);
    }
    for (int i = 0; i < bk->n_res; i++) {
        ResnetLayer *r = &bk->res[i];
        snprintf(name, sizeof(name), "%s.resnet_conv_second.%d.0", pre, i);
        add_groupnorm(m, &r->gn2_w, &r->gn2_b, r->cout, name);
        snprintf(name, sizeof(name), "%s.resnet_conv_second.%d.2", pre, i);
        add_conv(m, &r->conv2_w, &r->conv2_b, r->cout, r->cout, 3, name);
    }
    for (int i = 0; i < bk->n_attn; i++) {
        AttnLayer *a = &bk->attn[i];
        snprintf(name, sizeof(name), "%s.attention_norms.%d", pre, i);
        add_groupnorm(m, &a->norm_w, &a->norm_b, a->C, name);
    }
    for (int i = 0; i < bk->n_attn; i++) {
        AttnLayer *a = &bk->attn[i];
        int C = a->C;
        a->in_w = add_param(m, INIT_XAVIER, C, 3 * C, 3 * C, C, 0, 0, "%s.attentions.%d.in_proj_weight", pre, i);
        a->in_b = add_param(m, INIT_ZERO, 0, 0, 3 * C, 0, 0, 0, "%s.attentions.%d.in_proj_bias", pre, i);
        a->out_w = add_param(m, INIT_UNIFORM_FAN_IN, C, 0, C, C, 0, 0, "%s.attentions.%d.out_proj.weight", pre, i);
        a->out_b = add_param(m, INIT_ZERO, 0, 0, C, 0, 0, 0, "%s.attentions.%d.out_proj.bias", pre, i);
    }
    for (int i = 0; i < bk->n_res; i++) {
        ResnetLayer *r = &bk->res[i];
        snprintf(name, sizeof(name), "%s.residual_input_conv.%d", pre, i);
        add_conv(m, &r->res_w, &r->res_b, r->cin, r->cout, 1, name);
    }
    if (bk->resample && bk->kind == BLOCK_DOWN) {
        snprintf(name, sizeof(name), "%s.down_sample_conv", pre);
        add_conv(m, &bk->samp_w, &bk->samp_b, bk->samp_c, bk->samp_c, 4, name);
    }
    if (bk->resample && bk->kind == BLOCK_UP) {
        // ConvTranspose2d weight [Cin, Cout, 4, 4]: PyTorch's fan_in is weight.size(1) * 16
        int c = bk->samp_c;
        bk->samp_w = add_param(m, INIT_UNIFORM_FAN_IN, c * 16, 0, c, c, 4, 4, "%s.up_sample_conv.weight", pre);
        bk->samp_b = add_param(m, INIT_UNIFORM_FAN_IN, c * 16, 0, c, 0, 0, 0, "%s.up_sample_conv.bias", pre);
    }
}

static void layout_resnet_acts(Unet *m, ResnetLayer *r, size_t in) {
    size_t HW = (size_t)r->H * r->W, ci = r->cin, co = r->cout;
    r->in = in;
    r->mean1 = add_act(m, GROUPS);
    r->rstd1 = add_act(m, GROUPS);
    r->act1 = add_act(m, ci * HW);
    r->tproj = add_act(m, co);
    r->h1 = add_act(m, co * HW);
    r->mean2 = add_act(m, GROUPS);
    r->rstd2 = add_act(m, GROUPS);
    r->act2 = add_act(m, co * HW);
    r->out = add_act_g(m, co * HW);
    size_t used = 0; // first the slots gradients accumulate into (zeroed before each backward), then those overwritten
    r->g_act1 = add_scratch(&used, ci * HW);
    r->g_tproj = add_scratch(&used, co);
    r->g_h1 = add_scratch(&used, co * HW);
    r->g_act2 = add_scratch(&used, co * HW);
    r->zeroed = used;
    r->g_gn1 = add_scratch(&used, ci * HW);
    r->g_gn2 = add_scratch(&used, co * HW);
    r->g_sums = add_scratch(&used, 2 * (ci > co ? ci : co));
    r->scratch = used;
    need_scratch(m, used);
    need_ws(m, conv2d_ws_floats(r->cin, r->H, r->W, r->cout, 3, 1, 1));
    need_ws(m, conv2d_ws_floats(r->cout, r->H, r->W, r->cout, 3, 1, 1));
    need_ws(m, conv2d_ws_floats(r->cin, r->H, r->W, r->cout, 1, 1, 0));
}

static void layout_attn_acts(Unet *m, AttnLayer *a, size_t in) {
    size_t N = (size_t)a->H * a->W, C = a->C;
    a->in = in;
    a->gn = add_act(m, C * N);
    a->mean = add_act(m, GROUPS);
    a->rstd = add_act(m, GROUPS);
    a->qkv = add_act(m, 3 * C * N);
    a->o = add_act(m, C * N);
    a->lse = add_act(m, (size_t)a->heads * N);
    a->out = add_act_g(m, C * N);
    size_t used = 0;
    a->g_gn = add_scratch(&used, C * N);
    a->scratch = used;
    need_scratch(m, used);
    need_ws(m, attention_ws_floats(a->C, (int)N, a->heads));
}

static void init_block(Block *bk, BlockKind kind, int cin, int cout, int H, int n_res, int n_attn, int heads) {
    memset(bk, 0, sizeof(*bk));
    bk->kind = kind;
    bk->cin = cin;
    bk->cout = cout;
    bk->H = bk->W = H;
    bk->n_res = n_res;
    bk->n_attn = n_attn;
    bk->res = callocCheck(n_res, sizeof(ResnetLayer));
    bk->attn = callocCheck(n_attn ? n_attn : 1, sizeof(AttnLayer));
    for (int i = 0; i < n_res; i++) {
        ResnetLayer *r = &bk->res[i];
        r->cin = (i == 0) ? cin : cout;
        r->cout = cout;
        r->H = r->W = H;
    }
    for (int i = 0; i < n_attn; i++) {
        bk->attn[i].C = cout;
        bk->attn[i].H = bk->attn[i].W = H;
        bk->attn[i].heads = heads;
    }
}

// ResNet/attention order inside a block: down/up: (res, attn) x L; mid: res, (attn, res) x L
static size_t layout_block_layers(Unet *m, Block *bk, size_t cur) {
    if (bk->kind == BLOCK_MID) {
        layout_resnet_acts(m, &bk->res[0], cur);
        cur = bk->res[0].out;
        for (int i = 0; i < bk->n_attn; i++) {
            layout_attn_acts(m, &bk->attn[i], cur);
            cur = bk->attn[i].out;
            layout_resnet_acts(m, &bk->res[i + 1], cur);
            cur = bk->res[i + 1].out;
        }
    } else {
        for (int i = 0; i < bk->n_res; i++) {
            layout_resnet_acts(m, &bk->res[i], cur);
            cur = bk->res[i].out;
            if (bk->n_attn) {
                layout_attn_acts(m, &bk->attn[i], cur);
                cur = bk->attn[i].out;
            }
        }
    }
    return cur;
}

// the layout: blocks, parameter tensors, activation offsets, workspace (no parameter arrays)
static void unet_layout(Unet *m, const ModelConfig *c) {
    memset(m, 0, sizeof(*m));
    m->cfg = *c;
    int nd = c->n_down - 1, nm = c->n_mid - 1, D = c->time_emb_dim, S = c->im_size;
    m->n_blocks = 2 * nd + nm;
    m->blocks = callocCheck(m->n_blocks, sizeof(Block));

    // structure: sizes per level
    int size[CFG_MAX_LEVELS + 1];
    size[0] = S;
    for (int i = 0; i < nd; i++) size[i + 1] = c->down_sample[i] ? size[i] / 2 : size[i];
    for (int i = 0; i < nd; i++) {
        Block *bk = &m->blocks[i];
        int L = c->num_down_layers;
        init_block(bk, BLOCK_DOWN, c->down_channels[i], c->down_channels[i + 1], size[i], L,
                   c->down_attn[i] ? L : 0, c->num_heads);
        bk->resample = c->down_sample[i];
        bk->samp_c = c->down_channels[i + 1];
    }
    for (int i = 0; i < nm; i++) {
        Block *bk = &m->blocks[nd + i];
        int L = c->num_mid_layers;
        init_block(bk, BLOCK_MID, c->mid_channels[i], c->mid_channels[i + 1], size[nd], L + 1, L, c->num_heads);
    }
    for (int k = 0; k < nd; k++) {
        int i = nd - 1 - k; // ups are built for i = nd-1 .. 0
        Block *bk = &m->blocks[nd + nm + k];
        int L = c->num_up_layers;
        int cout = i > 0 ? c->down_channels[i - 1] : OUT_CH;
        init_block(bk, BLOCK_UP, 2 * c->down_channels[i], cout, size[i], L, c->down_attn[i] ? L : 0, c->num_heads);
        bk->resample = c->down_sample[i];
        bk->samp_c = c->down_channels[i];
    }

    // parameters, state_dict order
    add_linear(m, &m->t1_w, &m->t1_b, D, D, "t_proj.0");
    add_linear(m, &m->t2_w, &m->t2_b, D, D, "t_proj.2");
    if (c->num_classes > 0) // nn.Embedding(num_classes + 1, D): the last row is the null label
        m->class_emb = add_param(m, INIT_NORMAL, 0, 0, c->num_classes + 1, D, 0, 0, "class_emb.weight");
    add_conv(m, &m->conv_in_w, &m->conv_in_b, c->im_channels, c->down_channels[0], 3, "conv_in");
    char pre[32];
    for (int i = 0; i < nd; i++) {
        snprintf(pre, sizeof(pre), "downs.%d", i);
        layout_block_params(m, &m->blocks[i], pre);
    }
    for (int i = 0; i < nm; i++) {
        snprintf(pre, sizeof(pre), "mids.%d", i);
        layout_block_params(m, &m->blocks[nd + i], pre);
    }
    for (int k = 0; k < nd; k++) {
        snprintf(pre, sizeof(pre), "ups.%d", k);
        layout_block_params(m, &m->blocks[nd + nm + k], pre);
    }
    add_groupnorm(m, &m->norm_out_w, &m->norm_out_b, OUT_CH, "norm_out");
    add_conv(m, &m->conv_out_w, &m->conv_out_b, OUT_CH, c->im_channels, 3, "conv_out");

    // activations, in forward order
    size_t img = (size_t)c->im_channels * S * S;
    m->a_x = add_act(m, img);
    m->a_temb_sin = add_act(m, D);
    m->a_t1 = add_act_g(m, D);
    m->a_t1act = add_act_g(m, D);
    m->a_temb = add_act_g(m, D);
    m->a_tact = add_act_g(m, D);
    m->a_conv_in = add_act_g(m, (size_t)c->down_channels[0] * S * S);
    need_ws(m, conv2d_ws_floats(c->im_channels, S, S, c->down_channels[0], 3, 1, 1));
    size_t cur = m->a_conv_in;
    for (int i = 0; i < nd; i++) {
        Block *bk = &m->blocks[i];
        bk->in = cur;
        cur = layout_block_layers(m, bk, cur);
        if (bk->resample) {
            int Ho = bk->H / 2;
            bk->out = add_act_g(m, (size_t)bk->cout * Ho * Ho);
            need_ws(m, conv2d_ws_floats(bk->cout, bk->H, bk->W, bk->cout, 4, 2, 1));
            cur = bk->out;
        } else {
            bk->out = cur;
        }
    }
    for (int i = 0; i < nm; i++) {
        Block *bk = &m->blocks[nd + i];
        bk->in = cur;
        cur = bk->out = layout_block_layers(m, bk, cur);
    }
    for (int k = 0; k < nd; k++) {
        Block *bk = &m->blocks[nd + nm + k];
        Block *down = &m->blocks[nd - 1 - k];
        int half = bk->cin / 2, H = bk->H;
        bk->in = cur;
        bk->skip = down->in;
        if (bk->resample) { // convT(x); without resampling the concat takes x itself
            bk->up = add_act_g(m, (size_t)half * H * H);
            need_ws(m, conv_transpose2d_ws_floats(half, H / 2, H / 2, half, 4, 2, 1));
        } else {
            bk->up = cur;
        }
        bk->cat = add_act_g(m, (size_t)bk->cin * H * H);
        cur = bk->out = layout_block_layers(m, bk, bk->cat);
    }
    m->a_gn_out = add_act_g(m, (size_t)OUT_CH * S * S);
    m->a_mean_out = add_act(m, GROUPS);
    m->a_rstd_out = add_act(m, GROUPS);
    m->a_act_out = add_act_g(m, (size_t)OUT_CH * S * S);
    m->a_out = add_act_g(m, img);
    need_ws(m, conv2d_ws_floats(OUT_CH, S, S, c->im_channels, 3, 1, 1));
}

void unet_build(Unet *m, const ModelConfig *c) {
    unet_layout(m, c);
    m->params = alignedCalloc(m->n_params * sizeof(float));
    m->grads = alignedCalloc(m->n_params * sizeof(float));
}

void unet_size(const ModelConfig *c, size_t *n_params, size_t *floats_per_image) {
    Unet m;
    unet_layout(&m, c);
    *n_params = m.n_params;
    *floats_per_image = m.acts_per_image + m.grads_per_image + m.scratch_per_image;
    unet_free(&m);
}

void unet_init_params(Unet *m, Rng *rng) {
    for (int i = 0; i < m->n_tensors; i++) {
        ParamTensor *p = &m->tensors[i];
        float *w = m->params + p->offset;
        float bound = 0.0f;
        if (p->init == INIT_UNIFORM_FAN_IN) bound = 1.0f / sqrtf((float)p->fan_in);
        if (p->init == INIT_XAVIER) bound = sqrtf(6.0f / (float)(p->fan_in + p->fan_out));
        for (size_t k = 0; k < p->numel; k++) {
            switch (p->init) {
            case INIT_ONE: w[k] = 1.0f; break;
            case INIT_ZERO: w[k] = 0.0f; break;
            case INIT_NORMAL: w[k] = rng_normal(rng); break;
            default: w[k] = (2.0f * rng_uniform(rng) - 1.0f) * bound; break;
            }
        }
    }
}

void unet_alloc_acts(Unet *m, int B, int with_grads) {
    int nt = threads_in_use(); // every parallel region of the layers has this many threads
    if (B <= m->B && (!with_grads || m->dacts) && nt <= m->ws_threads) return;
    if (B < m->B) B = m->B;
    if (nt < m->ws_threads) nt = m->ws_threads;
    free(m->acts);
    free(m->dacts);
    free(m->dscratch);
    free(m->ws);
    free(m->t);
    free(m->y);
    m->acts = alignedCalloc((size_t)B * m->acts_per_image * sizeof(float));
    m->dacts = with_grads ? alignedCalloc((size_t)B * m->grads_per_image * sizeof(float)) : NULL;
    m->dscratch = with_grads ? alignedCalloc((size_t)B * m->scratch_per_image * sizeof(float)) : NULL;
    m->ws = alignedCalloc((size_t)nt * m->ws_per_thread * sizeof(float));
    m->ws_threads = nt;
    m->t = callocCheck(B, sizeof(float));
    m->y = callocCheck(B, sizeof(int));
    m->B = B;
}

// ---------------------------------------------------------------------------------------
// forward

// pointers into the batch activations (offsets are per image: scale by the batch size)
#define ACT(off) (m->acts + (size_t)B * (off))
#define DACT(off) (m->dacts + (size_t)B * grad_offset(m, (off)))
#define DSCR(off) (m->dscratch + (size_t)B * (off))
#define PAR(off) (m->params + (off))
#define GRAD(off) (m->grads + (off))

static void resnet_forward(Unet *m, const ResnetLayer *r, int B) {
    int HW = r->H * r->W, D = m->cfg.time_emb_dim;
    groupnorm_silu_forward(NULL, ACT(r->act1), ACT(r->mean1), ACT(r->rstd1), ACT(r->in), PAR(r->gn1_w), PAR(r->gn1_b),
                           B, r->cin, HW, GROUPS);
    conv2d_forward(ACT(r->h1), ACT(r->act1), PAR(r->conv1_w), PAR(r->conv1_b), B, r->cin, r->H, r->W, r->cout, 3, 1, 1, 0, m->ws);
    linear_forward(ACT(r->tproj), ACT(m->a_tact), PAR(r->temb_w), PAR(r->temb_b), B, D, r->cout);
    add_bias_bc_forward(ACT(r->h1), ACT(r->tproj), B, r->cout, HW);
    groupnorm_silu_forward(NULL, ACT(r->act2), ACT(r->mean2), ACT(r->rstd2), ACT(r->h1), PAR(r->gn2_w), PAR(r->gn2_b),
                           B, r->cout, HW, GROUPS);
    conv2d_forward(ACT(r->out), ACT(r->act2), PAR(r->conv2_w), PAR(r->conv2_b), B, r->cout, r->H, r->W, r->cout, 3, 1, 1, 0, m->ws);
    conv2d_forward(ACT(r->out), ACT(r->in), PAR(r->res_w), PAR(r->res_b), B, r->cin, r->H, r->W, r->cout, 1, 1, 0, 1, m->ws);
}

static void attn_forward(Unet *m, const AttnLayer *a, int B) {
    int N = a->H * a->W;
    groupnorm_forward(ACT(a->gn), ACT(a->mean), ACT(a->rstd), ACT(a->in), PAR(a->norm_w), PAR(a->norm_b), B, a->C, N, GROUPS);
    array_copy(ACT(a->out), ACT(a->in), (long)B * a->C * N); // residual
    attention_forward(ACT(a->out), ACT(a->qkv), ACT(a->o), ACT(a->lse), ACT(a->gn), PAR(a->in_w), PAR(a->in_b),
                      PAR(a->out_w), PAR(a->out_b), B, a->C, N, a->heads, m->ws);
}

static void block_layers_forward(Unet *m, const Block *bk, int B) {
    if (bk->kind == BLOCK_MID) {
        resnet_forward(m, &bk->res[0], B);
        for (int i = 0; i < bk->n_attn; i++) {
            attn_forward(m, &bk->attn[i], B);
            resnet_forward(m, &bk->res[i + 1], B);
        }
    } else {
        for (int i = 0; i < bk->n_res; i++) {
            resnet_forward(m, &bk->res[i], B);
            if (bk->n_attn) attn_forward(m, &bk->attn[i], B);
        }
    }
}

float *unet_forward(Unet *m, const float *x, const float *t, const int *y, int B) {
    if (B > m->B) die("unet_forward: batch %d larger than the allocated %d", B, m->B);
    if (threads_in_use() > m->ws_threads)
        die("unet_forward: workspace for %d threads, %d in use (call unet_alloc_acts after set_threads)", m->ws_threads,
            threads_in_use());
    const ModelConfig *c = &m->cfg;
    int S = c->im_size, D = c->time_emb_dim;
    memcpy(m->t, t, (size_t)B * sizeof(float));
    for (int b = 0; b < B; b++) {
        int yb = y && c->num_classes > 0 ? y[b] : c->num_classes; // unconditional models: 0 throughout
        if (yb < 0 || yb > c->num_classes) die("unet_forward: label %d outside [0, %d]", yb, c->num_classes);
        m->y[b] = yb;
    }
    memcpy(ACT(m->a_x), x, (size_t)B * c->im_channels * S * S * sizeof(float));
    // time embedding: temb = W2 silu(W1 e(t) + b1) + b2; every ResNet layer uses silu(temb)
    timestep_embedding(ACT(m->a_temb_sin), t, B, D);
    linear_forward(ACT(m->a_t1), ACT(m->a_temb_sin), PAR(m->t1_w), PAR(m->t1_b), B, D, D);
    silu_forward(ACT(m->a_t1act), ACT(m->a_t1), (long)B * D);
    linear_forward(ACT(m->a_temb), ACT(m->a_t1act), PAR(m->t2_w), PAR(m->t2_b), B, D, D);
    if (c->num_classes > 0) embedding_add_forward(ACT(m->a_temb), PAR(m->class_emb), m->y, B, D); // temb += E[y]
    silu_forward(ACT(m->a_tact), ACT(m->a_temb), (long)B * D);

    conv2d_forward(ACT(m->a_conv_in), ACT(m->a_x), PAR(m->conv_in_w), PAR(m->conv_in_b), B, c->im_channels, S, S,
                   c->down_channels[0], 3, 1, 1, 0, m->ws);
    for (int k = 0; k < m->n_blocks; k++) {
        const Block *bk = &m->blocks[k];
        if (bk->kind == BLOCK_UP) {
            int half = bk->cin / 2, H = bk->H;
            if (bk->resample)
                conv_transpose2d_forward(ACT(bk->up), ACT(bk->in), PAR(bk->samp_w), PAR(bk->samp_b), B, half, H / 2, H / 2,
                                         half, 4, 2, 1, m->ws);
            concat_channels_forward(ACT(bk->cat), ACT(bk->up), ACT(bk->skip), B, half, half, H * H);
        }
        block_layers_forward(m, bk, B);
        if (bk->kind == BLOCK_DOWN && bk->resample) {
            size_t last = bk->n_attn ? bk->attn[bk->n_attn - 1].out : bk->res[bk->n_res - 1].out;
            conv2d_forward(ACT(bk->out), ACT(last), PAR(bk->samp_w), PAR(bk->samp_b), B, bk->cout, bk->H, bk->W, bk->cout, 4, 2, 1, 0, m->ws);
        }
    }
    const Block *last = &m->blocks[m->n_blocks - 1];
    groupnorm_silu_forward(ACT(m->a_gn_out), ACT(m->a_act_out), ACT(m->a_mean_out), ACT(m->a_rstd_out), ACT(last->out),
                           PAR(m->norm_out_w), PAR(m->norm_out_b), B, OUT_CH, S * S, GROUPS);
    conv2d_forward(ACT(m->a_out), ACT(m->a_act_out), PAR(m->conv_out_w), PAR(m->conv_out_b), B, OUT_CH, S, S,
                   c->im_channels, 3, 1, 1, 0, m->ws);
    m->B_last = B;
    return ACT(m->a_out);
}

// ---------------------------------------------------------------------------------------
// backward: the forward in reverse, every layer accumulating into the activation grads

static void resnet_backward(Unet *m, const ResnetLayer *r, int B) {
    int HW = r->H * r->W, D = m->cfg.time_emb_dim;
    float *din = DACT(r->in), *dout = DACT(r->out);
    array_zero(m->dscratch, (long)B * r->zeroed);
    conv2d_backward(din, GRAD(r->res_w), GRAD(r->res_b), dout, ACT(r->in), PAR(r->res_w),
                    B, r->cin, r->H, r->W, r->cout, 1, 1, 0, m->ws);
    conv2d_backward(DSCR(r->g_act2), GRAD(r->conv2_w), GRAD(r->conv2_b), dout, ACT(r->act2), PAR(r->conv2_w),
                    B, r->cout, r->H, r->W, r->cout, 3, 1, 1, m->ws);
    groupnorm_silu_backward(DSCR(r->g_h1), GRAD(r->gn2_w), GRAD(r->gn2_b), DSCR(r->g_gn2), DSCR(r->g_sums), DSCR(r->g_act2),
                            ACT(r->h1), ACT(r->mean2), ACT(r->rstd2), PAR(r->gn2_w), PAR(r->gn2_b), B, r->cout, HW, GROUPS);
    add_bias_bc_backward(DSCR(r->g_tproj), DSCR(r->g_h1), B, r->cout, HW);
    linear_backward(DACT(m->a_tact), GRAD(r->temb_w), GRAD(r->temb_b), DSCR(r->g_tproj), ACT(m->a_tact), PAR(r->temb_w), B, D, r->cout);
    conv2d_backward(DSCR(r->g_act1), GRAD(r->conv1_w), GRAD(r->conv1_b), DSCR(r->g_h1), ACT(r->act1), PAR(r->conv1_w),
                    B, r->cin, r->H, r->W, r->cout, 3, 1, 1, m->ws);
    groupnorm_silu_backward(din, GRAD(r->gn1_w), GRAD(r->gn1_b), DSCR(r->g_gn1), DSCR(r->g_sums), DSCR(r->g_act1), ACT(r->in),
                            ACT(r->mean1), ACT(r->rstd1), PAR(r->gn1_w), PAR(r->gn1_b), B, r->cin, HW, GROUPS);
}

static void attn_backward(Unet *m, const AttnLayer *a, int B) {
    int N = a->H * a->W;
    long n = (long)B * a->C * N;
    float *din = DACT(a->in), *dout = DACT(a->out);
    array_add(din, dout, n); // residual
    array_zero(m->dscratch, (long)B * a->scratch);
    attention_backward(DSCR(a->g_gn), GRAD(a->in_w), GRAD(a->in_b), GRAD(a->out_w), GRAD(a->out_b), dout, ACT(a->gn),
                       ACT(a->qkv), ACT(a->o), ACT(a->lse), PAR(a->in_w), PAR(a->out_w), B, a->C, N, a->heads, m->ws);
    groupnorm_backward(din, GRAD(a->norm_w), GRAD(a->norm_b), DSCR(a->g_gn), ACT(a->in), ACT(a->mean), ACT(a->rstd),
                       PAR(a->norm_w), B, a->C, N, GROUPS);
}

static void block_layers_backward(Unet *m, const Block *bk, int B) {
    if (bk->kind == BLOCK_MID) {
        for (int i = bk->n_attn - 1; i >= 0; i--) {
            resnet_backward(m, &bk->res[i + 1], B);
            attn_backward(m, &bk->attn[i], B);
        }
        resnet_backward(m, &bk->res[0], B);
    } else {
        for (int i = bk->n_res - 1; i >= 0; i--) {
            if (bk->n_attn) attn_backward(m, &bk->attn[i], B);
            resnet_backward(m, &bk->res[i], B);
        }
    }
}

void unet_zero_grad(Unet *m) { array_zero(m->grads, (long)m->n_params); }

void unet_backward(Unet *m, const float *dout) {
    int B = m->B_last;
    const ModelConfig *c = &m->cfg;
    int S = c->im_size, D = c->time_emb_dim;
    if (!m->dacts) die("unet_backward: activations were allocated without gradients (unet_alloc_acts)");
    if (threads_in_use() > m->ws_threads)
        die("unet_backward: workspace for %d threads, %d in use (call unet_alloc_acts after set_threads)", m->ws_threads,
            threads_in_use());
    array_zero(m->dacts, (long)B * m->grads_per_image);
    memcpy(DACT(m->a_out), dout, (size_t)B * c->im_channels * S * S * sizeof(float));
    const Block *last = &m->blocks[m->n_blocks - 1];
    conv2d_backward(DACT(m->a_act_out), GRAD(m->conv_out_w), GRAD(m->conv_out_b), DACT(m->a_out), ACT(m->a_act_out),
                    PAR(m->conv_out_w), B, OUT_CH, S, S, c->im_channels, 3, 1, 1, m->ws);
    silu_backward(DACT(m->a_gn_out), DACT(m->a_act_out), ACT(m->a_gn_out), (long)B * OUT_CH * S * S);
    groupnorm_backward(DACT(last->out), GRAD(m->norm_out_w), GRAD(m->norm_out_b), DACT(m->a_gn_out), ACT(last->out),
                       ACT(m->a_mean_out), ACT(m->a_rstd_out), PAR(m->norm_out_w), B, OUT_CH, S * S, GROUPS);
    for (int k = m->n_blocks - 1; k >= 0; k--) {
        const Block *bk = &m->blocks[k];
        if (bk->kind == BLOCK_DOWN && bk->resample) {
            size_t lastl = bk->n_attn ? bk->attn[bk->n_attn - 1].out : bk->res[bk->n_res - 1].out;
            conv2d_backward(DACT(lastl), GRAD(bk->samp_w), GRAD(bk->samp_b), DACT(bk->out), ACT(lastl), PAR(bk->samp_w),
                            B, bk->cout, bk->H, bk->W, bk->cout, 4, 2, 1, m->ws);
        }
        block_layers_backward(m, bk, B);
        if (bk->kind == BLOCK_UP) {
            int half = bk->cin / 2, H = bk->H;
            concat_channels_backward(DACT(bk->up), DACT(bk->skip), DACT(bk->cat), B, half, half, H * H);
            if (bk->resample)
                conv_transpose2d_backward(DACT(bk->in), GRAD(bk->samp_w), GRAD(bk->samp_b), DACT(bk->up), ACT(bk->in),
                                          PAR(bk->samp_w), B, half, H / 2, H / 2, half, 4, 2, 1, m->ws);
        }
    }
    conv2d_backward(NULL, GRAD(m->conv_in_w), GRAD(m->conv_in_b), DACT(m->a_conv_in), ACT(m->a_x), PAR(m->conv_in_w),
                    B, c->im_channels, S, S, c->down_channels[0], 3, 1, 1, m->ws);
    silu_backward(DACT(m->a_temb), DACT(m->a_tact), ACT(m->a_temb), (long)B * D);
    if (c->num_classes > 0) embedding_add_backward(GRAD(m->class_emb), DACT(m->a_temb), m->y, B, D);
    linear_backward(DACT(m->a_t1act), GRAD(m->t2_w), GRAD(m->t2_b), DACT(m->a_temb), ACT(m->a_t1act), PAR(m->t2_w), B, D, D);
    silu_backward(DACT(m->a_t1), DACT(m->a_t1act), ACT(m->a_t1), (long)B * D);
    linear_backward(NULL, GRAD(m->t1_w), GRAD(m->t1_b), DACT(m->a_t1), ACT(m->a_temb_sin), PAR(m->t1_w), B, D, D);
}

void unet_free(Unet *m) {
    for (int k = 0; k < m->n_blocks; k++) {
        free(m->blocks[k].res);
        free(m->blocks[k].attn);
    }
    free(m->blocks);
    free(m->tensors);
    free(m->params);
    free(m->grads);
    free(m->acts);
    free(m->dacts);
    free(m->dscratch);
    free(m->gmap);
    free(m->ws);
    free(m->t);
    free(m->y);
    memset(m, 0, sizeof(*m));
}

// ---------------------------------------------------------------------------------------

static double conv_macs(int ci, int co, int k, int Ho, int Wo) { return (double)ci * co * k * k * Ho * Wo; }

double unet_forward_macs(const Unet *m) {
    const ModelConfig *c = &m->cfg;
    int S = c->im_size, D = c->time_emb_dim;
    double macs = 2.0 * D * D + conv_macs(c->im_channels, c->down_channels[0], 3, S, S);
    for (int k = 0; k < m->n_blocks; k++) {
        const Block *bk = &m->blocks[k];
        for (int i = 0; i < bk->n_res; i++) {
            const ResnetLayer *r = &bk->res[i];
            macs += conv_macs(r->cin, r->cout, 3, r->H, r->W) + conv_macs(r->cout, r->cout, 3, r->H, r->W) +
                    conv_macs(r->cin, r->cout, 1, r->H, r->W) + (double)D * r->cout;
        }
        for (int i = 0; i < bk->n_attn; i++) {
            const AttnLayer *a = &bk->attn[i];
            double N = (double)a->H * a->W;
            macs += 4.0 * a->C * a->C * N + 2.0 * N * N * a->C; // in/out proj + QK^T + PV
        }
        if (bk->resample && bk->kind == BLOCK_DOWN) macs += conv_macs(bk->cout, bk->cout, 4, bk->H / 2, bk->W / 2);
        if (bk->resample && bk->kind == BLOCK_UP) macs += conv_macs(bk->samp_c, bk->samp_c, 4, bk->H / 2, bk->W / 2);
    }
    macs += conv_macs(OUT_CH, c->im_channels, 3, S, S);
    return macs;
}
