// common.h: checked allocation and I/O helpers that name the file and line on failure.
#ifndef DDPM_COMMON_H
#define DDPM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Print "ddpm: <message>" to stderr and exit(1). printf-style.
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

void *malloc_check(size_t size, const char *file, int line);
void *calloc_check(size_t n, size_t size, const char *file, int line);
// 64-byte aligned, zero-filled allocation (free with free()).
void *aligned_calloc_check(size_t size, const char *file, int line);
#define mallocCheck(n) malloc_check((n), __FILE__, __LINE__)
#define callocCheck(n, s) calloc_check((n), (s), __FILE__, __LINE__)
#define alignedCalloc(n) aligned_calloc_check((n), __FILE__, __LINE__)

// room for a one-line error: a path of PATH_MAX (4096) bytes and the reason after it
#define ERR_LEN 8400

// Format a one-line message into err (if err != NULL) and return -1: `return set_error(...)`.
int set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Write data to path atomically: a temp file in the same directory, fsync, rename, fsync(dir).
// On failure the previous file at path is untouched and no temp file is left. 0 or -1 + err.
// Only a regular file is replaced: a directory, device or other special file is refused, and a
// symbolic link is written through (the file it names is replaced, the link stays).
int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);

// 0 if path may be written by write_file_atomic: nothing there, a regular file, or a symbolic
// link to one (then *resolved, if resolved != NULL, is the malloc'ed path it names); else -1 + err
int output_check(const char *path, char **resolved, char *err, size_t errlen);

// 1 if both paths name the same file: device and inode when both exist (links and other spellings
// too), the resolved directory and name when neither does (two outputs not written yet)
int same_file(const char *a, const char *b);

// Read a whole regular file into a malloc'd buffer (size in *size). On failure returns NULL
// with "PATH: cannot open WHAT: ..." (or "not a regular file", "read error") in err.
unsigned char *read_file_all(const char *path, const char *what, size_t *size, char *err, size_t errlen);

#define DDPM_PI 3.14159265358979323846

// n rounded up to a multiple of 16 floats (whole 64-byte lines: keeps sub-buffers aligned)
static inline size_t round16(size_t n) { return (n + 15) / 16 * 16; }

// Wall-clock seconds (monotonic).
double now_seconds(void);
// s seconds as M:SS or H:MM:SS (for ETAs; negative or non-finite gives 0:00)
void fmt_time(char *buf, size_t n, double s);
// zlib CRC-32 of n bytes (any n: fed to zlib in chunks of at most 1 GB)
uint32_t crc32_bytes(const void *data, size_t n);

#endif
