// test_threads.c: the thread-count tuner (core/threads.h) on synthetic work whose duration
// depends on the thread count: it must move to the faster count, come back when the other one
// becomes faster, and never move when DDPM_FIXED_THREADS=1. With a load reading (a synthetic one on
// a virtual clock here) it must move as soon as the load changes, try next to nothing while the load
// is steady, recover from a reading that is wrong or fails; the parser must read /proc/stat's
// columns right, and the real reading must see a process that keeps one CPU busy.
#define _GNU_SOURCE // sched_setaffinity
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/threads.h"
#include "testutil.h"

static void wait_ms(double ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) * 1e-6 < ms);
}

// ---- a virtual clock and a synthetic load reading: this process runs flat out on one of
// fake_ncpu CPUs, and other processes leave fake_free CPUs to it (load_foreign reads ncpu - fake_free)
static double vnow = 1000.0; // seconds
static double vclock(void) { return vnow; }
static double fake_free, fake_busy, fake_total, fake_own, fake_last;
static int fake_ncpu, fake_calls, fake_fail_after, fake_new_mask;
static double fake_spin_ms; // CPU time one reading costs
static int fake_sample(LoadSample *s) {
    if (fake_spin_ms > 0) {
        struct timespec t0, t;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
        do clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
        while ((t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) * 1e-6 < fake_spin_ms);
    }
    if (fake_fail_after >= 0 && fake_calls >= fake_fail_after) return -1;
    fake_calls++;
    double dt = fake_last < 0 ? 0 : vnow - fake_last;
    fake_last = vnow;
    fake_own += dt;
    fake_busy += 100 * dt * (1 + fake_ncpu - fake_free);
    fake_total += 100 * dt * fake_ncpu;
    *s = (LoadSample){.wall = vnow, .own = fake_own, .busy = fake_busy, .total = fake_total, .ncpu = fake_ncpu,
                      .mask = fake_new_mask ? (unsigned long)fake_calls : 1};
    return 0;
}
static void fake_tuner(ThreadTuner *tu, int max, int ncpu, double free_cpus) {
    tuner_init(tu, max);
    tu->clock = vclock;
    tu->sample = fake_sample;
    fake_ncpu = ncpu;
    fake_free = free_cpus;
    fake_busy = fake_total = fake_own = 0;
    fake_last = -1;
    fake_calls = fake_new_mask = 0;
    fake_fail_after = -1;
    fake_spin_ms = 0;
}
// units on the virtual clock, one at n threads taking ms_at[n] ms (the first `slow` units at 1
// thread 6x longer: probes the OS happened to slow), until `until`; returns how many ran at `count`
// threads; *bad counts units at a count outside 1..max
static int run_slowed(ThreadTuner *tu, long until, const double *ms_at, int count, int slow, int *bad) {
    int at = 0;
    while (tu->units < until) {
        tuner_begin(tu);
        int n = tu->next;
        if (bad && (n < 1 || n > tu->max || tu->cur < 1 || tu->cur > tu->max)) (*bad)++;
        at += n == count;
        n = n < 1 ? 1 : n > tu->max ? tu->max : n;
        vnow += ms_at[n] * 1e-3 * (n == 1 && slow > 0 ? 6 : 1);
        if (n == 1 && slow > 0) slow--;
        tuner_end(tu, 1);
    }
    return at;
}
static int run_virtual(ThreadTuner *tu, long until, const double *ms_at, int count, int *bad) {
    return run_slowed(tu, until, ms_at, count, 0, bad);
}
// timing alone (no load reading) on the virtual clock; returns the count in use
static int run(ThreadTuner *tu, long until, const double *ms_at, int slow) {
    run_slowed(tu, until, ms_at, 0, slow, NULL);
    return tu->cur;
}
static void timing_tuner(ThreadTuner *tu, int max) {
    tuner_init(tu, max);
    tu->clock = vclock;
    tu->sample = NULL; // the real load of the machine must not steer these
}

// keep CPU `cpu` busy in a child process at niceness `nice_inc` (it dies with this process); its pid
static pid_t burn(int cpu, int nice_inc) {
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (nice_inc && nice(nice_inc) == -1) _exit(1);
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
        for (volatile unsigned long i = 0;; i++) {}
    }
    return pid;
}

// CPUs of other processes' work over `ms` milliseconds of this process spinning; own: its own CPUs
static double foreign_over(double ms, double *own) {
    LoadSample a, b;
    load_sample(&a);
    wait_ms(ms);
    load_sample(&b);
    *own = (b.own - a.own) / (b.wall - a.wall);
    return load_foreign(&a, &b);
}

int main(void) {
    ThreadTuner tu;
    const double busy[3] = {0, 1.0, 3.0}, idle[3] = {0, 3.0, 1.0}; // ms per unit at 1 and 2 threads
    unsetenv("DDPM_FIXED_THREADS");
    // timing alone, on the virtual clock
    timing_tuner(&tu, 2);
    CHECK(tu.cur == 2, "starts at %d threads, want the 2 asked for", tu.cur);
    int n = run(&tu, 10, busy, 0);
    CHECK(n == 1, "a busy machine (1 thread 3x faster): %d threads after 10 units, want 1", n);
    n = run(&tu, 10 + 2 * TUNER_PROBE_FIRST, idle, 0);
    CHECK(n == 2, "machine idle again: %d threads after %d more units, want 2", n, 2 * TUNER_PROBE_FIRST);
    n = run(&tu, 20 + 4 * TUNER_PROBE_MAX, idle, 0);
    CHECK(n == 2 && tu.interval == TUNER_PROBE_MAX, "idle: %d threads, probe interval %ld (losing probes double it up to %d)",
          n, tu.interval, TUNER_PROBE_MAX);
    // a short busy run whose first two probes were slowed: the later probes still find 1 thread
    timing_tuner(&tu, 2);
    n = run(&tu, 20, busy, 2);
    CHECK(n == 1, "busy, first two probes unlucky: %d threads after 20 units, want 1", n);

    // with a load reading (virtual clock): units of 50 or 150 ms, the load read every 2-5 units
    const double busy50[3] = {0, 50, 150}, idle50[3] = {0, 150, 50};
    int bad = 0;
    fake_tuner(&tu, 2, 2, 2.0);
    int at = run_virtual(&tu, 30, idle50, 1, &bad);
    CHECK(tu.cur == 2 && at == 0, "idle, load read: %d threads, %d units at 1 thread in 30, want 2 and 0 (no probe)", tu.cur, at);
    at = run_virtual(&tu, 30 + 2 * TUNER_PROBE_STEADY, idle50, 1, &bad);
    CHECK(tu.cur == 2 && at >= 1 && at <= 2, "idle, load read: %d units at 1 thread in %d more, want 1-2 (a check now and then)", at,
          2 * TUNER_PROBE_STEADY);
    fake_free = 1.5; // another process arrives: this process's two threads now get 1.5 CPUs
    long t0 = tu.units;
    while (tu.cur == 2 && tu.units < t0 + 30) run_virtual(&tu, tu.units + 1, busy50, 0, &bad);
    CHECK(tu.cur == 1 && tu.units - t0 <= 8, "load arrives: %d threads after %ld units, want 1 within 8", tu.cur, tu.units - t0);
    at = run_virtual(&tu, tu.units + 30, busy50, 2, &bad);
    CHECK(tu.cur == 1 && at == 0, "steady load: %d threads, %d units at 2 threads in 30, want 1 and 0", tu.cur, at);
    fake_free = 2; // it leaves
    t0 = tu.units;
    while (tu.cur == 1 && tu.units < t0 + 30) run_virtual(&tu, tu.units + 1, idle50, 0, &bad);
    CHECK(tu.cur == 2 && tu.units - t0 <= 8, "load leaves: %d threads after %ld units, want 2 within 8", tu.cur, tu.units - t0);
    // busy from the start: down in the warm-up, so no timed unit runs at 2 threads
    fake_tuner(&tu, 2, 2, 1.25);
    run_virtual(&tu, 2, busy50, 0, &bad);
    at = run_virtual(&tu, 20, busy50, 2, &bad);
    CHECK(tu.cur == 1 && at == 0, "busy from the start: %d threads, %d timed units at 2 threads, want 1 and 0", tu.cur, at);
    // a reading that misses what slows the threads (here: 2 threads faster although it sees one CPU
    // taken): the checks now and then find 2 threads, and the probes back to 1 thin out
    fake_tuner(&tu, 2, 2, 1.0);
    run_virtual(&tu, 2 * TUNER_PROBE_STEADY, idle50, 0, &bad);
    at = run_virtual(&tu, 2 * TUNER_PROBE_STEADY + 200, idle50, 1, &bad);
    CHECK(tu.cur == 2 && at <= 6, "load misread: %d threads, %d units at 1 thread in 200, want 2 and at most 6", tu.cur, at);
    // one reading off (a burst of other work between two readings): not a change of the load
    fake_tuner(&tu, 2, 2, 2.0);
    run_virtual(&tu, 12, idle50, 0, &bad);
    fake_free = 1.5;
    for (int calls = fake_calls; fake_calls == calls;) run_virtual(&tu, tu.units + 1, idle50, 0, &bad);
    fake_free = 2.0;
    at = run_virtual(&tu, tu.units + 20, idle50, 1, &bad);
    CHECK(tu.want == 2 && at == 0, "one reading off: want %d, %d units at 1 thread after it, want 2 and 0", tu.want, at);
    // a reading flipping between two counts every 8 units, each time back to a count whose probe
    // lost under it: the probes thin out
    fake_tuner(&tu, 2, 2, 2.0);
    at = 0;
    for (int k = 0; k < 300; k++) {
        fake_free = (tu.units / 8) % 2 ? 1.5 : 2.0;
        at += run_virtual(&tu, tu.units + 1, idle50, 1, &bad);
    }
    CHECK(tu.cur == 2 && at <= 10, "reading flipping every 8 units: %d threads, %d units at 1 thread in 300, want 2 and at most 10",
          tu.cur, at);
    // a moderate load: 1 thread faster than 2 under it, but slower than 2 were before it; the count
    // in use is timed afresh before the probe, so the probe wins
    const double before[3] = {0, 100, 50}, after[3] = {0, 68, 75};
    fake_tuner(&tu, 2, 2, 2.0);
    run_virtual(&tu, 40, before, 0, &bad);
    fake_free = 1.5;
    t0 = tu.units;
    while (tu.cur == 2 && tu.units < t0 + 30) run_virtual(&tu, tu.units + 1, after, 0, &bad);
    CHECK(tu.cur == 1 && tu.units - t0 <= 8, "moderate load arrives: %d threads after %ld units, want 1 within 8", tu.cur,
          tu.units - t0);
    // a reading that costs 2 ms of CPU: read every 0.4 s (200 x), and every 0.15 s again once cheap
    fake_tuner(&tu, 2, 2, 2.0);
    fake_spin_ms = 2;
    run_virtual(&tu, 10, idle50, 0, &bad);
    double every = tu.hint_every;
    fake_spin_ms = 0;
    run_virtual(&tu, 30, idle50, 0, &bad);
    CHECK(every > 0.35 && every < 0.6 && tu.hint_every == TUNER_HINT_SECONDS,
          "reading interval %.3f s at 2 ms a reading (want 0.4), %.3f s after (want %.2f)", every, tu.hint_every, TUNER_HINT_SECONDS);
    // the CPUs change at every reading (no two readings compare): timing alone finds 1 thread
    fake_tuner(&tu, 2, 2, 1.0);
    fake_new_mask = 1;
    run_virtual(&tu, 40, busy50, 0, &bad);
    CHECK(tu.want == 0 && tu.cur == 1, "CPUs changing at every reading: want %d, %d threads, want 0 and 1", tu.want, tu.cur);
    // a quota the reading cannot see (8 CPUs idle, 3 threads fastest, 8 asked for): the probes walk
    // down one thread at a time, in turn with the count the reading gives
    fake_tuner(&tu, 8, 8, 8.0);
    double quota[9];
    for (int k = 1; k <= 8; k++) quota[k] = k <= 3 ? 100.0 * 3 / k : 100.0 * (1 + 0.1 * (k - 3));
    run_virtual(&tu, 3000, quota, 0, &bad);
    at = run_virtual(&tu, 4000, quota, 3, &bad);
    CHECK(tu.cur == 3 && at >= 950, "8 CPUs, a quota of 3: %d threads after 3000 units, %d of the next 1000 at 3, want 3 and >= 950",
          tu.cur, at);
    // 8 CPUs, 2 threads asked for: 5 CPUs busy leaves both a CPU; 7 busy, one
    fake_tuner(&tu, 2, 8, 3.0);
    at = run_virtual(&tu, 30, idle50, 1, &bad);
    CHECK(tu.cur == 2 && at == 0, "8 CPUs, 5 busy: %d threads, %d units at 1, want 2 and 0", tu.cur, at);
    fake_free = 1.2;
    run_virtual(&tu, 45, busy50, 0, &bad);
    CHECK(tu.cur == 1, "8 CPUs, 7 busy: %d threads, want 1", tu.cur);
    // the reading fails at some point (also in the warm-up, after the first reading): never a count
    // outside 1..max, then timing alone
    const double equal150[3] = {0, 150, 150};
    for (int k = 0; k <= 4; k++) {
        fake_tuner(&tu, 2, 2, 1.25);
        fake_fail_after = k;
        run_virtual(&tu, 40, busy50, 0, &bad);
        CHECK(tu.sample == NULL && tu.cur == 1, "reading fails after %d samples: %d threads, sampler %s, want 1 and none", k,
              tu.cur, tu.sample ? "kept" : "dropped");
        fake_tuner(&tu, 2, 2, 2.0);
        fake_fail_after = k;
        run_virtual(&tu, 40, equal150, 0, &bad);
        CHECK(tu.sample == NULL && tu.cur >= 1 && tu.cur <= 2, "reading fails after %d samples, equal units: %d threads", k, tu.cur);
    }
    CHECK(bad == 0, "%d units at a thread count outside 1..max", bad);

    // parsing /proc/stat: guest time is inside user; steal is busy; nice counts unless asked not to;
    // a CPU of the set that is missing gives no reading
    {
        const char *text = "cpu  100 5 50 1000 10 0 0 0 0 0\n"
                           "cpu0 10 2 5 100 1 0 0 3 7 0\n"
                           "cpu1 20 1 5 100 1 0 0 0 0 0\n"
                           "cpu3 30 0 0 0 0 0 0 0 0 0\n"
                           "intr 1 2 3\n";
        unsigned char use[4] = {1, 1, 0, 1};
        LoadSample ls;
        FILE *f = fmemopen((void *)text, strlen(text), "r");
        int r = load_parse(f, use, 4, 3, 0, &ls);
        fclose(f);
        CHECK(r == 0 && ls.ncpu == 3 && ls.total == 278 && ls.busy == 73, "parse: %d, %d CPUs, total %g, busy %g; want 0, 3, 278, 73",
              r, ls.ncpu, ls.total, ls.busy);
        f = fmemopen((void *)text, strlen(text), "r");
        r = load_parse(f, use, 4, 3, 1, &ls);
        fclose(f);
        CHECK(r == 0 && ls.busy == 76, "parse counting nice: busy %g, want 76", ls.busy);
        unsigned char use2[4] = {1, 0, 1, 0};
        f = fmemopen((void *)text, strlen(text), "r");
        r = load_parse(f, use2, 4, 2, 0, &ls);
        fclose(f);
        CHECK(r == -1, "parse with cpu2 missing: %d, want -1", r);
    }

    // the real reading: a child keeping the last CPU busy is seen as about one CPU of other work
    // (over what is read without it); at nice 19 it yields, and is not counted, unless this process
    // is niced too
    LoadSample ls;
    cpu_set_t all;
    int expect = -1, last = -1;
    CPU_ZERO(&all);
#ifdef _OPENMP
    if (omp_get_proc_bind() != omp_proc_bind_false && omp_get_num_places() > 0) { // threads on the places
        for (int p = 0; p < omp_get_num_places(); p++) {
            int ids[CPU_SETSIZE], k = omp_get_place_num_procs(p);
            omp_get_place_proc_ids(p, ids);
            for (int i = 0; i < k; i++) CPU_SET(ids[i], &all);
        }
        printf("test_threads: threads bound (OMP_PROC_BIND), %d places\n", omp_get_num_places());
    } else
#endif
        sched_getaffinity(0, sizeof all, &all);
    expect = CPU_COUNT(&all);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &all)) last = c;
    if (load_sample(&ls) != 0) {
        printf("SKIP load reading: /proc/stat or the CPU mask cannot be read here\n");
    } else if (expect < 2) {
        CHECK(ls.ncpu == expect, "load_sample counts %d CPUs, want %d", ls.ncpu, expect);
        printf("SKIP load reading with a busy CPU: fewer than 2 CPUs to run on\n");
    } else {
        CHECK(ls.ncpu == expect, "load_sample counts %d CPUs, the threads may use %d", ls.ncpu, expect);
        int niced_self = getpriority(PRIO_PROCESS, 0) > 0;
        for (int niced = 0; niced <= 1; niced++) {
            double own0, own, f0 = foreign_over(300, &own0);
            pid_t child = burn(last, niced ? 19 : 0); // the OS puts this process on another CPU
            CHECK(child > 0, "fork failed");
            wait_ms(100);
            double f = foreign_over(400, &own) - f0;
            if (child > 0) { kill(child, SIGKILL); waitpid(child, NULL, 0); }
            if (niced && !niced_self)
                CHECK(f < 0.4, "one CPU kept busy by a process at nice 19: read as %.2f more CPUs of other work, want < 0.4", f);
            else
                CHECK(f > 0.6 && f < 1.4, "one CPU kept busy by another process%s: read as %.2f more CPUs of other work, want about 1",
                      niced ? " at nice 19 (this one niced too)" : "", f);
            CHECK(own > 0.7 && own < 1.2, "this process busy on one CPU: read as %.2f CPUs, want about 1", own);
        }
    }

    setenv("DDPM_FIXED_THREADS", "1", 1);
    tuner_init(&tu, 2);
    tu.clock = vclock;
    at = run_virtual(&tu, 20, busy, 2, NULL);
    CHECK(tu.cur == 2 && at == 20, "DDPM_FIXED_THREADS=1: %d threads, %d of 20 units at 2, want 2 and 20", tu.cur, at);
    unsetenv("DDPM_FIXED_THREADS");
    timing_tuner(&tu, 1);
    CHECK(run(&tu, 10, busy, 0) == 1, "one thread asked for: stays at 1");
    TEST_DONE("test_threads");
}
