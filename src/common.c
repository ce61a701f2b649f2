// common.c: error exit, checked allocation, clock.
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ddpm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) die("out of memory allocating %zu bytes (%s:%d)", size, file, line);
    return p;
}

void *calloc_check(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes (%s:%d)", n, size, file, line);
    return p;
}

void *aligned_calloc_check(size_t size, const char *file, int line) {
    size_t rounded = (size + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) die("out of memory allocating %zu bytes (%s:%d)", size, file, line);
    memset(p, 0, rounded);
    return p;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int set_error(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    size_t plen = strlen(path);
    char *tmp = mallocCheck(plen + 16);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return set_error(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(e));
    }
    fchmod(fd, 0644);
    const unsigned char *p = data;
    size_t done = 0;
    int werr = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w < 0) { if (errno == EINTR) continue; werr = errno; break; }
        done += (size_t)w;
    }
    if (!werr && fsync(fd) != 0) werr = errno;
    if (close(fd) != 0 && !werr) werr = errno;
    if (!werr && rename(tmp, path) != 0) werr = errno;
    if (werr) {
        unlink(tmp);
        free(tmp);
        return set_error(err, errlen, "%s: cannot write: %s (the previous file is unchanged)", path, strerror(werr));
    }
    // make the rename itself durable
    char *dcopy = mallocCheck(plen + 1);
    memcpy(dcopy, path, plen + 1);
    int dfd = open(dirname(dcopy), O_RDONLY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(dcopy);
    free(tmp);
    return 0;
}

unsigned char *read_file_all(const char *path, const char *what, size_t *size, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { set_error(err, errlen, "%s: cannot open %s: %s", path, what, strerror(errno)); return NULL; }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        set_error(err, errlen, "%s: not a regular file", path);
        return NULL;
    }
    *size = (size_t)sb.st_size;
    unsigned char *data = mallocCheck(*size);
    size_t got = fread(data, 1, *size, f);
    fclose(f);
    if (got != *size) { free(data); set_error(err, errlen, "%s: read error", path); return NULL; }
    return data;
}
