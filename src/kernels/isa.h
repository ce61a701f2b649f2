// isa.h: the instruction set of the vectorised kernels (GEMM, attention tiles, GroupNorm/SiLU
// rows), chosen once at start-up from cpuid: the widest this CPU runs, or the one DDPM_ISA names
// (avx512, avx2, generic), for comparison and tests. Each kernel file is compiled once per
// instruction set (kernels/*_<isa>.c) and dispatched through isa_active().
#ifndef DDPM_ISA_H
#define DDPM_ISA_H

// fastest first; generic is plain C (vector extensions) for the build's own target
typedef enum { ISA_AVX512 = 0, ISA_AVX2 = 1, ISA_GENERIC = 2, ISA_COUNT = 3 } Isa;

Isa isa_active(void);
const char *isa_name(Isa i);  // "avx512", "avx2", "generic"
int isa_supported(Isa i);     // 1 if this CPU runs it
int isa_bf16_supported(void); // AVX512_BF16 (with AVX-512 BW and VL)
// make the named instruction set active for every kernel (not inside a parallel region, and not
// between gemm_pack_a and gemm_packed): 0, or -1 if this CPU lacks it, -2 if the name is unknown
int isa_set(const char *name);

#endif
