// fuzz_util.h: what the fuzz harnesses share. Each harness defines LLVMFuzzerTestOneInput (the
// libFuzzer entry point): built with clang -fsanitize=fuzzer by `make fuzz`, or linked with
// replay.c by `make test`, which runs it on every file of its seed corpus (tests/fuzz/corpus/).
#ifndef DDPM_FUZZ_UTIL_H
#define DDPM_FUZZ_UTIL_H

#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir_path[64];
static int fuzz_rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}
static void fuzz_cleanup(void) { nftw(fuzz_dir_path, fuzz_rm, 8, FTW_DEPTH | FTW_PHYS); }

// a private directory for this process, made once and removed at exit (the harnesses hand files
// to the loaders)
static __attribute__((unused)) const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "/tmp/ddpm_fuzz_XXXXXX");
        if (!mkdtemp(fuzz_dir_path)) abort();
        atexit(fuzz_cleanup);
    }
    return fuzz_dir_path;
}

// write data to dir/name, making dir/sub if given; returns the path (static buffer)
static __attribute__((unused)) const char *fuzz_file(const char *sub, const char *name, const uint8_t *data, size_t n) {
    static char path[512];
    char d[256];
    snprintf(d, sizeof d, "%s%s%s", fuzz_dir(), sub ? "/" : "", sub ? sub : "");
    mkdir(d, 0755);
    snprintf(path, sizeof path, "%s/%s", d, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
