// image.c: [-1,1] floats -> uint8 -> PNG grid (layout of torchvision.utils.make_grid), via stb_image_write.
#define _POSIX_C_SOURCE 200809L
#include "data/image.h"
#include "core/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stb_image_write.h>

// stb_image_write's output, gathered in memory
typedef struct { unsigned char *p; size_t n, cap; } MemOut;
static void mem_write(void *ctx, void *data, int size) {
    MemOut *m = ctx;
    if (size <= 0) return;
    if (m->n + (size_t)size > m->cap) {
        size_t cap = m->cap ? m->cap : 1 << 16;
        while (cap < m->n + (size_t)size) cap *= 2;
        unsigned char *q = mallocCheck(cap);
        if (m->n) memcpy(q, m->p, m->n);
        free(m->p);
        m->p = q;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

uint8_t to_u8(float x) {
    float v = (x + 1.0f) * 0.5f;
    if (!(v > 0.0f)) return 0;  // also NaN
    if (v >= 1.0f) return 255;
    return (uint8_t)(v * 255.0f + 0.5f);  // round half up, like torchvision's mul(255).add_(0.5)
}

int write_png_grid(const char *path, const float *x, int n, int C, int H, int W, int ncols, int pad,
                   char *err, size_t errlen) {
    if (n <= 0 || (C != 1 && C != 3) || H <= 0 || W <= 0 || ncols <= 0 || pad < 0)
        return set_error(err, errlen, "%s: bad grid arguments n=%d C=%d H=%d W=%d ncols=%d pad=%d", path, n, C, H, W,
                    ncols, pad);
    int cols = ncols < n ? ncols : n;
    int rows = (n + cols - 1) / cols;
    long long gw = (long long)(W + pad) * cols + pad, gh = (long long)(H + pad) * rows + pad;
    if (gw * C > (1 << 30) || gh > (1 << 30) || gw * gh * C > (1LL << 31))
        return set_error(err, errlen, "%s: grid of %lldx%lld pixels is too large for a PNG", path, gw, gh);
    // interleaved [gh, gw, C], zero (black) background = the padding
    uint8_t *grid = callocCheck((size_t)(gw * gh * C), 1);
    size_t plane = (size_t)H * W;
    for (int i = 0; i < n; i++) {
        int r = i / cols, c = i % cols;
        size_t y0 = (size_t)r * (H + pad) + pad, x0 = (size_t)c * (W + pad) + pad;
        const float *img = x + (size_t)i * C * plane;
        for (int y = 0; y < H; y++) {
            uint8_t *row = grid + ((y0 + y) * (size_t)gw + x0) * C;
            for (int xx = 0; xx < W; xx++)
                for (int ch = 0; ch < C; ch++) row[(size_t)xx * C + ch] = to_u8(img[ch * plane + (size_t)y * W + xx]);
        }
    }
    // encode in memory, then write atomically (readers never see a partial PNG; a failed write,
    // e.g. a full disk, leaves the previous file)
    MemOut png = {0};
    int rc = 0;
    if (!stbi_write_png_to_func(mem_write, &png, (int)gw, (int)gh, C, grid, (int)gw * C) || png.n == 0)
        rc = set_error(err, errlen, "%s: cannot encode the PNG", path);
    else rc = write_file_atomic(path, png.p, png.n, err, errlen);
    free(png.p);
    free(grid);
    return rc;
}
