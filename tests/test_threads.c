// test_threads.c: the thread-count tuner (core/threads.h) on synthetic work whose duration
// depends on the thread count: it must move to the faster count, come back when the other one
// becomes faster, and never move when DDPM_FIXED_THREADS=1. With a load reading (a synthetic one
// here) it must move as soon as the load changes and try nothing while the load is steady; the
// reading of the real /proc/stat must see a process that keeps one CPU busy.
#define _GNU_SOURCE // sched_setaffinity
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
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

// a synthetic load reading on 2 CPUs: this process runs flat out on one, and other processes leave
// fake_free CPUs to it (so load_foreign reads 2 - fake_free)
static double fake_free = 2, fake_busy, fake_total, fake_own, fake_wall = -1;
static int fake_sample(LoadSample *s) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double now = t.tv_sec + 1e-9 * t.tv_nsec, dt = fake_wall < 0 ? 0 : now - fake_wall;
    fake_wall = now;
    fake_own += dt;
    fake_busy += 100 * dt * (1 + 2 - fake_free);
    fake_total += 100 * dt * 2;
    *s = (LoadSample){.wall = now, .own = fake_own, .busy = fake_busy, .total = fake_total, .ncpu = 2};
    return 0;
}

// run units until `until` with the synthetic load; returns how many ran at `count` threads
static int run_loaded(ThreadTuner *tu, long until, const double *ms_at, int count) {
    int at = 0;
    while (tu->units < until) {
        tuner_begin(tu);
        int n = threads_in_use();
        at += n == count;
        wait_ms(ms_at[n]);
        tuner_end(tu, 1);
    }
    return at;
}

// keep CPU `cpu` busy in a child process at niceness `nice_inc`; returns its pid
static pid_t burn(int cpu, int nice_inc) {
    pid_t pid = fork();
    if (pid == 0) {
        if (nice_inc && nice(nice_inc) == -1) _exit(1);
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
        for (volatile unsigned long i = 0;; i++) {}
    }
    return pid;
}

int main(void) {
    ThreadTuner tu;
    const double busy[3] = {0, 1.0, 3.0}, idle[3] = {0, 3.0, 1.0}; // ms per unit at 1 and 2 threads
    unsetenv("DDPM_FIXED_THREADS");
    tuner_init(&tu, 2);
    tu.sample = NULL; // time only: the real load of the machine must not steer these
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
    tu.sample = NULL;
    n = run_noisy(&tu, 20, busy, 2);
    CHECK(n == 1, "busy, first two probes unlucky: %d threads after 20 units, want 1", n);

    // with a load reading: units of 20-60 ms, so that it is read every few units
    const double busy20[3] = {0, 20, 60}, idle20[3] = {0, 60, 20};
    tuner_init(&tu, 2);
    tu.sample = fake_sample;
    fake_free = 2;
    int probes = run_loaded(&tu, 12, idle20, 1);
    CHECK(tu.cur == 2 && probes == 0, "idle, load read: %d threads, %d units at 1 thread, want 2 and 0 (no probe)", tu.cur, probes);
    fake_free = 1.5; // another process arrives: this process's two threads now get 1.5 CPUs
    long t0 = tu.units;
    while (tu.cur == 2 && tu.units < t0 + 20) run_loaded(&tu, tu.units + 1, busy20, 0);
    CHECK(tu.cur == 1 && tu.units - t0 <= 10, "load arrives: %d threads after %ld units, want 1 within 10", tu.cur, tu.units - t0);
    probes = run_loaded(&tu, tu.units + 30, busy20, 2);
    CHECK(tu.cur == 1 && probes == 0, "steady load: %d threads, %d units at 2 threads in 30, want 1 and 0", tu.cur, probes);
    fake_free = 2; // it leaves
    t0 = tu.units;
    while (tu.cur == 1 && tu.units < t0 + 20) run_loaded(&tu, tu.units + 1, idle20, 0);
    CHECK(tu.cur == 2 && tu.units - t0 <= 10, "load leaves: %d threads after %ld units, want 2 within 10", tu.cur, tu.units - t0);
    // busy from the start: down in the warm-up, so no timed unit runs at 2 threads
    tuner_init(&tu, 2);
    tu.sample = fake_sample;
    fake_free = 1.25;
    run_loaded(&tu, 2, busy20, 0);
    probes = run_loaded(&tu, 20, busy20, 2);
    CHECK(tu.cur == 1 && probes == 0, "busy from the start: %d threads, %d timed units at 2 threads, want 1 and 0", tu.cur, probes);

    // the real reading: a child keeping the last CPU busy is seen as about one CPU of other work
    LoadSample a, b;
    cpu_set_t all;
    if (load_sample(&a) != 0) {
        printf("SKIP load reading: /proc/stat or the CPU mask cannot be read here\n");
    } else if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) < 2) {
        printf("SKIP load reading with a busy CPU: fewer than 2 CPUs to run on\n");
    } else {
        int last = -1;
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &all)) last = c;
        for (int niced = 0; niced <= 1; niced++) {
            pid_t child = burn(last, niced ? 19 : 0); // the OS puts this process on another CPU
            CHECK(child > 0, "fork failed");
            wait_ms(100);
            load_sample(&a);
            wait_ms(400); // this process busy too
            load_sample(&b);
            double f = load_foreign(&a, &b), own = (b.own - a.own) / (b.wall - a.wall);
            if (child > 0) { kill(child, SIGKILL); waitpid(child, NULL, 0); }
            CHECK(b.ncpu == CPU_COUNT(&all), "load_sample counts %d CPUs, the mask has %d", b.ncpu, CPU_COUNT(&all));
            if (niced) // it yields to this process: not a load to make room for
                CHECK(f < 0.4, "one CPU kept busy by a process at nice 19: read as %.2f CPUs of other work, want < 0.4", f);
            else
                CHECK(f > 0.6 && f < 1.4, "one CPU kept busy by another process: read as %.2f CPUs of other work, want about 1", f);
            CHECK(own > 0.8 && own < 1.2, "this process busy on one CPU: read as %.2f CPUs, want about 1", own);
        }
    }

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
