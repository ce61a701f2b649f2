// reduce.c: parameter-gradient partials summed in chunk order (see reduce.h).
#include "nn/reduce.h"

// dst[i] += sum_c partial_c[poff + i], c = 0 .. GRAD_CHUNKS - 1 in order
void reduce_chunks(float *dst, float *ws, size_t wsz, size_t off, size_t psize, size_t poff, long n, int nt) {
    if (!dst) return;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float s = 0.0f;
        for (int c = 0; c < GRAD_CHUNKS; c++) s += chunk_partial(ws, wsz, off, psize, c, nt)[poff + i];
        dst[i] += s;
    }
}

// dst[j][i] += sum_c partial_c[i cols + j] (i < rows, j < cols), c = 0 .. GRAD_CHUNKS - 1 in order:
// partials kept transposed (dw^T[CKK, Co]) reduced into dst[Co, CKK]
void reduce_chunks_transposed(float *dst, float *ws, size_t wsz, size_t off, size_t psize, int rows, int cols, int nt) {
    if (!dst) return;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float s = 0.0f;
            for (int c = 0; c < GRAD_CHUNKS; c++) s += chunk_partial(ws, wsz, off, psize, c, nt)[(size_t)i * cols + j];
            dst[(size_t)j * rows + i] += s;
        }
}
