// peak.c: FMA throughput loops, one per instruction set (peak.h). Each thread runs CHAINS
// independent accumulator chains, enough to cover the FMA latency on every port.
#define _POSIX_C_SOURCE 200809L
#include "kernels/peak.h"

#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/threads.h"

#define ITERS 20000000L
#define CHAINS 12

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) static float chains512(void) {
    __m512 a[CHAINS], x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < CHAINS; k++) a[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < ITERS; i++)
        for (int k = 0; k < CHAINS; k++) a[k] = _mm512_fmadd_ps(a[k], x, y);
    for (int k = 1; k < CHAINS; k++) a[0] = _mm512_add_ps(a[0], a[k]);
    return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx2,fma"))) static float chains256(void) {
    __m256 a[CHAINS], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int k = 0; k < CHAINS; k++) a[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < ITERS; i++)
        for (int k = 0; k < CHAINS; k++) a[k] = _mm256_fmadd_ps(a[k], x, y);
    float s[8];
    for (int k = 1; k < CHAINS; k++) a[0] = _mm256_add_ps(a[0], a[k]);
    _mm256_storeu_ps(s, a[0]);
    return s[0];
}
#endif

// plain C: 32 chains the compiler vectorises as the build target allows
static float chains_generic(void) {
    float a[32];
    for (int k = 0; k < 32; k++) a[k] = (float)k;
    for (long i = 0; i < ITERS; i++)
        for (int k = 0; k < 32; k++) a[k] = a[k] * 0.999999f + 1e-7f;
    float s = 0;
    for (int k = 0; k < 32; k++) s += a[k];
    return s;
}

double fma_peak_gflops(const char *isa) {
    int which = 0, lanes = 32; // floats per iteration of one thread
#if defined(__x86_64__) || defined(__i386__)
    if (!strcmp(isa, "avx512")) which = 2, lanes = 16 * CHAINS;
    else if (!strcmp(isa, "avx2")) which = 1, lanes = 8 * CHAINS;
#endif
    double t0 = seconds();
    volatile float sink = 0;
    int nt = 1;
#pragma omp parallel
    {
        float s;
#if defined(__x86_64__) || defined(__i386__)
        s = which == 2 ? chains512() : which == 1 ? chains256() : chains_generic();
#else
        s = chains_generic();
#endif
#pragma omp critical
        sink += s;
#pragma omp single
        nt = thread_count();
    }
    double dt = seconds() - t0;
    (void)sink;
    return 2.0 * lanes * (double)ITERS * nt / dt / 1e9;
}
