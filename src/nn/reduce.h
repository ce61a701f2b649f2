// reduce.h: the deterministic reduction of parameter gradients over a batch.
#ifndef DDPM_REDUCE_H
#define DDPM_REDUCE_H

#include <stddef.h>
#include <string.h>


// Parameter gradients are summed over the batch in GRAD_CHUNKS fixed chunks of images (chunk c =
// images [c B / GRAD_CHUNKS, (c + 1) B / GRAD_CHUNKS)). The chunks are handed to the threads
// dynamically, so a thread the machine slows down takes fewer of them; each chunk has its own
// partial sum, and the partials are added in chunk order. The result depends neither on the
// schedule nor on the thread count. Chunk c's partial (psize floats) is slot c / nt of thread
// region c % nt, at `off` in the region: every region has room for GRAD_CHUNKS slots.
#define GRAD_CHUNKS 16


static inline float *chunk_partial(float *ws, size_t wsz, size_t off, size_t psize, int c, int nt) {
    return ws + (size_t)(c % nt) * wsz + off + (size_t)(c / nt) * psize;
}

// start chunk c: its images [*lo, *hi) and its partial, zeroed
static inline float *chunk_begin(float *ws, size_t wsz, size_t off, size_t psize, int c, int nt, int B, int *lo, int *hi) {
    float *part = chunk_partial(ws, wsz, off, psize, c, nt);
    memset(part, 0, psize * sizeof(float));
    *lo = (int)((long)B * c / GRAD_CHUNKS);
    *hi = (int)((long)B * (c + 1) / GRAD_CHUNKS);
    return part;
}


// dst[i] += sum_c partial_c[poff + i], c = 0 .. GRAD_CHUNKS - 1 in order
void reduce_chunks(float *dst, float *ws, size_t wsz, size_t off, size_t psize, size_t poff, long n, int nt);
// dst[j][i] += sum_c partial_c[i cols + j] (i < rows, j < cols), c = 0 .. GRAD_CHUNKS - 1 in order:
// partials kept transposed (dw^T[CKK, Co]) reduced into dst[Co, CKK]
void reduce_chunks_transposed(float *dst, float *ws, size_t wsz, size_t off, size_t psize, int rows, int cols, int nt);

#endif
