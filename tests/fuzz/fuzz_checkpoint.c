// fuzz_checkpoint.c: the checkpoint loader. Structure-aware: an input that starts with the magic
// gets its CRC recomputed, so the mutations reach the field checks behind it (with a wrong CRC
// every mutation would stop at the CRC). A loaded checkpoint must be consistent with its config.
#include "fuzz_util.h"

#include <zlib.h>

#include "core/common.h"
#include "model/unet.h"
#include "train/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    if (size >= 24 && !memcmp(copy, "DDPMCKPT", 8)) {
        uint32_t crc = (uint32_t)crc32(0L, copy, (uInt)(size - 4));
        memcpy(copy + size - 4, &crc, 4);
    }
    const char *path = fuzz_file(NULL, "x.ckpt", copy, size);
    free(copy);
    Checkpoint ck;
    char err[ERR_LEN];
    if (checkpoint_load(path, &ck, err, sizeof err) == 0) {
        size_t n, per;
        unet_size(&ck.cfg, &n, &per);
        if (n != ck.n_params || !ck.params || !ck.m || !ck.v) abort();
        if (ck.st.epoch_pos + ck.st.batch > ck.st.n_data) abort();
        checkpoint_free(&ck);
    } else if (!err[0]) abort();
    return 0;
}
