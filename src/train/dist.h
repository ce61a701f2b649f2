// dist.h: data-parallel training and sampling over MPI ranks (make MPI=1, -DDDPM_MPI). Without
// MPI, and in an MPI build run as one process, there is one rank and every call is a no-op.
//
// Rank r of N owns rows [floor(r n / N), floor((r + 1) n / N)) of any n rows (batch images,
// sample images): a function of (n, N, r) only. Sums over ranks are taken in rank order
// (0, 1, ..., N-1) by the rank that owns each part and sent back, so every rank gets the same
// bits, and a run repeats exactly with the same rank count.
#ifndef DDPM_DIST_H
#define DDPM_DIST_H

#include <stddef.h>

void dist_init(int *argc, char ***argv); // MPI_Init_thread (funneled: MPI from the main thread only)
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
static inline int dist_root(void) { return dist_rank() == 0; }

// this rank's rows [*lo, *hi) of n
void dist_slice(int n, int *lo, int *hi);
// the most rows a rank owns: ceil(n / N)
static inline int dist_slice_max(int n) { return (n + dist_size() - 1) / dist_size(); }

// x[i] = sum over ranks of x[i], in rank order; the same result on every rank.
// Moves 2 (N-1)/N n floats per rank (a reduce-scatter, then an all-gather).
void dist_sum_floats(float *x, size_t n);
// rows[n, d]: every rank's own rows (dist_slice) copied into every rank
void dist_allgather_rows(double *rows, int n, int d);
// x[n, d]: every rank's own rows gathered into rank 0
void dist_gather_rows_root(float *x, int n, size_t d);
// the largest v over the ranks
int dist_max_int(int v);

#endif
