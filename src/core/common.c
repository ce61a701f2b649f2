// common.c: error exit, checked allocation, clock.
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE // madvise
#include "core/common.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

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

// Buffers of 4 MB and more (activations, workspaces, parameters) are asked for in 2 MB huge pages
// (transparent huge pages, where the kernel has them): the layers read them in strided panels, and
// with 4 kB pages the TLB would cover only a few MB of them.
#define HUGE_PAGE ((size_t)2 << 20)
void *aligned_calloc_check(size_t size, const char *file, int line) {
    size_t align = size >= 2 * HUGE_PAGE ? HUGE_PAGE : 64;
    size_t rounded = (size + align - 1) / align * align;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(align, rounded);
    if (!p) die("out of memory allocating %zu bytes (%s:%d)", size, file, line);
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE) madvise(p, rounded, MADV_HUGEPAGE); // a hint: no error if refused
#endif
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

int output_check(const char *path, char **resolved, char *err, size_t errlen) {
    struct stat sb;
    if (resolved) *resolved = NULL;
    if (lstat(path, &sb) != 0) return 0; // nothing there yet
    if (S_ISLNK(sb.st_mode)) {
        char *r = realpath(path, NULL);
        if (!r) return set_error(err, errlen, "%s: a symbolic link to a missing file: give a real path", path);
        if (stat(r, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(r);
            return set_error(err, errlen, "%s: links to something that is not a regular file: refusing to replace it", path);
        }
        if (resolved) *resolved = r;
        else free(r);
        return 0;
    }
    if (!S_ISREG(sb.st_mode))
        return set_error(err, errlen, "%s: not a regular file (a %s): refusing to replace it", path,
                         S_ISDIR(sb.st_mode) ? "directory" : S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "device" : "special file");
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    // what is there must be a regular file (or nothing); a symbolic link is written through
    char *resolved = NULL;
    if (output_check(path, &resolved, err, errlen)) return -1;
    if (resolved) path = resolved;
    size_t plen = strlen(path);
    char *tmp = mallocCheck(plen + 16);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        int rc = set_error(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(e));
        free(resolved);
        return rc;
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
        int rc = set_error(err, errlen, "%s: cannot write: %s (the previous file is unchanged)", path, strerror(werr));
        free(resolved);
        return rc;
    }
    // make the rename itself durable
    char *dcopy = mallocCheck(plen + 1);
    memcpy(dcopy, path, plen + 1);
    int dfd = open(dirname(dcopy), O_RDONLY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(dcopy);
    free(tmp);
    free(resolved);
    return 0;
}

// the directory of path resolved, plus its last component: a name for a file that may not exist
static int canonical_name(const char *path, char *out, size_t n) {
    char *d = strdup(path), *b = strdup(path);
    char *dir = realpath(dirname(d), NULL);
    int ok = dir && snprintf(out, n, "%s/%s", dir, basename(b)) < (int)n;
    free(dir); free(d); free(b);
    return ok ? 0 : -1;
}

int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (!a || !b) return 0;
    int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (ea != eb) return 0;
    char ca[4096], cb[4096]; // neither exists yet: the same name in the same directory
    return canonical_name(a, ca, sizeof ca) == 0 && canonical_name(b, cb, sizeof cb) == 0 && !strcmp(ca, cb);
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

void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

uint32_t crc32_bytes(const void *data, size_t n) {
    const unsigned char *p = data;
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < n; off += 1u << 30) {
        size_t chunk = n - off < (1u << 30) ? n - off : (1u << 30);
        crc = crc32(crc, p + off, (uInt)chunk);
    }
    return (uint32_t)crc;
}
