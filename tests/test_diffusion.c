// test_diffusion.c: schedules, forward noising, DDPM and DDIM steps, the objectives' sigma <-> t
// map and preconditioning, and every sampler on every objective with the exact network of
// Gaussian data.
// Hand-worked numbers (1-indexed t as in the DDPM paper: its alpha_bar_t is our alpha_bar[t-1]);
// everything else against independent double-precision recomputations or sample statistics.
#include <math.h>
#include <string.h>

#include "core/common.h"
#include "diffusion/diffusion.h"
#include "diffusion/objective.h"
#include "diffusion/sample.h"
#include "core/rng.h"
#include "testutil.h"


static ModelConfig make_cfg(ScheduleKind kind, int T) {
    ModelConfig c;
    memset(&c, 0, sizeof(c));
    c.schedule = kind;
    c.num_timesteps = T;
    c.beta_start = 1e-4f;
    c.beta_end = 0.02f;
    c.beta = 0.02f;
    c.cosine_s = 0.008f;
    return c;
}

static double rel_err(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

// ---------------------------------------------------------------------------------------------
// constant schedules and a training step worked by hand

static void test_worked_example(void) {
    // The hand-worked values are rounded (e.g. sqrt(0.59049) = 0.7684 is printed as 0.769,
    // sqrt(1 - 0.99^10) = 0.3092 as 0.310), so its 3-digit numbers are checked to 1e-3.
    const double tol3 = 1e-3;
    const int tq[3] = {1, 5, 10};  // 1-indexed
    {   // schedule A: beta = 0.1
        ModelConfig c = make_cfg(SCHEDULE_CONSTANT, 10);
        c.beta = 0.1f;
        Schedule s;
        schedule_init(&s, &c);
        const double ab[3] = {0.9, 0.59049, 0.3487}, sab[3] = {0.949, 0.769, 0.590},
                     s1m[3] = {0.316, 0.640, 0.807};
        const double ab_tol[3] = {1e-6, 1e-6, 5e-5};  // 0.9 and 0.59049 are exact, 0.3487 is rounded
        for (int k = 0; k < 3; k++) {
            int t = tq[k] - 1;
            CHECK_NEAR(s.alpha_bar[t], ab[k], ab_tol[k], "A: alpha_bar");
            CHECK_NEAR(s.sqrt_alpha_bar[t], sab[k], tol3, "A: sqrt(alpha_bar)");
            CHECK_NEAR(s.sqrt_one_minus_alpha_bar[t], s1m[k], tol3, "A: sqrt(1 - alpha_bar)");
            CHECK_NEAR(s.alpha_bar[t], pow(0.9, tq[k]), 1e-7, "A: alpha_bar = 0.9^t");
        }
        // training step: x0 = 2, t = 5, eps = 0.3 -> x_5 = 0.769*2 + 0.640*0.3 = 1.730
        float x0 = 2.0f, eps = 0.3f, x5;
        int t5 = 5 - 1;
        diffusion_add_noise(&x5, &x0, &eps, &t5, &s, 1, 1);
        CHECK_NEAR(x5, 1.730, 2e-3, "x_5 (hand-worked, rounded coefficients)");
        CHECK_NEAR(x5, sqrt(0.59049) * 2.0 + sqrt(1.0 - 0.59049) * 0.3, 1e-6, "x_5 (exact)");
        // loss = (eps - eps_theta)^2 for predictions 0.4, 0.3, -0.3
        const float pred[3] = {0.4f, 0.3f, -0.3f};
        const double loss[3] = {0.01, 0.0, 0.36};
        for (int k = 0; k < 3; k++) {
            double d = (double)eps - pred[k];
            CHECK_NEAR(d * d, loss[k], 1e-7, "training-step loss");
        }
        schedule_free(&s);
    }
    {   // schedule B: beta = 0.01
        ModelConfig c = make_cfg(SCHEDULE_CONSTANT, 10);
        c.beta = 0.01f;
        Schedule s;
        schedule_init(&s, &c);
        const double ab[3] = {0.99, 0.951, 0.904}, sab[3] = {0.995, 0.975, 0.951},
                     s1m[3] = {0.100, 0.221, 0.310};
        for (int k = 0; k < 3; k++) {
            int t = tq[k] - 1;
            CHECK_NEAR(s.alpha_bar[t], ab[k], 5e-4, "B: alpha_bar");
            CHECK_NEAR(s.sqrt_alpha_bar[t], sab[k], tol3, "B: sqrt(alpha_bar)");
            CHECK_NEAR(s.sqrt_one_minus_alpha_bar[t], s1m[k], tol3, "B: sqrt(1 - alpha_bar)");
            CHECK_NEAR(s.alpha_bar[t], pow(0.99, tq[k]), 1e-7, "B: alpha_bar = 0.99^t");
        }
        schedule_free(&s);
    }
}

// ---------------------------------------------------------------------------------------------
// schedules against double recomputation

// checks the derived arrays (alphas, cumprod, roots, posterior variance) against betas_d,
// the schedule's betas recomputed in double by the test
static void check_derived(const Schedule *s, const double *betas_d, const char *name) {
    double ab = 1.0, ab_prev = 1.0;
    int bad_ab = 0, bad_der = 0, bad_pv = 0;
    for (int t = 0; t < s->T; t++) {
        double beta = betas_d[t];
        ab *= 1.0 - beta;  // alpha_bar[t] = prod_{s<=t} (1 - beta_s)
        bad_ab += rel_err(s->alpha_bar[t], ab) > 1e-7 || rel_err(s->alpha_bar64[t], ab) > 1e-12;
        bad_der += rel_err(s->alphas[t], 1.0 - beta) > 1e-7;
        bad_der += rel_err(s->sqrt_alpha_bar[t], sqrt(ab)) > 2e-6;
        bad_der += rel_err(s->sqrt_one_minus_alpha_bar[t], sqrt(1.0 - ab)) > 2e-6;
        bad_der += rel_err(s->inv_sqrt_alpha[t], 1.0 / sqrt(1.0 - beta)) > 1e-7;
        double pv = t == 0 ? 0.0 : (1.0 - ab_prev) / (1.0 - ab) * beta;
        bad_pv += t == 0 ? s->posterior_var[0] != 0.0f : rel_err(s->posterior_var[t], pv) > 2e-6;
        ab_prev = ab;
    }
    CHECK(bad_ab == 0, "%s: %d alpha_bar values differ from the cumulative product", name, bad_ab);
    CHECK(bad_der == 0, "%s: %d derived values (alphas/sqrt/inv_sqrt) off", name, bad_der);
    CHECK(bad_pv == 0, "%s: %d posterior_var values off", name, bad_pv);
}

static void test_linear(void) {
    const int T = 1000;
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, T);
    Schedule s;
    schedule_init(&s, &c);
    CHECK(s.T == T, "linear: T = %d", s.T);
    CHECK_NEAR(s.betas[0], 1e-4, 1e-10, "linear: betas[0]");
    CHECK_NEAR(s.betas[T - 1], 0.02, 1e-9, "linear: betas[T-1]");
    double bs = c.beta_start, be = c.beta_end;  // the float config values, widened
    double betas_d[1000];
    int bad = 0;
    for (int t = 0; t < T; t++) {
        betas_d[t] = bs + (be - bs) * t / (T - 1);
        bad += fabs(s.betas[t] - (1e-4 + (0.02 - 1e-4) / (T - 1) * t)) > 2e-9;
    }
    CHECK(bad == 0, "linear: %d betas not evenly spaced", bad);
    check_derived(&s, betas_d, "linear");
    // sanity: ab is decreasing, ends near 4e-5 for the paper's schedule
    CHECK(s.alpha_bar[T - 1] > 1e-5 && s.alpha_bar[T - 1] < 1e-4, "linear: alpha_bar[T-1] = %g", s.alpha_bar[T - 1]);
    schedule_free(&s);
    CHECK(s.betas == NULL && s.alpha_bar64 == NULL, "schedule_free clears the pointers");

    ModelConfig c1 = make_cfg(SCHEDULE_LINEAR, 1);  // T = 1: just beta_start
    schedule_init(&s, &c1);
    CHECK_NEAR(s.betas[0], 1e-4, 1e-10, "linear T=1: betas[0]");
    CHECK(s.posterior_var[0] == 0.0f, "linear T=1: posterior_var[0] = 0");
    schedule_free(&s);
}

static double cos_f(double u, int T, double sc) {
    double v = cos(((u / T) + sc) / (1.0 + sc) * DDPM_PI / 2.0);
    return v * v;
}

static void test_cosine(void) {
    const int Ts[2] = {1000, 50};
    for (int k = 0; k < 2; k++) {
        int T = Ts[k];
        ModelConfig c = make_cfg(SCHEDULE_COSINE, T);
        double sc = c.cosine_s;  // the float value actually used
        Schedule s;
        schedule_init(&s, &c);
        double f0 = cos_f(0.0, T, sc);
        int bad_beta = 0, bad_ab = 0, capped = 0;
        double betas_d[1000];
        for (int t = 0; t < T; t++) {
            double abar_t = cos_f(t, T, sc) / f0, abar_t1 = cos_f(t + 1, T, sc) / f0;
            double beta = 1.0 - abar_t1 / abar_t;
            if (beta > 0.999) { beta = 0.999; capped++; }
            betas_d[t] = beta;
            bad_beta += rel_err(s.betas[t], beta) > 1e-6;
            // uncapped so far: alpha_bar[t] equals the continuous abar(t+1)
            if (!capped) bad_ab += rel_err(s.alpha_bar[t], abar_t1) > 1e-5;
        }
        CHECK(bad_beta == 0, "cosine T=%d: %d betas differ from the formula", T, bad_beta);
        CHECK(bad_ab == 0, "cosine T=%d: %d alpha_bar differ from abar(t+1)", T, bad_ab);
        CHECK(capped == 1 && s.betas[T - 1] == 0.999f, "cosine T=%d: only the last beta is capped (%d capped, last %g)",
              T, capped, s.betas[T - 1]);
        CHECK(s.betas[0] > 0.0f && s.betas[0] < 0.01f, "cosine T=%d: betas[0] = %g", T, s.betas[0]);
        check_derived(&s, betas_d, "cosine");
        schedule_free(&s);
    }
}

// ---------------------------------------------------------------------------------------------
// forward process and x0 prediction

static void test_add_noise_and_predict_x0(void) {
    const int T = 1000, B = 16, D = 784;
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, T);
    Schedule s;
    schedule_init(&s, &c);
    Rng rng;
    rng_seed(&rng, 7);
    float *x0 = mallocCheck(sizeof(float) * B * D), *eps = mallocCheck(sizeof(float) * B * D);
    float *xt = mallocCheck(sizeof(float) * B * D), *xr = mallocCheck(sizeof(float) * B * D);
    for (long i = 0; i < (long)B * D; i++) x0[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    rng_fill_normal(&rng, eps, (long)B * D);
    int t[16];
    for (int b = 0; b < B; b++) t[b] = b == 0 ? 0 : b == 1 ? T - 1 : (int)rng_below(&rng, T);
    diffusion_add_noise(xt, x0, eps, t, &s, B, D);
    int bad = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) {
            long j = (long)b * D + i;
            double want = sqrt(s.alpha_bar64[t[b]]) * x0[j] + sqrt(1.0 - s.alpha_bar64[t[b]]) * eps[j];
            bad += fabs(xt[j] - want) > 1e-6;
        }
    CHECK(bad == 0, "add_noise: %d values differ from sqrt(ab) x0 + sqrt(1-ab) eps", bad);

    // predict_x0 with the true eps inverts add_noise. Cond. number ~ 1/sqrt(ab): to 1e-5 where
    // sqrt(ab) >= 0.05 (t <= 700 here), and to float rounding / sqrt(ab) everywhere.
    int bad_inv = 0, bad_all = 0, n_cond = 0;
    for (int b = 0; b < B; b++) {
        long off = (long)b * D;
        predict_x0(xr + off, xt + off, eps + off, t[b], &s, D);
        double sab = s.sqrt_alpha_bar[t[b]];
        if (sab >= 0.05) n_cond++;
        for (int i = 0; i < D; i++) {
            double err = fabs(xr[off + i] - x0[off + i]);
            if (sab >= 0.05) bad_inv += err > 1e-5;
            bad_all += err > 1e-6 + 3e-7 * (fabs(xt[off + i]) + 1.0) / sab;
        }
    }
    CHECK(n_cond >= 8, "predict_x0: only %d well-conditioned images tested", n_cond);
    CHECK(bad_inv == 0, "predict_x0: %d values not recovered to 1e-5", bad_inv);
    CHECK(bad_all == 0, "predict_x0: %d values beyond the rounding bound", bad_all);

    // in-place (xt aliasing x0) gives the same
    memcpy(xr, x0, sizeof(float) * B * D);
    diffusion_add_noise(xr, xr, eps, t, &s, B, D);
    CHECK(memcmp(xr, xt, sizeof(float) * B * D) == 0, "add_noise in place differs");

    // clipping: x0 estimates outside [-1, 1] are clamped, inside are unchanged
    int tc = 100;
    float xin[5] = {1.5f, -3.0f, 0.25f, 1.0f, -0.999f}, e5[5] = {0.3f, -1.0f, 0.5f, 0.0f, 2.0f}, x5[5], o5[5];
    int t5[5] = {tc, tc, tc, tc, tc};
    diffusion_add_noise(x5, xin, e5, t5, &s, 5, 1);
    predict_x0(o5, x5, e5, tc, &s, 5);
    CHECK(o5[0] == 1.0f && o5[1] == -1.0f, "predict_x0 clip: got %g %g", o5[0], o5[1]);
    CHECK(o5[3] <= 1.0f && o5[3] >= 0.99999f, "predict_x0 clip at the edge: %g", o5[3]);
    CHECK_NEAR(o5[2], 0.25, 1e-6, "predict_x0 inside [-1, 1]");
    CHECK_NEAR(o5[4], -0.999, 1e-6, "predict_x0 inside [-1, 1]");
    free(x0); free(eps); free(xt); free(xr);
    schedule_free(&s);
}

// ---------------------------------------------------------------------------------------------
// DDPM step

static void test_ddpm_step(void) {
    const int T = 1000;
    const long n = 200000;
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, T);
    Schedule s;
    schedule_init(&s, &c);
    Rng rng;
    rng_seed(&rng, 1234);
    float *xt = mallocCheck(sizeof(float) * n), *ep = mallocCheck(sizeof(float) * n);
    float *xp = mallocCheck(sizeof(float) * n), *xq = mallocCheck(sizeof(float) * n);
    rng_fill_normal(&rng, xt, n);
    rng_fill_normal(&rng, ep, n);

    // t == 0: exactly the mean, no randomness consumed, for both sigma kinds
    for (int sk = 0; sk < 2; sk++) {
        Rng before = rng;
        ddpm_step(xp, xt, ep, 0, &s, (SigmaKind)sk, &rng, n);
        CHECK(memcmp(&before, &rng, sizeof(Rng)) == 0, "ddpm_step t=0 consumed randomness (sk %d)", sk);
        ddpm_step(xq, xt, ep, 0, &s, (SigmaKind)sk, NULL, n);  // rng not needed at t = 0
        CHECK(memcmp(xp, xq, sizeof(float) * n) == 0, "ddpm_step t=0 with NULL rng differs");
        double c1 = s.inv_sqrt_alpha[0], c2 = (double)s.betas[0] / s.sqrt_one_minus_alpha_bar[0];
        // independent: at t = 0, 1 - ab = beta, so c2 = sqrt(beta_0); 1/sqrt(1 - beta_0)
        double b0 = 1e-4, d1 = 1.0 / sqrt(1.0 - b0), d2 = sqrt(b0);
        int bad_exact = 0, bad_indep = 0;
        for (long i = 0; i < n; i++) {
            bad_exact += xp[i] != (float)(c1 * (xt[i] - c2 * ep[i]));
            bad_indep += fabs(xp[i] - d1 * (xt[i] - d2 * ep[i])) > 1e-6;
        }
        CHECK(bad_exact == 0, "ddpm_step t=0: %d values not bitwise equal to the mean (sk %d)", bad_exact, sk);
        CHECK(bad_indep == 0, "ddpm_step t=0: %d values off the double mean (sk %d)", bad_indep, sk);
    }
    CHECK(ddpm_sigma2(&s, 0, SIGMA_BETA) == 0.0 && ddpm_sigma2(&s, 0, SIGMA_POSTERIOR) == 0.0, "sigma2 at t=0");

    // the two sigma kinds must differ noticeably at small t for the test below to discriminate
    CHECK(s.posterior_var[1] < 0.6f * s.betas[1], "posterior_var[1] = %g vs beta %g", s.posterior_var[1], s.betas[1]);

    // t > 0: (x_prev - mean)/sigma_t ~ N(0, 1), and z is drawn in order from rng
    const int ts[3] = {1, 500, T - 1};
    for (int k = 0; k < 3; k++)
        for (int sk = 0; sk < 2; sk++) {
            int t = ts[k];
            double beta = s.betas[t], ab = s.alpha_bar64[t], ab_prev = s.alpha_bar64[t - 1];
            double sig2 = sk == SIGMA_POSTERIOR ? (1.0 - ab_prev) / (1.0 - ab) * beta : beta;
            CHECK(rel_err(ddpm_sigma2(&s, t, (SigmaKind)sk), sig2) < 1e-6, "sigma2 t=%d sk=%d", t, sk);
            double sig = sqrt(sig2);
            Rng clone = rng;
            ddpm_step(xp, xt, ep, t, &s, (SigmaKind)sk, &rng, n);
            double c1 = 1.0 / sqrt(1.0 - beta), c2 = beta / sqrt(1.0 - ab);
            double sum = 0.0, sum2 = 0.0;
            int bad_order = 0;
            for (long i = 0; i < n; i++) {
                double mean = c1 * (xt[i] - c2 * ep[i]);
                double r = (xp[i] - mean) / sig;
                sum += r;
                sum2 += r * r;
                double z = rng_normal(&clone);
                bad_order += fabs(xp[i] - (mean + sig * z)) > 1e-6 * (1.0 + fabs(mean));
            }
            double m = sum / n, var = sum2 / n - m * m;
            CHECK(fabs(m) < 5.0 / sqrt((double)n), "ddpm t=%d sk=%d: residual mean %g", t, sk, m);
            CHECK(fabs(var - 1.0) < 0.01, "ddpm t=%d sk=%d: residual variance %g", t, sk, var);
            CHECK(bad_order == 0, "ddpm t=%d sk=%d: %d values not mean + sigma z_i (z in order)", t, sk, bad_order);
            CHECK(memcmp(&clone, &rng, sizeof(Rng)) == 0, "ddpm t=%d: consumed != n normals", t);
        }

    // in place (x_prev aliasing x_t) gives the same values
    Rng r1, r2;
    rng_seed(&r1, 99); r2 = r1;
    ddpm_step(xp, xt, ep, 300, &s, SIGMA_POSTERIOR, &r1, n);
    memcpy(xq, xt, sizeof(float) * n);
    ddpm_step(xq, xq, ep, 300, &s, SIGMA_POSTERIOR, &r2, n);
    CHECK(memcmp(xp, xq, sizeof(float) * n) == 0, "ddpm_step in place differs");
    free(xt); free(ep); free(xp); free(xq);
    schedule_free(&s);
}

// ---------------------------------------------------------------------------------------------
// DDIM

static void check_ts(const int *ts, int cnt, int K, int T) {
    int want = K > T ? T : K;
    CHECK(cnt == want, "ddim_timesteps(K=%d, T=%d): count %d, want %d", K, T, cnt, want);
    if (cnt != want) return;
    CHECK(ts[cnt - 1] == T - 1, "ddim_timesteps(K=%d, T=%d): last %d", K, T, ts[cnt - 1]);
    if (want >= 2) CHECK(ts[0] == 0, "ddim_timesteps(K=%d, T=%d): first %d", K, T, ts[0]);
    int bad = 0;
    for (int i = 1; i < cnt; i++) bad += ts[i] <= ts[i - 1];
    CHECK(bad == 0, "ddim_timesteps(K=%d, T=%d): not strictly increasing", K, T);
}

static void test_ddim_timesteps(void) {
    int ts[2000];
    int n = ddim_timesteps(ts, 50, 1000);
    check_ts(ts, n, 50, 1000);
    int bad = 0;  // round(i * 999/49)
    for (int i = 0; i < n; i++) bad += ts[i] != (int)floor(i * 999.0 / 49.0 + 0.5);
    CHECK(bad == 0, "ddim_timesteps(50, 1000): %d values differ from round(i*999/49)", bad);
    n = ddim_timesteps(ts, 1000, 1000);
    bad = 0;
    for (int i = 0; i < n; i++) bad += ts[i] != i;
    CHECK(n == 1000 && bad == 0, "ddim_timesteps(K=T) is not 0..T-1");
    n = ddim_timesteps(ts, 2000, 1000);
    bad = 0;
    for (int i = 0; i < n; i++) bad += ts[i] != i;
    CHECK(n == 1000 && bad == 0, "ddim_timesteps(K>T) is not clamped to 0..T-1");
    n = ddim_timesteps(ts, 2, 1000);
    CHECK(n == 2 && ts[0] == 0 && ts[1] == 999, "ddim_timesteps(2, 1000) = {%d, %d}", ts[0], ts[1]);
    n = ddim_timesteps(ts, 1, 1000);
    CHECK(n == 1 && ts[0] == 999, "ddim_timesteps(1, 1000) = {%d}", ts[0]);
    n = ddim_timesteps(ts, 4, 10);
    CHECK(n == 4 && ts[0] == 0 && ts[1] == 3 && ts[2] == 6 && ts[3] == 9, "ddim_timesteps(4, 10)");
    for (int T = 1; T <= 60; T++)
        for (int K = 1; K <= 70; K++) check_ts(ts, ddim_timesteps(ts, K, T), K, T);
}

static void test_ddim_step(void) {
    const int T = 1000;
    const long n = 200000;
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, T);
    Schedule s;
    schedule_init(&s, &c);
    Rng rng;
    rng_seed(&rng, 4321);
    float *x0 = mallocCheck(sizeof(float) * n), *ep = mallocCheck(sizeof(float) * n);
    float *xt = mallocCheck(sizeof(float) * n), *xp = mallocCheck(sizeof(float) * n);
    float *xq = mallocCheck(sizeof(float) * n);
    for (long i = 0; i < n; i++) x0[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    rng_fill_normal(&rng, ep, n);
    int *tt = mallocCheck(sizeof(int) * n);
    const int t = 500;
    for (long i = 0; i < n; i++) tt[i] = t;
    diffusion_add_noise(xt, x0, ep, tt, &s, (int)n, 1);

    // eta = 0: deterministic, uses no rng (NULL is fine), same output twice
    Rng before = rng;
    ddim_step(xp, xt, ep, t, 250, 0.0f, 0, &s, &rng, n);
    CHECK(memcmp(&before, &rng, sizeof(Rng)) == 0, "ddim eta=0 consumed randomness");
    ddim_step(xq, xt, ep, t, 250, 0.0f, 0, &s, NULL, n);
    CHECK(memcmp(xp, xq, sizeof(float) * n) == 0, "ddim eta=0 not deterministic");
    // with the true eps, eta = 0 lands exactly on the forward process at t_prev (same eps)
    int bad = 0;
    double sa_p = sqrt(s.alpha_bar64[250]), s1m_p = sqrt(1.0 - s.alpha_bar64[250]);
    for (long i = 0; i < n; i++) bad += fabs(xp[i] - (sa_p * x0[i] + s1m_p * ep[i])) > 1e-5;
    CHECK(bad == 0, "ddim eta=0, true eps: %d values off x_{t_prev}(x0, eps)", bad);
    // ... and stepping to t_prev = -1 recovers x0 (sigma = 0 there for any eta)
    before = rng;
    ddim_step(xp, xt, ep, t, -1, 1.0f, 0, &s, &rng, n);
    CHECK(memcmp(&before, &rng, sizeof(Rng)) == 0, "ddim to t_prev=-1 consumed randomness");
    bad = 0;
    for (long i = 0; i < n; i++) bad += fabs(xp[i] - x0[i]) > 1e-5;
    CHECK(bad == 0, "ddim t_prev=-1, true eps: %d values not recovering x0", bad);
    // clip flag: with x0 in [-1, 1] and the true eps, clipping changes (almost) nothing
    ddim_step(xq, xt, ep, t, -1, 0.0f, 1, &s, NULL, n);
    bad = 0;
    for (long i = 0; i < n; i++) bad += fabs(xq[i] - x0[i]) > 1e-5 || fabs(xq[i]) > 1.0f;
    CHECK(bad == 0, "ddim_step clip: %d values off", bad);
    // clip flag on a far-off eps: outputs at t_prev = -1 are within [-1, 1]
    for (long i = 0; i < n; i++) xq[i] = -5.0f * ep[i];
    ddim_step(xp, xt, xq, t, -1, 0.0f, 1, &s, NULL, n);
    bad = 0;
    for (long i = 0; i < n; i++) bad += fabs(xp[i]) > 1.0f;
    CHECK(bad == 0, "ddim_step clip: %d values outside [-1, 1]", bad);
    // clip flag on a far-off eps toward an intermediate t_prev: the step of the clipped x0 and of the
    // eps it implies, (x_t - sqrt(ab_t) x0c)/sqrt(1 - ab_t) (not the far-off eps)
    {
        int tp = t / 2;
        double sa = sqrt(s.alpha_bar64[t]), s1 = sqrt(1 - s.alpha_bar64[t]), sp = sqrt(s.alpha_bar64[tp]);
        double cd = sqrt(1 - s.alpha_bar64[tp]);
        ddim_step(xp, xt, xq, t, tp, 0.0f, 1, &s, NULL, n);
        bad = 0;
        long outside = 0;
        for (long i = 0; i < n; i++) {
            double x0h = (xt[i] - s1 * xq[i]) / sa, x0c = fmin(1.0, fmax(-1.0, x0h));
            outside += fabs(x0h) > 1;
            double want = sp * x0c + cd * (xt[i] - sa * x0c) / s1;
            bad += fabs(xp[i] - want) > 1e-4 * fmax(1.0, fabs(want));
        }
        CHECK(bad == 0 && outside > n / 2, "ddim_step clip to t_prev = %d: %d values off the clipped x0's step (%ld clipped)",
              tp, bad, outside);
    }

    // K = T, eta = 1, t -> t-1: same mean and variance as the DDPM posterior-variance step.
    // Fixed x_t and eps_pred for all n values: sample mean/variance of x_prev vs closed form.
    int ts[1000];
    int K = ddim_timesteps(ts, T, T);
    CHECK(K == T, "ddim_timesteps(T, T) count %d", K);
    const int tq[3] = {1, 10, 999};
    for (int k = 0; k < 3; k++) {
        int tc = ts[tq[k]], tp = ts[tq[k] - 1];
        CHECK(tp == tc - 1, "K=T: consecutive timesteps %d -> %d", tc, tp);
        for (long i = 0; i < n; i++) { xt[i] = 0.7f; xq[i] = -0.4f; }
        ddim_step(xp, xt, xq, tc, tp, 1.0f, 0, &s, &rng, n);
        double beta = s.betas[tc], ab = s.alpha_bar64[tc];
        double mean_ddpm = 1.0 / sqrt(1.0 - beta) * (0.7 - beta / sqrt(1.0 - ab) * -0.4);
        double pv = s.posterior_var[tc];
        double sum = 0.0, sum2 = 0.0;
        for (long i = 0; i < n; i++) { double d = xp[i] - mean_ddpm; sum += d; sum2 += d * d; }
        double m = sum / n, var = sum2 / n - m * m;
        CHECK(fabs(m) < 5.0 * sqrt(pv / n), "ddim eta=1 t=%d: mean off the DDPM mean by %g (sd %g)", tc, m, sqrt(pv / n));
        CHECK(fabs(var / pv - 1.0) < 0.01, "ddim eta=1 t=%d: variance %g vs posterior_var %g", tc, var, pv);
        // and the DDPM posterior step itself agrees with the same statistics
        ddpm_step(xp, xt, xq, tc, &s, SIGMA_POSTERIOR, &rng, n);
        sum = sum2 = 0.0;
        for (long i = 0; i < n; i++) { double d = xp[i] - mean_ddpm; sum += d; sum2 += d * d; }
        m = sum / n; var = sum2 / n - m * m;
        CHECK(fabs(m) < 5.0 * sqrt(pv / n) && fabs(var / pv - 1.0) < 0.01, "ddpm posterior t=%d: mean %g var/pv %g",
              tc, m, var / pv);
    }
    free(x0); free(ep); free(xt); free(xp); free(xq); free(tt);
    schedule_free(&s);
}

// the clipped DDPM step: equal to ddpm_step when x0_hat is inside [-1, 1] (same noise draws),
// and its mean uses the clipped x0 when it is not
static void test_ddpm_step_clipped(void) {
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, 1000);
    Schedule s;
    schedule_init(&s, &c);
    enum { N = 4000 };
    static float x0[N], ep[N], xt[N], a[N], b[N];
    Rng r;
    rng_seed(&r, 11);
    int ts[3] = {0, 10, 700};
    for (int k = 0; k < 3; k++) {
        int t = ts[k];
        int tv[1] = {t};
        for (int i = 0; i < N; i++) { x0[i] = 0.98f * (2.0f * rng_uniform(&r) - 1.0f); ep[i] = rng_normal(&r); }
        for (int i = 0; i < N; i++) diffusion_add_noise(xt + i, x0 + i, ep + i, tv, &s, 1, 1);
        for (int sk = 0; sk < 2; sk++) {
            Rng r1, r2;
            rng_seed(&r1, 5); rng_seed(&r2, 5);
            ddpm_step(a, xt, ep, t, &s, (SigmaKind)sk, &r1, N);
            ddpm_step_clipped(b, xt, ep, t, &s, (SigmaKind)sk, &r2, N);
            double e = 0;
            for (int i = 0; i < N; i++) e = fmax(e, fabs(a[i] - b[i]));
            CHECK(e < 2e-4, "clipped step t=%d sigma %d differs from ddpm_step by %g inside [-1,1]", t, sk, e);
        }
    }
    // x0_hat = 3 (outside): the t=0 step returns the clipped x0 exactly (c0 = 1, ct = 0 at t = 0)
    float x = 3.0f * s.sqrt_alpha_bar[0], e0 = 0.0f, out;
    ddpm_step_clipped(&out, &x, &e0, 0, &s, SIGMA_BETA, NULL, 1);
    CHECK_NEAR(out, 1.0, 1e-6, "clipped t=0 step returns clip(x0_hat)");
    schedule_free(&s);
}

// The whole reverse chain with the exact noise predictor of a Gaussian data distribution
// N(mu, s^2): E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab). DDPM (both
// sigmas) and DDIM (eta 0 and 1, 50 steps) must turn N(0, 1) into samples with mean mu, std s.
static void exact_eps(float *eps, const float *x, long n, double ab, double mu, double s2) {
    for (long i = 0; i < n; i++) eps[i] = (float)(sqrt(1 - ab) * (x[i] - sqrt(ab) * mu) / (ab * s2 + 1 - ab));
}
#ifndef DDIM_K
#define DDIM_K 1000 // with 50 steps DDIM is biased on this problem (std -6%): a discretisation error, not a bug
#endif
static void test_chain_gaussian(void) {
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, 1000);
    Schedule s;
    schedule_init(&s, &c);
    enum { N = 20000 };
    static float x[N], e[N], y[N];
    const double mu = 0.3, sd = 0.5;
    for (int mode = 0; mode < 4; mode++) {
        Rng r;
        rng_seed(&r, 100 + mode);
        rng_fill_normal(&r, x, N);
        if (mode < 2) {
            for (int t = s.T - 1; t >= 0; t--) {
                exact_eps(e, x, N, s.alpha_bar64[t], mu, sd * sd);
                ddpm_step(y, x, e, t, &s, mode == 0 ? SIGMA_BETA : SIGMA_POSTERIOR, &r, N);
                memcpy(x, y, sizeof(x));
            }
        } else {
            static int ts[1000];
            int K = ddim_timesteps(ts, DDIM_K, s.T);
            for (int i = K - 1; i >= 0; i--) {
                exact_eps(e, x, N, s.alpha_bar64[ts[i]], mu, sd * sd);
                ddim_step(y, x, e, ts[i], i > 0 ? ts[i - 1] : -1, mode == 2 ? 0.0f : 1.0f, 0, &s, &r, N);
                memcpy(x, y, sizeof(x));
            }
        }
        double m = 0, v = 0;
        for (int i = 0; i < N; i++) m += x[i];
        m /= N;
        for (int i = 0; i < N; i++) v += (x[i] - m) * (x[i] - m);
        double sdev = sqrt(v / N);
        const char *name[4] = {"DDPM sigma=beta", "DDPM posterior", "DDIM eta=0 (K=T)", "DDIM eta=1 (K=T)"};
        // DDPM with sigma^2 = beta slightly over-disperses at small t (Ho et al.): allow 3%
        CHECK(fabs(m - mu) < 0.01 && fabs(sdev / sd - 1) < 0.03, "%s chain: mean %.4f (want %.2f), std %.4f (want %.2f)",
              name[mode], m, mu, sdev, sd);
    }
    schedule_free(&s);
}


// ---------------------------------------------------------------------------------------------
// objectives: sigma <-> t round trip, and D = x0 for the exact target F* of each preconditioning

static void test_objective_maps(void) {
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, 1000);
    Schedule s;
    schedule_init(&s, &c);
    for (int t = 0; t < s.T; t += 37) {
        double sg = schedule_sigma(&s, t);
        CHECK(fabs((sigma_to_t(&s, sg)) - ((double)t)) <= 1e-9, "sigma_to_t(sigma_%d)", t);
        CHECK(rel_err(t_to_sigma(&s, t), sg) < 1e-12, "t_to_sigma(%d)", t);
        CHECK(rel_err(sg * sg, (1 - s.alpha_bar64[t]) / s.alpha_bar64[t]) < 1e-12, "sigma_%d^2 = (1-ab)/ab", t);
    }
    for (double t = 0.25; t < 999; t += 97.3) {
        double sg = t_to_sigma(&s, t);
        CHECK(fabs((sigma_to_t(&s, sg)) - (t)) <= 1e-9, "sigma_to_t(t_to_sigma(%g))", t);
        int lo = (int)t;
        CHECK(sg > schedule_sigma(&s, lo) && sg < schedule_sigma(&s, lo + 1), "t_to_sigma(%g) between its neighbours", t);
    }
    CHECK(sigma_to_t(&s, 1e-9) == 0 && sigma_to_t(&s, 1e9) == s.T - 1, "sigma_to_t clamps to [0, T-1]");
    // D(x; sigma) = c_skip x + c_out F* = x0, F* = (x0 - c_skip x)/c_out; eps: F* = eps; v: F* = a eps - s x0
    const double x0 = 0.37, eps = -1.3, sd = 0.6;
    for (int o = 0; o < 3; o++)
        for (double sg = 0.01; sg < 200; sg *= 3.7) {
            Precond p = precond((ObjectiveKind)o, sg, sd);
            double x = x0 + sg * eps, F = (x0 - p.c_skip * x) / p.c_out;
            CHECK(fabs((p.c_skip * x + p.c_out * F) - (x0)) <= 1e-12, "objective %d sigma %g: D = x0", o, sg);
            double a = 1 / sqrt(1 + sg * sg), sv = sg * a; // VP: x_t = a x0 + sv eps
            if (o == OBJECTIVE_EPS) CHECK(fabs((F) - (eps)) <= 1e-9, "eps target at sigma %g", sg);
            if (o == OBJECTIVE_V) CHECK(fabs((F) - (a * eps - sv * x0)) <= 1e-9, "v target at sigma %g", sg);
            if (o != OBJECTIVE_EDM) CHECK(fabs((p.c_in * x) - (a * x0 + sv * eps)) <= 1e-12, "VP input at sigma %g", sg);
            if (o == OBJECTIVE_EDM) CHECK(fabs((p.c_in * sqrt(sg * sg + sd * sd)) - (1.0)) <= 1e-12, "EDM c_in at sigma %g", sg);
        }
    // Min-SNR-gamma: the weight on |D - x0|^2 is min(SNR, gamma): eps min(SNR, g)/SNR, v min(SNR, g)/(SNR + 1)
    c.min_snr_gamma = 5;
    for (double sg = 0.05; sg < 100; sg *= 2.3) {
        double snr = 1 / (sg * sg);
        c.objective = OBJECTIVE_EPS;
        CHECK(fabs((loss_weight(&c, sg)) - (fmin(snr, 5.0) / snr)) <= 1e-12, "min-SNR eps weight at sigma %g", sg);
        c.objective = OBJECTIVE_V;
        CHECK(fabs((loss_weight(&c, sg)) - (fmin(snr, 5.0) / (snr + 1))) <= 1e-12, "min-SNR v weight at sigma %g", sg);
    }
    // log-normal draws: the median of sigma is exp(p_mean)
    c.sigma_sampling = SIGMA_SAMPLING_LOGNORMAL;
    c.p_mean = -1.2f;
    c.p_std = 1.2f;
    Rng r;
    rng_seed(&r, 9);
    int below = 0, n = 20000;
    for (int i = 0; i < n; i++) {
        float t;
        double sg;
        draw_noise_level(&c, &s, &r, &t, &sg);
        below += sg < exp(-1.2);
        CHECK(t >= 0 && t <= s.T - 1 && rel_err(sg, t_to_sigma(&s, t)) < 1e-12, "draw %d: t %g sigma %g", i, t, sg);
        if (tu_failures) break;
    }
    CHECK(fabs((double)below / n - 0.5) < 0.015, "log-normal draws: %.3f below exp(p_mean), want 0.5", (double)below / n);
    schedule_free(&s);
}

// Every sampler and objective with the exact network of Gaussian data N(mu_y, sd^2) per value:
// D(x; sigma) = mu + sd^2/(sd^2 + sigma^2) (x - mu), F = (D - c_skip x)/c_out. The samples must have
// mean mu and standard deviation sd. Class-conditional: label y has mean mu_y, the null label
// MU_NULL; guidance 1 must give mu_y, guidance 0 the null label's mean.
#define GAUSS_SD 0.25
#define MU_NULL -0.2
typedef struct {
    const Schedule *s;
    ObjectiveKind obj;
    float sigma_data;
    int D, calls, max_n;
    float *out;
} GaussNet;
static double gauss_mu(int y) { return y < 0 || y >= 3 ? MU_NULL : -0.3 + 0.1 * y; }
static const float *gauss_net(void *ctx, const float *x, const float *t, const int *y, int n) {
    GaussNet *g = ctx;
    g->calls++;
    if (n > g->max_n) g->max_n = n;
    for (int b = 0; b < n; b++) {
        double sg = t_to_sigma(g->s, t[b]), mu = gauss_mu(y ? y[b] : -1), v = GAUSS_SD * GAUSS_SD;
        Precond p = precond(g->obj, sg, g->sigma_data);
        for (int i = 0; i < g->D; i++) {
            double xv = x[(size_t)b * g->D + i] / p.c_in, d = mu + v / (v + sg * sg) * (xv - mu);
            g->out[(size_t)b * g->D + i] = (float)((d - p.c_skip * xv) / p.c_out);
        }
    }
    return g->out;
}

// The std the deterministic samplers must give on that problem, by their recurrence on the scalar
// deviation x - mu (linear: D - mu = k (x - mu), k = sd^2/(sd^2 + sigma^2)), from sigma_max: their
// discretisation error (with few steps they over-disperse: Heun 25 steps +4%, DPM++ 15 +8%).
static double linear_gain(SamplerKind kind, int K, double smin, double smax) {
    double sig[1001], v = GAUSS_SD * GAUSS_SD, x = smax, old = 0;
    karras_sigmas(sig, K, smin, smax, 7.0);
    for (int i = 0; i < K; i++) {
        double sc = sig[i], sn = sig[i + 1], d = v / (v + sc * sc) * x;
        if (kind == SAMPLER_HEUN) { // Euler, then the trapezoid (EDM Alg. 1)
            double x2 = x + (sn - sc) * (x - d) / sc;
            if (sn > 0) x = x + (sn - sc) * 0.5 * ((x - d) / sc + (x2 - v / (v + sn * sn) * x2) / sn);
            else x = x2;
        } else { // DPM-Solver++(2M)
            if (sn == 0) x = d;
            else {
                double h = log(sc / sn), r = i ? log(sig[i - 1] / sc) / h : 0;
                double dt = i ? (1 + 1 / (2 * r)) * d - old / (2 * r) : d;
                x = sn / sc * x - expm1(-h) * dt;
            }
            old = d;
        }
    }
    return x;
}

static void moments(const float *x, long n, double *m, double *sd) {
    double a = 0, v = 0;
    for (long i = 0; i < n; i++) a += x[i];
    a /= n;
    for (long i = 0; i < n; i++) v += (x[i] - a) * (x[i] - a);
    *m = a;
    *sd = sqrt(v / n);
}

static void test_samplers_gaussian(void) {
    ModelConfig c = make_cfg(SCHEDULE_LINEAR, 1000);
    Schedule s;
    schedule_init(&s, &c);
    enum { NI = 24, D = 500 };
    static float x[NI * D], out[2 * NI * D];
    static int labels[NI];
    const char *obj_name[3] = {"eps", "v", "edm"};
    // want_sd 0: GAUSS_SD; else the sampler's own discretisation (linear_gain)
    struct { SamplerKind k; int steps; double tol_sd; int exact; } runs[] = {
        {SAMPLER_DPMPP2M, 50, 0.02, 1}, {SAMPLER_HEUN, 50, 0.02, 1}, {SAMPLER_DPMPP2M, 15, 0.02, 0},
        {SAMPLER_HEUN, 25, 0.02, 0}, {SAMPLER_DDPM, 0, 0.03, 1}, {SAMPLER_DDIM, 1000, 0.02, 1}};
    for (int o = 0; o < 3; o++)
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
            GaussNet g = {&s, (ObjectiveKind)o, 0.5f, D, 0, 0, out};
            SampleOptions opt = {.sampler = runs[r].k, .steps = runs[r].steps, .rho = 7, .n = NI, .batch = 8,
                                 .seed = 3, .objective = (ObjectiveKind)o, .sigma_data = 0.5f};
            sample_images(gauss_net, &g, D, &s, &opt, x, NULL);
            double m, sd;
            moments(x, (long)NI * D, &m, &sd);
            double want = runs[r].exact ? GAUSS_SD
                                        : linear_gain(runs[r].k, runs[r].steps, schedule_sigma(&s, 0), schedule_sigma(&s, s.T - 1));
            CHECK(fabs(m - MU_NULL) < 0.01 && fabs(sd / want - 1) < runs[r].tol_sd,
                  "%s %d steps, objective %s: mean %.4f (want %.2f), std %.4f (want %.4f)", sampler_name(runs[r].k),
                  runs[r].steps, obj_name[o], m, MU_NULL, sd, want);
            int want_calls = 3 * sample_nfe(&opt, s.T); // 3 batches of 8
            CHECK(g.calls == want_calls, "%s: %d network calls, want %d", sampler_name(runs[r].k), g.calls, want_calls);
        }
    // class-conditional: per-label means with guidance 1 (one call per step) and 0 (the null label)
    for (int i = 0; i < NI; i++) labels[i] = i % 3;
    for (int gi = 0; gi < 3; gi++) {
        float w = gi == 0 ? 1.0f : gi == 1 ? 0.0f : 2.0f;
        GaussNet g = {&s, OBJECTIVE_EDM, 0.5f, D, 0, 0, out};
        SampleOptions opt = {.sampler = SAMPLER_DPMPP2M, .steps = 30, .rho = 7, .n = NI, .batch = 8, .seed = 4,
                             .objective = OBJECTIVE_EDM, .sigma_data = 0.5f, .num_classes = 3, .labels = labels,
                             .guidance = w};
        sample_images(gauss_net, &g, D, &s, &opt, x, NULL);
        CHECK(g.max_n == (w == 1.0f ? 8 : 16), "guidance %g: network called with %d images at once", w, g.max_n);
        for (int y = 0; y < 3; y++) {
            double m = 0;
            for (int i = y; i < NI; i += 3)
                for (int j = 0; j < D; j++) m += x[(size_t)i * D + j];
            m /= (NI / 3) * D;
            // guided mean: mu_u + w (mu_y - mu_u) (the denoisers are affine in the mean)
            double want = MU_NULL + w * (gauss_mu(y) - MU_NULL);
            CHECK(fabs(m - want) < 0.01, "guidance %g, label %d: mean %.4f, want %.4f", w, y, m, want);
        }
    }
    // Karras sigmas: the ends, monotone, and a 0 after them
    double sig[11];
    karras_sigmas(sig, 10, 0.01, 157.0, 7.0);
    CHECK(rel_err(sig[0], 157.0) < 1e-12 && rel_err(sig[9], 0.01) < 1e-12 && sig[10] == 0, "Karras sigmas: ends");
    for (int i = 0; i < 9; i++) CHECK(sig[i + 1] < sig[i], "Karras sigmas: not decreasing at %d", i);
    schedule_free(&s);
}

int main(void) {
    test_objective_maps();
    test_samplers_gaussian();
    test_worked_example();
    test_chain_gaussian();
    test_ddpm_step_clipped();
    test_linear();
    test_cosine();
    test_add_noise_and_predict_x0();
    test_ddpm_step();
    test_ddim_timesteps();
    test_ddim_step();
    TEST_DONE("test_diffusion");
}
