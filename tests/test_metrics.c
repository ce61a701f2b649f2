// test_metrics.c: the sample-quality metrics of metrics.h against closed forms.
// - Jacobi eigendecomposition: A V = V diag(lambda), V orthogonal; sqrtm(A)^2 = A (also rank-deficient A)
// - FLD: a set against itself is 0; a pure mean shift s of the same set gives exactly |s|^2;
//   FLD grows monotonically with the shift; Gaussians with commuting covariances (diagonal, and the
//   same rotated by an orthogonal Q) match sum_i (sqrt(a_i) - sqrt(b_i))^2 + |mu1 - mu2|^2;
//   sampled Gaussian sets approach that closed form
// - IS: one-hot predictions spread evenly over 10 classes give 10, identical predictions give 1
// - confident share and class histogram on a hand-made example
#include <math.h>
#include <string.h>

#include "core/common.h"
#include "eval/metrics.h"
#include "core/rng.h"
#include "testutil.h"

static Rng g;

static double *dalloc(size_t n) { return callocCheck(n, sizeof(double)); }

// random orthogonal Q[d,d] by Gram-Schmidt on Gaussian columns
static void random_orthogonal(double *Q, int d) {
    for (int i = 0; i < d * d; i++) Q[i] = rng_normal(&g);
    for (int k = 0; k < d; k++) {
        for (int j = 0; j < k; j++) {
            double dot = 0;
            for (int i = 0; i < d; i++) dot += Q[i * d + k] * Q[i * d + j];
            for (int i = 0; i < d; i++) Q[i * d + k] -= dot * Q[i * d + j];
        }
        double nn = 0;
        for (int i = 0; i < d; i++) nn += Q[i * d + k] * Q[i * d + k];
        nn = sqrt(nn);
        for (int i = 0; i < d; i++) Q[i * d + k] /= nn;
    }
}

// out = Q diag(l) Q^T
static void qdq(double *out, const double *Q, const double *l, int d) {
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += Q[i * d + k] * l[k] * Q[j * d + k];
            out[i * d + j] = s;
        }
}

static double max_abs(const double *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static void test_eig_sqrtm(int d, int rank) {
    double *Q = dalloc((size_t)d * d), *l = dalloc(d), *A = dalloc((size_t)d * d), *W = dalloc((size_t)d * d);
    double *V = dalloc((size_t)d * d), *lam = dalloc(d), *R = dalloc((size_t)d * d), *RR = dalloc((size_t)d * d);
    random_orthogonal(Q, d);
    for (int i = 0; i < d; i++) l[i] = i < rank ? 0.01 + 3.0 * rng_uniform(&g) : 0.0;
    qdq(A, Q, l, d);
    memcpy(W, A, sizeof(double) * d * d);
    double t0 = now_seconds();
    int sweeps = sym_eig(W, d, lam, V);
    double dt = now_seconds() - t0;
    // A V = V diag(lam) and V^T V = I
    double e_av = 0, e_orth = 0;
    for (int i = 0; i < d; i++)
        for (int k = 0; k < d; k++) {
            double av = 0, vtv = 0;
            for (int j = 0; j < d; j++) { av += A[i * d + j] * V[j * d + k]; vtv += V[j * d + i] * V[j * d + k]; }
            e_av = fmax(e_av, fabs(av - V[i * d + k] * lam[k]));
            e_orth = fmax(e_orth, fabs(vtv - (i == k)));
        }
    double scale = max_abs(A, (size_t)d * d);
    CHECK(e_av <= 1e-10 * scale, "d=%d: |A V - V diag| = %.3g", d, e_av);
    CHECK(e_orth <= 1e-10, "d=%d: |V^T V - I| = %.3g", d, e_orth);
    // the eigenvalues are the l_i (in some order): compare sums and sums of squares
    double s1 = 0, s2 = 0, t1 = 0, t2 = 0;
    for (int i = 0; i < d; i++) { s1 += lam[i]; s2 += lam[i] * lam[i]; t1 += l[i]; t2 += l[i] * l[i]; }
    CHECK_NEAR(s1, t1, 1e-9 * t1, "sum of eigenvalues");
    CHECK_NEAR(s2, t2, 1e-9 * t2, "sum of squared eigenvalues");
    // sqrtm(A)^2 = A
    sym_sqrtm(A, d, R);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += R[i * d + k] * R[k * d + j];
            RR[i * d + j] = s - A[i * d + j];
        }
    double e_sq = max_abs(RR, (size_t)d * d);
    CHECK(e_sq <= 1e-9 * scale, "d=%d rank %d: |sqrtm(A)^2 - A| = %.3g (scale %.3g)", d, rank, e_sq, scale);
    printf("  eig d=%d rank %d: %d sweeps, %.3f s, |AV - V diag| %.2g, |V'V - I| %.2g, |sqrtm^2 - A| %.2g\n", d, rank,
           sweeps, dt, e_av, e_orth, e_sq);
    free(Q); free(l); free(A); free(W); free(V); free(lam); free(R); free(RR);
}

// n correlated features: f = z L^T + m, z ~ N(0, I)
static float *correlated_set(long n, int d, double shift) {
    double *L = dalloc((size_t)d * d);
    for (int i = 0; i < d; i++)
        for (int j = 0; j <= i; j++) L[i * d + j] = (i == j ? 1.0 : 0.3) * rng_normal(&g);
    float *f = mallocCheck((size_t)n * d * sizeof(float));
    double *z = dalloc(d);
    for (long k = 0; k < n; k++) {
        for (int j = 0; j < d; j++) z[j] = rng_normal(&g);
        for (int i = 0; i < d; i++) {
            double s = shift;
            for (int j = 0; j <= i; j++) s += L[i * d + j] * z[j];
            f[k * d + i] = (float)s;
        }
    }
    free(L); free(z);
    return f;
}

static void test_fld_same_and_shift(int d) {
    long n = 2000;
    float *f = correlated_set(n, d, 0.5);
    double *mu = dalloc(d), *S = dalloc((size_t)d * d);
    gaussian_fit(f, n, d, mu, S);
    double tr = 0;
    for (int i = 0; i < d; i++) tr += S[i * d + i];
    double self = fld_features(f, n, f, n, d);
    CHECK(fabs(self) <= 1e-6 * tr, "d=%d: FLD(f, f) = %.3g, want 0 (tr S = %.3g)", d, self, tr);
    // pure shift of the same set: covariance unchanged, FLD = |s|^2 (in double, the float shift is exact enough)
    float *g2 = mallocCheck((size_t)n * d * sizeof(float));
    double *dir = dalloc(d), dn = 0;
    for (int i = 0; i < d; i++) { dir[i] = rng_normal(&g); dn += dir[i] * dir[i]; }
    for (int i = 0; i < d; i++) dir[i] /= sqrt(dn);
    double prev = -1;
    const double amounts[] = {0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0};
    for (int a = 0; a < 7; a++) {
        double s2 = 0;
        for (int i = 0; i < d; i++) { float si = (float)(amounts[a] * dir[i]); s2 += (double)si * si; }
        for (long k = 0; k < n; k++)
            for (int i = 0; i < d; i++) g2[k * d + i] = f[k * d + i] + (float)(amounts[a] * dir[i]);
        double v = fld_features(f, n, g2, n, d);
        // the float adds round the features (~1e-7 relative): the covariance changes by that much
        CHECK(fabs(v - s2) <= 1e-6 * tr + 1e-6 * s2, "d=%d shift %g: FLD %.9g, want |s|^2 = %.9g", d, amounts[a], v, s2);
        CHECK(v > prev, "d=%d: FLD %.9g at shift %g is not above %.9g at the smaller shift", d, v, amounts[a], prev);
        prev = v;
    }
    printf("  FLD d=%d: self %.3g (tr S %.3g), shift 4 -> %.6f\n", d, self, tr, prev);
    free(f); free(g2); free(mu); free(S); free(dir);
}

static void test_fld_closed_form(int d) {
    double *a = dalloc(d), *b = dalloc(d), *mu1 = dalloc(d), *mu2 = dalloc(d), *Q = dalloc((size_t)d * d);
    double *S1 = dalloc((size_t)d * d), *S2 = dalloc((size_t)d * d), want = 0;
    for (int i = 0; i < d; i++) {
        a[i] = 0.1 + 2.0 * rng_uniform(&g);
        b[i] = 0.1 + 2.0 * rng_uniform(&g);
        mu1[i] = rng_normal(&g);
        mu2[i] = rng_normal(&g);
        want += (sqrt(a[i]) - sqrt(b[i])) * (sqrt(a[i]) - sqrt(b[i])) + (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
    }
    // diagonal covariances
    for (int i = 0; i < d; i++) { S1[i * d + i] = a[i]; S2[i * d + i] = b[i]; }
    double got = frechet_distance(mu1, S1, mu2, S2, d);
    CHECK_NEAR(got, want, 1e-9 * want, "FLD of diagonal Gaussians vs sum (sqrt a - sqrt b)^2 + |dmu|^2");
    // the same covariances rotated by one orthogonal Q (they still commute): same distance
    random_orthogonal(Q, d);
    qdq(S1, Q, a, d);
    qdq(S2, Q, b, d);
    double got_rot = frechet_distance(mu1, S1, mu2, S2, d);
    CHECK_NEAR(got_rot, want, 1e-8 * want, "FLD of rotated commuting Gaussians");
    // FLD is symmetric
    CHECK_NEAR(frechet_distance(mu2, S2, mu1, S1, d), got_rot, 1e-8 * want, "FLD symmetric");
    // non-commuting: S1 = c I, S2 = P diag(b) P^T with another rotation P: tr sqrt(S1^1/2 S2 S1^1/2) = sqrt(c) sum sqrt(b)
    double *P = dalloc((size_t)d * d), c = 0.7, want_nc = 0, *S3 = dalloc((size_t)d * d);
    random_orthogonal(P, d);
    qdq(S3, P, b, d);
    for (int i = 0; i < d; i++) {
        want_nc += c + b[i] - 2.0 * sqrt(c) * sqrt(b[i]) + (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
        for (int j = 0; j < d; j++) S1[i * d + j] = i == j ? c : 0.0;
    }
    CHECK_NEAR(frechet_distance(mu1, S1, mu2, S3, d), want_nc, 1e-8 * want_nc, "FLD with S1 = c I");
    CHECK_NEAR(frechet_distance(mu2, S3, mu1, S1, d), want_nc, 1e-8 * want_nc, "FLD with S2 = c I");
    // general (non-commuting) covariances: the computation is not symmetric, the distance is
    qdq(S1, Q, a, d);
    double f12 = frechet_distance(mu1, S1, mu2, S3, d), f21 = frechet_distance(mu2, S3, mu1, S1, d);
    CHECK_NEAR(f12, f21, 1e-8 * f12, "FLD symmetric for non-commuting covariances");
    free(P); free(S3);
    // sampled sets: x = mu + Q diag(sqrt a) z. Sampling error of the fitted moments is O(1/sqrt n)
    long n = 50000;
    float *f1 = mallocCheck((size_t)n * d * sizeof(float)), *f2 = mallocCheck((size_t)n * d * sizeof(float));
    double *z = dalloc(d);
    for (int set = 0; set < 2; set++) {
        float *f = set ? f2 : f1;
        const double *v = set ? b : a, *mu = set ? mu2 : mu1;
        for (long k = 0; k < n; k++) {
            for (int j = 0; j < d; j++) z[j] = sqrt(v[j]) * rng_normal(&g);
            for (int i = 0; i < d; i++) {
                double s = mu[i];
                for (int j = 0; j < d; j++) s += Q[i * d + j] * z[j];
                f[k * d + i] = (float)s;
            }
        }
    }
    double got_s = fld_features(f1, n, f2, n, d);
    CHECK(fabs(got_s - want) <= 0.03 * want + 0.01 * d, "sampled Gaussians: FLD %.4f, closed form %.4f", got_s, want);
    printf("  closed form d=%d: %.6f, diagonal %.6f, rotated %.6f, sampled (n=%ld) %.4f\n", d, want, got, got_rot, n, got_s);
    free(a); free(b); free(mu1); free(mu2); free(Q); free(S1); free(S2); free(f1); free(f2); free(z);
}

static void test_is_conf_hist(void) {
    int C = 10;
    long n = 100;
    float *p = callocCheck((size_t)n * C, sizeof(float));
    for (long i = 0; i < n; i++) p[i * C + i % C] = 1.0f; // one-hot, 10 of each class
    CHECK_NEAR(inception_score(p, n, C), 10.0, 1e-9, "IS of uniform one-hot predictions");
    CHECK_NEAR(confident_share(p, n, C, 0.9), 1.0, 0, "confident share of one-hot predictions");
    for (long i = 0; i < n; i++) // identical (non-trivial) predictions
        for (int c = 0; c < C; c++) p[i * C + c] = (float)(c + 1) / 55.0f;
    CHECK_NEAR(inception_score(p, n, C), 1.0, 1e-9, "IS of identical predictions");
    for (long i = 0; i < n; i++) // all one-hot on class 3
        for (int c = 0; c < C; c++) p[i * C + c] = c == 3;
    CHECK_NEAR(inception_score(p, n, C), 1.0, 1e-12, "IS of identical one-hot predictions");
    // one-hot over 5 of the 10 classes: IS = 5; half-mass mixtures of two classes over disjoint pairs: IS = 5 / ... :
    for (long i = 0; i < n; i++)
        for (int c = 0; c < C; c++) p[i * C + c] = c == 2 * (i % 5);
    CHECK_NEAR(inception_score(p, n, C), 5.0, 1e-9, "IS of one-hot predictions over 5 classes");
    // p(y|x) = 1/2 on classes {2k, 2k+1}, k = i % 5: H(p(y)) = log 10, H(p(y|x)) = log 2, IS = 10 / 2
    for (long i = 0; i < n; i++)
        for (int c = 0; c < C; c++) p[i * C + c] = c / 2 == i % 5 ? 0.5f : 0.0f;
    CHECK_NEAR(inception_score(p, n, C), 5.0, 1e-6, "IS of two-class halves");
    free(p);

    // hand-made: 5 samples, 3 classes
    const float q[5 * 3] = {
        0.95f, 0.03f, 0.02f,  // class 0, confident
        0.10f, 0.85f, 0.05f,  // class 1, not confident
        0.00f, 0.00f, 1.00f,  // class 2, confident
        0.30f, 0.30f, 0.40f,  // class 2, not confident
        0.05f, 0.92f, 0.03f,  // class 1, confident
    };
    long h[3];
    class_histogram(q, 5, 3, h);
    CHECK(h[0] == 1 && h[1] == 2 && h[2] == 2, "histogram %ld %ld %ld, want 1 2 2", h[0], h[1], h[2]);
    CHECK_NEAR(confident_share(q, 5, 3, 0.9), 0.6, 1e-12, "confident share (3 of 5 with p >= 0.9)");
    CHECK_NEAR(confident_share(q, 5, 3, 0.5), 0.8, 1e-12, "share with p >= 0.5");
}

int main(void) {
    rng_seed(&g, 7);
    test_eig_sqrtm(6, 6);
    test_eig_sqrtm(40, 40);
    test_eig_sqrtm(40, 25);  // rank-deficient PSD: zero eigenvalues
    test_eig_sqrtm(128, 128);
    test_fld_same_and_shift(16);
    test_fld_same_and_shift(128);
    test_fld_closed_form(8);
    test_fld_closed_form(32);
    test_is_conf_hist();
    TEST_DONE("test_metrics");
}
