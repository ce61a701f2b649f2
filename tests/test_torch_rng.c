// test_torch_rng.c: torch_randn against the values PyTorch wrote (tools/make_torch_noise.py),
// bit for bit, and mt19937 against its published 10000th output.
//   usage: test_torch_rng [FIXTURE]   (default tests/torch_noise.bin)
#include <stdint.h>
#include <string.h>

#include "core/common.h"
#include "core/torch_rng.h"
#include "testutil.h"

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
    TEST_DONE("test_torch_rng");
}
