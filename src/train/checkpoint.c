// checkpoint.c: atomic, CRC-checked save and strict load of the full training state.
#define _POSIX_C_SOURCE 200809L
#include "train/checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"
#include "model/unet.h"

#define CKPT_MAGIC "DDPMCKPT"
#define CKPT_VERSION 3u

// ---- a growable byte buffer: the whole file is built in memory, CRC'd, then written once
typedef struct { unsigned char *p; size_t n, cap; } Buf;
static void put(Buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *q = mallocCheck(cap);
        if (b->n) memcpy(q, b->p, b->n);
        free(b->p);
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
#define PUT(b, v) put((b), &(v), sizeof(v))

static void put_state(Buf *b, const TrainState *s) {
    PUT(b, s->batch); PUT(b, s->seed); PUT(b, s->lr); PUT(b, s->beta1); PUT(b, s->beta2); PUT(b, s->eps);
    PUT(b, s->ema_decay); PUT(b, s->warmup); PUT(b, s->step); PUT(b, s->epoch); PUT(b, s->epoch_pos);
    PUT(b, s->n_data); PUT(b, s->noise_rng.s);
    PUT(b, s->lr_decay_steps); PUT(b, s->grad_clip);
    PUT(b, s->precision);
}

// ---- reader over a loaded file with bounds checks
typedef struct { const unsigned char *p; size_t n, off; int bad; } Rd;
static void get(Rd *r, void *dst, size_t n) {
    if (r->bad || n > r->n - r->off) { r->bad = 1; memset(dst, 0, n); return; }
    memcpy(dst, r->p + r->off, n);
    r->off += n;
}
#define GET(r, v) get((r), &(v), sizeof(v))

static void get_state(Rd *r, TrainState *s, uint32_t version) {
    GET(r, s->batch); GET(r, s->seed); GET(r, s->lr); GET(r, s->beta1); GET(r, s->beta2); GET(r, s->eps);
    GET(r, s->ema_decay); GET(r, s->warmup); GET(r, s->step); GET(r, s->epoch); GET(r, s->epoch_pos);
    GET(r, s->n_data); GET(r, s->noise_rng.s);
    s->lr_decay_steps = 0;
    s->grad_clip = 0;
    if (version >= 2) { GET(r, s->lr_decay_steps); GET(r, s->grad_clip); }
    s->precision = 0;
    if (version >= 3) GET(r, s->precision);
}

// Every field of a training state in its range, and consistent with the others (the data cursor
// and the step count follow from each other). 0, or -1 with the field named in why.
static int validate_state(const TrainState *s, char *why, size_t n) {
#define BAD(...) return set_error(why, n, __VA_ARGS__)
    if (s->batch < 1 || s->batch > 65536) BAD("batch = %d, not in [1, 65536]", s->batch);
    if (s->n_data < s->batch || s->n_data > 100000000) BAD("n_data = %lld, not in [batch = %d, 1e8]", (long long)s->n_data, s->batch);
    if (!(s->lr > 0 && s->lr <= 10)) BAD("lr = %g, not in (0, 10]", s->lr);
    if (!(s->beta1 >= 0 && s->beta1 < 1)) BAD("beta1 = %g, not in [0, 1)", s->beta1);
    if (!(s->beta2 >= 0 && s->beta2 < 1)) BAD("beta2 = %g, not in [0, 1)", s->beta2);
    if (!(s->eps > 0 && s->eps <= 1)) BAD("eps = %g, not in (0, 1]", s->eps);
    if (!(s->ema_decay >= 0 && s->ema_decay < 1)) BAD("ema_decay = %g, not in [0, 1)", s->ema_decay);
    if (s->warmup < 0 || s->warmup > 1000000000) BAD("warmup = %d, not in [0, 1e9]", s->warmup);
    if (s->lr_decay_steps < 0 || s->lr_decay_steps > 1000000000)
        BAD("lr_decay_steps = %lld, not in [0, 1e9]", (long long)s->lr_decay_steps);
    if (!(s->grad_clip >= 0 && s->grad_clip <= 1e30f)) BAD("grad_clip = %g, not in [0, 1e30]", s->grad_clip);
    if (s->precision < 0 || s->precision > 1) BAD("precision = %d, not 0 (fp32) or 1 (bf16)", s->precision);
    if (s->step < 0 || s->step > 1000000000) BAD("step = %lld, not in [0, 1e9]", (long long)s->step);
    // the cursor: a whole number of batches into the epoch, with a whole batch left
    if (s->epoch_pos < 0 || s->epoch_pos % s->batch || s->epoch_pos + s->batch > s->n_data)
        BAD("epoch_pos = %lld, not a multiple of the batch %d in [0, n_data - batch = %lld]", (long long)s->epoch_pos, s->batch,
            (long long)(s->n_data - s->batch));
    int64_t spe = s->n_data / s->batch; // steps per epoch
    if (s->epoch < 0 || s->epoch > s->step / spe || s->epoch * spe + s->epoch_pos / s->batch != s->step)
        BAD("epoch %lld and epoch_pos %lld do not give step %lld (%lld steps per epoch)", (long long)s->epoch,
            (long long)s->epoch_pos, (long long)s->step, (long long)spe);
    if (!(s->noise_rng.s[0] | s->noise_rng.s[1] | s->noise_rng.s[2] | s->noise_rng.s[3]))
        BAD("noise_rng state is all zero (not a state the generator can reach)");
    return 0;
#undef BAD
}

// non-finite values of x[n]
static size_t count_nonfinite(const float *x, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; x && i < n; i++) bad += !isfinite(x[i]);
    return bad;
}

int checkpoint_save(const char *path, const ModelConfig *cfg, const TrainState *st, const float *params,
                    const float *m, const float *v, const float *ema, size_t n_params, char *err, size_t errlen) {
    // a checkpoint never holds a NaN or an infinity: a diverged run keeps its last good file
    size_t bp = count_nonfinite(params, n_params), bm = count_nonfinite(m, n_params), bv = count_nonfinite(v, n_params),
           be = st->ema_decay > 0 ? count_nonfinite(ema, n_params) : 0;
    if (bp + bm + bv + be)
        return set_error(err, errlen, "%s: not saved: the training state holds non-finite values (parameters %zu, Adam m %zu, "
                         "Adam v %zu, EMA %zu); the previous file is unchanged", path, bp, bm, bv, be);
    char why[ERR_LEN];
    if (validate_state(st, why, sizeof why)) return set_error(err, errlen, "%s: not saved: %s", path, why);
    Buf b = {0};
    char cfg_text[4096];
    uint32_t version = CKPT_VERSION, cfg_len = (uint32_t)config_to_text(cfg, cfg_text, sizeof(cfg_text));
    uint64_t n = n_params;
    put(&b, CKPT_MAGIC, 8);
    PUT(&b, version);
    PUT(&b, cfg_len);
    put(&b, cfg_text, cfg_len);
    put_state(&b, st);
    PUT(&b, n);
    put(&b, params, n * sizeof(float));
    put(&b, m, n * sizeof(float));
    put(&b, v, n * sizeof(float));
    if (st->ema_decay > 0) put(&b, ema, n * sizeof(float));
    uint32_t crc = crc32_bytes(b.p, b.n);
    PUT(&b, crc);

    int rc = write_file_atomic(path, b.p, b.n, err, errlen);
    free(b.p);
    return rc;
}

int checkpoint_load(const char *path, Checkpoint *ck, char *err, size_t errlen) {
    memset(ck, 0, sizeof(*ck));
    size_t size;
    unsigned char *data = read_file_all(path, "checkpoint", &size, err, errlen);
    if (!data) return -1;
    if (size < 8 + 4 + 4 + 4) { free(data); return set_error(err, errlen, "%s: not a ddpm.c checkpoint (file too short: %zu bytes)", path, size); }
    if (memcmp(data, CKPT_MAGIC, 8) != 0) { free(data); return set_error(err, errlen, "%s: not a ddpm.c checkpoint (bad magic)", path); }
    Rd r = {data, size - 4, 8, 0};
    uint32_t version, cfg_len, crc_file;
    GET(&r, version);
    if (version < 1 || version > CKPT_VERSION) {
        free(data);
        return set_error(err, errlen, "%s: checkpoint format version %u, this ddpm reads versions 1 to %u", path, version, CKPT_VERSION);
    }
    memcpy(&crc_file, data + size - 4, 4);
    if (crc32_bytes(data, size - 4) != crc_file) { free(data); return set_error(err, errlen, "%s: checkpoint is corrupt or truncated (CRC mismatch)", path); }
    GET(&r, cfg_len);
    if (r.bad || cfg_len == 0 || cfg_len > 65536 || cfg_len > r.n - r.off) { free(data); return set_error(err, errlen, "%s: corrupt checkpoint (config length)", path); }
    char *cfg_text = mallocCheck(cfg_len + 1);
    get(&r, cfg_text, cfg_len);
    cfg_text[cfg_len] = 0;
    char cerr[ERR_LEN];
    if (config_parse(&ck->cfg, cfg_text, "checkpoint config", cerr, sizeof(cerr))) {
        free(cfg_text); free(data);
        return set_error(err, errlen, "%s: cannot build the model in this checkpoint: %s", path, cerr);
    }
    free(cfg_text);
    get_state(&r, &ck->st, version);
    uint64_t n;
    GET(&r, n);
    int has_ema = ck->st.ema_decay > 0;
    size_t arrays = 3 + (size_t)has_ema;
    if (r.bad || n == 0 || n > (r.n - r.off) / sizeof(float) || n * sizeof(float) * arrays != r.n - r.off) {
        free(data);
        return set_error(err, errlen, "%s: corrupt checkpoint (parameter count %llu does not match the file size)", path, (unsigned long long)n);
    }
    char why[ERR_LEN];
    if (validate_state(&ck->st, why, sizeof why)) { free(data); return set_error(err, errlen, "%s: corrupt checkpoint: %s", path, why); }
    size_t want, per_image;
    unet_size(&ck->cfg, &want, &per_image);
    if (n != want) {
        free(data);
        return set_error(err, errlen, "%s: corrupt checkpoint: %llu parameters, its config builds %zu", path, (unsigned long long)n, want);
    }
    ck->n_params = n;
    ck->params = alignedCalloc(n * sizeof(float));
    ck->m = alignedCalloc(n * sizeof(float));
    ck->v = alignedCalloc(n * sizeof(float));
    get(&r, ck->params, n * sizeof(float));
    get(&r, ck->m, n * sizeof(float));
    get(&r, ck->v, n * sizeof(float));
    if (has_ema) {
        ck->ema = alignedCalloc(n * sizeof(float));
        get(&r, ck->ema, n * sizeof(float));
    }
    free(data);
    size_t bad = count_nonfinite(ck->params, n) + count_nonfinite(ck->m, n) + count_nonfinite(ck->v, n) + count_nonfinite(ck->ema, n);
    if (bad) {
        checkpoint_free(ck);
        return set_error(err, errlen, "%s: corrupt checkpoint: %zu non-finite values in its arrays", path, bad);
    }
    return 0;
}

void checkpoint_free(Checkpoint *ck) {
    free(ck->params);
    free(ck->m);
    free(ck->v);
    free(ck->ema);
    memset(ck, 0, sizeof(*ck));
}
