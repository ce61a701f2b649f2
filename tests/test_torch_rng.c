// test_torch_rng.c: torch_randn against the values PyTorch wrote (tools/make_torch_noise.py),
// bit for bit, and mt19937 against its published 10000th output; the DDPM step with PyTorch's
// noise against PyTorch's (tools/make_torch_step.py): z bit for bit, x_{t-1} up to float rounding.
//   usage: test_torch_rng [NOISE_FIXTURE [STEP_FIXTURE]]
//          (default tests/torch_noise.bin tests/torch_step.bin)
#include <stdint.h>
#include <string.h>

#include "core/common.h"
#include "core/torch_rng.h"
#include "diffusion/diffusion.h"
#include "testutil.h"

// x_{t-1} = mean + sqrt(beta_t) z (the seed exercise's step) against PyTorch's float32 result
static void test_step(const char *path) {
    char err[ERR_LEN];
    size_t size, off = 0;
    unsigned char *d = read_file_all(path, "fixture", &size, err, sizeof err);
    if (!d) die("%s", err);
#define GET(dst, n) do { if ((n) > size - off) die("%s: truncated fixture", path); memcpy((dst), d + off, (n)); off += (n); } while (0)
    char magic[4];
    uint32_t version, n_cases;
    GET(magic, 4); GET(&version, 4); GET(&n_cases, 4);
    if (memcmp(magic, "TSTP", 4) || version != 1) die("%s: not a torch step fixture", path);
    double worst = 0;
    for (uint32_t c = 0; c < n_cases; c++) {
        uint64_t seed;
        int32_t T, t;
        uint32_t n;
        float b0, b1;
        GET(&seed, 8); GET(&T, 4); GET(&b0, 4); GET(&b1, 4); GET(&t, 4); GET(&n, 4);
        if (T < 1 || T > 100000 || t < 0 || t >= T || n > (size - off) / 16) die("%s: bad case header", path);
        float *v = mallocCheck((size_t)n * 4 * 6), *xt = v, *eps = v + n, *z = v + 2 * n, *want = v + 3 * n, *zc = v + 4 * n,
              *got = v + 5 * n;
        GET(xt, (size_t)n * 16);
        ModelConfig cfg = {.schedule = SCHEDULE_LINEAR, .num_timesteps = T, .beta_start = b0, .beta_end = b1};
        Schedule s;
        schedule_init(&s, &cfg);
        TorchGen g;
        torch_manual_seed(&g, seed);
        memset(zc, 0, (size_t)n * 4);
        if (t > 0) torch_randn(&g, zc, n);
        ddpm_step_z(got, xt, eps, t, &s, SIGMA_BETA, zc, n);
        long zdiff = 0;
        double e = 0;
        for (uint32_t i = 0; i < n; i++) {
            zdiff += memcmp(&z[i], &zc[i], 4) != 0;
            e = fmax(e, fabs((double)got[i] - want[i]));
        }
        CHECK(zdiff == 0, "step case %u (seed %llu, t %d, n %u): %ld of the z values differ from torch's", c, (unsigned long long)seed, t, n, zdiff);
        // float32 torch vs ddpm.c's double arithmetic on float coefficients: a few float ulps
        CHECK(e <= 1e-6, "step case %u (t %d, n %u): max|x_{t-1} - torch's| = %.3e > 1e-6", c, t, n, e);
        worst = fmax(worst, e);
        schedule_free(&s);
        free(v);
    }
    CHECK(off == size, "%s: trailing bytes", path);
    printf("test_torch_rng: DDPM step x_{t-1} = mean + sqrt(beta_t) z, %u cases: z bit for bit, max|x_{t-1} - PyTorch's| %.3e\n",
           n_cases, worst);
    free(d);
#undef GET
}

int main(int argc, char **argv) {
    // std::mt19937 with the default seed 5489: the 10000th output is 4123659995 (C++11 [rand.predef])
    TorchGen g;
    torch_manual_seed(&g, 5489);
    uint32_t v = 0;
    for (int i = 0; i < 10000; i++) v = torch_random(&g);
    CHECK(v == 4123659995u, "mt19937 10000th output %u, want 4123659995", v);

    const char *path = argc > 1 ? argv[1] : "tests/torch_noise.bin";
    char err[ERR_LEN];
    size_t size;
    unsigned char *d = read_file_all(path, "fixture", &size, err, sizeof err);
    if (!d) die("%s", err);
    size_t off = 0;
#define TAKE(dst, n) do { if ((n) > size - off) die("%s: truncated fixture", path); memcpy((dst), d + off, (n)); off += (n); } while (0)
    char magic[4];
    uint32_t version, n_cases;
    TAKE(magic, 4); TAKE(&version, 4); TAKE(&n_cases, 4);
    if (memcmp(magic, "TRND", 4) || version != 1) die("%s: not a torch noise fixture", path);
    long total = 0, bad = 0;
    float *x = NULL, *want = NULL;
    for (uint32_t c = 0; c < n_cases; c++) {
        uint64_t seed;
        uint32_t n_calls;
        TAKE(&seed, 8); TAKE(&n_calls, 4);
        torch_manual_seed(&g, seed);
        for (uint32_t k = 0; k < n_calls; k++) {
            uint32_t n;
            TAKE(&n, 4);
            if (n > (size - off) / 4) die("%s: truncated fixture", path);
            x = realloc(x, (size_t)n * 4 + 4);
            want = realloc(want, (size_t)n * 4 + 4);
            TAKE(want, (size_t)n * 4);
            torch_randn(&g, x, n);
            long diff = 0;
            for (uint32_t i = 0; i < n; i++) diff += memcmp(&x[i], &want[i], 4) != 0;
            if (diff) {
                for (uint32_t i = 0; i < n; i++)
                    if (memcmp(&x[i], &want[i], 4)) { fprintf(stderr, "  seed %llu call %u: [%u] %.9g, torch %.9g\n", (unsigned long long)seed, k, i, x[i], want[i]); break; }
            }
            CHECK(diff == 0, "seed %llu, call %u (randn(%u)): %ld of %u values differ from torch", (unsigned long long)seed, k, n, diff, n);
            total += n;
            bad += diff;
        }
    }
    CHECK(off == size, "%s: trailing bytes", path);
    printf("test_torch_rng: %ld values in %u cases, %ld differ from PyTorch's\n", total, n_cases, bad);
    free(x); free(want); free(d);
    test_step(argc > 2 ? argv[2] : "tests/torch_step.bin");
    TEST_DONE("test_torch_rng");
}
