// fuzz_safetensors.c: the safetensors reader on arbitrary bytes: an accepted file has every tensor
// inside its data; mapped onto a small model (the micro config of the corpus), an accepted file
// writes back and reads again to the same weights. A refusal always carries a message.
#include "fuzz_util.h"

#include "core/common.h"
#include "core/config.h"
#include "model/safetensors.h"
#include "model/unet.h"

static const char *MICRO =
    "im_channels = 1\nim_size = 4\ndown_channels = 8, 8\nmid_channels = 8, 8\ndown_sample = 1\ndown_attn = 0\n"
    "time_emb_dim = 8\nnum_down_layers = 1\nnum_mid_layers = 1\nnum_up_layers = 1\nnum_heads = 1\nnum_timesteps = 10\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Unet m;
    static int built;
    if (size > 1 << 22) return 0;
    if (!built) {
        ModelConfig c;
        char e[ERR_LEN];
        if (config_parse(&c, MICRO, "micro", e, sizeof e)) abort();
        unet_build(&m, &c);
        built = 1;
    }
    SafeTensors st;
    char err[ERR_LEN] = "";
    if (safetensors_parse(&st, data, size, "fuzz", err, sizeof err) != 0) {
        if (!err[0]) abort();
        return 0;
    }
    for (int i = 0; i < st.n_tensors; i++)
        if (st.tensors[i].begin > st.tensors[i].end || st.tensors[i].end > st.data_size) abort();
    float *p = malloc(m.n_params * sizeof(float));
    err[0] = 0;
    if (safetensors_to_params(&st, "fuzz", &m, p, err, sizeof err) == 0) {
        const char *path = fuzz_file(NULL, "w.safetensors", NULL, 0);
        SafeTensors back;
        float *q = malloc(m.n_params * sizeof(float));
        if (safetensors_write(path, &m, p, NULL, 0, err, sizeof err)) abort();
        if (safetensors_read(&back, path, err, sizeof err) || safetensors_to_params(&back, path, &m, q, err, sizeof err)) abort();
        if (memcmp(p, q, m.n_params * sizeof(float))) abort();
        safetensors_free(&back);
        free(q);
    } else if (!err[0]) abort();
    free(p);
    safetensors_free(&st);
    return 0;
}
