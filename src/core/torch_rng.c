// torch_rng.c: mt19937, torch's uniform conversions and its two normal transforms (see torch_rng.h).
//
// The float transform reproduces torch's AVX2 kernel lane by lane: the Cephes log and sincos of
// avx_mathfun.h, with a fused multiply-add exactly where GCC fused the kernel's mul + add (the
// product feeds only that add), and every other operation rounded on its own. So this file is
// compiled without contraction: the compiler must not fuse anything else.
#include "core/torch_rng.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// ---- mt19937

void torch_manual_seed(TorchGen *g, uint64_t seed) {
    memset(g, 0, sizeof(*g));
    g->mt[0] = (uint32_t)seed;  // torch keeps the low 32 bits
    for (int i = 1; i < 624; i++) g->mt[i] = 1812433253u * (g->mt[i - 1] ^ (g->mt[i - 1] >> 30)) + (uint32_t)i;
    g->idx = 624;
}

uint32_t torch_random(TorchGen *g) {
    if (g->idx >= 624) {  // regenerate the 624 words
        for (int i = 0; i < 624; i++) {
            uint32_t y = (g->mt[i] & 0x80000000u) | (g->mt[(i + 1) % 624] & 0x7fffffffu);
            g->mt[i] = g->mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        g->idx = 0;
    }
    uint32_t y = g->mt[g->idx++];  // tempering
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

uint64_t torch_random64(TorchGen *g) {
    uint64_t hi = torch_random(g);
    return hi << 32 | torch_random(g);
}

static float uniform_f(TorchGen *g) { return (float)(torch_random(g) & 0xffffffu) * (1.0f / 16777216.0f); }
static double uniform_d(TorchGen *g) {
    return (double)(torch_random64(g) & 0x1fffffffffffffull) * (1.0 / 9007199254740992.0);
}

// ---- avx_mathfun.h's Cephes log and sincos, one lane

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

// log x for x in (0, 1]: x = m 2^e, m in [sqrt(1/2), sqrt 2); log x = log1p(m - 1) + e log 2,
// log1p by a degree-9 polynomial, log 2 split in q2 + q1 (q2 exact in a few bits)
static float cephes_logf(float x) {
    if (x < bits_f(0x00800000u)) x = bits_f(0x00800000u);  // the smallest normal
    uint32_t u = f_bits(x);
    float e = (float)((int32_t)(u >> 23) - 0x7f);
    x = bits_f((u & ~0x7f800000u) | f_bits(0.5f));  // mantissa in [0.5, 1)
    e = e + 1.0f;
    float tmp = x < (float)0.707106781186547524 ? x : 0.0f;
    x = x - 1.0f;
    e = e - (tmp != 0.0f ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = (float)7.0376836292E-2;
    y = fmaf(y, x, (float)-1.1514610310E-1);
    y = fmaf(y, x, (float)1.1676998740E-1);
    y = fmaf(y, x, (float)-1.2420140846E-1);
    y = fmaf(y, x, (float)1.4249322787E-1);
    y = fmaf(y, x, (float)-1.6668057665E-1);
    y = fmaf(y, x, (float)2.0000714765E-1);
    y = fmaf(y, x, (float)-2.4999993993E-1);
    y = fmaf(y, x, (float)3.3333331174E-1);
    y = y * x;
    y = fmaf(y, z, e * (float)-2.12194440e-4);
    y = y - z * 0.5f;  // exact product: fused or not, the same
    return fmaf(e, (float)0.693359375, x + y);
}

// sin and cos of x >= 0: j = nearest even integer to x 4/pi (octant pair), x - j pi/4 in three
// parts (DP1 + DP2 + DP3 = pi/4), the cos polynomial or the sin polynomial by octant, signs from j
static void cephes_sincosf(float x, float *s, float *c) {
    float sign_sin = x < 0 ? -1.0f : 1.0f;
    x = fabsf(x);
    int32_t j = (int32_t)(x * (float)1.27323954473516);
    j = (j + 1) & ~1;
    float y = (float)j;
    if (j & 4) sign_sin = -sign_sin;
    int direct = (j & 2) == 0;  // octants where sin comes from the sin polynomial
    float sign_cos = ((j - 2) & 4) ? 1.0f : -1.0f;
    x = fmaf(y, (float)-0.78515625, x);
    x = fmaf(y, (float)-2.4187564849853515625e-4, x);
    x = fmaf(y, (float)-3.77489497744594108e-8, x);
    float z = x * x;
    float yc = fmaf((float)2.443315711809948E-005, z, (float)-1.388731625493765E-003);
    yc = fmaf(yc, z, (float)4.166664568298827E-002);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = fmaf((float)-1.9515295891E-4, z, (float)8.3321608736E-3);
    ys = fmaf(ys, z, (float)-1.6666654611E-1);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    // the kernel selects by masks and adds a zero: x + 0 = x (and -0 + 0 = +0)
    float vs = direct ? ys : yc, vc = direct ? yc : ys;
    vs = vs + 0.0f;
    vc = vc + 0.0f;
    *s = sign_sin < 0 ? -vs : vs;
    *c = sign_cos < 0 ? -vc : vc;
}

// Box-Muller on 16 uniforms in place: d[j], d[j+8] from (d[j], d[j+8]), j < 8
static void normal_fill_16(float *d) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float r = sqrtf(-2.0f * cephes_logf(u1));
        float sn, cs;
        cephes_sincosf(two_pi * u2, &sn, &cs);
        d[j] = r * cs;
        d[j + 8] = r * sn;
    }
}

static double normal_scalar(TorchGen *g) {
    if (g->has_next_normal) {
        g->has_next_normal = 0;
        return g->next_normal;
    }
    double u1 = uniform_d(g), u2 = uniform_d(g);
    double r = sqrt(-2.0 * log(1.0 - u2)), th = 2.0 * 3.14159265358979323846 * u1;
    g->next_normal = r * sin(th);
    g->has_next_normal = 1;
    return r * cos(th);
}

void torch_randn(TorchGen *g, float *x, long n) {
    if (n < 16) {
        for (long i = 0; i < n; i++) x[i] = (float)normal_scalar(g);
        return;
    }
    for (long i = 0; i < n; i++) x[i] = uniform_f(g);
    for (long i = 0; i + 16 <= n; i += 16) normal_fill_16(x + i);
    if (n % 16) {
        float *tail = x + n - 16;
        for (int i = 0; i < 16; i++) tail[i] = uniform_f(g);
        normal_fill_16(tail);
    }
}
