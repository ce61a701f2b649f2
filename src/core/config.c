// config.c: parse and validate `key = value` model configuration files.
#define _POSIX_C_SOURCE 200809L
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#define STR_(x) #x
#define STR(x) STR_(x)

const char *schedule_name(ScheduleKind k) {
    switch (k) {
    case SCHEDULE_LINEAR: return "linear";
    case SCHEDULE_COSINE: return "cosine";
    case SCHEDULE_CONSTANT: return "constant";
    }
    return "?";
}

const char *objective_name(ObjectiveKind k) {
    switch (k) {
    case OBJECTIVE_EPS: return "eps";
    case OBJECTIVE_V: return "v";
    case OBJECTIVE_EDM: return "edm";
    }
    return "?";
}

const char *sigma_sampling_name(SigmaSampling k) {
    return k == SIGMA_SAMPLING_LOGNORMAL ? "lognormal" : k == SIGMA_SAMPLING_UNIFORM ? "uniform" : "?";
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

// strict integer parse: whole string, within [lo, hi]
static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *trim(end) != 0 || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

// strict float parse; the bounds apply to the value as a float, so whatever config_to_text
// writes (%.9g of a float in range) reads back (0.999f prints as 0.999000013)
static int parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    float f = (float)v;
    if (end == s || *trim(end) != 0 || errno || !isfinite(v) || !(f >= lo && f <= hi)) return -1;
    *out = f;
    return 0;
}

// comma-separated ints (booleans accept 0/1/true/false) -> n entries
static int parse_list(char *s, int lo, int hi, int is_bool, int *out, int *n) {
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n >= CFG_MAX_LEVELS) return -1;
        tok = trim(tok);
        int v;
        if (is_bool && (!strcmp(tok, "true") || !strcmp(tok, "True"))) v = 1;
        else if (is_bool && (!strcmp(tok, "false") || !strcmp(tok, "False"))) v = 0;
        else if (parse_int(tok, lo, hi, &v)) return -1;
        out[(*n)++] = v;
    }
    return *n > 0 ? 0 : -1;
}

enum { K_IM_CHANNELS, K_IM_SIZE, K_DOWN_CHANNELS, K_MID_CHANNELS, K_DOWN_SAMPLE, K_DOWN_ATTN,
       K_TIME_EMB_DIM, K_NUM_DOWN_LAYERS, K_NUM_MID_LAYERS, K_NUM_UP_LAYERS, K_NUM_HEADS,
       K_SCHEDULE, K_NUM_TIMESTEPS, K_BETA_START, K_BETA_END, K_BETA, K_COSINE_S,
       K_OBJECTIVE, K_SIGMA_SAMPLING, K_P_MEAN, K_P_STD, K_SIGMA_DATA, K_MIN_SNR_GAMMA, K_NUM_CLASSES, K_P_UNCOND,
       K_COUNT };
static const char *KEYS[K_COUNT] = {
    "im_channels", "im_size", "down_channels", "mid_channels", "down_sample", "down_attn",
    "time_emb_dim", "num_down_layers", "num_mid_layers", "num_up_layers", "num_heads",
    "schedule", "num_timesteps", "beta_start", "beta_end", "beta", "cosine_s",
    "objective", "sigma_sampling", "p_mean", "p_std", "sigma_data", "min_snr_gamma", "num_classes", "p_uncond"};
// keys that must be present
static const int REQUIRED[] = {K_IM_CHANNELS, K_IM_SIZE, K_DOWN_CHANNELS, K_MID_CHANNELS,
                               K_DOWN_SAMPLE, K_TIME_EMB_DIM, K_NUM_DOWN_LAYERS,
                               K_NUM_MID_LAYERS, K_NUM_UP_LAYERS, K_NUM_HEADS};

// the accepted values of a key, for error messages
static const char *key_range(int k) {
    switch (k) {
    case K_IM_CHANNELS: return "an integer in 1.." STR(CFG_MAX_IM_CHANNELS);
    case K_IM_SIZE: return "an integer in 1.." STR(CFG_MAX_IM_SIZE);
    case K_DOWN_CHANNELS: case K_MID_CHANNELS: return "a comma-separated list of integers in 1.." STR(CFG_MAX_CHANNELS);
    case K_DOWN_SAMPLE: case K_DOWN_ATTN: return "a comma-separated list of 0/1 or true/false";
    case K_TIME_EMB_DIM: return "an even integer in 2.." STR(CFG_MAX_TIME_EMB_DIM);
    case K_NUM_DOWN_LAYERS: case K_NUM_UP_LAYERS: return "an integer in 1.." STR(CFG_MAX_LAYERS);
    case K_NUM_MID_LAYERS: return "an integer in 0.." STR(CFG_MAX_LAYERS);
    case K_NUM_HEADS: return "an integer in 1.." STR(CFG_MAX_HEADS);
    case K_SCHEDULE: return "linear, cosine or constant";
    case K_NUM_TIMESTEPS: return "an integer in 1.." STR(CFG_MAX_TIMESTEPS);
    case K_BETA_START: case K_BETA_END: case K_BETA: return "a number in [1e-12, 0.999]";
    case K_COSINE_S: return "a number in [0, 1]";
    case K_OBJECTIVE: return "eps, v or edm";
    case K_SIGMA_SAMPLING: return "uniform or lognormal";
    case K_P_MEAN: return "a number in [-20, 20]";
    case K_P_STD: return "a number in [0.01, 20]";
    case K_SIGMA_DATA: return "a number in [0, 100] (0: measured on the data)";
    case K_MIN_SNR_GAMMA: return "a number in [0, 1e6] (0: off)";
    case K_NUM_CLASSES: return "an integer in 0.." STR(CFG_MAX_CLASSES);
    case K_P_UNCOND: return "a number in [0, 1]";
    }
    return "?";
}

int config_parse(ModelConfig *c, const char *text, const char *name, char *err, size_t errlen) {
    memset(c, 0, sizeof(*c));
    c->schedule = SCHEDULE_LINEAR;
    c->num_timesteps = 1000;
    c->beta_start = 1e-4f;
    c->beta_end = 0.02f;
    c->beta = 0.02f;
    c->cosine_s = 0.008f;
    c->p_mean = -1.2f;
    c->p_std = 1.2f;
    c->p_uncond = 0.1f;
    int seen[K_COUNT] = {0}, n_sample = 0, n_attn = 0;

    if (!strncmp(text, "\xEF\xBB\xBF", 3)) text += 3; // a UTF-8 byte-order mark (some editors write one)
    size_t len = strlen(text);
    char *buf = mallocCheck(len + 1);
    memcpy(buf, text, len + 1);
    int lineno = 0, rc = 0;
    char *save = NULL;
    // walk lines manually so empty lines keep the count right
    char *p = buf;
    (void)save;
    while (p && *p != 0 && rc == 0) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        lineno++;
        char *line = p;
        p = nl ? nl + 1 : NULL;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        line = trim(line);
        if (!*line) continue;
        char *eq = strchr(line, '=');
        if (!eq) { rc = set_error(err, errlen, "%s:%d: expected 'key = value', got '%.40s'", name, lineno, line); break; }
        *eq = 0;
        char *key = trim(line), *val = trim(eq + 1);
        int k = -1;
        for (int i = 0; i < K_COUNT; i++)
            if (!strcmp(key, KEYS[i])) k = i;
        if (k < 0) { rc = set_error(err, errlen, "%s:%d: unknown key '%.40s'", name, lineno, key); break; }
        if (seen[k]) { rc = set_error(err, errlen, "%s:%d: key '%s' given twice", name, lineno, key); break; }
        seen[k] = 1;
        if (!*val) { rc = set_error(err, errlen, "%s:%d: key '%s' has no value", name, lineno, key); break; }
        int bad = 0;
        switch (k) {
        case K_IM_CHANNELS: bad = parse_int(val, 1, CFG_MAX_IM_CHANNELS, &c->im_channels); break;
        case K_IM_SIZE: bad = parse_int(val, 1, CFG_MAX_IM_SIZE, &c->im_size); break;
        case K_DOWN_CHANNELS: bad = parse_list(val, 1, CFG_MAX_CHANNELS, 0, c->down_channels, &c->n_down); break;
        case K_MID_CHANNELS: bad = parse_list(val, 1, CFG_MAX_CHANNELS, 0, c->mid_channels, &c->n_mid); break;
        case K_DOWN_SAMPLE: bad = parse_list(val, 0, 1, 1, c->down_sample, &n_sample); break;
        case K_DOWN_ATTN: bad = parse_list(val, 0, 1, 1, c->down_attn, &n_attn); break;
        case K_TIME_EMB_DIM: bad = parse_int(val, 2, CFG_MAX_TIME_EMB_DIM, &c->time_emb_dim); break;
        case K_NUM_DOWN_LAYERS: bad = parse_int(val, 1, CFG_MAX_LAYERS, &c->num_down_layers); break;
        case K_NUM_MID_LAYERS: bad = parse_int(val, 0, CFG_MAX_LAYERS, &c->num_mid_layers); break;
        case K_NUM_UP_LAYERS: bad = parse_int(val, 1, CFG_MAX_LAYERS, &c->num_up_layers); break;
        case K_NUM_HEADS: bad = parse_int(val, 1, CFG_MAX_HEADS, &c->num_heads); break;
        case K_SCHEDULE:
            if (!strcmp(val, "linear")) c->schedule = SCHEDULE_LINEAR;
            else if (!strcmp(val, "cosine")) c->schedule = SCHEDULE_COSINE;
            else if (!strcmp(val, "constant")) c->schedule = SCHEDULE_CONSTANT;
            else bad = 1;
            break;
        case K_NUM_TIMESTEPS: bad = parse_int(val, 1, CFG_MAX_TIMESTEPS, &c->num_timesteps); break;
        case K_BETA_START: bad = parse_float(val, 1e-12f, 0.999f, &c->beta_start); break;
        case K_BETA_END: bad = parse_float(val, 1e-12f, 0.999f, &c->beta_end); break;
        case K_BETA: bad = parse_float(val, 1e-12f, 0.999f, &c->beta); break;
        case K_COSINE_S: bad = parse_float(val, 0.0f, 1.0f, &c->cosine_s); break;
        case K_OBJECTIVE:
            if (!strcmp(val, "eps")) c->objective = OBJECTIVE_EPS;
            else if (!strcmp(val, "v")) c->objective = OBJECTIVE_V;
            else if (!strcmp(val, "edm")) c->objective = OBJECTIVE_EDM;
            else bad = 1;
            break;
        case K_SIGMA_SAMPLING:
            if (!strcmp(val, "uniform")) c->sigma_sampling = SIGMA_SAMPLING_UNIFORM;
            else if (!strcmp(val, "lognormal")) c->sigma_sampling = SIGMA_SAMPLING_LOGNORMAL;
            else bad = 1;
            break;
        case K_P_MEAN: bad = parse_float(val, -20.0f, 20.0f, &c->p_mean); break;
        case K_P_STD: bad = parse_float(val, 0.01f, 20.0f, &c->p_std); break;
        case K_SIGMA_DATA: bad = parse_float(val, 0.0f, 100.0f, &c->sigma_data); break;
        case K_MIN_SNR_GAMMA: bad = parse_float(val, 0.0f, 1e6f, &c->min_snr_gamma); break;
        case K_NUM_CLASSES: bad = parse_int(val, 0, CFG_MAX_CLASSES, &c->num_classes); break;
        case K_P_UNCOND: bad = parse_float(val, 0.0f, 1.0f, &c->p_uncond); break;
        }
        if (bad) rc = set_error(err, errlen, "%s:%d: key '%s': invalid value '%.40s' (%s)", name, lineno, key, val, key_range(k));
    }
    free(buf);
    if (rc) return rc;
    for (size_t i = 0; i < sizeof(REQUIRED) / sizeof(REQUIRED[0]); i++)
        if (!seen[REQUIRED[i]]) return set_error(err, errlen, "%s: missing key '%s'", name, KEYS[REQUIRED[i]]);
    if (c->n_down < 2) return set_error(err, errlen, "%s: key 'down_channels': need at least 2 entries", name);
    if (n_sample != c->n_down - 1)
        return set_error(err, errlen, "%s: key 'down_sample': has %d entries, down_channels needs %d", name, n_sample, c->n_down - 1);
    if (seen[K_DOWN_ATTN] && n_attn != c->n_down - 1)
        return set_error(err, errlen, "%s: key 'down_attn': has %d entries, down_channels needs %d", name, n_attn, c->n_down - 1);
    if (!seen[K_DOWN_ATTN])
        for (int i = 0; i < c->n_down - 1; i++) c->down_attn[i] = 1;
    if (!seen[K_SIGMA_SAMPLING] && c->objective == OBJECTIVE_EDM) c->sigma_sampling = SIGMA_SAMPLING_LOGNORMAL;
    char verr[ERR_LEN];
    if (config_validate(c, verr, sizeof(verr))) return set_error(err, errlen, "%s: %s", name, verr);
    return 0;
}

int config_validate(const ModelConfig *c, char *err, size_t errlen) {
    const int G = 8; // GroupNorm groups, fixed by the reference architecture
    if (c->n_mid < 2) return set_error(err, errlen, "key 'mid_channels': need at least 2 entries");
    if (c->mid_channels[0] != c->down_channels[c->n_down - 1])
        return set_error(err, errlen, "key 'mid_channels': first entry %d must equal the last down channel %d",
                    c->mid_channels[0], c->down_channels[c->n_down - 1]);
    if (c->mid_channels[c->n_mid - 1] != c->down_channels[c->n_down - 2])
        return set_error(err, errlen, "key 'mid_channels': last entry %d must equal the second-to-last down channel %d",
                    c->mid_channels[c->n_mid - 1], c->down_channels[c->n_down - 2]);
    if (c->time_emb_dim % 2) return set_error(err, errlen, "key 'time_emb_dim': %d is not even", c->time_emb_dim);
    for (int i = 0; i < c->n_down; i++) {
        if (c->down_channels[i] % G)
            return set_error(err, errlen, "key 'down_channels': %d is not divisible by the %d GroupNorm groups", c->down_channels[i], G);
        if (c->down_channels[i] % c->num_heads)
            return set_error(err, errlen, "key 'down_channels': %d is not divisible by num_heads %d", c->down_channels[i], c->num_heads);
    }
    for (int i = 0; i < c->n_mid; i++) {
        if (c->mid_channels[i] % G)
            return set_error(err, errlen, "key 'mid_channels': %d is not divisible by the %d GroupNorm groups", c->mid_channels[i], G);
        if (c->mid_channels[i] % c->num_heads)
            return set_error(err, errlen, "key 'mid_channels': %d is not divisible by num_heads %d", c->mid_channels[i], c->num_heads);
    }
    // up blocks output down_channels[i-1] (or 16 for the last); their attention needs heads | C
    if (16 % c->num_heads) return set_error(err, errlen, "key 'num_heads': %d does not divide the 16 output channels", c->num_heads);
    int size = c->im_size;
    for (int i = 0; i < c->n_down - 1; i++) {
        if (c->down_sample[i]) {
            if (size % 2) return set_error(err, errlen, "key 'down_sample': size %d at level %d is odd and cannot be halved", size, i);
            size /= 2;
        }
    }
    if (c->num_timesteps < 1) return set_error(err, errlen, "key 'num_timesteps': must be >= 1");
    if (c->schedule == SCHEDULE_LINEAR && !(c->beta_start <= c->beta_end))
        return set_error(err, errlen, "key 'beta_end': must be >= beta_start");
    return 0;
}

void config_load(ModelConfig *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("%s: cannot open config file: %s", path, strerror(errno));
    char *text = mallocCheck(1 << 16);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    int too_big = !feof(f);
    fclose(f);
    if (too_big) die("%s: config file larger than 64 KiB", path);
    text[n] = 0;
    if (memchr(text, 0, n)) die("%s: config file is not text", path);
    char err[ERR_LEN];
    if (config_parse(c, text, path, err, sizeof(err))) die("%s", err);
    free(text);
}

static int list_text(char *buf, size_t len, const int *v, int n) {
    int w = 0;
    for (int i = 0; i < n; i++) w += snprintf(buf + w, len > (size_t)w ? len - w : 0, "%s%d", i ? ", " : "", v[i]);
    return w;
}

int config_to_text(const ModelConfig *c, char *buf, size_t len) {
    char dc[128], mc[128], ds[128], da[128];
    list_text(dc, sizeof(dc), c->down_channels, c->n_down);
    list_text(mc, sizeof(mc), c->mid_channels, c->n_mid);
    list_text(ds, sizeof(ds), c->down_sample, c->n_down - 1);
    list_text(da, sizeof(da), c->down_attn, c->n_down - 1);
    return snprintf(buf, len,
                    "im_channels = %d\nim_size = %d\ndown_channels = %s\nmid_channels = %s\n"
                    "down_sample = %s\ndown_attn = %s\ntime_emb_dim = %d\nnum_down_layers = %d\n"
                    "num_mid_layers = %d\nnum_up_layers = %d\nnum_heads = %d\nschedule = %s\n"
                    "num_timesteps = %d\nbeta_start = %.9g\nbeta_end = %.9g\nbeta = %.9g\ncosine_s = %.9g\n"
                    "objective = %s\nsigma_sampling = %s\np_mean = %.9g\np_std = %.9g\nsigma_data = %.9g\n"
                    "min_snr_gamma = %.9g\nnum_classes = %d\np_uncond = %.9g\n",
                    c->im_channels, c->im_size, dc, mc, ds, da, c->time_emb_dim, c->num_down_layers,
                    c->num_mid_layers, c->num_up_layers, c->num_heads, schedule_name(c->schedule),
                    c->num_timesteps, c->beta_start, c->beta_end, c->beta, c->cosine_s,
                    objective_name(c->objective), sigma_sampling_name(c->sigma_sampling), c->p_mean, c->p_std,
                    c->sigma_data, c->min_snr_gamma, c->num_classes, c->p_uncond);
}
