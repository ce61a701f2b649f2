// vec.h: 8-float vectors (GCC/Clang vector extensions: one AVX register on x86-64 with AVX,
// two SSE halves otherwise) and the exp / 2^x polynomials the layers evaluate on them.
// Everything here is static inline: each layer file gets its own copy, compiled for its target.
#ifndef DDPM_VEC_H
#define DDPM_VEC_H

#include <stdint.h>

#if defined(__AVX__)
#include <immintrin.h>
#endif


// exp(x) = 2^n e^r, x = n ln2 + r, |r| <= ln2/2 (ln2 in two parts, so r is exact), e^r by a
// degree-5 minimax polynomial (fitted to the relative error; evaluated in float its error is
// < 1.7e-7, below the 2.3e-7 of the degree-6 Taylor polynomial, for one FMA less). The two
// macros work on float and on 8-float vectors alike, so exp_approx and exp8 give the same values.
#define EXP_REDUCE(x, n) ((x) - (n) * 0.693145751953125f - (n) * 1.42860682030941723212e-6f)
#define EXP_POLY(r)                                                                                    \
    (((((((r) * 0.00829029735f + 0.0418979116f) * (r) + 0.166676357f) * (r) + 0.499991506f) * (r) +     \
       0.999999702f) * (r)) + 1.0f)

// exp(x) for float, branch-free so loops over it vectorise; 2^n via the exponent bits
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x); // NaN goes through (and gives NaN)
    const float magic = 12582912.0f; // 1.5 * 2^23: adding it rounds to an integer
    float t = x * 1.44269504088896341f + magic, n = t - magic;
    float r = EXP_REDUCE(x, n);
    // 2^n from the low mantissa bits of t (n + 2^22), in unsigned arithmetic: defined for any input
    union { float f; uint32_t i; } u = {.f = t};
    u.i = (u.i + (uint32_t)(127 - 0x4B400000)) << 23;
    return EXP_POLY(r) * u.f;
}

// 8-float vectors (GCC/Clang vector extensions: AVX on x86-64 -march=native, split in two SSE
// halves otherwise) for the reductions, which the compiler does not vectorise on its own
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
// an unaligned load (the may_alias, 4-byte-aligned vector type is GCC's idiom for one); macros,
// since passing 32-byte vectors to functions changes the ABI on targets without AVX
typedef float v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
#define load8(p) ((v8f)(*(const v8f_u *)(p)))
#define V8(x) ((v8f){x, x, x, x, x, x, x, x})
#define store8(p, v) (*(v8f_u *)(p) = (v))
#define VSEL(m, a, b) ((v8f)(((v8i)(a) & (m)) | ((v8i)(b) & ~(m))))

// exp_approx on 8 lanes, the same result (in place). 2^n comes from the bits of the rounding
// sum t = x log2(e) + 1.5 2^23 itself: its low mantissa bits hold n + 2^22. `neg`: the caller
// guarantees x <= 0 up to rounding (softmax), so only the lower clamp is needed.
static inline void exp8_impl(v8f *x, int neg) {
    v8f v = *x;
#if defined(__AVX__) // max/min return their second operand when one is NaN: NaN goes through
    v = (v8f)_mm256_max_ps((__m256)V8(-87.0f), (__m256)v);
    if (!neg) v = (v8f)_mm256_min_ps((__m256)V8(88.0f), (__m256)v);
#else
    v = VSEL(v < V8(-87.0f), V8(-87.0f), v);
    if (!neg) v = VSEL(v > V8(88.0f), V8(88.0f), v);
#endif
    v8f t = v * 1.44269504088896341f + 12582912.0f, n = t - 12582912.0f;
    v8f r = EXP_REDUCE(v, n);
    v8i e = ((v8i)t + (127 - 0x4B400000)) << 23; // 0x4B400000: the bits of 1.5 2^23
    *x = EXP_POLY(r) * (v8f)e;
}
#define exp8(x) exp8_impl(x, 0)
#define exp8_neg(x) exp8_impl(x, 1)

// 2^x on 8 lanes (in place) for x <= 0 up to rounding: the flash kernels' softmax, whose scores
// are scaled by log2(e). x = n + r with n = round(x) and r = x - n (exact), |r| <= 1/2; 2^r by a
// degree-5 minimax polynomial (relative error < 2e-7 in float) in Estrin's form, whose chain
// of dependent operations is 3 FMAs long instead of 5: the kernels are bound by that latency.
#define LOG2E 1.44269504088896341f
#define LN2 0.693147180559945309f
static inline void exp2_8_neg(v8f *x) {
    v8f v = *x;
#if defined(__AVX__)
    v = (v8f)_mm256_max_ps((__m256)V8(-126.0f), (__m256)v);
#else
    v = VSEL(v < V8(-126.0f), V8(-126.0f), v);
#endif
    v8f t = v + 12582912.0f, n = t - 12582912.0f, r = v - n, r2 = r * r;
    v8i e = ((v8i)t + (127 - 0x4B400000)) << 23;
    v8f p = (1.0f + r * 0.693147004f) + r2 * ((0.240222424f + r * 0.0555073358f) +
                                              r2 * (0.00967150927f + r * 0.00132647087f));
    *x = p * (v8f)e;
}

// 16-float vectors: the 16 keys of an attention panel (one zmm register with AVX-512, two ymm
// with AVX2: the same code and the same results on both)
typedef float v16f __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));
#define load16(p) ((v16f)(*(const v16f_u *)(p)))
#define store16(p, v) (*(v16f_u *)(p) = (v))
#define V16(x) ((v16f){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x})
#define VSEL16(m, a, b) ((v16f)(((v16i)(a) & (m)) | ((v16i)(b) & ~(m))))

// exp2_8_neg on 16 lanes (NaN goes through the clamp, as there). With AVX-512, n comes from one
// VRNDSCALEPS (round to nearest even, as the sum with 1.5 2^23 rounds) and 2^n p from one VSCALEFPS
// (exact, as the product with 2^n is): the same values in 10 operations instead of 15.
static inline void exp2_16_neg(v16f *x) {
#if defined(__AVX512F__)
    v16f v = (v16f)_mm512_max_ps(_mm512_set1_ps(-126.0f), (__m512)*x);
    v16f n = (v16f)_mm512_roundscale_ps((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v16f r = v - n, r2 = r * r;
    v16f p = (1.0f + r * 0.693147004f) + r2 * ((0.240222424f + r * 0.0555073358f) +
                                               r2 * (0.00967150927f + r * 0.00132647087f));
    *x = (v16f)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    v16f v = *x;
    v = VSEL16(v < V16(-126.0f), V16(-126.0f), v);
    v16f t = v + 12582912.0f, n = t - 12582912.0f, r = v - n, r2 = r * r;
    v16i e = ((v16i)t + (127 - 0x4B400000)) << 23;
    v16f p = (1.0f + r * 0.693147004f) + r2 * ((0.240222424f + r * 0.0555073358f) +
                                               r2 * (0.00967150927f + r * 0.00132647087f));
    *x = p * (v16f)e;
#endif
}

// exp_approx on 16 lanes, the same result (in place): exp8 on a 16-float vector
static inline void exp16(v16f *x) {
    v16f v = *x;
    v = VSEL16(v < V16(-87.0f), V16(-87.0f), v); // NaN fails both tests and goes through
    v = VSEL16(v > V16(88.0f), V16(88.0f), v);
    v16f t = v * 1.44269504088896341f + 12582912.0f, n = t - 12582912.0f;
    v16f r = EXP_REDUCE(v, n);
    v16i e = ((v16i)t + (127 - 0x4B400000)) << 23;
    *x = EXP_POLY(r) * (v16f)e;
}

// lanes [0, n) of a 16-float vector kept, the others zeroed (n in 0..16); a macro (no vector
// arguments: their ABI depends on the target)
#define keep_first16(x, n)                                                                                       \
    ((v16f)((v16i)(x) & ((v16i){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} < (v16i){(n), (n), (n), (n), \
                                                                                             (n), (n), (n), (n), \
                                                                                             (n), (n), (n), (n), \
                                                                                             (n), (n), (n), (n)})))

// sum of the 16 lanes: lane k + lane k + 8 first, then the 8 sums in order
static inline float hsum16(const v16f *v) {
    float s = 0.0f;
    for (int k = 0; k < 8; k++) s += (*v)[k] + (*v)[k + 8];
    return s;
}

static inline float hsum8(const v8f *v) {
    float s = 0.0f;
    for (int k = 0; k < 8; k++) s += (*v)[k];
    return s;
}

// sum of x[n] on 16 float lanes (fixed order)
static inline float sum16(const float *x, long n) {
    v8f a = {0}, b = {0};
    long i = 0;
    for (; i + 16 <= n; i += 16) { a += load8(x + i); b += load8(x + i + 8); }
    a += b;
    float s = hsum8(&a);
    for (; i < n; i++) s += x[i];
    return s;
}

#endif
