// test_checkpoint.c: checkpoint round trip (bit-exact), byte-identical re-save, atomic
// replacement, and rejection of truncated / corrupt / wrong-magic / wrong-version files.
//   test_checkpoint                     run the tests
//   test_checkpoint --poison IN OUT     write OUT = IN with NaN parameters (for the CLI NaN test)
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
    for (size_t i = 0; i < ck.n_params; i += 7) ck.params[i] = NAN;
    if (ck.ema) for (size_t i = 0; i < ck.n_params; i += 7) ck.ema[i] = NAN;
    if (checkpoint_save(out, &ck.cfg, &ck.st, ck.params, ck.m, ck.v, ck.ema, ck.n_params, err, sizeof(err))) die("%s", err);
    checkpoint_free(&ck);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--poison")) return poison(argv[2], argv[3]);
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
    st.ema_decay = 0.995f; st.warmup = 100; st.step = 123; st.epoch = 4; st.epoch_pos = 56; st.n_data = 1000;
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
    TEST_DONE("test_checkpoint");
}
