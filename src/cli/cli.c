// cli.c: argument parsing helpers shared by the commands.
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *cmd_name = "ddpm";

void cli_set_command(const char *name) { cmd_name = name; }

void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cmd_name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see '%s --help')\n", cmd_name);
    va_end(ap);
    exit(2);
}

const char *need_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) usage_error("option %s needs a value", argv[*i]);
    return argv[++*i];
}

long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) usage_error("option %s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

double parse_double(const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) usage_error("option %s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}
