// safetensors.h: the U-Net's weights as a safetensors file (the format of Hugging Face's
// safetensors library, read by PyTorch tooling), written and read without any dependency.
//
//   uint64 N (little-endian)   length of the header
//   char header[N]             JSON: {"__metadata__": {"key": "string", ...},
//                                     "NAME": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
//                              (padded with spaces to a multiple of 8)
//   bytes data[]               tensor NAME is data[b, e): its values, row-major, little-endian
//
// Names and shapes are PyTorch's state_dict of tools/unet_torch.py (= DDPM-Pytorch's
// models/unet_base.py). The reader is strict: every dtype F32, offsets inside the data, the
// tensors tiling the data exactly (no gap, no overlap), no name twice; errors are one line
// naming the file and the problem (and the tensor).
#ifndef DDPM_SAFETENSORS_H
#define DDPM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model/unet.h"

#define ST_MAX_HEADER (100u << 20) // the safetensors library's own limit
#define ST_MAX_TENSORS 100000
#define ST_MAX_NAME 255
#define ST_MAX_DIMS 8

typedef struct {
    char name[ST_MAX_NAME + 1];
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;  // byte range in the data
} StTensor;

typedef struct {
    unsigned char *file;  // the whole file (owned) or NULL when parsed from a caller's buffer
    const unsigned char *data;
    uint64_t data_size;
    int n_tensors;
    StTensor *tensors;
    int n_meta;
    char **meta;          // key, value, key, value, ... (decoded strings)
} SafeTensors;

// Parse and validate buf[0..n) (name is used in messages). 0, or -1 + a one-line err.
int safetensors_parse(SafeTensors *st, const unsigned char *buf, size_t n, const char *name, char *err, size_t errlen);
// Read a file and parse it.
int safetensors_read(SafeTensors *st, const char *path, char *err, size_t errlen);
void safetensors_free(SafeTensors *st);
// the metadata value of key, or NULL
const char *safetensors_meta(const SafeTensors *st, const char *key);
// The file's tensors into params[m->n_params]: every tensor of m present with its shape, no other
// tensor, every value finite. 0, or -1 + "NAME: tensor 'x' ..." in err.
int safetensors_to_params(const SafeTensors *st, const char *name, const Unet *m, float *params, char *err, size_t errlen);
// Write params (the layout of m) with metadata (n_meta key/value pairs) atomically to path.
int safetensors_write(const char *path, const Unet *m, const float *params, const char *const *meta, int n_meta, char *err,
                      size_t errlen);
// 1 if the file at path starts like a safetensors file (a header length, then '{'), else 0
int safetensors_sniff(const char *path);

#endif
