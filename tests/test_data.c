// test_data.c: dataset loading (IDX gz/plain, image folders), bad-input errors, IDX round trip,
// PNG grid output, tools/get_mnist.sh. Real MNIST from $MNIST_DIR (a failure names the missing files and 'make data').
#define _XOPEN_SOURCE 700
#include "data/data.h"
#include "data/image.h"
#include "testutil.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <stb_image.h>
#include <stb_image_write.h>

static char base[512];  // temp dir of this test run

// ----------------------------------------------------------------------------
// helpers

// snprintf that exits on truncation (test paths are short; this keeps -Wformat-truncation quiet)
static void fmt(char *out, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t len, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, len, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len) { fprintf(stderr, "test_data: string too long: %s\n", out); exit(1); }
}

static void path_join(char *out, size_t len, const char *a, const char *b) { fmt(out, len, "%s/%s", a, b); }

static void mkdir_p(const char *path) {
    char tmp[1024];
    fmt(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(tmp, 0755); *p = '/'; }
    mkdir(tmp, 0755);
}

// make <base>/<name> and return it in out
static const char *case_dir(char *out, size_t len, const char *name) {
    path_join(out, len, base, name);
    mkdir_p(out);
    return out;
}

static void write_bytes(const char *path, const uint8_t *buf, size_t len, int gz) {
    if (gz) {
        gzFile g = gzopen(path, "wb6");
        if (!g || (len && gzwrite(g, buf, (unsigned)len) != (int)len) || gzclose(g) != Z_OK) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(1);
        }
    } else {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    }
}

static uint8_t *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot read %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "short read %s\n", path); exit(1); }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

// IDX file bytes: magic, dims (big-endian), data
static uint8_t *idx_bytes(uint32_t magic, int ndim, const uint32_t *dims, const uint8_t *data, size_t ndata, size_t *len) {
    *len = 4 + 4 * (size_t)ndim + ndata;
    uint8_t *b = malloc(*len), *p = b;
    uint32_t words[4] = {magic, 0, 0, 0};
    for (int i = 0; i < ndim; i++) words[1 + i] = dims[i];
    for (int i = 0; i <= ndim; i++) {
        *p++ = (uint8_t)(words[i] >> 24); *p++ = (uint8_t)(words[i] >> 16);
        *p++ = (uint8_t)(words[i] >> 8); *p++ = (uint8_t)words[i];
    }
    if (ndata) memcpy(p, data, ndata);
    return b;
}

// write an images file and a labels file (n items of h x w) into dir with the given prefix
static void write_idx_pair(const char *dir, const char *prefix, int gz, const uint8_t *px, const uint8_t *lab,
                           int n, int h, int w) {
    char path[1024];
    size_t len;
    uint32_t d3[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w}, d1[1] = {(uint32_t)n};
    uint8_t *b = idx_bytes(0x803, 3, d3, px, (size_t)n * h * w, &len);
    fmt(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(path, b, len, gz);
    free(b);
    b = idx_bytes(0x801, 1, d1, lab, (size_t)n, &len);
    fmt(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(path, b, len, gz);
    free(b);
}

// dataset_load must fail with a one-line message containing `file` and `needle`, leaving d empty
static void expect_fail(const char *what, const char *dir, int test_split, int expect_size, const char *file,
                        const char *needle) {
    Dataset d;
    char err[2048] = "";
    int rc = dataset_load(&d, dir, test_split, expect_size, err, sizeof err);
    CHECK(rc == -1, "%s: expected failure, got rc=%d", what, rc);
    if (rc == 0) { dataset_free(&d); return; }
    CHECK(d.pixels == NULL && d.labels == NULL && d.n == 0, "%s: dataset not left empty on failure", what);
    CHECK(strstr(err, file) != NULL, "%s: message '%s' does not name '%s'", what, err, file);
    CHECK(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", what, err, needle);
    CHECK(strchr(err, '\n') == NULL, "%s: message is not one line: '%s'", what, err);
    printf("  %-26s -> %s\n", what, err + (strncmp(err, base, strlen(base)) ? 0 : strlen(base) + 1));
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static uint32_t lcg_state = 12345;
static uint32_t lcg(void) { lcg_state = lcg_state * 1664525u + 1013904223u; return lcg_state >> 8; }

// synthetic data set: N images of H x W (non-square, so h/w mix-ups show)
enum { SN = 6, SH = 4, SW = 5 };
static uint8_t spx[SN * SH * SW], slab[SN];

static void check_synthetic(const char *what, const Dataset *d) {
    CHECK(d->n == SN && d->h == SH && d->w == SW, "%s: got %d x %d x %d", what, d->n, d->h, d->w);
    if (d->n == SN && d->h == SH && d->w == SW) {
        CHECK(memcmp(d->pixels, spx, sizeof spx) == 0, "%s: pixels differ", what);
        CHECK(memcmp(d->labels, slab, sizeof slab) == 0, "%s: labels differ", what);
    }
}

// ----------------------------------------------------------------------------
// synthetic IDX files: good, bad, fuzzed

static void test_synthetic_idx(void) {
    for (int i = 0; i < SN * SH * SW; i++) spx[i] = (uint8_t)(i * 37 + 11);
    for (int i = 0; i < SN; i++) slab[i] = (uint8_t)((i * 7) % 10);
    char dir[1024], err[2048];
    Dataset d;

    // plain and gzip, train and test split
    for (int gz = 0; gz < 2; gz++) {
        case_dir(dir, sizeof dir, gz ? "ok_gz" : "ok_plain");
        write_idx_pair(dir, "train", gz, spx, slab, SN, SH, SW);
        write_idx_pair(dir, "t10k", gz, spx, slab, SN, SH, SW);
        for (int split = 0; split < 2; split++) {
            int rc = dataset_load(&d, dir, split, 0, err, sizeof err);
            CHECK(rc == 0, "load %s split %d: %s", dir, split, err);
            if (rc == 0) { check_synthetic(gz ? "gz" : "plain", &d); dataset_free(&d); }
        }
        // dataset_batch: 2*p/255 - 1
        if (dataset_load(&d, dir, 0, 0, err, sizeof err) == 0) {
            int idx[3] = {5, 0, 2};
            float x[3 * SH * SW];
            dataset_batch(&d, idx, 3, x);
            int bad = 0;
            for (int b = 0; b < 3; b++)
                for (int i = 0; i < SH * SW; i++) {
                    float want = 2.0f * spx[idx[b] * SH * SW + i] / 255.0f - 1.0f;
                    if (fabsf(x[b * SH * SW + i] - want) > 1e-6f) bad++;
                }
            CHECK(bad == 0, "dataset_batch: %d wrong values", bad);
            dataset_free(&d);
            CHECK(d.pixels == NULL && d.labels == NULL && d.n == 0, "dataset_free does not reset");
        }
    }
    // trailing slash on the dir is fine
    fmt(dir, sizeof dir, "%s/ok_gz/", base);
    CHECK(dataset_load(&d, dir, 0, 0, err, sizeof err) == 0, "trailing slash: %s", err);
    dataset_free(&d);
    // expect_size must match the IDX dims
    case_dir(dir, sizeof dir, "ok_gz");
    expect_fail("dims vs expect_size", dir, 0, 28, "train-images-idx3-ubyte.gz", "size 5x4, expected 28x28");

    // bad inputs, each in its own folder; `mk` writes train images+labels, then one file is damaged
    char path[1024];
    size_t len, glen;
    uint8_t *good, *gzb;
    uint32_t d3[3] = {SN, SH, SW}, d1[1] = {SN};
    const char *IMG = "train-images-idx3-ubyte", *IMGZ = "train-images-idx3-ubyte.gz";
    const char *LABZ = "train-labels-idx1-ubyte.gz";
    good = idx_bytes(0x803, 3, d3, spx, sizeof spx, &len);
    // compressed bytes of a valid images file
    case_dir(dir, sizeof dir, "tmp_gz");
    path_join(path, sizeof path, dir, IMGZ);
    write_bytes(path, good, len, 1);
    gzb = read_whole(path, &glen);

#define CASE(name) do { case_dir(dir, sizeof dir, name); write_idx_pair(dir, "train", 1, spx, slab, SN, SH, SW); \
    path_join(path, sizeof path, dir, IMGZ); } while (0)

    CASE("truncated_gz");  // compressed stream cut in half
    write_bytes(path, gzb, glen / 2, 0);
    expect_fail("truncated gz", dir, 0, 0, IMGZ, "truncated");

    CASE("truncated_gz_trailer");  // all data there but the gzip CRC/size trailer is cut off
    write_bytes(path, gzb, glen - 4, 0);
    expect_fail("gz trailer cut", dir, 0, 0, IMGZ, "truncated");

    CASE("truncated_data");  // valid gzip of a short IDX file
    write_bytes(path, good, len - 7, 1);
    expect_fail("truncated data", dir, 0, 0, IMGZ, "truncated: expected 136 bytes of data, got 129");

    CASE("truncated_header");
    write_bytes(path, good, 10, 1);
    expect_fail("truncated header", dir, 0, 0, IMGZ, "truncated");

    CASE("corrupt_gz");  // garbage in the middle of the deflate stream
    {
        uint8_t *c = malloc(glen);
        memcpy(c, gzb, glen);
        for (size_t i = 12; i < glen - 12; i++) c[i] ^= 0x5a;
        write_bytes(path, c, glen, 0);
        free(c);
    }
    expect_fail("corrupt gzip", dir, 0, 0, IMGZ, "corrupt gzip data");

    CASE("bad_crc");  // deflate data fine, CRC wrong
    {
        uint8_t *c = malloc(glen);
        memcpy(c, gzb, glen);
        c[glen - 8] ^= 1;
        write_bytes(path, c, glen, 0);
        free(c);
    }
    expect_fail("bad gzip crc", dir, 0, 0, IMGZ, "corrupt gzip data");

    CASE("wrong_magic_images");
    {
        size_t l;
        uint8_t *b = idx_bytes(0x801, 3, d3, spx, sizeof spx, &l);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("wrong magic (images)", dir, 0, 0, IMGZ, "bad magic 0x00000801, expected 0x00000803 (IDX images)");

    CASE("wrong_magic_labels");
    {
        size_t l;
        uint8_t *b = idx_bytes(0x803, 1, d1, slab, sizeof slab, &l);
        path_join(path, sizeof path, dir, LABZ);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("wrong magic (labels)", dir, 0, 0, LABZ, "bad magic 0x00000803, expected 0x00000801 (IDX labels)");

    CASE("count_mismatch");
    {
        size_t l;
        uint32_t dl[1] = {SN - 1};
        uint8_t *b = idx_bytes(0x801, 1, dl, slab, SN - 1, &l);
        path_join(path, sizeof path, dir, LABZ);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("label/image count", dir, 0, 0, LABZ, "labels count 5 != images count 6");

    CASE("label_range");
    {
        size_t l;
        uint8_t lab[SN];
        memcpy(lab, slab, SN);
        lab[3] = 10;
        uint8_t *b = idx_bytes(0x801, 1, d1, lab, SN, &l);
        path_join(path, sizeof path, dir, LABZ);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("label out of range", dir, 0, 0, LABZ, "label 10 at index 3");

    CASE("trailing_gz");  // payload has 3 extra bytes
    {
        uint8_t *b = malloc(len + 3);
        memcpy(b, good, len);
        memset(b + len, 7, 3);
        write_bytes(path, b, len + 3, 1);
        free(b);
    }
    expect_fail("trailing bytes (gz)", dir, 0, 0, IMGZ, "3 trailing bytes");

    case_dir(dir, sizeof dir, "trailing_plain");
    write_idx_pair(dir, "train", 0, spx, slab, SN, SH, SW);
    path_join(path, sizeof path, dir, IMG);
    {
        FILE *f = fopen(path, "ab");
        fputs("xy", f);
        fclose(f);
    }
    expect_fail("trailing bytes (plain)", dir, 0, 0, IMG, "trailing bytes: the header claims 120 bytes of data, the file has 122");

    CASE("empty_file");
    write_bytes(path, good, 0, 0);
    expect_fail("empty file", dir, 0, 0, IMGZ, "empty file");

    CASE("empty_gzip");  // valid gzip of nothing
    write_bytes(path, good, 0, 1);
    expect_fail("empty gzip", dir, 0, 0, IMGZ, "truncated");

    CASE("not_idx");
    write_bytes(path, (const uint8_t *)"hello, world\n", 13, 0);
    expect_fail("text file", dir, 0, 0, IMGZ, "not a gzip/IDX file");

    CASE("zero_dim");
    {
        size_t l;
        uint32_t dz[3] = {SN, 0, SW};
        uint8_t *b = idx_bytes(0x803, 3, dz, spx, 0, &l);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("zero dimension", dir, 0, 0, IMGZ, "bad IDX header: dimension 1 is 0");

    CASE("huge_dim");
    {
        size_t l;
        uint32_t dz[3] = {SN, SH, 4097};
        uint8_t *b = idx_bytes(0x803, 3, dz, spx, sizeof spx, &l);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("side > 4096", dir, 0, 0, IMGZ, "dimension 2 is 4097");

    CASE("huge_count");
    {
        size_t l;
        uint32_t dz[3] = {10000001, 28, 28};
        uint8_t *b = idx_bytes(0x803, 3, dz, spx, sizeof spx, &l);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("count > 10M", dir, 0, 0, IMGZ, "dimension 0 is 10000001");

    CASE("lying_header");  // claims 10M 4096x4096 images in a tiny file: must fail fast, no huge malloc
    {
        size_t l;
        uint32_t dz[3] = {10000000, 4096, 4096};
        uint8_t *b = idx_bytes(0x803, 3, dz, spx, sizeof spx, &l);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("lying header", dir, 0, 0, IMGZ, "claims 167772160000000 bytes of data, more than the 1073741824");

    CASE("lying_header_small");  // within the 1 GB bound but far more than a tiny gzip can hold
    {
        size_t l;
        uint32_t dz[3] = {100000, 28, 28};
        uint8_t *b = idx_bytes(0x803, 3, dz, spx, sizeof spx, &l);
        write_bytes(path, b, l, 1);
        free(b);
    }
    expect_fail("lying header (gzip ratio)", dir, 0, 0, IMGZ, "more than a");

    CASE("gz_garbage");  // a valid gzip stream followed by garbage: zlib would ignore the garbage
    {
        size_t l;
        uint32_t dz[3] = {SN, SH, SW};
        uint8_t *b = idx_bytes(0x803, 3, dz, spx, sizeof spx, &l);
        write_bytes(path, b, l, 1);
        free(b);
        FILE *f = fopen(path, "ab");
        fputs("garbage after the stream", f);
        fclose(f);
    }
    expect_fail("gzip followed by garbage", dir, 0, 0, IMGZ, "after the end of the gzip stream");

    case_dir(dir, sizeof dir, "missing_labels");
    write_idx_pair(dir, "train", 1, spx, slab, SN, SH, SW);
    path_join(path, sizeof path, dir, LABZ);
    remove(path);
    expect_fail("missing labels file", dir, 0, 0, "train-labels-idx1-ubyte", "missing labels file");

    case_dir(dir, sizeof dir, "missing_images");
    write_idx_pair(dir, "train", 1, spx, slab, SN, SH, SW);
    path_join(path, sizeof path, dir, IMGZ);
    remove(path);
    expect_fail("missing images file", dir, 0, 0, "train-images-idx3-ubyte", "missing images file");

    case_dir(dir, sizeof dir, "train_only");
    write_idx_pair(dir, "train", 1, spx, slab, SN, SH, SW);
    expect_fail("no test split", dir, 1, 0, "t10k-images-idx3-ubyte", "missing");

    case_dir(dir, sizeof dir, "images_is_dir");
    write_idx_pair(dir, "train", 0, spx, slab, SN, SH, SW);
    path_join(path, sizeof path, dir, IMG);
    remove(path);
    mkdir(path, 0755);
    expect_fail("images path is a dir", dir, 0, 0, IMG, "not a regular file");

    case_dir(dir, sizeof dir, "empty_dir");
    expect_fail("empty dir", dir, 0, 0, "empty_dir", "no MNIST IDX files and no images found");
    path_join(path, sizeof path, base, "does_not_exist");
    expect_fail("missing dir", path, 0, 0, "does_not_exist", "cannot open directory");

    // fuzz: random damage to valid plain and gzip files must give 0 or a clean -1 (ASan watches memory)
    int n_ok = 0, n_err = 0;
    for (int gz = 0; gz < 2; gz++) {
        const uint8_t *src = gz ? gzb : good;
        size_t slen = gz ? glen : len;
        case_dir(dir, sizeof dir, gz ? "fuzz_gz" : "fuzz_plain");
        write_idx_pair(dir, "train", 0, spx, slab, SN, SH, SW);
        path_join(path, sizeof path, dir, IMG);
        uint8_t *m = malloc(slen + 64);
        for (int it = 0; it < 400; it++) {
            memcpy(m, src, slen);
            size_t mlen = slen;
            int op = (int)(lcg() % 4);
            if (op == 0) mlen = lcg() % slen;                                      // truncate
            else if (op == 1) for (int k = 0; k < 3; k++) m[lcg() % slen] = (uint8_t)lcg();  // random bytes
            else if (op == 2) m[lcg() % (gz ? slen : 16)] ^= (uint8_t)(1u << (lcg() % 8));  // bit flip (plain: header)
            else { size_t extra = 1 + lcg() % 64; for (size_t k = 0; k < extra; k++) m[mlen++] = (uint8_t)lcg(); }  // append
            write_bytes(path, m, mlen, 0);
            int rc = dataset_load(&d, dir, 0, 0, err, sizeof err);
            if (rc == 0) {
                n_ok++;
                CHECK((size_t)d.n * d.h * d.w <= mlen, "fuzz: loaded more pixels than the file has");
                dataset_free(&d);
            } else {
                n_err++;
                CHECK(rc == -1 && strstr(err, IMG) && !strchr(err, '\n'), "fuzz: bad error '%s'", err);
            }
        }
        free(m);
    }
    printf("  fuzz: %d loaded, %d rejected cleanly\n", n_ok, n_err);
    CHECK(n_err > 600, "fuzz: only %d of 800 damaged files rejected", n_err);
    free(good);
    free(gzb);
#undef CASE
}

// ----------------------------------------------------------------------------
// IDX write/read round trip, PNG grid

static void test_idx_roundtrip(void) {
    char path[1024], err[2048];
    int n = 3, h = 5, w = 7;
    uint8_t px[3 * 5 * 7];
    for (int i = 0; i < n * h * w; i++) px[i] = (uint8_t)lcg();
    path_join(path, sizeof path, base, "roundtrip.idx");
    CHECK(idx_write_images(path, px, n, h, w, err, sizeof err) == 0, "idx_write_images: %s", err);
    size_t flen;
    uint8_t *raw = read_whole(path, &flen);
    CHECK(flen == 16 + sizeof px && raw[0] == 0 && raw[1] == 0 && raw[2] == 8 && raw[3] == 3 && raw[7] == 3 &&
          raw[11] == 5 && raw[15] == 7, "idx_write_images: bad header/length (%zu bytes)", flen);
    free(raw);
    uint8_t *back = NULL;
    int n2 = 0, h2 = 0, w2 = 0;
    CHECK(idx_read_images(path, &back, &n2, &h2, &w2, err, sizeof err) == 0, "idx_read_images: %s", err);
    CHECK(n2 == n && h2 == h && w2 == w, "round trip dims %d %d %d", n2, h2, w2);
    CHECK(back && memcmp(back, px, sizeof px) == 0, "round trip pixels differ");
    free(back);
    char tmpname[1100];
    fmt(tmpname, sizeof tmpname, "%s.%ld.tmp", path, (long)getpid());
    CHECK(access(tmpname, F_OK) != 0, "idx_write_images left its temp file");
    // errors
    back = NULL;
    path_join(path, sizeof path, base, "no/such/dir/x.idx");
    CHECK(idx_write_images(path, px, n, h, w, err, sizeof err) == -1 && strstr(err, "no/such/dir"),
          "write to missing dir: '%s'", err);
    CHECK(idx_write_images(path, px, 0, h, w, err, sizeof err) == -1, "write n=0 accepted");
    CHECK(idx_read_images(path, &back, &n2, &h2, &w2, err, sizeof err) == -1 && back == NULL && strstr(err, "x.idx"),
          "read missing file: '%s'", err);
}

static void test_png_grid(void) {
    CHECK(to_u8(-1.0f) == 0 && to_u8(1.0f) == 255 && to_u8(0.0f) == 128, "to_u8 endpoints/midpoint");
    CHECK(to_u8(-7.0f) == 0 && to_u8(3.0f) == 255 && to_u8(NAN) == 0, "to_u8 clamp/NaN");
    CHECK(to_u8(2.0f * 100.0f / 255.0f - 1.0f) == 100, "to_u8 inverse of the data mapping");
    int bad_inv = 0;
    for (int p = 0; p < 256; p++) bad_inv += to_u8(2.0f * p / 255.0f - 1.0f) != p;
    CHECK(bad_inv == 0, "to_u8(2p/255-1) != p for %d values", bad_inv);

    char path[1024], err[2048];
    for (int C = 1; C <= 3; C += 2) {
        int n = 5, H = 3, W = 4, ncols = 3, pad = 2;
        int rows = 2, gw = (W + pad) * ncols + pad, gh = (H + pad) * rows + pad;
        float *x = malloc(sizeof(float) * n * C * H * W);
        for (int i = 0; i < n * C * H * W; i++) x[i] = -1.2f + 2.4f * (float)(lcg() % 1000) / 999.0f;
        path_join(path, sizeof path, base, C == 1 ? "grid1.png" : "grid3.png");
        CHECK(write_png_grid(path, x, n, C, H, W, ncols, pad, err, sizeof err) == 0, "write_png_grid: %s", err);
        int w = 0, h = 0, c = 0;
        uint8_t *img = stbi_load(path, &w, &h, &c, 0);
        CHECK(img != NULL, "stb cannot read back %s: %s", path, stbi_failure_reason());
        if (!img) { free(x); continue; }
        CHECK(w == gw && h == gh && c == C, "grid size %dx%dx%d, want %dx%dx%d", w, h, c, gw, gh, C);
        int bad = 0, nonpad = 0;
        if (w == gw && h == gh && c == C) {
            for (int y = 0; y < gh; y++)
                for (int xx = 0; xx < gw; xx++) {
                    int r = (y - pad) / (H + pad), iy = (y - pad) % (H + pad);
                    int col = (xx - pad) / (W + pad), ix = (xx - pad) % (W + pad);
                    int i = r * ncols + col;
                    int inside = y >= pad && xx >= pad && iy < H && ix < W && i < n;
                    for (int ch = 0; ch < C; ch++) {
                        uint8_t want = inside ? to_u8(x[((size_t)i * C + ch) * H * W + iy * W + ix]) : 0;
                        bad += img[((size_t)y * gw + xx) * C + ch] != want;
                        nonpad += inside;
                    }
                }
        }
        CHECK(bad == 0 && nonpad == n * C * H * W, "grid C=%d: %d wrong pixels (%d image pixels)", C, bad, nonpad);
        stbi_image_free(img);
        free(x);
    }
    // fewer images than ncols: width shrinks to n columns (make_grid's xmaps = min(nrow, n))
    float one[4] = {1, 1, 1, 1};
    path_join(path, sizeof path, base, "grid_small.png");
    CHECK(write_png_grid(path, one, 1, 1, 2, 2, 8, 1, err, sizeof err) == 0, "small grid: %s", err);
    int w = 0, h = 0, c = 0;
    uint8_t *img = stbi_load(path, &w, &h, &c, 0);
    CHECK(img && w == 4 && h == 4 && img[5] == 255 && img[0] == 0, "small grid: %dx%d", w, h);
    stbi_image_free(img);
    // errors name the file
    path_join(path, sizeof path, base, "no/such/dir/g.png");
    CHECK(write_png_grid(path, one, 1, 1, 2, 2, 8, 1, err, sizeof err) == -1 && strstr(err, "g.png"),
          "grid to missing dir: '%s'", err);
    CHECK(write_png_grid(path, one, 1, 2, 2, 2, 8, 1, err, sizeof err) == -1, "grid with C=2 accepted");
}

// ----------------------------------------------------------------------------
// real MNIST

static int dir_has(const char *dir, const char *name) {
    char p[1024];
    path_join(p, sizeof p, dir, name);
    return access(p, R_OK) == 0;
}

static void check_mnist(const char *what, const Dataset *d, int n, const int *hist, double mean) {
    CHECK(d->n == n && d->h == 28 && d->w == 28, "%s: %d x %d x %d", what, d->n, d->h, d->w);
    if (d->n != n || d->h != 28 || d->w != 28) return;
    int got[10] = {0}, badlab = 0;
    for (int i = 0; i < n; i++) {
        if (d->labels[i] < 10) got[d->labels[i]]++;
        else badlab++;
    }
    CHECK(badlab == 0, "%s: %d labels out of range", what, badlab);
    for (int k = 0; k < 10; k++) CHECK(got[k] == hist[k], "%s: label %d count %d, want %d", what, k, got[k], hist[k]);
    uint64_t sum = 0;
    for (size_t i = 0; i < (size_t)n * 784; i++) sum += d->pixels[i];
    CHECK_NEAR((double)sum / ((double)n * 784.0), mean, 1e-3, "mean pixel");
}

typedef struct { char path[1024]; int src, label; } PngItem;  // src: index into the test set, or -1 (JPEG)
static int cmp_item(const void *a, const void *b) { return strcmp(((const PngItem *)a)->path, ((const PngItem *)b)->path); }

static void test_real_mnist(const char *mdir) {
    static const int train_hist[10] = {5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949};
    static const int test_hist[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
    char err[2048], dir[1024], path[1024];
    Dataset tr, te;
    int rc = dataset_load(&tr, mdir, 0, 28, err, sizeof err);
    CHECK(rc == 0, "train: %s", err);
    if (rc == 0) { check_mnist("train", &tr, 60000, train_hist, 33.3184); dataset_free(&tr); }
    rc = dataset_load(&te, mdir, 1, 28, err, sizeof err);
    CHECK(rc == 0, "test: %s", err);
    if (rc != 0) return;
    check_mnist("test", &te, 10000, test_hist, 33.7912);
    // batch of real images spans exactly [-1, 1]
    int idx[4] = {0, 1, 9999, 4242};
    float x[4 * 784], lo = 2, hi = -2;
    dataset_batch(&te, idx, 4, x);
    for (int i = 0; i < 4 * 784; i++) { lo = fminf(lo, x[i]); hi = fmaxf(hi, x[i]); }
    CHECK(lo == -1.0f && hi == 1.0f, "batch range [%g, %g]", lo, hi);
    CHECK(fabsf(x[3 * 784 + 400] - (2.0f * te.pixels[4242 * 784 + 400] / 255.0f - 1.0f)) < 1e-6f, "batch value");

    // uncompressed IDX: same data via idx_write_images + a plain labels file
    case_dir(dir, sizeof dir, "mnist_plain");
    path_join(path, sizeof path, dir, "t10k-images-idx3-ubyte");
    CHECK(idx_write_images(path, te.pixels, te.n, 28, 28, err, sizeof err) == 0, "write plain: %s", err);
    {
        size_t l;
        uint32_t d1[1] = {10000};
        uint8_t *b = idx_bytes(0x801, 1, d1, te.labels, 10000, &l);
        path_join(path, sizeof path, dir, "t10k-labels-idx1-ubyte");
        write_bytes(path, b, l, 0);
        free(b);
    }
    Dataset pl;
    rc = dataset_load(&pl, dir, 1, 28, err, sizeof err);
    CHECK(rc == 0, "plain t10k: %s", err);
    if (rc == 0) {
        CHECK(pl.n == 10000 && !memcmp(pl.pixels, te.pixels, 10000 * 784) && !memcmp(pl.labels, te.labels, 10000),
              "plain IDX differs from gz");
        dataset_free(&pl);
    }
    // idx_read_images on the real gz file
    uint8_t *px = NULL;
    int n = 0, h = 0, w = 0;
    path_join(path, sizeof path, mdir, "t10k-images-idx3-ubyte.gz");
    CHECK(idx_read_images(path, &px, &n, &h, &w, err, sizeof err) == 0, "idx_read_images gz: %s", err);
    CHECK(n == 10000 && h == 28 && w == 28 && px && !memcmp(px, te.pixels, 10000 * 784), "idx_read_images gz data");
    free(px);

    // PNG folder from real images: <tmp>/pngs/<digit>/<k>.png, plus a nested digit folder, a non-digit
    // folder with an upper-case .JPG, a hidden file and a text file (both ignored)
    enum { NPNG = 30 };
    PngItem items[NPNG + 2];
    int ni = 0;
    char root[1024];
    case_dir(root, sizeof root, "pngs");
    for (int i = 0; i < NPNG; i++) {
        char sub[1100];
        fmt(sub, sizeof sub, "%s/%d", root, te.labels[i]);
        mkdir_p(sub);
        fmt(items[ni].path, sizeof items[ni].path, "%s/%05d.png", sub, i);
        CHECK(stbi_write_png(items[ni].path, 28, 28, 1, te.pixels + (size_t)i * 784, 28), "stbi_write_png");
        items[ni].label = te.labels[i];
        items[ni++].src = i;
    }
    fmt(dir, sizeof dir, "%s/extra/7", root);
    mkdir_p(dir);
    fmt(items[ni].path, sizeof items[ni].path, "%s/nested.png", dir);
    stbi_write_png(items[ni].path, 28, 28, 1, te.pixels + 31 * 784, 28);
    items[ni].label = 7;  // the immediate parent folder, whatever the image shows
    items[ni++].src = 31;
    fmt(dir, sizeof dir, "%s/misc", root);
    mkdir_p(dir);
    fmt(items[ni].path, sizeof items[ni].path, "%s/a.JPG", dir);
    stbi_write_jpg(items[ni].path, 28, 28, 1, te.pixels + 32 * 784, 100);
    items[ni].label = DATA_LABEL_UNKNOWN;
    items[ni++].src = -1;
    path_join(path, sizeof path, root, ".hidden.png");
    write_bytes(path, (const uint8_t *)"junk", 4, 0);
    path_join(path, sizeof path, root, "notes.txt");
    write_bytes(path, (const uint8_t *)"junk", 4, 0);
    qsort(items, (size_t)ni, sizeof items[0], cmp_item);
    Dataset pd;
    rc = dataset_load(&pd, root, 0, 28, err, sizeof err);
    CHECK(rc == 0, "png folder: %s", err);
    if (rc == 0) {
        CHECK(pd.n == ni && pd.h == 28 && pd.w == 28, "png folder: %d x %d x %d, want %d", pd.n, pd.h, pd.w, ni);
        for (int i = 0; i < ni && i < pd.n; i++) {
            CHECK(pd.labels[i] == items[i].label, "%s: label %d, want %d", items[i].path, pd.labels[i], items[i].label);
            if (items[i].src >= 0)
                CHECK(!memcmp(pd.pixels + (size_t)i * 784, te.pixels + (size_t)items[i].src * 784, 784),
                      "png %s: pixels differ from the source", items[i].path);
        }
        dataset_free(&pd);
    }
    // same folder without expect_size: size taken from the images
    rc = dataset_load(&pd, root, 0, 0, err, sizeof err);
    CHECK(rc == 0 && pd.n == ni && pd.h == 28 && pd.w == 28, "png folder, no expect_size: %s", err);
    if (rc == 0) dataset_free(&pd);
    expect_fail("png folder, test split", root, 1, 28, "pngs", "no test split");

    // one image of the wrong size (checked against expect_size, and against the first image)
    uint8_t big[32 * 32] = {0};
    path_join(path, sizeof path, root, "5/zz_big.png");
    stbi_write_png(path, 32, 32, 1, big, 32);
    expect_fail("png wrong size", root, 0, 28, "5/zz_big.png", "size 32x32, expected 28x28");
    expect_fail("png size != first", root, 0, 0, "5/zz_big.png", "size 32x32, expected 28x28");
    remove(path);
    // an undecodable .png
    path_join(path, sizeof path, root, "3/broken.png");
    write_bytes(path, (const uint8_t *)"\x89PNG\r\n\x1a\nnot really a png", 24, 0);
    expect_fail("unreadable png", root, 0, 28, "3/broken.png", "cannot decode image");
    dataset_free(&te);
}

// ----------------------------------------------------------------------------
// tools/get_mnist.sh (run from the repository root)

static int sh(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int count_files(const char *dir) {  // entries (including hidden temp files) in dir
    char cmd[1200];
    fmt(cmd, sizeof cmd, "exit $(ls -A '%s' | wc -l)", dir);
    return sh(cmd);
}

static void test_get_mnist(const char *mdir) {
    char dest[1024], cmd[4096], bad[1024], log[1024];
    case_dir(dest, sizeof dest, "get/dest");
    path_join(log, sizeof log, base, "get/log");
    // 1. copy from $MNIST_DIR, no mirrors allowed
    fmt(cmd, sizeof cmd, "MNIST_DIR='%s' MNIST_MIRRORS= bash tools/get_mnist.sh '%s' >>'%s' 2>&1", mdir, dest, log);
    CHECK(sh(cmd) == 0, "get_mnist from MNIST_DIR failed (see %s)", log);
    CHECK(count_files(dest) == 4, "get_mnist: %d files in dest, want 4", count_files(dest));
    Dataset d;
    char err[2048];
    int rc = dataset_load(&d, dest, 1, 28, err, sizeof err);
    CHECK(rc == 0 && d.n == 10000, "load after get_mnist: %s", err);
    if (rc == 0) dataset_free(&d);
    // 2. rerun with no sources at all: files already present are kept
    fmt(cmd, sizeof cmd, "env -u MNIST_DIR MNIST_MIRRORS= bash tools/get_mnist.sh '%s' >>'%s' 2>&1", dest, log);
    CHECK(sh(cmd) == 0, "get_mnist rerun failed");
    // 3. a damaged file with unreachable mirrors: non-zero exit, damaged file removed, no temp files
    char f[1100];
    fmt(f, sizeof f, "%s/t10k-labels-idx1-ubyte.gz", dest);
    write_bytes(f, (const uint8_t *)"partial", 7, 0);
    fmt(cmd, sizeof cmd,
             "env -u MNIST_DIR MNIST_MIRRORS='http://127.0.0.1:9/ file:///nonexistent/' "
             "bash tools/get_mnist.sh '%s' >>'%s' 2>&1", dest, log);
    CHECK(sh(cmd) != 0, "get_mnist succeeded with no source");
    CHECK(access(f, F_OK) != 0, "get_mnist left a wrong-MD5 file");
    CHECK(count_files(dest) == 3, "get_mnist: %d files in dest after failure, want 3", count_files(dest));
    // 4. a mirror serving wrong content: rejected by MD5, nothing left
    case_dir(bad, sizeof bad, "get/badmirror");
    fmt(f, sizeof f, "%s/t10k-labels-idx1-ubyte.gz", bad);
    write_bytes(f, (const uint8_t *)"not mnist", 9, 1);
    fmt(cmd, sizeof cmd, "env -u MNIST_DIR MNIST_MIRRORS='file://%s/' bash tools/get_mnist.sh '%s' >>'%s' 2>&1",
             bad, dest, log);
    CHECK(sh(cmd) != 0, "get_mnist accepted a wrong-MD5 download");
    CHECK(count_files(dest) == 3, "get_mnist: %d files after MD5 mismatch, want 3", count_files(dest));
    // 5. a wrong-MD5 copy in $MNIST_DIR is not used; falls through to the mirrors (bad one first, then good)
    fmt(cmd, sizeof cmd,
             "MNIST_DIR='%s' MNIST_MIRRORS='http://127.0.0.1:9/ file://%s/ file://%s/' "
             "bash tools/get_mnist.sh '%s' >>'%s' 2>&1", bad, bad, mdir, dest, log);
    CHECK(sh(cmd) == 0, "get_mnist mirror fallback failed (see %s)", log);
    CHECK(count_files(dest) == 4, "get_mnist: %d files after mirror fallback, want 4", count_files(dest));
    rc = dataset_load(&d, dest, 1, 28, err, sizeof err);
    CHECK(rc == 0 && d.n == 10000, "load after mirror fallback: %s", err);
    if (rc == 0) dataset_free(&d);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    fmt(base, sizeof base, "%s/ddpm_test_data_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) { perror("mkdtemp"); return 1; }

    printf("synthetic IDX files and bad inputs:\n");
    test_synthetic_idx();
    test_idx_roundtrip();
    test_png_grid();

    const char *mdir = getenv("MNIST_DIR");
    if (mdir && *mdir && dir_has(mdir, "train-images-idx3-ubyte.gz") && dir_has(mdir, "t10k-images-idx3-ubyte.gz")) {
        printf("real MNIST from %s:\n", mdir);
        test_real_mnist(mdir);
        if (access("tools/get_mnist.sh", R_OK) == 0) test_get_mnist(mdir);
        else CHECK(0, "tools/get_mnist.sh not found: run the tests from the repository root (make test)");
    } else {
        CHECK(0, "MNIST_DIR=%s lacks train-images-idx3-ubyte.gz / t10k-images-idx3-ubyte.gz: run 'make data' (or set MNIST_DIR)",
              mdir ? mdir : "(unset)");
    }

    if (tu_failures == 0) nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else fprintf(stderr, "test files kept in %s\n", base);
    TEST_DONE("test_data");
}
