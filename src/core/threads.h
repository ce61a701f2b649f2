// threads.h: the OpenMP thread count and a thread's place in a parallel region (1 and 0 in a
// build without OpenMP).
#ifndef DDPM_THREADS_H
#define DDPM_THREADS_H

#include <stdio.h>

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

// ---- the load other processes put on the CPUs this process may use (Linux: /proc/stat)
typedef struct {
    double wall, own;   // seconds: monotonic clock, this process's CPU time
    double busy, total; // ticks over the CPUs this process may use: busy (not idle, not iowait;
                        // steal counts as busy; niced processes' time does not unless this process
                        // is niced too), and all
    int ncpu;           // those CPUs: the union of the OpenMP places where threads are bound
    unsigned long mask; // (OMP_PROC_BIND), else the affinity mask; a hash of which they are
} LoadSample;
int load_sample(LoadSample *s); // 0, or -1 where the figures are not available
// the CPUs' worth of time that other processes took between samples a and b (0 .. ncpu)
double load_foreign(const LoadSample *a, const LoadSample *b);
// the cpuN lines of a /proc/stat text for the CPUs with use[N] != 0 (N < nuse) into s->busy,
// s->total, s->ncpu; -1 unless every one of the `want` CPUs was found
int load_parse(FILE *f, const unsigned char *use, int nuse, int want, int count_nice, LoadSample *s);

// ---- a thread count that adapts to a busy machine
// Every parallel loop waits at its end for its slowest thread; when another process holds a core,
// the thread the OS deschedules there makes every loop wait, and fewer threads can be faster.
// A tuner times units of equal work (training steps, sampling forward passes) and tries one unit
// at another count (a probe); it moves to that count when it was more than 5% faster than the
// count in use (its running mean, or one unit timed afresh after a change of the load).
// What it tries follows the load (load_sample, every TUNER_HINT_SECONDS, or 200 times what a
// reading costs in CPU time if that is more): with f CPUs' worth of other work on n CPUs,
// floor(n - f + 0.4) threads have a CPU each (`want`; the first reading counts at once, a change
// once read twice in a row).
// - In the warm-up (two units, nothing timed yet) it moves down to `want` directly.
// - When `want` changes to another count than the one in use, that count is timed afresh, the
//   next unit is a probe at `want`, and the interval below starts over; not when a probe at `want`
//   lost under this same reading: then the probes, on the interval, alternate between one thread
//   away from `want` and `want`.
// - While `want` agrees with the count in use, probes (one thread down and up, in turn) come no
//   sooner than TUNER_PROBE_STEADY units after the last: the reading can miss what slows threads
//   (CPU quotas, SMT siblings, niced work of other sessions), and these catch it.
// - Where the load cannot be read (not Linux, /proc/stat not matching the CPUs), probes
//   alternate one thread down and up.
// A probe that loses is tried again after `interval` units; the interval starts at
// TUNER_PROBE_FIRST and doubles after each loss, up to TUNER_PROBE_MAX (one probe on a busy machine
// is a noisy measurement), and starts over after a move.
// Results do not depend on the thread count (the layers sum in fixed chunks), so the choice
// changes only the speed. DDPM_FIXED_THREADS=1 turns it off.
#define TUNER_PROBE_FIRST 4
#define TUNER_PROBE_STEADY 64
#define TUNER_PROBE_MAX 800
#define TUNER_HINT_SECONDS 0.15
#define TUNER_MAX 256
typedef struct {
    int max, cur;        // the count asked for; the count in use
    int next;            // the count of the unit being timed
    int fixed;           // 1: always max
    long units;          // units timed
    int probe_dir;       // -1 or +1: the direction of the next probe (when the load is unknown)
    long interval, next_probe, last_probe; // units between probes; the unit of the next, of the last
    int lost_at[TUNER_MAX + 1]; // `want` when the last probe at a count lost (0: none since the last move)
    int probe_want;      // `want` when the probe under way began
    int away;            // 1: the last probe after a loss at `want` went the other way
    double avg[TUNER_MAX + 1]; // mean seconds per unit of work at each count (0: not measured)
    double t0;
    double (*clock)(void);       // seconds, monotonic (tests put a clock of their own here)
    int (*sample)(LoadSample *); // load_sample (its wall on that clock); NULL: time only (also after
                                 // it fails)
    LoadSample last;     // the sample the load is measured from
    int have_last;
    double hint_every;   // seconds between readings: TUNER_HINT_SECONDS, or 200 x the last one's cost
    int want;            // threads that have a CPU each under the load read (0: not read yet)
    int pending;         // a different `want` read once (0: none)
} ThreadTuner;

void tuner_init(ThreadTuner *t, int max_threads);
// before a unit of work: sets the thread count for it (set_threads)
void tuner_begin(ThreadTuner *t);
// after it: `work` is its size (e.g. images), so units of unequal size compare per image
void tuner_end(ThreadTuner *t, double work);

#endif
