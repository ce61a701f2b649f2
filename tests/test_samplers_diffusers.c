// test_samplers_diffusers.c: our DPM++ 2M and Heun samplers against HuggingFace diffusers'
// DPMSolverMultistepScheduler and HeunDiscreteScheduler, through the committed fixture
// tests/fixtures/diffusers_samplers.txt (written by tools/diffusers_fixture.py, see there).
//
// The problem is exactly solvable and linear: data N(0, s^2), s = 0.25, the exact eps network (the
// denoiser D(x; sigma) = s^2/(s^2 + sigma^2) x), so the final sample is G z for the initial
// standard normal z, with the gain G a property of (sampler, K) alone. For each fixture line
// (sampler K nfe G sigma_0 .. sigma_K) we run sample_images on one image of 8 values, recompute its
// z from the seed and check:
//   - the Karras sigmas: our formula on diffusers' own ends gives diffusers' sigmas (float32);
//     sigma_max = sigma_{T-1} agrees to 1e-5; sigma_min = sigma_0 does not to 1e-5: diffusers
//     computes sqrt((1 - ab_0)/ab_0) in float32, where 1 - ab_0 = 1e-4 loses ~4 digits to
//     cancellation (its 0.0100013297 against the exact 0.0100005000, 8.3e-5 relative). We check
//     that its value is that float32 evaluation, and our whole sequence against diffusers' to the
//     error those float32 ends explain (plus 1e-5);
//   - the network calls per image equal diffusers' (K for DPM++, 2K - 1 for Heun);
//   - x / z = G to 1e-4 relative. DPM-Solver starts from the VP sample z (init_noise_sigma = 1,
//     i.e. x_T = sqrt(1 + sigma_max^2) z in the VE view), we from sigma_max z (EDM, k-diffusion):
//     a factor sqrt(1 + 1/sigma_max^2) = 1 + 2.0e-5 on G (Heun starts from sigma_max z in both);
//   - the same sampler on a schedule whose sigma_0 and sigma_{T-1} are diffusers' float32 values, so
//     that both visit the same sigmas: x / z times that start factor = G to 1e-6 (float32 rounding),
//     i.e. the two implementations are the same algorithm.
// Run from the repository root (or pass the fixture's path as the first argument).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/rng.h"
#include "diffusion/diffusion.h"
#include "diffusion/objective.h"
#include "diffusion/sample.h"
#include "testutil.h"

#define FIXTURE "tests/fixtures/diffusers_samplers.txt"
#define S_DATA 0.25
enum { D = 8, KMAX = 1000 };

typedef struct {
    const Schedule *s;
    int calls;
    float out[D];
} ExactNet;

// eps at the VP input x_in = x/sqrt(1 + sigma^2) for the timestep's sigma: (x - D(x; sigma))/sigma
static const float *exact_net(void *ctx, const float *x, const float *t, const int *y, int n) {
    (void)y;
    ExactNet *g = ctx;
    g->calls++;
    if (n != 1) die("exact_net: %d images, want 1", n);
    double sg = t_to_sigma(g->s, t[0]), v = S_DATA * S_DATA;
    for (int i = 0; i < D; i++) {
        double xv = x[i] * sqrt(1.0 + sg * sg), d = v / (v + sg * sg) * xv;
        g->out[i] = (float)((xv - d) / sg);
    }
    return g->out;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

// sample_images on one image of D values (seed 3) with the exact network: the mean of x / z over
// the values of z not too close to 0 (z recomputed as sample.c draws it); *calls = network calls
static double run_gain(const Schedule *s, int heun, int K, int *calls, const char *name) {
    ExactNet g = {.s = s};
    SampleOptions opt = {.sampler = heun ? SAMPLER_HEUN : SAMPLER_DPMPP2M, .steps = K, .rho = 7, .clip = 0,
                         .seed = 3, .n = 1, .batch = 1, .objective = OBJECTIVE_EPS, .sigma_data = 0.5f};
    float x[D], z[D];
    sample_images(exact_net, &g, D, s, &opt, x, NULL);
    Rng r;
    rng_seed(&r, opt.seed * 0x9E3779B97F4A7C15ULL + 0 + 1);
    rng_fill_normal(&r, z, D);
    double gsum = 0, gmin = INFINITY, gmax = -INFINITY;
    int used = 0;
    for (int i = 0; i < D; i++) {
        if (fabs(z[i]) < 0.05) continue; // x / z of a tiny z is all rounding
        CHECK(fabs(x[i]) < 1.0f, "%s K=%d: value %d clipped (x %g): the gain cannot be read", name, K, i, x[i]);
        double gi = x[i] / z[i];
        gsum += gi;
        gmin = fmin(gmin, gi);
        gmax = fmax(gmax, gi);
        used++;
    }
    CHECK(used >= 4, "%s K=%d: only %d usable values of z", name, K, used);
    double gm = gsum / (used > 0 ? used : 1);
    CHECK(used > 0 && (gmax - gmin) / fabs(gm) < 1e-6, "%s K=%d: x / z not one gain (%.9g .. %.9g)", name, K, gmin, gmax);
    *calls = g.calls;
    return gm;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : FIXTURE;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "FAIL test_samplers_diffusers: cannot open the fixture %s (run from the repository root; "
                        "it is committed, written by tools/diffusers_fixture.py)\n", path);
        return 1;
    }
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.schedule = SCHEDULE_LINEAR;
    c.num_timesteps = 1000;
    c.beta_start = 1e-4f;
    c.beta_end = 0.02f;
    Schedule s, s2;
    schedule_init(&s, &c);
    schedule_init(&s2, &c);
    const double smin = schedule_sigma(&s, 0), smax = schedule_sigma(&s, s.T - 1);
    // diffusers' sigma_0 in float32 arithmetic: betas = linspace(1e-4, 0.02) (float32), ab_0 = 1 - beta_0
    const float ab0f = 1.0f - 1e-4f, smin_f32 = sqrtf((1.0f - ab0f) / ab0f);
    printf("sigma_min: ours %.9g, float32 evaluation %.9g (%.2g relative); sigma_max: ours %.9g\n", smin,
           (double)smin_f32, rel(smin_f32, smin), smax);

    static double fsig[KMAX + 1], ours[KMAX + 1], onf[KMAX + 1];
    char line[65536], name[32];
    int cases = 0;
    printf("%-6s %3s %4s %16s %16s %9s %16s %9s %9s\n", "", "K", "nfe", "G ours", "G diffusers", "rel", "G ours d.sigmas",
           "rel*", "max dsig");
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        int K, nfe, pos;
        double G;
        if (sscanf(line, "%31s %d %d %lf%n", name, &K, &nfe, &G, &pos) != 4 || K < 2 || K > KMAX) {
            CHECK(0, "%s: bad line: %.60s", path, line);
            continue;
        }
        int ok = 1;
        char *p = line + pos;
        for (int i = 0; i <= K; i++) {
            char *e;
            fsig[i] = strtod(p, &e);
            if (e == p) { ok = 0; break; }
            p = e;
        }
        int heun = !strcmp(name, "heun");
        if (!ok || (!heun && strcmp(name, "dpm++"))) {
            CHECK(0, "%s: bad line for %s %d", path, name, K);
            continue;
        }
        cases++;
        // the sigmas: the formula on diffusers' ends, its ends against ours, the whole sequence
        karras_sigmas(ours, K, smin, smax, 7.0);
        karras_sigmas(onf, K, fsig[K - 1], fsig[0], 7.0);
        double dmax = 0;
        for (int i = 0; i < K; i++) {
            CHECK(rel(onf[i], fsig[i]) < 1e-6, "%s K=%d: Karras formula on diffusers' ends: sigma_%d %.9g, diffusers %.9g",
                  name, K, i, onf[i], fsig[i]);
            double explained = rel(onf[i], ours[i]); // what the float32 ends alone change
            CHECK(rel(ours[i], fsig[i]) < 1e-5 + explained, "%s K=%d: sigma_%d ours %.9g, diffusers %.9g (%.2g; %.2g explained)",
                  name, K, i, ours[i], fsig[i], rel(ours[i], fsig[i]), explained);
            if (rel(ours[i], fsig[i]) > dmax) dmax = rel(ours[i], fsig[i]);
        }
        CHECK(fsig[K] == 0 && ours[K] == 0, "%s K=%d: the last sigma is not 0", name, K);
        CHECK(rel(smax, fsig[0]) < 1e-5, "%s K=%d: sigma_max ours %.9g, diffusers %.9g", name, K, smax, fsig[0]);
        CHECK(rel(fsig[K - 1], smin_f32) < 1e-6 && rel(fsig[K - 1], smin) < 2e-4,
              "%s K=%d: sigma_min diffusers %.9g, ours %.9g, float32 evaluation %.9g", name, K, fsig[K - 1], smin,
              (double)smin_f32);

        // the sampler, on our schedule and on one whose ends are diffusers' float32 sigma_0, sigma_{T-1}
        // (so that the same sigmas are visited: then only the start and float32 rounding differ)
        double init = heun ? 1.0 : sqrt(1.0 + 1.0 / (fsig[0] * fsig[0]));
        double gm[2];
        for (int run = 0; run < 2; run++) {
            const Schedule *sr = &s;
            if (run == 1) {
                s2.alpha_bar64[0] = 1.0 / (1.0 + fsig[K - 1] * fsig[K - 1]);
                s2.alpha_bar64[s2.T - 1] = 1.0 / (1.0 + fsig[0] * fsig[0]);
                sr = &s2;
            }
            int calls;
            gm[run] = run_gain(sr, heun, K, &calls, name);
            CHECK(calls == nfe, "%s K=%d: %d network calls, diffusers %d", name, K, calls, nfe);
        }
        SampleOptions opt = {.sampler = heun ? SAMPLER_HEUN : SAMPLER_DPMPP2M, .steps = K};
        CHECK(sample_nfe(&opt, s.T) == nfe, "%s K=%d: sample_nfe %d, diffusers %d", name, K, sample_nfe(&opt, s.T), nfe);
        printf("%-6s %3d %4d %16.12f %16.12f %9.2e %16.12f %9.2e %9.2e\n", name, K, nfe, gm[0], G, rel(gm[0], G),
               gm[1], rel(gm[1] * init, G), dmax);
        CHECK(rel(gm[0], G) < 1e-4, "%s K=%d: gain ours %.9g, diffusers %.9g (%.2g relative)", name, K, gm[0], G,
              rel(gm[0], G));
        CHECK(rel(gm[1] * init, G) < 1e-6, "%s K=%d: on diffusers' sigmas, gain ours x start factor %.9g = %.9g, "
              "diffusers %.9g (%.2g relative)", name, K, init, gm[1] * init, G, rel(gm[1] * init, G));
    }
    fclose(f);
    CHECK(cases == 8, "%s: %d cases, want 8 (dpm++ and heun at K = 10, 15, 25, 50)", path, cases);
    schedule_free(&s);
    schedule_free(&s2);
    TEST_DONE("test_samplers_diffusers");
}
