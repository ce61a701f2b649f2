// threads.c: thread count helpers (threads.h).
#define _POSIX_C_SOURCE 200809L
#include "core/threads.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int threads_in_use(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void thread_span(long n, long *lo, long *hi) {
    long chunks = (n + 15) / 16;
    int t = thread_id(), nt = thread_count();
    *lo = chunks * t / nt * 16;
    *hi = chunks * (t + 1) / nt * 16;
    if (*hi > n) *hi = n;
}

static double tuner_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void tuner_init(ThreadTuner *t, int max_threads) {
    memset(t, 0, sizeof(*t));
    t->max = max_threads < 1 ? 1 : max_threads > TUNER_MAX ? TUNER_MAX : max_threads;
    t->cur = t->next = t->max;
    t->probe_dir = -1;
    t->interval = TUNER_PROBE_FIRST;
    t->next_probe = 3; // after two warm-up units and one timed at the count asked for
    const char *f = getenv("DDPM_FIXED_THREADS");
    t->fixed = f && *f && strcmp(f, "0") != 0;
}

void tuner_begin(ThreadTuner *t) {
    t->next = t->cur;
    if (!t->fixed && t->max > 1 && t->units == t->next_probe) {
        int n = t->cur + t->probe_dir;
        if (n < 1 || n > t->max) n = t->cur - t->probe_dir;
        t->probe_dir = -t->probe_dir;
        if (n >= 1 && n <= t->max) t->next = n;
    }
    set_threads(t->next);
    t->t0 = tuner_clock();
}

void tuner_end(ThreadTuner *t, double work) {
    double per = (tuner_clock() - t->t0) / (work > 0 ? work : 1);
    t->units++;
    if (t->units <= 2) return; // warm-up: first touches of memory, caches
    double *a = &t->avg[t->next];
    if (t->next != t->cur) { // a probe: one measurement against the running mean of the count in use
        *a = per;
        if (t->avg[t->cur] > 0 && per < 0.95 * t->avg[t->cur]) { // move, and probe back soon
            t->cur = t->next;
            t->interval = TUNER_PROBE_FIRST;
            t->next_probe = t->units + t->interval;
        } else { // lost: the next probe after this interval, the one after it twice as far
            t->next_probe = t->units + t->interval;
            t->interval = 2 * t->interval < TUNER_PROBE_MAX ? 2 * t->interval : TUNER_PROBE_MAX;
        }
        return;
    }
    *a = *a > 0 ? 0.8 * *a + 0.2 * per : per;
}
