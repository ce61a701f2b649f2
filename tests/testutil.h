// testutil.h: tiny assertion helpers shared by the C tests (each test is its own binary).
#ifndef DDPM_TESTUTIL_H
#define DDPM_TESTUTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int tu_failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { tu_failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_NEAR(a, b, tol, what) do { double _a = (a), _b = (b); \
    CHECK(fabs(_a - _b) <= (tol), "%s: got %.9g, want %.9g (tol %.3g)", (what), _a, _b, (double)(tol)); } while (0)
// x rounded to bf16 (nearest even) as VCVTNE2PS2BF16 does, back in a float; subnormals -> 0
static inline float tu_bf16(float x) {
    union { float f; unsigned u; } v = {x};
    if ((v.u & 0x7f800000u) == 0) v.u &= 0x80000000u;
    else v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1)) & 0xffff0000u;
    return v.f;
}
#define TEST_DONE(name) do { if (tu_failures) { fprintf(stderr, "%s: %d check(s) FAILED\n", (name), tu_failures); return 1; } \
    printf("%s: all checks passed\n", (name)); return 0; } while (0)
#endif
