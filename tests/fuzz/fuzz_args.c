// fuzz_args.c: the command lines of every ddpm command. The input is split at NUL and newline
// bytes into argv; the first byte picks the command. Each input runs in a child process (a bad
// flag exits with status 2, as it should), in a scratch directory, with a 2-second alarm: a
// crash is a child killed by any signal but that alarm.
#include "fuzz_util.h"

#include <signal.h>
#include <sys/wait.h>

#include "cli/commands.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int (*const cmds[])(int, char **) = {cmd_train, cmd_sample, cmd_info, cmd_bench, cmd_judge, cmd_eval};
    static const char *names[] = {"train", "sample", "info", "bench", "judge", "eval"};
    if (size < 1 || size > 4096) return 0;
    int which = data[0] % 6;
    char *buf = malloc(size + 1), *argv[66];
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    int argc = 0;
    argv[argc++] = "ddpm";
    argv[argc++] = (char *)names[which];
    for (char *p = buf; p < buf + size - 1 && argc < 64;) {
        char *e = p;
        while (e < buf + size - 1 && *e && *e != '\n') e++;
        *e = 0;
        argv[argc++] = p;
        p = e + 1;
    }
    argv[argc] = NULL;
    const char *dir = fuzz_dir();
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(0);
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        alarm(2);
        _exit(cmds[which](argc, argv) & 0xff);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    free(buf);
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGALRM) abort(); // a crash in the child
    return 0;
}
