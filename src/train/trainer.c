// train.c: the training step and the state a checkpoint must carry to resume exactly.
#include "train/trainer.h"

#include <math.h>
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif
#include <string.h>

#include "train/adam.h"
#include "train/dist.h"
#include "core/common.h"
#include "diffusion/objective.h"
#include "nn/layers.h"

void epoch_permutation(int *perm, int64_t n, uint64_t seed, int64_t epoch) {
    Rng r;
    rng_seed(&r, seed * 0x9E3779B97F4A7C15ULL + (uint64_t)epoch + 1);
    for (int64_t i = 0; i < n; i++) perm[i] = (int)i;
    rng_shuffle(&r, perm, (int)n);
}

float ema_decay_at(float decay, int64_t step) {
    float warm = (float)(1.0 + (double)step) / (float)(10.0 + (double)step);
    return decay < warm ? decay : warm;
}

float train_lr_at(const TrainState *st, int64_t step) {
    double lr = st->lr;
    if (st->warmup > 0 && step < st->warmup) return (float)(lr * (double)(step + 1) / (double)st->warmup);
    if (st->lr_decay_steps > 0) { // lr (1 + cos(pi p)) / 2, p = (step - warmup) / (decay_steps - warmup)
        int64_t span = st->lr_decay_steps - st->warmup;
        if (step >= st->lr_decay_steps || span <= 0) return 0.0f;
        double p = (double)(step - st->warmup) / (double)span;
        lr *= cosine_decay(p);
    }
    return (float)lr;
}

#define NORM_CHUNKS 64 // fixed partial sums: the same norm for any thread count

double grad_global_norm(const float *g, size_t n) {
    double part[NORM_CHUNKS];
    size_t chunk = (n + NORM_CHUNKS - 1) / NORM_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < NORM_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0;
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double s = 0;
    for (int c = 0; c < NORM_CHUNKS; c++) s += part[c];
    return sqrt(s);
}

double dataset_sigma(const Dataset *d) {
    // pixel values are 2 p/255 - 1: count each of the 256 levels, then the moments in double
    long long cnt[256] = {0};
    size_t n = (size_t)d->n * d->h * d->w;
    for (size_t i = 0; i < n; i++) cnt[d->pixels[i]]++;
    double s = 0, s2 = 0;
    for (int v = 0; v < 256; v++) {
        double x = 2.0 * v / 255.0 - 1.0;
        s += cnt[v] * x;
        s2 += cnt[v] * x * x;
    }
    double mean = s / (double)n;
    return sqrt(fmax(s2 / (double)n - mean * mean, 0.0));
}

void trainer_init(Trainer *tr, const ModelConfig *cfg_in, const TrainState *st, const Dataset *data, const Checkpoint *ck) {
    memset(tr, 0, sizeof(*tr));
    tr->st = *st;
    tr->data = data;
    ModelConfig cfg = *cfg_in;
    if (!ck && cfg.objective == OBJECTIVE_EDM && cfg.sigma_data == 0) cfg.sigma_data = (float)dataset_sigma(data);
    if (cfg.num_classes > 0) {
        if (!data->labels) die("num_classes = %d needs labelled training data", cfg.num_classes);
        for (int i = 0; i < data->n; i++)
            if (data->labels[i] >= cfg.num_classes)
                die("num_classes = %d: training image %d has %s %d", cfg.num_classes, i,
                    data->labels[i] == DATA_LABEL_UNKNOWN ? "no label (its folder is not a digit):" : "label",
                    data->labels[i]);
    }
    unet_build(&tr->model, &cfg);
    size_t n = tr->model.n_params;
    tr->m = alignedCalloc(n * sizeof(float));
    tr->v = alignedCalloc(n * sizeof(float));
    if (st->ema_decay > 0) tr->ema = alignedCalloc(n * sizeof(float));
    if (ck) {
        if (ck->n_params != n) die("checkpoint has %zu parameters, its config builds %zu", ck->n_params, n);
        memcpy(tr->model.params, ck->params, n * sizeof(float));
        memcpy(tr->m, ck->m, n * sizeof(float));
        memcpy(tr->v, ck->v, n * sizeof(float));
        if (tr->ema) memcpy(tr->ema, ck->ema ? ck->ema : ck->params, n * sizeof(float));
    } else {
        Rng init;
        rng_seed(&init, st->seed);
        unet_init_params(&tr->model, &init);
        rng_seed(&tr->st.noise_rng, st->seed ^ 0xD1B54A32D192ED03ULL);
        if (tr->ema) memcpy(tr->ema, tr->model.params, n * sizeof(float));
    }
    schedule_init(&tr->sched, &cfg);
    int B = st->batch;
    size_t D = (size_t)cfg.im_channels * cfg.im_size * cfg.im_size;
    unet_alloc_acts(&tr->model, dist_slice_max(B), 1); // this rank's share of the batch
    tr->x0 = alignedCalloc((size_t)B * D * sizeof(float));
    tr->eps = alignedCalloc((size_t)B * D * sizeof(float));
    tr->xt = alignedCalloc((size_t)B * D * sizeof(float));
    tr->target = alignedCalloc((size_t)B * D * sizeof(float));
    tr->dout = alignedCalloc((size_t)B * D * sizeof(float));
    tr->t = callocCheck(B, sizeof(float));
    tr->sigma = callocCheck(B, sizeof(double));
    tr->weight = callocCheck(B, sizeof(double));
    tr->y = callocCheck(B, sizeof(int));
    tr->row_loss = callocCheck(B, sizeof(double));
    tr->perm = callocCheck(data->n, sizeof(int));
    tr->perm_epoch = -1;
}

float trainer_step(Trainer *tr) {
    TrainState *st = &tr->st;
    Unet *m = &tr->model;
    const ModelConfig *c = &m->cfg;
    int B = st->batch, T = tr->sched.T;
    int D = c->im_channels * c->im_size * c->im_size;
    if (tr->perm_epoch != st->epoch) {
        epoch_permutation(tr->perm, tr->data->n, st->seed, st->epoch);
        tr->perm_epoch = st->epoch;
    }
    // this rank's images [b0, b1) of the global batch (all of it in one process); the draws are
    // made for the whole batch by every rank, so image b gets the same draws for any rank count:
    // in this order from the noise stream, B noise levels, B*D eps, then B label drops
    int b0, b1;
    dist_slice(B, &b0, &b1);
    int nb = b1 - b0;
    size_t o = (size_t)b0 * D;
    const int *idx = tr->perm + st->epoch_pos;
    dataset_batch(tr->data, idx + b0, nb, tr->x0 + o);
    for (int b = 0; b < B; b++) draw_noise_level(c, &tr->sched, &st->noise_rng, &tr->t[b], &tr->sigma[b]);
    rng_fill_normal(&st->noise_rng, tr->eps, (long)B * D);
    if (c->num_classes > 0)
        for (int b = 0; b < B; b++) {
            float u = rng_uniform(&st->noise_rng);
            tr->y[b] = u < c->p_uncond ? c->num_classes : tr->data->labels[idx[b]];
        }
    for (int b = 0; b < B; b++) tr->weight[b] = loss_weight(c, tr->sigma[b]);
    objective_batch(c, &tr->sched, tr->x0 + o, tr->eps + o, tr->t + b0, tr->sigma + b0, nb, D, tr->xt + o, tr->target + o);
    // loss = sum_b w_b |F - F*|^2 / (B D), from the per-image sums (also kept by timestep bucket)
    float *pred = unet_forward(m, tr->xt + o, tr->t + b0, c->num_classes > 0 ? tr->y + b0 : NULL, nb);
    double *row = tr->row_loss, total = 0;
    objective_loss(pred, tr->target + o, tr->weight + b0, nb, D, row + b0);
    dist_allgather_rows(row, B, 1); // every rank: the sums of all B images
    for (int b = 0; b < B; b++) total += tr->weight[b] * row[b];
    total /= (double)B * D;
    float loss = (float)total;
    tr->last_loss = loss;
    if (!isfinite(loss)) return loss;
    for (int b = 0; b < B; b++) {
        int k = (int)((double)tr->t[b] * TRAIN_T_BUCKETS / T);
        k = k < 0 ? 0 : k >= TRAIN_T_BUCKETS ? TRAIN_T_BUCKETS - 1 : k;
        tr->bucket_loss[k] += row[b] / D;
        tr->bucket_count[k]++;
    }
    unet_zero_grad(m);
    // d loss / d pred over this rank's images (the mean is over the global B D), then the sum of
    // the ranks' gradients: the gradient of the global batch
    objective_loss_backward(tr->dout, pred, tr->target + o, tr->weight + b0, nb, D, (long)B * D);
    unet_backward(m, tr->dout);
    dist_sum_floats(m->grads, m->n_params);
    // g *= min(1, clip / |g|): clipping of the global gradient norm
    tr->last_grad_norm = grad_global_norm(m->grads, m->n_params);
    if (st->grad_clip > 0 && tr->last_grad_norm > st->grad_clip) {
        float s = (float)(st->grad_clip / (tr->last_grad_norm + 1e-6));
        float *g = m->grads;
        size_t n = m->n_params;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) g[i] *= s;
    }
    // Adam with the warm-up / decay schedule of the learning rate
    float lr = train_lr_at(st, st->step);
    AdamConfig ac = {lr, st->beta1, st->beta2, st->eps};
    adam_update(m->params, m->grads, tr->m, tr->v, m->n_params, (long)st->step + 1, ac);
    // ema = d ema + (1 - d) params
    if (tr->ema) {
        float d = ema_decay_at(st->ema_decay, st->step);
        float *e = tr->ema, *p = m->params;
        size_t n = m->n_params;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) e[i] = d * e[i] + (1.0f - d) * p[i];
    }
    st->step++;
    st->epoch_pos += B;
    if (st->epoch_pos + B > tr->data->n) { // the remainder smaller than a batch is skipped
        st->epoch++;
        st->epoch_pos = 0;
    }
    return loss;
}

int trainer_save(const Trainer *tr, const char *path, char *err, size_t errlen) {
    return checkpoint_save(path, &tr->model.cfg, &tr->st, tr->model.params, tr->m, tr->v, tr->ema,
                           tr->model.n_params, err, errlen);
}

void trainer_free(Trainer *tr) {
    unet_free(&tr->model);
    schedule_free(&tr->sched);
    free(tr->m); free(tr->v); free(tr->ema); free(tr->perm);
    free(tr->x0); free(tr->eps); free(tr->xt); free(tr->target); free(tr->dout); free(tr->t);
    free(tr->sigma); free(tr->weight); free(tr->y); free(tr->row_loss);
    memset(tr, 0, sizeof(*tr));
}
