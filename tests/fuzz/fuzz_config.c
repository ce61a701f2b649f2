// fuzz_config.c: the config parser on arbitrary text; an accepted config must read back from its
// canonical text to the same canonical text (what a checkpoint stores, it can load).
#include "fuzz_util.h"

#include "core/common.h"
#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    ModelConfig c, d;
    char err[ERR_LEN], a[4096], b[4096];
    if (config_parse(&c, text, "fuzz", err, sizeof err) == 0) {
        config_to_text(&c, a, sizeof a);
        if (config_parse(&d, a, "canonical", err, sizeof err) != 0) abort();
        config_to_text(&d, b, sizeof b);
        if (strcmp(a, b)) abort();
    } else if (!err[0]) abort();
    free(text);
    return 0;
}
