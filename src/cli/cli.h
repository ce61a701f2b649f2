// cli.h: command-line helpers shared by the ddpm commands. Every bad flag or value is a
// one-line message naming the command and exit status 2.
#ifndef DDPM_CLI_H
#define DDPM_CLI_H

void cli_set_command(const char *name); // "ddpm train", used in messages
void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
const char *need_value(int argc, char **argv, int *i); // the value after argv[*i]
long parse_long(const char *opt, const char *s, long lo, long hi);
double parse_double(const char *opt, const char *s, double lo, double hi);

#endif
