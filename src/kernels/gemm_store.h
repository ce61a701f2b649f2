// gemm_store.h: writing a micro-kernel's register tile into C, shared by the GEMM variants that
// include it (after defining VL, MR, NR and the vector type vf, or under an AVX-512 target).
// C tile[mr, nr] (+)= the register tile: full tiles straight from the registers, the last rows and
// columns through a buffer (vf) or masks (zmm).
#ifndef DDPM_GEMM_STORE_H
#define DDPM_GEMM_STORE_H

#include <string.h>

#ifdef VL
// rows i < MR of two VL-float vectors each: c0[i] (columns 0..VL), c1[i] (VL..2 VL)
static inline void store_tile_vf(float *c, int ldc, vf *c0, vf *c1, int mr, int nr, int acc) {
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = c + (size_t)i * ldc;
            vf t0, t1;
            if (acc) {
                memcpy(&t0, ci, sizeof(vf));
                memcpy(&t1, ci + VL, sizeof(vf));
                c0[i] += t0;
                c1[i] += t1;
            }
            memcpy(ci, &c0[i], sizeof(vf));
            memcpy(ci + VL, &c1[i], sizeof(vf));
        }
        return;
    }
    float tile[MR][NR] __attribute__((aligned(64)));
    for (int i = 0; i < MR; i++) {
        memcpy(&tile[i][0], &c0[i], sizeof(vf));
        memcpy(&tile[i][VL], &c1[i], sizeof(vf));
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) c[(size_t)i * ldc + j] = acc ? c[(size_t)i * ldc + j] + tile[i][j] : tile[i][j];
}
#endif

#ifdef GEMM_STORE_ZMM // defined by the AVX-512 variants, whose code is compiled for AVX-512
#include <immintrin.h>
// rows i < mr of two zmm registers each (32 columns), columns past nr masked off
static inline __attribute__((always_inline)) void store_tile_zmm(__m512 (*r)[2], float *c, int ldc, int mr, int nr,
                                                                 int acc) {
    if (nr == 32) { // whole rows unmasked (measured faster than full masks on Zen 5)
        for (int i = 0; i < mr; i++) {
            float *ci = c + (size_t)i * ldc;
            __m512 x0 = r[i][0], x1 = r[i][1];
            if (acc) {
                x0 = _mm512_add_ps(x0, _mm512_loadu_ps(ci));
                x1 = _mm512_add_ps(x1, _mm512_loadu_ps(ci + 16));
            }
            _mm512_storeu_ps(ci, x0);
            _mm512_storeu_ps(ci + 16, x1);
        }
        return;
    }
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        __m512 x0 = r[i][0], x1 = r[i][1];
        if (acc) {
            x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, ci));
            if (m1) x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, m0, x0);
        if (m1) _mm512_mask_storeu_ps(ci + 16, m1, x1);
    }
}
#endif

#endif
