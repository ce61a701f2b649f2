// fuzz_images.c: the image-folder loader (stb_image) on an arbitrary file named as a PNG in a
// digit folder: a clean error or a dataset of one 28x28 image.
#include "fuzz_util.h"

#include "core/common.h"
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char sub[300];
    snprintf(sub, sizeof sub, "images");
    fuzz_file(sub, ".keep", NULL, 0);
    snprintf(sub, sizeof sub, "images/7");
    fuzz_file(sub, "x.png", data, size);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/images", fuzz_dir());
    Dataset d;
    char err[ERR_LEN];
    if (dataset_load(&d, dir, 0, 28, err, sizeof err) == 0) {
        if (d.n != 1 || d.h != 28 || d.w != 28) abort();
        dataset_free(&d);
    } else if (!err[0]) abort();
    return 0;
}
