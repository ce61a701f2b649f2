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

#endif
