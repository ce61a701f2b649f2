// test_threads.c: the thread-count tuner (core/threads.h) on synthetic work whose duration
// depends on the thread count: it must move to the faster count, come back when the other one
// becomes faster, and never move when DDPM_FIXED_THREADS=1.
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <time.h>

#include "core/threads.h"
#include "testutil.h"

static void wait_ms(double ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) * 1e-6 < ms);
}

// run units until `until`; a unit takes ms_at[threads] milliseconds, except that the first
// `slow_probes` units at 1 thread take 6 ms (a probe the OS happened to slow); returns the count in use
static int run_noisy(ThreadTuner *tu, long until, const double *ms_at, int slow_probes) {
    while (tu->units < until) {
        tuner_begin(tu);
        int n = threads_in_use();
        wait_ms(n == 1 && slow_probes > 0 ? 6.0 : ms_at[n]);
        if (n == 1 && slow_probes > 0) slow_probes--;
        tuner_end(tu, 1);
    }
    return tu->cur;
}
static int run(ThreadTuner *tu, long until, const double *ms_at) { return run_noisy(tu, until, ms_at, 0); }

int main(void) {
    ThreadTuner tu;
    const double busy[3] = {0, 1.0, 3.0}, idle[3] = {0, 3.0, 1.0}; // ms per unit at 1 and 2 threads
    unsetenv("DDPM_FIXED_THREADS");
    tuner_init(&tu, 2);
    CHECK(tu.cur == 2, "starts at %d threads, want the 2 asked for", tu.cur);
    int n = run(&tu, 10, busy);
    CHECK(n == 1, "a busy machine (1 thread 3x faster): %d threads after 10 units, want 1", n);
    n = run(&tu, 10 + 2 * TUNER_PROBE_FIRST, idle);
    CHECK(n == 2, "machine idle again: %d threads after %d more units, want 2", n, 2 * TUNER_PROBE_FIRST);
    n = run(&tu, 20 + 4 * TUNER_PROBE_MAX, idle);
    CHECK(n == 2 && tu.interval == TUNER_PROBE_MAX, "idle: %d threads, probe interval %ld (losing probes double it up to %d)",
          n, tu.interval, TUNER_PROBE_MAX);
    // a short busy run whose first two probes were slowed: the later probes still find 1 thread
    tuner_init(&tu, 2);
    n = run_noisy(&tu, 20, busy, 2);
    CHECK(n == 1, "busy, first two probes unlucky: %d threads after 20 units, want 1", n);
    setenv("DDPM_FIXED_THREADS", "1", 1);
    tuner_init(&tu, 2);
    n = run(&tu, 20, busy);
    CHECK(n == 2 && threads_in_use() == 2, "DDPM_FIXED_THREADS=1: %d threads, want 2", n);
    tuner_init(&tu, 1);
    unsetenv("DDPM_FIXED_THREADS");
    tuner_init(&tu, 1);
    CHECK(run(&tu, 10, busy) == 1, "one thread asked for: stays at 1");
    TEST_DONE("test_threads");
}
