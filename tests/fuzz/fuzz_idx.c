// fuzz_idx.c: the IDX reader (gzip or plain) on arbitrary bytes: a clean error or a valid image
// array, never a crash, an overflow or a huge allocation.
#include "fuzz_util.h"

#include "core/common.h"
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(NULL, "images.idx", data, size);
    uint8_t *px = NULL;
    int n, h, w;
    char err[ERR_LEN];
    if (idx_read_images(path, &px, &n, &h, &w, err, sizeof err) == 0) {
        if (n <= 0 || h <= 0 || w <= 0 || !px) abort();
        volatile uint8_t s = px[(size_t)n * h * w - 1]; // the whole array is there
        (void)s;
        free(px);
    } else if (!err[0]) abort(); // a failure always says why
    return 0;
}
