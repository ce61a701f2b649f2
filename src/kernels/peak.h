// peak.h: the FMA throughput of this machine, measured: independent FMA chains on the vectors of
// one instruction set (avx512: 512-bit, avx2: 256-bit, generic: what the compiler makes of plain
// C), on every thread of an OpenMP parallel region. In GFLOP/s (an FMA is 2 FLOPs).
#ifndef DDPM_PEAK_H
#define DDPM_PEAK_H

// isa: "avx512", "avx2" or "generic" (the CPU must support it: gemm_variant_supported)
double fma_peak_gflops(const char *isa);

#endif
