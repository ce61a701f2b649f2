// data.h: the training data. MNIST IDX files (gzip or plain) or a folder of PNG/JPEG images,
// loaded fully into memory as uint8 grayscale, plus IDX read/write of single image files.
#ifndef DDPM_DATA_H
#define DDPM_DATA_H

#include <stddef.h>
#include <stdint.h>

#define DATA_LABEL_UNKNOWN 255
#define IDX_MAX_DIM 4096        // largest accepted image side
#define IDX_MAX_COUNT 10000000  // largest accepted number of items in one file
#define IDX_MAX_BYTES (1ull << 30) // largest accepted data of one file (MNIST's training images: 47 MB)

typedef struct {
    int n, h, w;          // n images of h x w, 1 channel
    uint8_t *pixels;      // [n*h*w], 0..255
    uint8_t *labels;      // [n], 0..9, or 255 = unknown (image folders with non-digit subfolders)
} Dataset;

// Load the training split from `dir` (test_split = 1: the MNIST t10k split instead).
// If dir holds train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] (t10k-* for the test split),
// read those (gzip or uncompressed). Otherwise read every .png/.jpg/.jpeg below dir recursively
// (sorted paths) as 1-channel grayscale; label = immediate parent folder name if it is a single digit,
// else 255. All images must have the same size; expect_size > 0: every image must be
// expect_size x expect_size. Returns 0, or -1 with a one-line message naming the file in err.
// On failure *d is left zeroed (nothing to free).
int dataset_load(Dataset *d, const char *dir, int test_split, int expect_size, char *err, size_t errlen);
void dataset_free(Dataset *d);
// x[B, h*w] = 2 * pixel/255 - 1 for images idx[0..B)
void dataset_batch(const Dataset *d, const int *idx, int B, float *x);

// Single IDX image file (uint8, magic 0x00000803, dims n x h x w). Writing: plain (not gzip),
// via a temp file + rename. Reading: gzip or plain, with every header field and the length checked.
// *pixels is malloc'ed (free with free()). Return 0, or -1 with a message in err.
int idx_write_images(const char *path, const uint8_t *pixels, int n, int h, int w, char *err, size_t errlen);
int idx_read_images(const char *path, uint8_t **pixels, int *n, int *h, int *w, char *err, size_t errlen);

#endif
