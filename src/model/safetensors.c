// safetensors.c: a strict reader (a small JSON parser for the header) and a writer of the format.
#define _POSIX_C_SOURCE 200809L
#include "model/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// ---------------------------------------------------------------------------------------------
// JSON: the subset a header needs (objects, arrays, strings, non-negative integers), and a skip of
// any other value; every error sets p->bad with the offset

typedef struct {
    const char *s;
    size_t n, i;
    char why[160];
    int bad;
} Json;

static int jfail(Json *p, const char *what) {
    if (!p->bad) snprintf(p->why, sizeof p->why, "%s at header byte %zu", what, p->i);
    p->bad = 1;
    return -1;
}

static void jws(Json *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static int jpeek(Json *p) {
    jws(p);
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int jexpect(Json *p, char c) {
    if (jpeek(p) != c) {
        char what[40];
        snprintf(what, sizeof what, "expected '%c'", c);
        return jfail(p, what);
    }
    p->i++;
    return 0;
}

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static int read_u4(Json *p, unsigned *u) {
    if (p->n - p->i < 4) return jfail(p, "truncated \\u escape");
    *u = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)p->s[p->i++]);
        if (h < 0) return jfail(p, "bad \\u escape");
        *u = *u * 16 + (unsigned)h;
    }
    return 0;
}

// a string into a malloc'd, NUL-terminated UTF-8 buffer (*len bytes); a NUL inside is refused
static char *jstring(Json *p, size_t *len) {
    if (jexpect(p, '"')) return NULL;
    size_t cap = 32, k = 0;
    char *out = mallocCheck(cap);
    for (;;) {
        if (p->i >= p->n) { free(out); jfail(p, "unterminated string"); return NULL; }
        if (k + 5 > cap) {
            char *o = mallocCheck(cap * 2);
            memcpy(o, out, k);
            free(out);
            out = o;
            cap *= 2;
        }
        unsigned char c = (unsigned char)p->s[p->i++];
        if (c == '"') break;
        if (c < 0x20) { free(out); jfail(p, "control character in a string"); return NULL; }
        if (c != '\\') { out[k++] = (char)c; continue; }
        if (p->i >= p->n) { free(out); jfail(p, "unterminated string"); return NULL; }
        c = (unsigned char)p->s[p->i++];
        const char *simple = strchr("\"\\/bfnrt", c);
        if (simple && c) { out[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]; continue; }
        if (c != 'u') { free(out); jfail(p, "bad escape in a string"); return NULL; }
        unsigned u;
        if (read_u4(p, &u)) { free(out); return NULL; }
        if (u >= 0xD800 && u < 0xDC00) { // a surrogate pair
            unsigned lo;
            if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') { free(out); jfail(p, "lone surrogate"); return NULL; }
            p->i += 2;
            if (read_u4(p, &lo)) { free(out); return NULL; }
            if (lo < 0xDC00 || lo >= 0xE000) { free(out); jfail(p, "bad surrogate pair"); return NULL; }
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        } else if (u >= 0xDC00 && u < 0xE000) { free(out); jfail(p, "lone surrogate"); return NULL; }
        if (u == 0) { free(out); jfail(p, "NUL in a string"); return NULL; }
        if (u < 0x80) out[k++] = (char)u;
        else if (u < 0x800) { out[k++] = (char)(0xC0 | u >> 6); out[k++] = (char)(0x80 | (u & 63)); }
        else if (u < 0x10000) { out[k++] = (char)(0xE0 | u >> 12); out[k++] = (char)(0x80 | (u >> 6 & 63)); out[k++] = (char)(0x80 | (u & 63)); }
        else { out[k++] = (char)(0xF0 | u >> 18); out[k++] = (char)(0x80 | (u >> 12 & 63)); out[k++] = (char)(0x80 | (u >> 6 & 63)); out[k++] = (char)(0x80 | (u & 63)); }
    }
    out[k] = 0;
    if (len) *len = k;
    return out;
}

// a non-negative integer below 2^53 (the JSON numbers any reader represents exactly)
static int juint(Json *p, uint64_t *v) {
    int c = jpeek(p);
    if (c < '0' || c > '9') return jfail(p, "expected a non-negative integer");
    uint64_t x = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        x = x * 10 + (uint64_t)(p->s[p->i++] - '0');
        if (x >= (1ull << 53)) return jfail(p, "integer too large");
    }
    if (p->i < p->n && strchr(".eE", p->s[p->i]) && p->s[p->i]) return jfail(p, "expected an integer");
    *v = x;
    return 0;
}

static int jskip(Json *p, int depth) {
    if (depth > 64) return jfail(p, "nesting deeper than 64");
    int c = jpeek(p);
    if (c == '"') { char *s = jstring(p, NULL); free(s); return s ? 0 : -1; }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        p->i++;
        if (jpeek(p) == close) { p->i++; return 0; }
        for (;;) {
            if (c == '{') {
                char *k = jstring(p, NULL);
                if (!k) return -1;
                free(k);
                if (jexpect(p, ':')) return -1;
            }
            if (jskip(p, depth + 1)) return -1;
            int d = jpeek(p);
            if (d == ',') { p->i++; continue; }
            if (d == close) { p->i++; return 0; }
            return jfail(p, "expected ',' or a closing bracket");
        }
    }
    // a number or a literal
    size_t i0 = p->i;
    while (p->i < p->n && strchr("+-.eE0123456789", p->s[p->i]) && p->s[p->i]) p->i++;
    if (p->i > i0) return 0;
    static const char *lit[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lit[k]);
        if (p->n - p->i >= l && !memcmp(p->s + p->i, lit[k], l)) { p->i += l; return 0; }
    }
    return jfail(p, "expected a value");
}

// ---------------------------------------------------------------------------------------------
// the header

static int cmp_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}

// one tensor's object: {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}
static int parse_tensor(Json *p, StTensor *t, const char *fname, char *err, size_t errlen) {
    int have_dtype = 0, have_shape = 0, have_off = 0;
    if (jexpect(p, '{')) goto json;
    if (jpeek(p) == '}') { p->i++; goto incomplete; }
    for (;;) {
        char *k = jstring(p, NULL);
        if (!k) goto json;
        if (jexpect(p, ':')) { free(k); goto json; }
        if (!strcmp(k, "dtype")) {
            char *d = jstring(p, NULL);
            if (!d) { free(k); goto json; }
            int ok = !strcmp(d, "F32");
            if (!ok) {
                set_error(err, errlen, "%s: tensor '%s' has dtype %.20s; ddpm reads F32 only", fname, t->name, d);
                free(d); free(k);
                return -1;
            }
            free(d);
            have_dtype = 1;
        } else if (!strcmp(k, "shape")) {
            if (jexpect(p, '[')) { free(k); goto json; }
            t->ndim = 0;
            if (jpeek(p) == ']') p->i++;
            else for (;;) {
                uint64_t v;
                if (juint(p, &v)) { free(k); goto json; }
                if (t->ndim == ST_MAX_DIMS) {
                    free(k);
                    return set_error(err, errlen, "%s: tensor '%s' has more than %d dimensions", fname, t->name, ST_MAX_DIMS);
                }
                t->shape[t->ndim++] = v;
                int c = jpeek(p);
                if (c == ',') { p->i++; continue; }
                if (c == ']') { p->i++; break; }
                free(k);
                jfail(p, "expected ',' or ']'");
                goto json;
            }
            have_shape = 1;
        } else if (!strcmp(k, "data_offsets")) {
            if (jexpect(p, '[') || juint(p, &t->begin) || jexpect(p, ',') || juint(p, &t->end) || jexpect(p, ']')) { free(k); goto json; }
            have_off = 1;
        } else if (jskip(p, 1)) { free(k); goto json; }
        free(k);
        int c = jpeek(p);
        if (c == ',') { p->i++; continue; }
        if (c == '}') { p->i++; break; }
        jfail(p, "expected ',' or '}'");
        goto json;
    }
    if (!have_dtype || !have_shape || !have_off) goto incomplete;
    return 0;
incomplete:
    return set_error(err, errlen, "%s: tensor '%s' lacks %s", fname, t->name,
                     !have_dtype ? "its dtype" : !have_shape ? "its shape" : "its data_offsets");
json:
    return set_error(err, errlen, "%s: bad safetensors header (tensor '%s'): %s", fname, t->name, p->why);
}

static int parse_metadata(Json *p, SafeTensors *st, const char *fname, char *err, size_t errlen) {
    if (jexpect(p, '{')) goto json;
    if (jpeek(p) == '}') { p->i++; return 0; }
    for (;;) {
        char *k = jstring(p, NULL);
        if (!k) goto json;
        if (jexpect(p, ':')) { free(k); goto json; }
        if (jpeek(p) != '"') {
            set_error(err, errlen, "%s: metadata value of '%.60s' is not a string", fname, k);
            free(k);
            return -1;
        }
        char *v = jstring(p, NULL);
        if (!v) { free(k); goto json; }
        if (st->n_meta >= 4096) { free(k); free(v); return set_error(err, errlen, "%s: more than 4096 metadata entries", fname); }
        char **m = mallocCheck((size_t)(st->n_meta + 1) * 2 * sizeof(char *));
        if (st->n_meta) memcpy(m, st->meta, (size_t)st->n_meta * 2 * sizeof(char *));
        free(st->meta);
        st->meta = m;
        st->meta[2 * st->n_meta] = k;
        st->meta[2 * st->n_meta + 1] = v;
        st->n_meta++;
        int c = jpeek(p);
        if (c == ',') { p->i++; continue; }
        if (c == '}') { p->i++; return 0; }
        jfail(p, "expected ',' or '}'");
        goto json;
    }
json:
    return set_error(err, errlen, "%s: bad safetensors header (metadata): %s", fname, p->why);
}

int safetensors_parse(SafeTensors *st, const unsigned char *buf, size_t n, const char *fname, char *err, size_t errlen) {
    memset(st, 0, sizeof(*st));
    if (n < 8) return set_error(err, errlen, "%s: not a safetensors file (%zu bytes, shorter than the header length)", fname, n);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | buf[k];
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > n - 8)
        return set_error(err, errlen, "%s: not a safetensors file (header length %llu, file of %zu bytes%s)", fname,
                         (unsigned long long)hlen, n, hlen > ST_MAX_HEADER ? ", limit 100 MB" : "");
    Json p = {(const char *)buf + 8, (size_t)hlen, 0, "", 0};
    st->data = buf + 8 + hlen;
    st->data_size = n - 8 - hlen;
    int cap = 0, rc = -1;
    StTensor **order = NULL;
    if (jexpect(&p, '{')) goto json;
    if (jpeek(&p) == '}') p.i++;
    else for (;;) {
        size_t klen;
        char *k = jstring(&p, &klen);
        if (!k) goto json;
        if (jexpect(&p, ':')) { free(k); goto json; }
        if (!strcmp(k, "__metadata__")) {
            free(k);
            if (st->n_meta) { set_error(err, errlen, "%s: __metadata__ given twice", fname); goto fail; }
            if (parse_metadata(&p, st, fname, err, errlen)) goto fail;
        } else {
            if (klen > ST_MAX_NAME || klen == 0) {
                set_error(err, errlen, "%s: a tensor name of %zu bytes (1 to %d allowed): '%.60s...'", fname, klen, ST_MAX_NAME, k);
                free(k);
                goto fail;
            }
            if (st->n_tensors == ST_MAX_TENSORS) { free(k); set_error(err, errlen, "%s: more than %d tensors", fname, ST_MAX_TENSORS); goto fail; }
            if (st->n_tensors == cap) {
                cap = cap ? 2 * cap : 64;
                StTensor *t = mallocCheck((size_t)cap * sizeof(StTensor));
                if (st->n_tensors) memcpy(t, st->tensors, (size_t)st->n_tensors * sizeof(StTensor));
                free(st->tensors);
                st->tensors = t;
            }
            StTensor *t = &st->tensors[st->n_tensors];
            memset(t, 0, sizeof(*t));
            memcpy(t->name, k, klen + 1);
            free(k);
            if (parse_tensor(&p, t, fname, err, errlen)) goto fail;
            st->n_tensors++;
        }
        int c = jpeek(&p);
        if (c == ',') { p.i++; continue; }
        if (c == '}') { p.i++; break; }
        jfail(&p, "expected ',' or '}'");
        goto json;
    }
    if (jpeek(&p) != -1) { jfail(&p, "trailing characters after the header object"); goto json; }
    // sizes: F32 values of the shape fill data_offsets exactly, inside the data
    for (int i = 0; i < st->n_tensors; i++) {
        StTensor *t = &st->tensors[i];
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] && numel > (st->data_size / 4) / t->shape[d]) {
                set_error(err, errlen, "%s: tensor '%s': its shape holds more values than the file's %llu data bytes", fname, t->name,
                          (unsigned long long)st->data_size);
                goto fail;
            }
            numel *= t->shape[d];
        }
        if (t->begin > t->end || t->end > st->data_size) {
            set_error(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu data bytes", fname, t->name,
                      (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)st->data_size);
            goto fail;
        }
        if (t->end - t->begin != numel * 4) {
            set_error(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, its F32 shape needs %llu", fname, t->name,
                      (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)(t->end - t->begin),
                      (unsigned long long)numel * 4);
            goto fail;
        }
    }
    // the tensors tile the data: sorted by offset, each starts where the previous ended
    order = mallocCheck((size_t)(st->n_tensors + 1) * sizeof(StTensor *));
    for (int i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n_tensors, sizeof(StTensor *), cmp_name);
    for (int i = 1; i < st->n_tensors; i++)
        if (!strcmp(order[i - 1]->name, order[i]->name)) { set_error(err, errlen, "%s: tensor '%s' given twice", fname, order[i]->name); goto fail; }
    qsort(order, (size_t)st->n_tensors, sizeof(StTensor *), cmp_begin);
    uint64_t pos = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        if (order[i]->begin < pos) {
            set_error(err, errlen, "%s: tensor '%s' overlaps tensor '%s' in the data", fname, order[i]->name, order[i - 1]->name);
            goto fail;
        }
        if (order[i]->begin > pos) {
            set_error(err, errlen, "%s: data bytes [%llu, %llu) belong to no tensor (before '%s')", fname, (unsigned long long)pos,
                      (unsigned long long)order[i]->begin, order[i]->name);
            goto fail;
        }
        pos = order[i]->end;
    }
    if (pos != st->data_size) {
        set_error(err, errlen, "%s: data bytes [%llu, %llu) belong to no tensor (truncated or padded file?)", fname, (unsigned long long)pos,
                  (unsigned long long)st->data_size);
        goto fail;
    }
    rc = 0;
    goto done;
json:
    set_error(err, errlen, "%s: bad safetensors header: %s", fname, p.why);
fail:
    safetensors_free(st);
done:
    free(order);
    return rc;
}

int safetensors_read(SafeTensors *st, const char *path, char *err, size_t errlen) {
    size_t n;
    unsigned char *buf = read_file_all(path, "safetensors file", &n, err, errlen);
    if (!buf) { memset(st, 0, sizeof(*st)); return -1; }
    if (safetensors_parse(st, buf, n, path, err, errlen)) { free(buf); return -1; }
    st->file = buf;
    return 0;
}

void safetensors_free(SafeTensors *st) {
    for (int i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->meta);
    free(st->tensors);
    free(st->file);
    memset(st, 0, sizeof(*st));
}

const char *safetensors_meta(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

static void fmt_shape(char *buf, size_t n, int ndim, const uint64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int safetensors_to_params(const SafeTensors *st, const char *fname, const Unet *m, float *params, char *err, size_t errlen) {
    char have[160], want[160];
    unsigned char *used = callocCheck((size_t)st->n_tensors + 1, 1);
    int rc = -1;
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *p = &m->tensors[i];
        uint64_t shape[4];
        for (int d = 0; d < p->ndim; d++) shape[d] = (uint64_t)p->shape[d];
        fmt_shape(want, sizeof want, p->ndim, shape);
        int j = 0;
        while (j < st->n_tensors && strcmp(st->tensors[j].name, p->name)) j++;
        if (j == st->n_tensors) { set_error(err, errlen, "%s: tensor '%s' %s is missing (the config needs it)", fname, p->name, want); goto done; }
        const StTensor *t = &st->tensors[j];
        used[j] = 1;
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == shape[d];
        if (!same) {
            fmt_shape(have, sizeof have, t->ndim, t->shape);
            set_error(err, errlen, "%s: tensor '%s' has shape %s, the config needs %s", fname, p->name, have, want);
            goto done;
        }
        float *dst = params + p->offset;
        memcpy(dst, st->data + t->begin, p->numel * sizeof(float)); // little-endian F32, as this CPU
        size_t bad = 0;
        for (size_t k = 0; k < p->numel; k++) bad += !isfinite(dst[k]);
        if (bad) { set_error(err, errlen, "%s: tensor '%s' holds %zu non-finite values", fname, p->name, bad); goto done; }
    }
    for (int j = 0; j < st->n_tensors; j++)
        if (!used[j]) { set_error(err, errlen, "%s: tensor '%s' is not a parameter of this config", fname, st->tensors[j].name); goto done; }
    rc = 0;
done:
    free(used);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// writer

typedef struct { char *p; size_t n, cap; } Str;
static void sput(Str *s, const char *src, size_t n) {
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + n + 1) cap *= 2;
        char *q = mallocCheck(cap);
        if (s->n) memcpy(q, s->p, s->n);
        free(s->p);
        s->p = q;
        s->cap = cap;
    }
    memcpy(s->p + s->n, src, n);
    s->n += n;
    s->p[s->n] = 0;
}
static void sputs(Str *s, const char *src) { sput(s, src, strlen(src)); }
static void sput_json(Str *s, const char *v) { // a JSON string literal
    sputs(s, "\"");
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        char e[8];
        if (*c == '"' || *c == '\\') { e[0] = '\\'; e[1] = (char)*c; sput(s, e, 2); }
        else if (*c == '\n') sputs(s, "\\n");
        else if (*c < 0x20) { snprintf(e, sizeof e, "\\u%04x", *c); sputs(s, e); }
        else sput(s, (const char *)c, 1);
    }
    sputs(s, "\"");
}

int safetensors_write(const char *path, const Unet *m, const float *params, const char *const *meta, int n_meta, char *err,
                      size_t errlen) {
    Str h = {0};
    char buf[256];
    sputs(&h, "{");
    if (n_meta > 0) {
        sputs(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sputs(&h, ",");
            sput_json(&h, meta[2 * i]);
            sputs(&h, ":");
            sput_json(&h, meta[2 * i + 1]);
        }
        sputs(&h, "}");
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *p = &m->tensors[i];
        if (i || n_meta > 0) sputs(&h, ",");
        sput_json(&h, p->name);
        sputs(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < p->ndim; d++) {
            snprintf(buf, sizeof buf, "%s%d", d ? "," : "", p->shape[d]);
            sputs(&h, buf);
        }
        snprintf(buf, sizeof buf, "],\"data_offsets\":[%zu,%zu]}", p->offset * 4, (p->offset + p->numel) * 4);
        sputs(&h, buf);
    }
    sputs(&h, "}");
    while (h.n % 8) sputs(&h, " "); // the data starts 8-byte aligned
    size_t data = m->n_params * sizeof(float), total = 8 + h.n + data;
    unsigned char *file = mallocCheck(total);
    uint64_t hl = h.n;
    for (int k = 0; k < 8; k++) file[k] = (unsigned char)(hl >> (8 * k));
    memcpy(file + 8, h.p, h.n);
    memcpy(file + 8 + h.n, params, data); // the tensors in state_dict order tile the data
    free(h.p);
    int rc = write_file_atomic(path, file, total, err, errlen);
    free(file);
    return rc;
}

int safetensors_sniff(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[9];
    size_t got = fread(b, 1, 9, f);
    fclose(f);
    return got == 9 && b[8] == '{' && memcmp(b, "DDPMCKPT", 8) != 0;
}
