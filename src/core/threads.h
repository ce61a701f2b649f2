// threads.h: the OpenMP thread count and a thread's place in a parallel region (1 and 0 in a
// build without OpenMP).
#ifndef DDPM_THREADS_H
#define DDPM_THREADS_H

#ifdef _OPENMP
#include <omp.h>
#endif

void set_threads(int n); // n > 0: use n threads from now on; n <= 0: leave the default
int threads_in_use(void); // threads the next parallel region will have

// inside a parallel region: this thread's number and the region's thread count
static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// [lo, hi) of n elements for this thread of a parallel region, in multiples of 16 floats
void thread_span(long n, long *lo, long *hi);

// ---- a thread count that adapts to a busy machine
// Every parallel loop waits at its end for its slowest thread; when another process holds a core,
// the thread the OS deschedules there makes every loop wait, and fewer threads can be faster.
// A tuner times units of equal work (training steps, sampling forward passes) and tries one unit
// with one thread more or fewer after the warm-up, then again after `interval` units; it moves to
// that count when it was more than 5% faster. The interval starts at TUNER_PROBE_FIRST units and
// doubles after every probe that loses, up to TUNER_PROBE_MAX (so a short run still probes a few
// times: one probe on a busy machine is a noisy measurement), and starts over after a move.
// Results do not depend on the thread count (the layers sum in fixed chunks), so the choice
// changes only the speed. DDPM_FIXED_THREADS=1 turns it off.
#define TUNER_PROBE_FIRST 4
#define TUNER_PROBE_MAX 800
#define TUNER_MAX 256
typedef struct {
    int max, cur;        // the count asked for; the count in use
    int next;            // the count of the unit being timed
    int fixed;           // 1: always max
    long units;          // units timed
    int probe_dir;       // -1 or +1: the direction of the next probe
    long interval, next_probe; // units between probes; the unit of the next probe
    double avg[TUNER_MAX + 1]; // mean seconds per unit of work at each count (0: not measured)
    double t0;
} ThreadTuner;

void tuner_init(ThreadTuner *t, int max_threads);
// before a unit of work: sets the thread count for it (set_threads)
void tuner_begin(ThreadTuner *t);
// after it: `work` is its size (e.g. images), so units of unequal size compare per image
void tuner_end(ThreadTuner *t, double work);

#endif
