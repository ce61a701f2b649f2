// isa.c: the instruction-set choice shared by the dispatched kernels (cpuid, DDPM_ISA).
#include "kernels/isa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[ISA_COUNT] = {"avx512", "avx2", "generic"};
static Isa active = ISA_GENERIC;

int isa_supported(Isa i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (i) {
    case ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    case ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return i == ISA_GENERIC;
    }
#else
    return i == ISA_GENERIC;
#endif
}

int isa_bf16_supported(void) {
#if defined(__x86_64__) || defined(__i386__)
    return isa_supported(ISA_AVX512) && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

Isa isa_active(void) { return active; }
const char *isa_name(Isa i) { return i >= 0 && i < ISA_COUNT ? names[i] : NULL; }

int isa_set(const char *name) {
    for (int i = 0; i < ISA_COUNT; i++)
        if (!strcmp(name, names[i])) {
            if (!isa_supported((Isa)i)) return -1;
            active = (Isa)i;
            return 0;
        }
    return -2;
}

// at start-up: DDPM_ISA if set (a bad one is a one-line error, exit 2), else the widest supported
__attribute__((constructor)) static void isa_choose(void) {
    const char *want = getenv("DDPM_ISA");
    if (want && *want) {
        int rc = isa_set(want);
        if (rc == 0) return;
        fprintf(stderr, "ddpm: DDPM_ISA=%s: %s (this CPU runs:", want, rc == -1 ? "this CPU lacks it" : "unknown instruction set");
        for (int i = 0; i < ISA_COUNT; i++)
            if (isa_supported((Isa)i)) fprintf(stderr, " %s", names[i]);
        fprintf(stderr, ")\n");
        exit(2);
    }
    for (int i = 0; i < ISA_COUNT; i++)
        if (isa_supported((Isa)i)) { active = (Isa)i; return; }
}
