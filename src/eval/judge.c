// judge.c: the MNIST classifier used to measure samples: layout, init, forward/backward,
// training with Adam, features, and the models/judge.bin file.
#define _POSIX_C_SOURCE 200809L
#include "eval/judge.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "train/adam.h"
#include "core/common.h"
#include "nn/layers.h"

#define JUDGE_MAGIC "DDPMJUDG"
#define JUDGE_VERSION 1u
#define JUDGE_HEADER (8 + 4 + 6 * 4 + 8) // magic, version, config, n_params

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------------------
// layout

void judge_default_config(JudgeConfig *c) {
    c->in_size = 28;
    c->c1 = 16;
    c->c2 = 32;
    c->c3 = 64;
    c->feat = 128;
    c->classes = 10;
}

const char *judge_config_error(const JudgeConfig *c) {
    if (c->in_size < 4 || c->in_size > 1024 || c->in_size % 4) return "input size must be a multiple of 4 in [4, 1024]";
    if (c->c1 < 1 || c->c1 > 1024 || c->c2 < 1 || c->c2 > 1024 || c->c3 < 1 || c->c3 > 1024)
        return "conv channels must be in [1, 1024]";
    if (c->feat < 1 || c->feat > 4096) return "feature width must be in [1, 4096]";
    if (c->classes < 2 || c->classes > 1000) return "classes must be in [2, 1000]";
    if ((double)c->c3 * (c->in_size / 4) * (c->in_size / 4) * c->feat > 1e9) return "too many parameters";
    return NULL;
}

static size_t take(size_t *n, size_t numel) {
    size_t off = *n;
    *n += numel;
    return off;
}
// per-image activation, rounded to 16 floats so every tensor of a batch stays 64-byte aligned
static size_t act(Judge *j, size_t numel) {
    size_t off = j->acts_per_image;
    j->acts_per_image += round16(numel);
    return off;
}
static void need_ws(Judge *j, size_t f) {
    if (f > j->ws_per_thread) j->ws_per_thread = f;
}

void judge_build(Judge *j, const JudgeConfig *c) {
    const char *e = judge_config_error(c);
    if (e) die("judge config: %s", e);
    memset(j, 0, sizeof(*j));
    j->cfg = *c;
    int S = c->in_size, S2 = S / 2, S4 = S / 4, flat = c->c3 * S4 * S4;
    size_t n = 0;
    j->w1 = take(&n, (size_t)c->c1 * 1 * 9);       j->b1 = take(&n, c->c1);
    j->w2 = take(&n, (size_t)c->c2 * c->c1 * 16);  j->b2 = take(&n, c->c2);
    j->w3 = take(&n, (size_t)c->c2 * c->c2 * 9);   j->b3 = take(&n, c->c2);
    j->w4 = take(&n, (size_t)c->c3 * c->c2 * 16);  j->b4 = take(&n, c->c3);
    j->w5 = take(&n, (size_t)c->feat * flat);      j->b5 = take(&n, c->feat);
    j->w6 = take(&n, (size_t)c->classes * c->feat); j->b6 = take(&n, c->classes);
    j->n_params = n;
    j->params = alignedCalloc(n * sizeof(float));
    j->grads = alignedCalloc(n * sizeof(float));
    j->a_x = act(j, (size_t)S * S);
    j->a_h1 = act(j, (size_t)c->c1 * S * S);   j->a_s1 = act(j, (size_t)c->c1 * S * S);
    j->a_h2 = act(j, (size_t)c->c2 * S2 * S2); j->a_s2 = act(j, (size_t)c->c2 * S2 * S2);
    j->a_h3 = act(j, (size_t)c->c2 * S2 * S2); j->a_s3 = act(j, (size_t)c->c2 * S2 * S2);
    j->a_h4 = act(j, (size_t)flat);            j->a_s4 = act(j, (size_t)flat);
    j->a_h5 = act(j, c->feat);                 j->a_feat = act(j, c->feat);
    j->a_logits = act(j, c->classes);          j->a_probs = act(j, c->classes);
    need_ws(j, conv2d_ws_floats(1, S, S, c->c1, 3, 1, 1));
    need_ws(j, conv2d_ws_floats(c->c1, S, S, c->c2, 4, 2, 1));
    need_ws(j, conv2d_ws_floats(c->c2, S2, S2, c->c2, 3, 1, 1));
    need_ws(j, conv2d_ws_floats(c->c2, S2, S2, c->c3, 4, 2, 1));
}

// PyTorch's default for Conv2d/Linear: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
static void init_uniform(float *p, size_t n, int fan_in, Rng *r) {
    float bound = 1.0f / sqrtf((float)fan_in);
    for (size_t i = 0; i < n; i++) p[i] = bound * (2.0f * rng_uniform(r) - 1.0f);
}

void judge_init_params(Judge *j, Rng *r) {
    const JudgeConfig *c = &j->cfg;
    int S4 = c->in_size / 4, flat = c->c3 * S4 * S4;
    float *p = j->params;
    init_uniform(p + j->w1, j->b1 - j->w1, 9, r);           init_uniform(p + j->b1, c->c1, 9, r);
    init_uniform(p + j->w2, j->b2 - j->w2, c->c1 * 16, r);  init_uniform(p + j->b2, c->c2, c->c1 * 16, r);
    init_uniform(p + j->w3, j->b3 - j->w3, c->c2 * 9, r);   init_uniform(p + j->b3, c->c2, c->c2 * 9, r);
    init_uniform(p + j->w4, j->b4 - j->w4, c->c2 * 16, r);  init_uniform(p + j->b4, c->c3, c->c2 * 16, r);
    init_uniform(p + j->w5, j->b5 - j->w5, flat, r);        init_uniform(p + j->b5, c->feat, flat, r);
    init_uniform(p + j->w6, j->b6 - j->w6, c->feat, r);     init_uniform(p + j->b6, c->classes, c->feat, r);
}

void judge_alloc_acts(Judge *j, int B, int train) {
    if (B < 1) B = 1;
    if (B <= j->B && (!train || j->dacts)) return;
    int nb = B > j->B ? B : j->B;
    free(j->acts); free(j->dacts); free(j->ws); free(j->labels);
    j->acts = alignedCalloc((size_t)nb * j->acts_per_image * sizeof(float));
    j->dacts = (train || j->dacts) ? alignedCalloc((size_t)nb * j->acts_per_image * sizeof(float)) : NULL;
    j->ws = alignedCalloc((size_t)max_threads() * j->ws_per_thread * sizeof(float));
    j->labels = callocCheck((size_t)nb, sizeof(int));
    j->B = nb;
}

void judge_free(Judge *j) {
    free(j->params); free(j->grads);
    free(j->acts); free(j->dacts); free(j->ws); free(j->labels);
    memset(j, 0, sizeof(*j));
}

// ---------------------------------------------------------------------------------------
// forward / backward

float judge_forward(Judge *j, const float *x, const int *labels, int B) {
    if (B > j->B) die("judge_forward: batch %d exceeds the allocated %d", B, j->B);
    const JudgeConfig *c = &j->cfg;
    int S = c->in_size, S2 = S / 2, S4 = S / 4, flat = c->c3 * S4 * S4;
    const float *p = j->params;
#define A(o) (j->acts + (size_t)B * j->o)
    memcpy(A(a_x), x, (size_t)B * S * S * sizeof(float));
    conv2d_forward(A(a_h1), A(a_x), p + j->w1, p + j->b1, B, 1, S, S, c->c1, 3, 1, 1, 0, j->ws);
    silu_forward(A(a_s1), A(a_h1), (long)B * c->c1 * S * S);
    conv2d_forward(A(a_h2), A(a_s1), p + j->w2, p + j->b2, B, c->c1, S, S, c->c2, 4, 2, 1, 0, j->ws);
    silu_forward(A(a_s2), A(a_h2), (long)B * c->c2 * S2 * S2);
    conv2d_forward(A(a_h3), A(a_s2), p + j->w3, p + j->b3, B, c->c2, S2, S2, c->c2, 3, 1, 1, 0, j->ws);
    silu_forward(A(a_s3), A(a_h3), (long)B * c->c2 * S2 * S2);
    conv2d_forward(A(a_h4), A(a_s3), p + j->w4, p + j->b4, B, c->c2, S2, S2, c->c3, 4, 2, 1, 0, j->ws);
    silu_forward(A(a_s4), A(a_h4), (long)B * flat);
    linear_forward(A(a_h5), A(a_s4), p + j->w5, p + j->b5, B, flat, c->feat);
    silu_forward(A(a_feat), A(a_h5), (long)B * c->feat);
    linear_forward(A(a_logits), A(a_feat), p + j->w6, p + j->b6, B, c->feat, c->classes);
    float loss = softmax_cross_entropy_forward(A(a_probs), A(a_logits), labels, B, c->classes);
#undef A
    if (labels) memcpy(j->labels, labels, (size_t)B * sizeof(int));
    j->B_last = labels ? B : -B; // negative: no labels, backward impossible
    return loss;
}

const float *judge_probs(const Judge *j) {
    int B = j->B_last < 0 ? -j->B_last : j->B_last;
    return j->acts + (size_t)B * j->a_probs;
}
const float *judge_feat(const Judge *j) {
    int B = j->B_last < 0 ? -j->B_last : j->B_last;
    return j->acts + (size_t)B * j->a_feat;
}

void judge_zero_grad(Judge *j) { memset(j->grads, 0, j->n_params * sizeof(float)); }

void judge_backward(Judge *j) {
    if (j->B_last <= 0 || !j->dacts) die("judge_backward: needs a forward with labels and activations allocated for training");
    const JudgeConfig *c = &j->cfg;
    int B = j->B_last, S = c->in_size, S2 = S / 2, S4 = S / 4, flat = c->c3 * S4 * S4;
    const float *p = j->params;
    float *g = j->grads;
    memset(j->dacts, 0, (size_t)B * j->acts_per_image * sizeof(float));
#define A(o) (j->acts + (size_t)B * j->o)
#define D(o) (j->dacts + (size_t)B * j->o)
    softmax_cross_entropy_backward(D(a_logits), A(a_probs), j->labels, B, c->classes);
    linear_backward(D(a_feat), g + j->w6, g + j->b6, D(a_logits), A(a_feat), p + j->w6, B, c->feat, c->classes);
    silu_backward(D(a_h5), D(a_feat), A(a_h5), (long)B * c->feat);
    linear_backward(D(a_s4), g + j->w5, g + j->b5, D(a_h5), A(a_s4), p + j->w5, B, flat, c->feat);
    silu_backward(D(a_h4), D(a_s4), A(a_h4), (long)B * flat);
    conv2d_backward(D(a_s3), g + j->w4, g + j->b4, D(a_h4), A(a_s3), p + j->w4, B, c->c2, S2, S2, c->c3, 4, 2, 1, j->ws);
    silu_backward(D(a_h3), D(a_s3), A(a_h3), (long)B * c->c2 * S2 * S2);
    conv2d_backward(D(a_s2), g + j->w3, g + j->b3, D(a_h3), A(a_s2), p + j->w3, B, c->c2, S2, S2, c->c2, 3, 1, 1, j->ws);
    silu_backward(D(a_h2), D(a_s2), A(a_h2), (long)B * c->c2 * S2 * S2);
    conv2d_backward(D(a_s1), g + j->w2, g + j->b2, D(a_h2), A(a_s1), p + j->w2, B, c->c1, S, S, c->c2, 4, 2, 1, j->ws);
    silu_backward(D(a_h1), D(a_s1), A(a_h1), (long)B * c->c1 * S * S);
    conv2d_backward(NULL, g + j->w1, g + j->b1, D(a_h1), A(a_x), p + j->w1, B, 1, S, S, c->c1, 3, 1, 1, j->ws);
#undef A
#undef D
}

// ---------------------------------------------------------------------------------------
// features, accuracy

static void copy_out(Judge *j, int B, long i0, float *feats, float *probs) {
    const JudgeConfig *c = &j->cfg;
    if (feats) memcpy(feats + (size_t)i0 * c->feat, judge_feat(j), (size_t)B * c->feat * sizeof(float));
    if (probs) memcpy(probs + (size_t)i0 * c->classes, judge_probs(j), (size_t)B * c->classes * sizeof(float));
}

void judge_embed(Judge *j, const float *x, long n, float *feats, float *probs) {
    size_t D = (size_t)j->cfg.in_size * j->cfg.in_size;
    for (long i0 = 0; i0 < n; i0 += j->B) {
        int B = (int)(n - i0 < j->B ? n - i0 : j->B);
        judge_forward(j, x + (size_t)i0 * D, NULL, B);
        copy_out(j, B, i0, feats, probs);
    }
}

void judge_embed_u8(Judge *j, const uint8_t *px, long n, float *feats, float *probs) {
    size_t D = (size_t)j->cfg.in_size * j->cfg.in_size;
    float *x = mallocCheck((size_t)j->B * D * sizeof(float));
    for (long i0 = 0; i0 < n; i0 += j->B) {
        int B = (int)(n - i0 < j->B ? n - i0 : j->B);
        const uint8_t *src = px + (size_t)i0 * D;
        for (size_t k = 0; k < (size_t)B * D; k++) x[k] = 2.0f * ((float)src[k] / 255.0f) - 1.0f; // as dataset_batch
        judge_forward(j, x, NULL, B);
        copy_out(j, B, i0, feats, probs);
    }
    free(x);
}

static int argmax(const float *p, int C) {
    int k = 0;
    for (int c = 1; c < C; c++) if (p[c] > p[k]) k = c;
    return k;
}

double judge_accuracy(Judge *j, const Dataset *d, int n) {
    if (n <= 0 || n > d->n) n = d->n;
    if (d->h != j->cfg.in_size || d->w != j->cfg.in_size)
        die("judge_accuracy: images are %dx%d, the judge takes %dx%d", d->h, d->w, j->cfg.in_size, j->cfg.in_size);
    float *probs = mallocCheck((size_t)n * j->cfg.classes * sizeof(float));
    judge_embed_u8(j, d->pixels, n, NULL, probs);
    long correct = 0;
    for (int i = 0; i < n; i++) correct += argmax(probs + (size_t)i * j->cfg.classes, j->cfg.classes) == d->labels[i];
    free(probs);
    return (double)correct / n;
}

// ---------------------------------------------------------------------------------------
// training: Adam, lr_k = lr (1 + cos(pi k / total)) / 2, random shifts of +-shift pixels

// out = in translated by (dy, dx), the uncovered border = -1 (black background)
static void shift_image(float *out, const float *in, int S, int dy, int dx) {
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int sy = y - dy, sx = x - dx;
            out[y * S + x] = (sy >= 0 && sy < S && sx >= 0 && sx < S) ? in[sy * S + sx] : -1.0f;
        }
}


double judge_train(Judge *j, const Dataset *d, const JudgeTrainOptions *o) {
    const JudgeConfig *c = &j->cfg;
    int S = c->in_size, B = o->batch;
    size_t D = (size_t)S * S;
    if (d->h != S || d->w != S) die("judge_train: images are %dx%d, the judge takes %dx%d", d->h, d->w, S, S);
    if (d->n < B) die("judge_train: %d images, fewer than one batch of %d", d->n, B);
    for (int i = 0; i < d->n; i++)
        if (d->labels[i] >= c->classes) die("judge_train: image %d has no digit label (%d)", i, d->labels[i]);
    judge_alloc_acts(j, B, 1);
    // everything the loop needs, allocated once
    float *m = alignedCalloc(j->n_params * sizeof(float)), *v = alignedCalloc(j->n_params * sizeof(float));
    float *xb = alignedCalloc((size_t)B * D * sizeof(float)), *xa = alignedCalloc((size_t)B * D * sizeof(float));
    int *idx = mallocCheck((size_t)d->n * sizeof(int)), *lab = mallocCheck((size_t)B * sizeof(int));
    for (int i = 0; i < d->n; i++) idx[i] = i;
    Rng rng;
    rng_seed(&rng, o->seed ^ 0x6a7564676544617aULL); // data order + shifts (init used o->seed)
    long spe = d->n / B, total = spe * o->epochs, step = 0;
    AdamConfig ac = {o->lr, 0.9f, 0.999f, 1e-8f};
    double t0 = now_seconds(), t_print = t0, epoch_loss = 0;
    int tty = isatty(2);
    for (int ep = 0; ep < o->epochs; ep++) {
        rng_shuffle(&rng, idx, d->n);
        double loss_sum = 0;
        long correct = 0, seen = 0;
        for (long k = 0; k < spe; k++) {
            const int *bi = idx + k * B;
            dataset_batch(d, bi, B, xb);
            for (int b = 0; b < B; b++) {
                lab[b] = d->labels[bi[b]];
                int dy = 0, dx = 0;
                if (o->shift > 0) {
                    dy = (int)rng_below(&rng, 2 * o->shift + 1) - o->shift;
                    dx = (int)rng_below(&rng, 2 * o->shift + 1) - o->shift;
                }
                shift_image(xa + b * D, xb + b * D, S, dy, dx);
            }
            float loss = judge_forward(j, xa, lab, B);
            const float *pr = judge_probs(j);
            for (int b = 0; b < B; b++) correct += argmax(pr + (size_t)b * c->classes, c->classes) == lab[b];
            seen += B;
            loss_sum += loss;
            judge_zero_grad(j);
            judge_backward(j);
            step++;
            ac.lr = (float)(o->lr * cosine_decay((double)(step - 1) / (double)total));
            adam_update(j->params, j->grads, m, v, j->n_params, step, ac);
            double now = now_seconds();
            int end = k == spe - 1;
            if (o->verbose && (end || (tty && now - t_print > 0.5) || (!tty && step % 200 == 0))) {
                double ips = (double)step * B / (now - t0);
                char eta[32];
                fmt_time(eta, sizeof eta, (double)(total - step) * B / ips);
                fprintf(stderr, "%sepoch %d/%d | step %ld/%ld | loss %.4f | train acc %.2f%% | %.0f img/s | ETA %s%s",
                        tty ? "\r" : "", ep + 1, o->epochs, k + 1, spe, loss_sum / (k + 1), 100.0 * correct / seen, ips, eta,
                        tty && !end ? "   " : "\n");
                t_print = now;
            }
        }
        epoch_loss = loss_sum / spe;
    }
    free(m); free(v); free(xb); free(xa); free(idx); free(lab);
    return epoch_loss;
}

// ---------------------------------------------------------------------------------------
// models/judge.bin

static void cfg_to_ints(const JudgeConfig *c, int32_t v[6]) {
    v[0] = c->in_size; v[1] = c->c1; v[2] = c->c2; v[3] = c->c3; v[4] = c->feat; v[5] = c->classes;
}

int judge_save(const char *path, const Judge *j, char *err, size_t errlen) {
    size_t size = JUDGE_HEADER + j->n_params * sizeof(float) + 4;
    unsigned char *buf = mallocCheck(size), *q = buf;
    uint32_t version = JUDGE_VERSION;
    int32_t arch[6];
    uint64_t n = j->n_params;
    cfg_to_ints(&j->cfg, arch);
    memcpy(q, JUDGE_MAGIC, 8); q += 8;
    memcpy(q, &version, 4); q += 4;
    memcpy(q, arch, sizeof arch); q += sizeof arch;
    memcpy(q, &n, 8); q += 8;
    memcpy(q, j->params, n * sizeof(float)); q += n * sizeof(float);
    uint32_t crc = crc32_bytes(buf, (size_t)(q - buf));
    memcpy(q, &crc, 4);

    int rc = write_file_atomic(path, buf, size, err, errlen);
    free(buf);
    return rc;
}

int judge_load(const char *path, Judge *j, char *err, size_t errlen) {
    memset(j, 0, sizeof(*j));
    size_t size;
    unsigned char *buf = read_file_all(path, "judge", &size, err, errlen);
    if (!buf) return -1;
    if (size < 8) { free(buf); return set_error(err, errlen, "%s: not a ddpm judge file (%zu bytes)", path, size); }
    if (memcmp(buf, JUDGE_MAGIC, 8) != 0) { free(buf); return set_error(err, errlen, "%s: not a ddpm judge file (bad magic)", path); }
    if (size < JUDGE_HEADER + 4) { free(buf); return set_error(err, errlen, "%s: judge file truncated (%zu bytes)", path, size); }
    uint32_t version, crc_file;
    int32_t arch[6];
    uint64_t n;
    memcpy(&version, buf + 8, 4);
    memcpy(arch, buf + 12, sizeof arch);
    memcpy(&n, buf + 12 + sizeof arch, 8);
    memcpy(&crc_file, buf + size - 4, 4);
    if (version != JUDGE_VERSION) {
        free(buf);
        return set_error(err, errlen, "%s: judge format version %u, this ddpm reads version %u", path, version, JUDGE_VERSION);
    }
    if (crc32_bytes(buf, size - 4) != crc_file) { free(buf); return set_error(err, errlen, "%s: judge file is corrupt or truncated (CRC mismatch)", path); }
    JudgeConfig c = {arch[0], arch[1], arch[2], arch[3], arch[4], arch[5]};
    const char *ce = judge_config_error(&c);
    if (ce) { free(buf); return set_error(err, errlen, "%s: bad judge architecture: %s", path, ce); }
    judge_build(j, &c);
    if (n != j->n_params || size != JUDGE_HEADER + n * sizeof(float) + 4) {
        size_t want = j->n_params;
        judge_free(j);
        free(buf);
        return set_error(err, errlen, "%s: corrupt judge file (%llu parameters stored, its architecture has %zu)", path,
                    (unsigned long long)n, want);
    }
    memcpy(j->params, buf + JUDGE_HEADER, n * sizeof(float));
    free(buf);
    return 0;
}
