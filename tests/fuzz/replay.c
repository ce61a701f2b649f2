// replay.c: runs a fuzz harness (linked with it) on every file of the given corpus directories,
// as libFuzzer would on its corpus, without libFuzzer: `make test` builds it with gcc and the
// sanitizers, so the seeds and every input a fuzzing campaign kept stay regression tests.
#include "fuzz_util.h"

#include <dirent.h>

int main(int argc, char **argv) {
    long files = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) { fprintf(stderr, "replay: cannot open %s\n", argv[a]); return 1; }
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            FILE *f = fopen(path, "rb");
            if (!f) continue;
            fseek(f, 0, SEEK_END);
            long n = ftell(f);
            fseek(f, 0, SEEK_SET);
            uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
            size_t got = fread(buf, 1, (size_t)n, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, got);
            free(buf);
            files++;
        }
        closedir(d);
    }
    printf("replay: %ld inputs, no crash\n", files);
    return files > 0 ? 0 : 1;
}
