// threads.c: thread count helpers (threads.h).
#define _GNU_SOURCE // sched_getaffinity
#include "core/threads.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

static double clock_of(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static double tuner_clock(void) { return clock_of(CLOCK_MONOTONIC); }

int load_parse(FILE *f, const unsigned char *use, int nuse, int want, int count_nice, LoadSample *s) {
    char line[512];
    s->busy = s->total = 0;
    s->ncpu = 0;
    // "cpuN user nice system idle iowait irq softirq steal guest guest_nice" (ticks; guest time is
    // inside user and nice), one line per CPU after the "cpu" line of their sums
    while (fgets(line, sizeof line, f) && !strncmp(line, "cpu", 3)) {
        int cpu;
        unsigned long long v[8] = {0};
        if (line[3] < '0' || line[3] > '9') continue;
        if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) < 5)
            continue;
        if (cpu < 0 || cpu >= nuse || !use[cpu]) continue;
        double all = 0;
        for (int i = 0; i < 8; i++) all += (double)v[i];
        s->total += all;
        s->busy += all - (double)v[3] - (double)v[4] - (count_nice ? 0 : (double)v[1]);
        s->ncpu++;
    }
    // a CPU missing (e.g. numbered otherwise inside a container): no reading rather than a wrong one
    return s->ncpu == want && s->total > 0 ? 0 : -1;
}

int load_sample(LoadSample *s) {
#ifdef __linux__
    static unsigned char use[CPU_SETSIZE];
    cpu_set_t set;
    CPU_ZERO(&set);
#ifdef _OPENMP
    // bound threads (OMP_PROC_BIND) run on the places' CPUs; the main thread's own mask is one place
    if (omp_get_proc_bind() != omp_proc_bind_false && omp_get_num_places() > 0) {
        for (int p = 0; p < omp_get_num_places(); p++) {
            int ids[CPU_SETSIZE], k = omp_get_place_num_procs(p);
            if (k > CPU_SETSIZE) return -1;
            omp_get_place_proc_ids(p, ids);
            for (int i = 0; i < k; i++)
                if (ids[i] >= 0 && ids[i] < CPU_SETSIZE) CPU_SET(ids[i], &set);
        }
    } else
#endif
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    unsigned long h = 1469598103934665603UL; // FNV-1a over the CPU numbers
    for (int c = 0; c < CPU_SETSIZE; c++) {
        use[c] = CPU_ISSET(c, &set) != 0;
        if (use[c]) h = (h ^ (unsigned long)c) * 1099511628211UL;
    }
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    // time of niced processes (the nice column) yields to a process that is not niced: free for it
    int r = load_parse(f, use, CPU_SETSIZE, CPU_COUNT(&set), getpriority(PRIO_PROCESS, 0) > 0, s);
    fclose(f);
    if (r) return -1;
    s->mask = h;
    s->wall = clock_of(CLOCK_MONOTONIC);
    s->own = clock_of(CLOCK_PROCESS_CPUTIME_ID);
    return 0;
#else
    (void)s;
    return -1;
#endif
}

// busy CPUs = ncpu * busy ticks / all ticks; other processes' share = that minus this process's
double load_foreign(const LoadSample *a, const LoadSample *b) {
    double dt = b->wall - a->wall, dtot = b->total - a->total;
    if (dt <= 0 || dtot <= 0 || a->ncpu != b->ncpu || a->mask != b->mask) return 0;
    double f = b->ncpu * (b->busy - a->busy) / dtot - (b->own - a->own) / dt;
    return f < 0 ? 0 : f > b->ncpu ? b->ncpu : f;
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
    t->clock = tuner_clock;
    t->sample = load_sample;
    t->hint_every = TUNER_HINT_SECONDS;
}

// read the load when hint_every seconds have passed since the last sample; 1 if `want` changed
static int tuner_hint(ThreadTuner *t) {
    if (t->fixed || t->max < 2 || !t->sample) return 0;
    if (t->have_last && t->clock() - t->last.wall < t->hint_every) return 0;
    LoadSample s;
    double c0 = clock_of(CLOCK_THREAD_CPUTIME_ID);
    int r = t->sample(&s);
    // reading /proc/stat takes long on machines with many CPUs: keep it under 0.5% of the time
    double cost = clock_of(CLOCK_THREAD_CPUTIME_ID) - c0;
    t->hint_every = 200 * cost > TUNER_HINT_SECONDS ? 200 * cost : TUNER_HINT_SECONDS;
    if (r != 0) { // unreadable: timing alone from now on
        t->sample = NULL;
        int changed = t->want != 0;
        t->want = t->pending = 0;
        return changed;
    }
    if (!t->have_last || s.mask != t->last.mask || s.ncpu != t->last.ncpu) { // the first (or other CPUs)
        t->last = s;
        t->have_last = 1;
        return 0;
    }
    double avail = s.ncpu - load_foreign(&t->last, &s);
    t->last = s;
    int w = (int)floor(avail + 0.4);
    w = w < 1 ? 1 : w > t->max ? t->max : w;
    if (w == t->want) {
        t->pending = 0;
        return 0;
    }
    if (t->want != 0 && w != t->pending) { // read once (after the first reading): wait for a second
        t->pending = w;
        return 0;
    }
    t->want = w;
    t->pending = 0;
    return 1;
}

// a probe at n lost under this same reading
static int lost_here(const ThreadTuner *t, int n) { return t->want > 0 && t->lost_at[n] == t->want; }

void tuner_begin(ThreadTuner *t) {
    if (t->units == 0) tuner_hint(t); // the first sample: the load of the first unit is measured from here
    t->next = t->cur;
    if (!t->fixed && t->max > 1 && t->units >= t->next_probe) {
        int n = t->cur;
        if (t->want > 0 && t->want != t->cur && !lost_here(t, t->want))
            n = t->want; // where the load leaves a CPU to each thread
        else if (t->want > 0 && t->want != t->cur) { // that lost: one thread the other way, and `want`, in turn
            t->away = !t->away;
            n = !t->away ? t->want : t->want > t->cur ? t->cur - 1 : t->cur + 1;
        }
        else if (t->want > 0 && t->units < t->last_probe + TUNER_PROBE_STEADY)
            t->next_probe = t->last_probe + TUNER_PROBE_STEADY; // it agrees: a check now and then only
        else if (t->want == 0 && t->sample && t->have_last && t->units < 2 * TUNER_PROBE_FIRST)
            t->next_probe = t->units + 1; // the first reading is under way
        else { // one thread down or up, in turn
            n = t->cur + t->probe_dir;
            if (n < 1 || n > t->max) n = t->cur - t->probe_dir;
            t->probe_dir = -t->probe_dir;
        }
        if (n < 1 || n > t->max || n == t->cur) {
            if (t->next_probe <= t->units) t->next_probe = t->units + t->interval;
        } else if (t->avg[t->cur] <= 0)
            t->next_probe = t->units + 1; // time the count in use first
        else {
            t->next = n;
            t->probe_want = t->want;
        }
    }
    set_threads(t->next);
    t->t0 = t->clock();
}

void tuner_end(ThreadTuner *t, double work) {
    double per = (t->clock() - t->t0) / (work > 0 ? work : 1);
    t->units++;
    int changed = tuner_hint(t);
    if (t->units <= 2) { // warm-up (first touches of memory, caches): nothing timed, but the load is known
        if (changed && t->want > 0 && t->want < t->cur) t->cur = t->want;
        return;
    }
    double *a = &t->avg[t->next];
    if (t->next != t->cur) { // a probe: one measurement against the mean of the count in use
        *a = per;
        t->last_probe = t->units;
        if (t->avg[t->cur] > 0 && per < 0.95 * t->avg[t->cur]) { // move (and, timing alone, probe back soon)
            t->cur = t->next;
            memset(t->lost_at, 0, sizeof t->lost_at);
            t->interval = TUNER_PROBE_FIRST;
            t->next_probe = t->units + t->interval;
        } else { // lost: the next probe after this interval, the one after it twice as far
            t->lost_at[t->next] = t->probe_want;
            t->next_probe = t->units + t->interval;
            t->interval = 2 * t->interval < TUNER_PROBE_MAX ? 2 * t->interval : TUNER_PROBE_MAX;
        }
    } else
        *a = *a > 0 ? 0.8 * *a + 0.2 * per : per;
    if (changed && t->want > 0 && t->want != t->cur && !lost_here(t, t->want)) { // the load moved: look now,
        t->avg[t->cur] = 0; // against a fresh time of the count in use,
        t->next_probe = t->units;
        t->interval = TUNER_PROBE_FIRST; // and back off afresh
    }
}
