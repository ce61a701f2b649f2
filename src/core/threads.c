// threads.c: thread count helpers (threads.h).
#include "core/threads.h"

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
