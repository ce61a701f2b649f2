// dist.c: the ranks of a data-parallel run (dist.h). Built with MPI under -DDDPM_MPI (make MPI=1);
// otherwise one rank and no-ops.
#include "train/dist.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#ifdef DDPM_MPI
#include <mpi.h>

static int g_rank = 0, g_size = 1, g_on = 0;
static int *g_cnt, *g_off, *g_rcnt, *g_roff; // [N] per-rank counts and offsets of the current call
static float *g_buf;                          // receive buffer of dist_sum_floats, grown once
static size_t g_buf_n;

void dist_init(int *argc, char ***argv) {
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) die("MPI_Init_thread failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_on = 1;
    g_cnt = callocCheck((size_t)g_size, sizeof(int));
    g_off = callocCheck((size_t)g_size, sizeof(int));
    g_rcnt = callocCheck((size_t)g_size, sizeof(int));
    g_roff = callocCheck((size_t)g_size, sizeof(int));
}

void dist_finalize(void) {
    if (!g_on) return;
    MPI_Finalize();
    g_on = 0;
    free(g_cnt); free(g_off); free(g_rcnt); free(g_roff); free(g_buf);
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }

static long part_lo(long n, int r) { return n * r / g_size; }

void dist_slice(int n, int *lo, int *hi) {
    *lo = (int)part_lo(n, g_rank);
    *hi = (int)part_lo(n, g_rank + 1);
}

// g_cnt / g_off: the parts of n elements of `unit` each (dist_slice), in units of `unit`
static void parts(long n, long unit) {
    for (int q = 0; q < g_size; q++) {
        long lo = part_lo(n, q), hi = part_lo(n, q + 1);
        if (hi * unit > 0x7fffffffL) die("MPI: %ld elements are more than one message carries", hi * unit);
        g_cnt[q] = (int)((hi - lo) * unit);
        g_off[q] = (int)(lo * unit);
    }
}

// reduce-scatter: rank r receives part r of every rank's x (all-to-all) and sums the N copies in
// rank order; all-gather: every rank receives every summed part
void dist_sum_floats(float *x, size_t n) {
    if (g_size == 1 || n == 0) return;
    parts((long)n, 1);
    int mine = g_cnt[g_rank];
    size_t need = (size_t)g_size * (size_t)(mine > 0 ? mine : 1);
    if (need > g_buf_n) { // the largest part of the first call: grown once, not per step
        free(g_buf);
        g_buf = alignedCalloc(need * sizeof(float));
        g_buf_n = need;
    }
    for (int q = 0; q < g_size; q++) {
        g_rcnt[q] = mine;
        g_roff[q] = q * mine;
    }
    MPI_Alltoallv(x, g_cnt, g_off, MPI_FLOAT, g_buf, g_rcnt, g_roff, MPI_FLOAT, MPI_COMM_WORLD);
    float *dst = x + g_off[g_rank], *buf = g_buf;
    int N = g_size;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < mine; i++) { // x = ((x_0 + x_1) + x_2) + ...
        float s = buf[i];
        for (int q = 1; q < N; q++) s += buf[(size_t)q * mine + i];
        dst[i] = s;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, x, g_cnt, g_off, MPI_FLOAT, MPI_COMM_WORLD);
}

void dist_allgather_rows(double *rows, int n, int d) {
    if (g_size == 1) return;
    parts(n, d);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DOUBLE, rows, g_cnt, g_off, MPI_DOUBLE, MPI_COMM_WORLD);
}

void dist_gather_rows_root(float *x, int n, size_t d) {
    if (g_size == 1) return;
    parts(n, (long)d);
    if (g_rank == 0)
        MPI_Gatherv(MPI_IN_PLACE, 0, MPI_FLOAT, x, g_cnt, g_off, MPI_FLOAT, 0, MPI_COMM_WORLD);
    else
        MPI_Gatherv(x + g_off[g_rank], g_cnt[g_rank], MPI_FLOAT, NULL, NULL, NULL, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

int dist_max_int(int v) {
    if (g_size == 1) return v;
    int m;
    MPI_Allreduce(&v, &m, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

#else // one process

void dist_init(int *argc, char ***argv) { (void)argc; (void)argv; }
void dist_finalize(void) {}
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
void dist_slice(int n, int *lo, int *hi) { *lo = 0; *hi = n; }
void dist_sum_floats(float *x, size_t n) { (void)x; (void)n; }
void dist_allgather_rows(double *rows, int n, int d) { (void)rows; (void)n; (void)d; }
void dist_gather_rows_root(float *x, int n, size_t d) { (void)x; (void)n; (void)d; }
int dist_max_int(int v) { return v; }

#endif
