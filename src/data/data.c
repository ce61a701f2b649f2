// data.c: MNIST IDX files (gzip via zlib, or plain) and image folders (stb_image) -> Dataset.
// Every header field and length is checked, so garbage input gives a one-line error, never a crash.
#define _POSIX_C_SOURCE 200809L
#include "data/data.h"
#include "core/common.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <stb_image.h>

#define IDX_MAGIC_IMAGES 0x00000803u  // uint8 data, 3 dims
#define IDX_MAGIC_LABELS 0x00000801u  // uint8 data, 1 dim
#define DATA_PATH_MAX 4096
#define DATA_MAX_DEPTH 32              // folder recursion limit (guards against symlink loops)

static uint32_t read_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void write_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

// ----------------------------------------------------------------------------
// IDX reading (gzip or plain: zlib's gzread passes plain files through unchanged)

// gzread up to len bytes (looping, so short reads only happen at end of stream).
// Returns bytes read, or -1 on a zlib/IO error.
static long long gz_read_full(gzFile gz, uint8_t *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got;
        if (chunk > (1u << 30)) chunk = 1u << 30;
        int r = gzread(gz, buf + got, (unsigned)chunk);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

// zlib's message without the "<path>: " prefix gzerror puts in front
static const char *gz_msg(const char *msg, const char *path) {
    if (!msg || !*msg) return "unknown error";
    size_t n = strlen(path);
    if (!strncmp(msg, path, n) && msg[n] == ':' && msg[n + 1] == ' ') return msg + n + 2;
    return msg;
}

// message for a failed gzread: corrupt stream or an I/O error
static int gz_fail(gzFile gz, const char *path, char *err, size_t errlen) {
    int code = Z_OK;
    const char *msg = gzerror(gz, &code);
    if (code == Z_ERRNO) return set_error(err, errlen, "%s: read error: %s", path, strerror(errno));
    return set_error(err, errlen, "%s: corrupt gzip data (zlib: %s)", path, gz_msg(msg, path));
}

// the last 4 bytes of a file, little-endian (a gzip trailer's ISIZE), or 0xffffffff if unreadable
static uint32_t trailer_size(const char *path) {
    FILE *f = fopen(path, "rb");
    uint8_t b[4];
    uint32_t v = 0xffffffffu;
    if (f && fseek(f, -4, SEEK_END) == 0 && fread(b, 1, 4, f) == 4)
        v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (f) fclose(f);
    return v;
}

// Read a whole IDX file with the given magic (ndim = magic & 0xff dims). dims[0] <= IDX_MAX_COUNT,
// the others <= IDX_MAX_DIM, all > 0. The data is exactly prod(dims) bytes, nothing after it.
// On success *data is malloc'ed; on failure *data = NULL.
static int read_idx(const char *path, uint32_t magic, const char *kind, int *dims, uint8_t **data,
                    char *err, size_t errlen) {
    *data = NULL;
    int ndim = (int)(magic & 0xff);
    struct stat st;
    if (stat(path, &st) != 0) return set_error(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return set_error(err, errlen, "%s: not a regular file", path);
    if (st.st_size == 0) return set_error(err, errlen, "%s: empty file", path);
    gzFile gz = gzopen(path, "rb");
    if (!gz) return set_error(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(gz, 1 << 17);

    // header: 4-byte magic, then one 4-byte big-endian size per dimension
    uint8_t hdr[4 + 4 * 4];
    size_t hlen = 4 + 4 * (size_t)ndim;
    long long got = gz_read_full(gz, hdr, hlen);
    int rc = -1;
    if (got < 0) { gz_fail(gz, path, err, errlen); goto done; }
    int is_gzip = !gzdirect(gz);
    if (!is_gzip && (got < 2 || hdr[0] != 0 || hdr[1] != 0)) {
        set_error(err, errlen, "%s: not a gzip/IDX file", path);
        goto done;
    }
    if ((size_t)got < hlen) {
        set_error(err, errlen, "%s: truncated: expected a %zu-byte IDX header, got %lld bytes%s", path, hlen, got,
             is_gzip ? " (after gunzip)" : "");
        goto done;
    }
    uint32_t m = read_be32(hdr);
    if (m != magic) {
        set_error(err, errlen, "%s: bad magic 0x%08x, expected 0x%08x (IDX %s)", path, m, magic, kind);
        goto done;
    }
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t v = read_be32(hdr + 4 + 4 * i);
        uint32_t limit = i == 0 ? IDX_MAX_COUNT : IDX_MAX_DIM;
        if (v == 0 || v > limit) {
            set_error(err, errlen, "%s: bad IDX header: dimension %d is %u, must be 1..%u", path, i, v, limit);
            goto done;
        }
        dims[i] = (int)v;
        total *= v;  // <= 1e7 * 4096 * 4096 < 2^64
    }
    if (total > IDX_MAX_BYTES) {
        set_error(err, errlen, "%s: IDX header claims %llu bytes of data, more than the %llu this program reads", path,
                  (unsigned long long)total, (unsigned long long)IDX_MAX_BYTES);
        goto done;
    }
    // what the file can hold: exactly the data if plain; deflate expands at most 1032:1
    if (!is_gzip && (uint64_t)st.st_size != hlen + total) {
        set_error(err, errlen, "%s: %s: the header claims %llu bytes of data, the file has %llu after the header", path,
                  (uint64_t)st.st_size < hlen + total ? "truncated" : "trailing bytes", (unsigned long long)total,
                  (unsigned long long)(st.st_size - hlen));
        goto done;
    }
    if (is_gzip && hlen + total > (uint64_t)st.st_size * 1032) {
        set_error(err, errlen, "%s: truncated: the header claims %llu bytes of data, more than a %lld-byte gzip file can hold",
                  path, (unsigned long long)total, (long long)st.st_size);
        goto done;
    }

    // data: grow the buffer as bytes arrive, so a lying header on a short file never allocates much
    size_t cap = total < ((size_t)1 << 26) ? (size_t)total : ((size_t)1 << 26);
    uint8_t *buf = malloc(cap);
    if (!buf) { set_error(err, errlen, "%s: out of memory (%zu bytes)", path, cap); goto done; }
    size_t have = 0;
    for (;;) {
        long long r = gz_read_full(gz, buf + have, cap - have);
        if (r < 0) { free(buf); gz_fail(gz, path, err, errlen); goto done; }
        have += (size_t)r;
        if (have < cap || have == total) break;  // end of stream, or all data read
        size_t ncap = cap * 2 < total ? cap * 2 : (size_t)total;
        uint8_t *nbuf = realloc(buf, ncap);
        if (!nbuf) { free(buf); set_error(err, errlen, "%s: out of memory (%zu bytes)", path, ncap); goto done; }
        buf = nbuf;
        cap = ncap;
    }
    if (have < total) {
        free(buf);
        set_error(err, errlen, "%s: truncated: expected %llu bytes of data, got %llu%s", path,
             (unsigned long long)(hlen + total), (unsigned long long)(hlen + have),
             is_gzip ? " (after gunzip)" : "");
        goto done;
    }
    // nothing may follow the data; reading to the end also makes zlib verify the gzip CRC
    uint64_t extra = 0;
    uint8_t tail[4096];
    for (;;) {
        long long r = gz_read_full(gz, tail, sizeof tail);
        if (r < 0) { free(buf); gz_fail(gz, path, err, errlen); goto done; }
        if (r == 0) break;
        extra += (uint64_t)r;
    }
    if (extra > 0) {
        free(buf);
        set_error(err, errlen, "%s: %llu trailing bytes: expected %llu bytes of data, got %llu", path,
             (unsigned long long)extra, (unsigned long long)(hlen + total),
             (unsigned long long)(hlen + total + extra));
        goto done;
    }
    int code = Z_OK;
    gzerror(gz, &code);
    if (code != Z_OK) {  // e.g. Z_BUF_ERROR: gzip stream cut off after the data (missing CRC trailer)
        free(buf);
        set_error(err, errlen, "%s: truncated gzip data (zlib: %s)", path, gz_msg(gzerror(gz, &code), path));
        goto done;
    }
    // zlib stops at the end of the gzip stream and ignores what follows: the file must end with
    // the stream's trailer, whose last 4 bytes are the data length mod 2^32
    if (is_gzip && trailer_size(path) != (uint32_t)(hlen + total)) {
        free(buf);
        set_error(err, errlen, "%s: bytes after the end of the gzip stream (or a damaged trailer)", path);
        goto done;
    }
    *data = buf;
    rc = 0;
done:
    if (gzclose(gz) != Z_OK && rc == 0) {
        free(*data);
        *data = NULL;
        rc = set_error(err, errlen, "%s: error closing file", path);
    }
    return rc;
}

int idx_read_images(const char *path, uint8_t **pixels, int *n, int *h, int *w, char *err, size_t errlen) {
    int dims[3] = {0, 0, 0};
    if (read_idx(path, IDX_MAGIC_IMAGES, "images", dims, pixels, err, errlen) != 0) return -1;
    *n = dims[0]; *h = dims[1]; *w = dims[2];
    return 0;
}

int idx_write_images(const char *path, const uint8_t *pixels, int n, int h, int w, char *err, size_t errlen) {
    if (n <= 0 || n > IDX_MAX_COUNT || h <= 0 || h > IDX_MAX_DIM || w <= 0 || w > IDX_MAX_DIM)
        return set_error(err, errlen, "%s: cannot write IDX with dims %d x %d x %d", path, n, h, w);
    size_t count = (size_t)n * (size_t)h * (size_t)w;
    uint8_t *buf = mallocCheck(16 + count);
    write_be32(buf, IDX_MAGIC_IMAGES);
    write_be32(buf + 4, (uint32_t)n);
    write_be32(buf + 8, (uint32_t)h);
    write_be32(buf + 12, (uint32_t)w);
    memcpy(buf + 16, pixels, count);
    int rc = write_file_atomic(path, buf, 16 + count, err, errlen);
    free(buf);
    return rc;
}

// ----------------------------------------------------------------------------
// MNIST IDX directory

// find dir/<prefix>-<name>[.gz] (or the dotted variant <prefix>-<kind>.<idxN>-ubyte some mirrors use);
// returns 1 and the path if found. `display` gets a readable name for messages.
static int find_idx(const char *dir, const char *prefix, const char *kind, const char *idxn, char *path,
                    size_t pathlen, char *display, size_t displaylen) {
    static const char *forms[] = {"%s/%s-%s-%s-ubyte.gz", "%s/%s-%s-%s-ubyte", "%s/%s-%s.%s-ubyte.gz",
                                  "%s/%s-%s.%s-ubyte"};
    snprintf(display, displaylen, "%s/%s-%s-%s-ubyte[.gz]", dir, prefix, kind, idxn);
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        int len = snprintf(path, pathlen, forms[i], dir, prefix, kind, idxn);
        if (len < 0 || (size_t)len >= pathlen) continue;
        struct stat st;
        if (stat(path, &st) == 0) return 1;
    }
    return 0;
}

static int load_idx_dir(Dataset *d, const char *img_path, const char *lab_path, int expect_size,
                        char *err, size_t errlen) {
    int dims[3] = {0, 0, 0}, ldims[1] = {0};
    uint8_t *pixels = NULL, *labels = NULL;
    if (read_idx(img_path, IDX_MAGIC_IMAGES, "images", dims, &pixels, err, errlen) != 0) return -1;
    if (expect_size > 0 && (dims[1] != expect_size || dims[2] != expect_size)) {
        free(pixels);
        return set_error(err, errlen, "%s: size %dx%d, expected %dx%d", img_path, dims[2], dims[1], expect_size,
                    expect_size);
    }
    if (read_idx(lab_path, IDX_MAGIC_LABELS, "labels", ldims, &labels, err, errlen) != 0) {
        free(pixels);
        return -1;
    }
    if (ldims[0] != dims[0]) {
        free(pixels); free(labels);
        return set_error(err, errlen, "%s: labels count %d != images count %d (files %s, %s)", lab_path, ldims[0],
                    dims[0], lab_path, img_path);
    }
    for (int i = 0; i < ldims[0]; i++) {
        if (labels[i] > 9) {
            int v = labels[i];
            free(pixels); free(labels);
            return set_error(err, errlen, "%s: label %d at index %d is out of range 0..9", lab_path, v, i);
        }
    }
    d->n = dims[0]; d->h = dims[1]; d->w = dims[2];
    d->pixels = pixels;
    d->labels = labels;
    return 0;
}

// ----------------------------------------------------------------------------
// image folder

typedef struct {
    char **paths;
    int n, cap;
} PathList;

static void pathlist_free(PathList *l) {
    for (int i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    l->paths = NULL;
    l->n = l->cap = 0;
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    char ext[8];
    size_t k = 0;
    for (const char *p = dot + 1; *p && k < sizeof ext - 1; p++) ext[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    ext[k] = 0;
    if (strlen(dot + 1) != k) return 0;
    return !strcmp(ext, "png") || !strcmp(ext, "jpg") || !strcmp(ext, "jpeg");
}

// collect image files below `dir` (hidden entries skipped); follows symlinks up to DATA_MAX_DEPTH
static int walk_images(const char *dir, int depth, PathList *l, char *err, size_t errlen) {
    if (depth > DATA_MAX_DEPTH)
        return set_error(err, errlen, "%s: folders nested deeper than %d (symlink loop?)", dir, DATA_MAX_DEPTH);
    DIR *dp = opendir(dir);
    if (!dp) return set_error(err, errlen, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t dlen = strlen(dir);
    int sep = dlen > 0 && dir[dlen - 1] != '/';  // avoid "a//b" when dir ends with '/'
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue;  // ".", "..", hidden files and folders
        char path[DATA_PATH_MAX];
        int len = snprintf(path, sizeof path, "%s%s%s", dir, sep ? "/" : "", e->d_name);
        if (len < 0 || (size_t)len >= sizeof path) { rc = set_error(err, errlen, "%s/%s: path too long", dir, e->d_name); break; }
        struct stat st;
        if (stat(path, &st) != 0) continue;  // dangling symlink etc.
        if (S_ISDIR(st.st_mode)) {
            if ((rc = walk_images(path, depth + 1, l, err, errlen)) != 0) break;
        } else if (S_ISREG(st.st_mode) && has_image_ext(e->d_name)) {
            if (l->n >= IDX_MAX_COUNT) { rc = set_error(err, errlen, "%s: more than %d images", dir, IDX_MAX_COUNT); break; }
            if (l->n == l->cap) {
                l->cap = l->cap ? 2 * l->cap : 1024;
                char **np = realloc(l->paths, (size_t)l->cap * sizeof(char *));
                if (!np) die("out of memory listing images in %s", dir);
                l->paths = np;
            }
            l->paths[l->n] = mallocCheck((size_t)len + 1);
            memcpy(l->paths[l->n], path, (size_t)len + 1);
            l->n++;
        }
    }
    closedir(dp);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// label from the immediate parent folder name: a single digit, else DATA_LABEL_UNKNOWN
static uint8_t label_from_path(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return DATA_LABEL_UNKNOWN;
    const char *start = slash;  // parent component is (start, slash)
    while (start > path && start[-1] != '/') start--;
    if (slash - start == 1 && *start >= '0' && *start <= '9') return (uint8_t)(*start - '0');
    return DATA_LABEL_UNKNOWN;
}

static int load_image_dir(Dataset *d, const char *dir, int expect_size, char *err, size_t errlen) {
    PathList l = {0};
    if (walk_images(dir, 0, &l, err, errlen) != 0) { pathlist_free(&l); return -1; }
    if (l.n == 0) {
        pathlist_free(&l);
        return set_error(err, errlen, "%s: no MNIST IDX files and no images found", dir);
    }
    qsort(l.paths, (size_t)l.n, sizeof(char *), cmp_str);
    int H = expect_size, W = expect_size;  // <= 0: taken from the first image
    uint8_t *pixels = NULL, *labels = mallocCheck((size_t)l.n);
    for (int i = 0; i < l.n; i++) {
        int w = 0, h = 0, c = 0;
        uint8_t *img = stbi_load(l.paths[i], &w, &h, &c, 1);
        if (!img) {
            const char *why = stbi_failure_reason();
            set_error(err, errlen, "%s: cannot decode image: %s", l.paths[i], why && *why ? why : "corrupt or truncated image");
            goto error;
        }
        if (H <= 0) {
            if (h > IDX_MAX_DIM || w > IDX_MAX_DIM) {
                stbi_image_free(img);
                set_error(err, errlen, "%s: size %dx%d is larger than %d", l.paths[i], w, h, IDX_MAX_DIM);
                goto error;
            }
            H = h; W = w;
        }
        if (h != H || w != W) {
            stbi_image_free(img);
            set_error(err, errlen, "%s: size %dx%d, expected %dx%d%s", l.paths[i], w, h, W, H,
                 expect_size > 0 ? "" : " (the size of the first image)");
            goto error;
        }
        if (!pixels) pixels = mallocCheck((size_t)l.n * (size_t)H * (size_t)W);
        memcpy(pixels + (size_t)i * H * W, img, (size_t)H * W);
        stbi_image_free(img);
        labels[i] = label_from_path(l.paths[i]);
    }
    d->n = l.n; d->h = H; d->w = W;
    d->pixels = pixels;
    d->labels = labels;
    pathlist_free(&l);
    return 0;
error:
    free(pixels);
    free(labels);
    pathlist_free(&l);
    return -1;
}

// ----------------------------------------------------------------------------

int dataset_load(Dataset *d, const char *dir, int test_split, int expect_size, char *err, size_t errlen) {
    memset(d, 0, sizeof *d);
    if (err && errlen) err[0] = 0;
    char img[DATA_PATH_MAX], lab[DATA_PATH_MAX], img_disp[DATA_PATH_MAX], lab_disp[DATA_PATH_MAX];
    const char *split = test_split ? "t10k" : "train";
    int has_img = find_idx(dir, split, "images", "idx3", img, sizeof img, img_disp, sizeof img_disp);
    int has_lab = find_idx(dir, split, "labels", "idx1", lab, sizeof lab, lab_disp, sizeof lab_disp);
    if (has_img && has_lab) return load_idx_dir(d, img, lab, expect_size, err, errlen);
    if (has_img) return set_error(err, errlen, "%s: missing labels file (images file %s found)", lab_disp, img);
    if (has_lab) return set_error(err, errlen, "%s: missing images file (labels file %s found)", img_disp, lab);
    // no IDX files of this split: if the other split is there, this is an incomplete MNIST directory
    const char *other = test_split ? "train" : "t10k";
    char odisp[DATA_PATH_MAX];
    if (find_idx(dir, other, "images", "idx3", img, sizeof img, odisp, sizeof odisp))
        return set_error(err, errlen, "%s: missing (%s split requested; %s found)", img_disp, split, img);
    if (test_split)
        return set_error(err, errlen, "%s: no t10k IDX files for the test split (image folders have no test split)", dir);
    return load_image_dir(d, dir, expect_size, err, errlen);
}

void dataset_free(Dataset *d) {
    free(d->pixels);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void dataset_batch(const Dataset *d, const int *idx, int B, float *x) {
    size_t hw = (size_t)d->h * (size_t)d->w;
    for (int b = 0; b < B; b++) {
        if (idx[b] < 0 || idx[b] >= d->n) die("dataset_batch: index %d out of range [0, %d)", idx[b], d->n);
        const uint8_t *p = d->pixels + (size_t)idx[b] * hw;
        float *xb = x + (size_t)b * hw;
        for (size_t i = 0; i < hw; i++) xb[i] = 2.0f * ((float)p[i] / 255.0f) - 1.0f;
    }
}
