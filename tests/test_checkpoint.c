// test_checkpoint.c: checkpoint round trip (bit-exact), byte-identical re-save, atomic
// replacement, and rejection of truncated / corrupt / wrong-magic / wrong-version files.
//   test_checkpoint                     run the tests
//   test_checkpoint --exhaustive CKPT [STRIDE]   every STRIDE-th byte flipped (CRC as is, and
//                                       recomputed) and every STRIDE-th truncation (make test: 97)
//   test_checkpoint --poison IN OUT     write OUT = IN with parameters whose forward overflows to NaN
//                                       (for the CLI NaN test)
#define _GNU_SOURCE // memmem
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "train/checkpoint.h"
#include "core/common.h"
#include "testutil.h"
#include "model/unet.h"

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*n ? *n : 1);
    if (fread(p, 1, *n, f) != *n) { free(p); p = NULL; }
    fclose(f);
    return p;
}
static void write_all(const char *path, const unsigned char *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}
static void fix_crc(unsigned char *p, size_t n) {
    uint32_t crc = (uint32_t)crc32(0L, p, (uInt)(n - 4));
    memcpy(p + n - 4, &crc, 4);
}
static int load_fails(const char *path, const char *what, const char *expect) {
    Checkpoint ck;
    char err[600] = "";
    int rc = checkpoint_load(path, &ck, err, sizeof(err));
    if (rc == 0) { checkpoint_free(&ck); CHECK(0, "%s: loaded, should have failed", what); return 0; }
    CHECK(strstr(err, path) != NULL, "%s: error does not name the file: %s", what, err);
    CHECK(strstr(err, expect) != NULL, "%s: error '%s' does not say '%s'", what, err, expect);
    CHECK(strchr(err, '\n') == NULL, "%s: error is not one line", what);
    return 1;
}

static int poison(const char *in, const char *out) {
    Checkpoint ck;
    char err[600];
    if (checkpoint_load(in, &ck, err, sizeof(err))) die("%s", err);
    // finite (a checkpoint never holds NaN) but so large that the forward overflows to inf and NaN
    for (size_t i = 0; i < ck.n_params; i += 7) ck.params[i] = 3e38f;
    if (checkpoint_save(out, &ck.cfg, &ck.st, ck.params, ck.m, ck.v, ck.ema, ck.n_params, err, sizeof(err))) die("%s", err);
    checkpoint_free(&ck);
    return 0;
}

// Whatever a config can hold, its canonical text (written into every checkpoint) reads back to
// the same config: every key at the edges of its range, and keys the bounds reject with the bound
// named. Cheap, so it runs before the checkpoint tests.
static void test_config_round_trip(void) {
    static const char *base =
        "im_channels = 1\nim_size = 16\ndown_channels = 16, 16, 16\nmid_channels = 16, 16, 16\n"
        "down_sample = 1, 1\ndown_attn = 0, 1\ntime_emb_dim = 16\nnum_down_layers = 1\nnum_mid_layers = 1\n"
        "num_up_layers = 1\nnum_heads = 2\n";
    static const char *edges[] = {
        "beta_start = 1e-12\nbeta_end = 0.999\n", "beta_start = 0.999\nbeta_end = 0.999\n",
        "schedule = constant\nbeta = 0.999\n", "schedule = constant\nbeta = 1e-12\n",
        "schedule = cosine\ncosine_s = 0\n", "schedule = cosine\ncosine_s = 1\n",
        "beta_start = 0.1\nbeta_end = 0.30000001\n", "num_timesteps = 1\n", "num_timesteps = 100000\n",
        "beta_start = 1.17549435e-38\n", "beta_end = 0.99900001\n"};
    char text[2048], canon[4096], canon2[4096], err[300];
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        snprintf(text, sizeof text, "%s%s", base, edges[i]);
        ModelConfig a, b;
        int ok = config_parse(&a, text, "edge", err, sizeof err) == 0;
        if (!ok) { // 1.17e-38 is below 1e-12: rejected, naming the range
            CHECK(strstr(edges[i], "e-38") && strstr(err, "[1e-12, 0.999]"), "edge %zu rejected: %s", i, err);
            continue;
        }
        config_to_text(&a, canon, sizeof canon);
        int back = config_parse(&b, canon, "canonical", err, sizeof err) == 0;
        CHECK(back, "edge %zu: the canonical text does not read back: %s\n%s", i, err, canon);
        if (back) {
            config_to_text(&b, canon2, sizeof canon2);
            CHECK(!strcmp(canon, canon2) && a.beta_start == b.beta_start && a.beta_end == b.beta_end && a.beta == b.beta &&
                      a.cosine_s == b.cosine_s,
                  "edge %zu: round trip changed the config:\n%s\n%s", i, canon, canon2);
        }
    }
    // sizes beyond what the program can run are refused with the bound, before any allocation
    static const char *too_big[] = {"time_emb_dim = 40000", "im_size = 1024", "im_channels = 5", "num_heads = 128",
                                    "num_down_layers = 17", "num_timesteps = 100001"};
    for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(too_big[i], ' ') - too_big[i]), too_big[i]);
        // replace the key's line of the base (or add it)
        const char *at = strstr(base, key);
        if (at) {
            const char *eol = strchr(at, '\n');
            snprintf(text, sizeof text, "%.*s%s%s", (int)(at - base), base, too_big[i], eol);
        } else {
            snprintf(text, sizeof text, "%s%s\n", base, too_big[i]);
        }
        ModelConfig a;
        CHECK(config_parse(&a, text, "big", err, sizeof err) != 0 && strstr(err, "..") != NULL, "'%s' accepted or no bound named: %s",
              too_big[i], err);
    }
    // a UTF-8 byte-order mark before the first key is skipped
    snprintf(text, sizeof text, "\xEF\xBB\xBF%s", base);
    ModelConfig a;
    CHECK(config_parse(&a, text, "bom", err, sizeof err) == 0, "config with a byte-order mark: %s", err);
}

// Every stride-th byte of a checkpoint flipped (all 8 bits), as is (the CRC must catch it) and
// with the CRC recomputed (the field checks must catch it, or it loads consistently), and every
// stride-th truncation: never a crash, a sanitizer report or a silent load of a bad file.
static int exhaustive(const char *path, long stride) {
    size_t n;
    char err[ERR_LEN];
    unsigned char *orig = read_file_all(path, "checkpoint", &n, err, sizeof err);
    if (!orig) die("%s", err);
    char tmp[] = "/tmp/ddpm_flip_XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) die("mkstemp failed");
    close(fd);
    unsigned char *c = malloc(n);
    long flips = 0, crc_caught = 0, loaded = 0, rejected = 0, truncs = 0;
    for (size_t i = 0; i < n; i += (size_t)stride) {
        for (int fix = 0; fix < 2; fix++) {
            memcpy(c, orig, n);
            c[i] ^= 0xff;
            if (fix) fix_crc(c, n);
            write_all(tmp, c, n);
            Checkpoint ck;
            int rc = checkpoint_load(tmp, &ck, err, sizeof err);
            flips++;
            if (rc == 0) {
                size_t np, per;
                unet_size(&ck.cfg, &np, &per);
                CHECK(fix && np == ck.n_params && ck.st.epoch_pos + ck.st.batch <= ck.st.n_data,
                      "byte %zu flipped%s: loaded an inconsistent checkpoint", i, fix ? " (CRC fixed)" : "");
                loaded++;
                checkpoint_free(&ck);
            } else {
                CHECK(err[0] != 0, "byte %zu: rejected without a message", i);
                if (!fix) { CHECK(strstr(err, "CRC") || strstr(err, "magic") || strstr(err, "version"), "byte %zu: %s", i, err); crc_caught++; }
                else rejected++;
            }
        }
        write_all(tmp, orig, i);
        Checkpoint ck;
        CHECK(checkpoint_load(tmp, &ck, err, sizeof err) != 0, "truncated to %zu bytes: loaded", i);
        truncs++;
    }
    unlink(tmp);
    free(c);
    free(orig);
    printf("%s, every %ld-th byte: %ld flips (%ld caught by the CRC or header, %ld rejected with the CRC fixed, %ld loaded "
           "consistently), %ld truncations rejected\n", path, stride, flips, crc_caught, rejected, loaded, truncs);
    TEST_DONE("test_checkpoint --exhaustive");
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--poison")) return poison(argv[2], argv[3]);
    if (argc >= 3 && !strcmp(argv[1], "--exhaustive")) return exhaustive(argv[2], argc > 3 ? atol(argv[3]) : 1);
    char dir[] = "/tmp/ddpm_ckpt_XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp failed");
    char path[256], p2[256], bad[256];
    snprintf(path, sizeof(path), "%s/a.ckpt", dir);
    snprintf(p2, sizeof(p2), "%s/b.ckpt", dir);
    snprintf(bad, sizeof(bad), "%s/bad.ckpt", dir);

    ModelConfig cfg;
    config_load(&cfg, "models/tiny.cfg");
    Unet m;
    unet_build(&m, &cfg);
    Rng r;
    rng_seed(&r, 3);
    unet_init_params(&m, &r);
    size_t n = m.n_params;
    float *mm = malloc(n * 4), *vv = malloc(n * 4), *ema = malloc(n * 4);
    for (size_t i = 0; i < n; i++) { mm[i] = rng_normal(&r); vv[i] = rng_uniform(&r); ema[i] = rng_normal(&r); }
    TrainState st = {0};
    st.batch = 8; st.seed = 42; st.lr = 2e-4f; st.beta1 = 0.9f; st.beta2 = 0.999f; st.eps = 1e-8f;
    st.ema_decay = 0.995f; st.warmup = 100; st.step = 507; st.epoch = 4; st.epoch_pos = 56; st.n_data = 1000;
    st.lr_decay_steps = 5400; st.grad_clip = 1.5f; st.precision = 1;
    rng_seed(&st.noise_rng, 99);
    rng_u64(&st.noise_rng);
    char err[600];
    CHECK(checkpoint_save(path, &cfg, &st, m.params, mm, vv, ema, n, err, sizeof(err)) == 0, "save: %s", err);

    // round trip: every field and array bit-exact
    Checkpoint ck;
    CHECK(checkpoint_load(path, &ck, err, sizeof(err)) == 0, "load: %s", err);
    CHECK(ck.n_params == n, "n_params");
    CHECK((ck.st.step == st.step && ck.st.epoch_pos == st.epoch_pos &&
          !memcmp(ck.st.noise_rng.s, st.noise_rng.s, 32) && ck.st.lr == st.lr && ck.st.seed == st.seed &&
          ck.st.ema_decay == st.ema_decay && ck.st.warmup == st.warmup && ck.st.batch == st.batch && ck.st.epoch == st.epoch && ck.st.n_data == st.n_data &&
          ck.st.beta1 == st.beta1 && ck.st.beta2 == st.beta2 && ck.st.eps == st.eps &&
          ck.st.lr_decay_steps == st.lr_decay_steps && ck.st.grad_clip == st.grad_clip && ck.st.precision == st.precision), "train state differs");
    CHECK(!memcmp(ck.params, m.params, n * 4) && !memcmp(ck.m, mm, n * 4) && !memcmp(ck.v, vv, n * 4) &&
          !memcmp(ck.ema, ema, n * 4), "arrays differ after round trip");
    char a[4096], b[4096];
    config_to_text(&cfg, a, sizeof(a));
    config_to_text(&ck.cfg, b, sizeof(b));
    CHECK(!strcmp(a, b), "config differs after round trip");
    // equal state -> equal bytes
    CHECK(checkpoint_save(p2, &ck.cfg, &ck.st, ck.params, ck.m, ck.v, ck.ema, n, err, sizeof(err)) == 0, "re-save: %s", err);
    size_t na, nb;
    unsigned char *fa = read_all(path, &na), *fb = read_all(p2, &nb);
    CHECK(fa && fb && na == nb && !memcmp(fa, fb, na), "re-saved checkpoint is not byte-identical");
    checkpoint_free(&ck);

    // without EMA the file is smaller and loads with ema == NULL
    TrainState st2 = st;
    st2.ema_decay = 0;
    CHECK(checkpoint_save(p2, &cfg, &st2, m.params, mm, vv, NULL, n, err, sizeof(err)) == 0, "save no-ema: %s", err);
    CHECK(checkpoint_load(p2, &ck, err, sizeof(err)) == 0 && ck.ema == NULL, "no-ema load: %s", err);
    checkpoint_free(&ck);

    // corruptions: each must fail with a message naming the file
    write_all(bad, fa, na / 2);
    load_fails(bad, "truncated", "CRC");
    write_all(bad, fa, 10);
    load_fails(bad, "very short", "not a ddpm.c checkpoint");
    write_all(bad, (const unsigned char *)"", 0);
    load_fails(bad, "empty", "not a ddpm.c checkpoint");
    unsigned char *c = malloc(na);
    memcpy(c, fa, na); c[0] = 'X';
    write_all(bad, c, na);
    load_fails(bad, "magic", "bad magic");
    memcpy(c, fa, na); c[na / 2] ^= 0x10;
    write_all(bad, c, na);
    load_fails(bad, "bit flip", "CRC");
    memcpy(c, fa, na); c[8] = 99; fix_crc(c, na);
    write_all(bad, c, na);
    load_fails(bad, "version", "version");
    // every field of the state out of range or inconsistent, with a valid CRC: rejected, the field
    // named (state layout after the config: batch 4, seed 8, lr 4, beta1 4, beta2 4, eps 4, ema 4,
    // warmup 4, step 8, epoch 8, epoch_pos 8, n_data 8, rng 32, lr_decay_steps 8, grad_clip 4, precision 4)
    {
        uint32_t cfg_len;
        memcpy(&cfg_len, fa + 12, 4);
        size_t st0 = 16 + cfg_len;
        struct { size_t off, size; double value; int is_float; const char *field; } muts[] = {
            {0, 4, 0, 0, "batch"}, {0, 4, 70000, 0, "batch"}, {12, 4, 0, 1, "lr"}, {12, 4, NAN, 1, "lr"},
            {16, 4, 1.0, 1, "beta1"}, {20, 4, -0.5, 1, "beta2"}, {24, 4, 0, 1, "eps"}, {28, 4, 1.0, 1, "ema_decay"},
            {32, 4, -1, 0, "warmup"}, {36, 8, -5, 0, "step"}, {44, 8, 999, 0, "epoch"},
            {52, 8, 1099511627776.0, 0, "epoch_pos"}, {52, 8, 999, 0, "epoch_pos"}, {52, 8, 57, 0, "epoch_pos"},
            {52, 8, 64, 0, "do not give step"}, {60, 8, 4, 0, "n_data"}, {60, 8, 2000, 0, "do not give step"},
            {68, 32, 0, 0, "noise_rng"}, {100, 8, -1, 0, "lr_decay_steps"}, {108, 4, -1, 1, "grad_clip"},
            {112, 4, 2, 0, "precision"}};
        for (size_t i = 0; i < sizeof muts / sizeof muts[0]; i++) {
            memcpy(c, fa, na);
            unsigned char *f = c + st0 + muts[i].off;
            if (muts[i].size == 32) memset(f, 0, 32);
            else if (muts[i].is_float) { float v = (float)muts[i].value; memcpy(f, &v, 4); }
            else if (muts[i].size == 4) { int32_t v = (int32_t)muts[i].value; memcpy(f, &v, 4); }
            else { int64_t v = (int64_t)muts[i].value; memcpy(f, &v, 8); }
            fix_crc(c, na);
            write_all(bad, c, na);
            char what[64];
            snprintf(what, sizeof what, "%s = %g", muts[i].field, muts[i].value);
            load_fails(bad, what, muts[i].field);
        }
    }
    // older versions still load: version 1 (before lr decay and grad clip: 16 bytes fewer after the
    // 100-byte state, with the precision) with both off, version 2 (before the precision: 4 bytes
    // fewer after 112) in fp32
    for (uint32_t ver = 1; ver <= 2; ver++) {
        uint32_t cfg_len;
        memcpy(&cfg_len, fa + 12, 4);
        size_t cut = 16 + cfg_len + (ver == 1 ? 100 : 112), gone = ver == 1 ? 16 : 4;
        memcpy(c, fa, cut);
        memcpy(c + cut, fa + cut + gone, na - cut - gone);
        memcpy(c + 8, &ver, 4);
        fix_crc(c, na - gone);
        write_all(bad, c, na - gone);
        Checkpoint old;
        int rc = checkpoint_load(bad, &old, err, sizeof(err));
        CHECK(rc == 0, "version-%u file: %s", ver, err);
        if (rc == 0) {
            CHECK((ver > 1 || (old.st.lr_decay_steps == 0 && old.st.grad_clip == 0)) && old.st.step == st.step &&
                      old.st.lr == st.lr && old.st.precision == 0,
                  "version-%u state: decay %lld clip %g step %lld precision %d", ver, (long long)old.st.lr_decay_steps,
                  old.st.grad_clip, (long long)old.st.step, old.st.precision);
            CHECK(old.params && !memcmp(old.params, m.params, n * 4) && !memcmp(old.ema, ema, n * 4), "version-%u arrays differ",
                  ver);
            checkpoint_free(&old);
        }
    }
    // a config the binary cannot build (valid CRC): num_heads 3 does not divide the channels
    memcpy(c, fa, na);
    char *h = memmem(c, na, "num_heads = 2", 13);
    CHECK(h != NULL, "config text not found in checkpoint");
    if (h) { h[12] = '3'; fix_crc(c, na); write_all(bad, c, na); load_fails(bad, "bad config", "cannot build"); }
    // n_params inconsistent with the file size (valid CRC)
    memcpy(c, fa, na);
    write_all(bad, c, na - 8);
    memcpy(c, fa, na - 12); fix_crc(c, na - 8);
    write_all(bad, c, na - 8);
    load_fails(bad, "short arrays", "corrupt");
    load_fails("/nonexistent/dir/x.ckpt", "missing", "cannot open");

    // a failed save leaves the previous file untouched: saving into a missing directory fails cleanly
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/nodir/x.ckpt", dir);
    CHECK(checkpoint_save(missing, &cfg, &st, m.params, mm, vv, ema, n, err, sizeof(err)) != 0, "save into a missing dir succeeded");
    // saving over an existing checkpoint replaces it atomically, leaving no temp files
    CHECK(checkpoint_save(path, &cfg, &st2, m.params, mm, vv, NULL, n, err, sizeof(err)) == 0, "overwrite: %s", err);
    CHECK(checkpoint_load(path, &ck, err, sizeof(err)) == 0 && ck.ema == NULL, "overwritten checkpoint: %s", err);
    checkpoint_free(&ck);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "ls %s | grep -c tmp > /dev/null", dir);
    CHECK(system(cmd) != 0, "temporary files left behind in %s", dir);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    free(fa); free(fb); free(c); free(mm); free(vv); free(ema);
    unet_free(&m);
    test_config_round_trip();
    TEST_DONE("test_checkpoint");
}
