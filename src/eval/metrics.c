// metrics.c: Frechet distance (with Jacobi eigendecompositions for the matrix square roots),
// classifier Inception Score, confident share, class histogram. Everything in double.
#include "eval/metrics.h"

#include <math.h>
#include <string.h>

#include "core/common.h"

void gaussian_fit(const float *f, long n, int d, double *mu, double *cov) {
    memset(mu, 0, (size_t)d * sizeof(double));
    memset(cov, 0, (size_t)d * d * sizeof(double));
    if (n <= 0) return;
    for (long i = 0; i < n; i++)
        for (int a = 0; a < d; a++) mu[a] += f[(size_t)i * d + a];
    for (int a = 0; a < d; a++) mu[a] /= (double)n;
    if (n < 2) return;
    // two-pass: cov = sum_i (f_i - mu)(f_i - mu)^T / (n - 1), upper triangle then mirrored
    double *c = mallocCheck((size_t)d * sizeof(double));
    for (long i = 0; i < n; i++) {
        for (int a = 0; a < d; a++) c[a] = f[(size_t)i * d + a] - mu[a];
        for (int a = 0; a < d; a++) {
            double ca = c[a];
            double *row = cov + (size_t)a * d;
            for (int b = a; b < d; b++) row[b] += ca * c[b];
        }
    }
    for (int a = 0; a < d; a++)
        for (int b = a; b < d; b++) {
            double v = cov[(size_t)a * d + b] / (double)(n - 1);
            cov[(size_t)a * d + b] = cov[(size_t)b * d + a] = v;
        }
    free(c);
}

// Cyclic Jacobi: for each pair p < q, rotate A' = J^T A J with J the (p,q) Givens rotation
// (c, s) chosen so that A'[p][q] = 0: theta = (a_qq - a_pp) / (2 a_pq), t = sgn(theta) / (|theta| + sqrt(theta^2 + 1)),
// c = 1/sqrt(t^2 + 1), s = t c. V accumulates the rotations: A = V diag V^T.
int sym_eig(double *A, int d, double *evals, double *evecs) {
    for (int i = 0; i < d; i++)
        for (int k = 0; k < d; k++) evecs[(size_t)i * d + k] = i == k ? 1.0 : 0.0;
    double total = 0.0;
    for (size_t i = 0; i < (size_t)d * d; i++) total += A[i] * A[i];
    int sweep = 0;
    for (; sweep < 100; sweep++) {
        double off = 0.0;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) off += A[(size_t)p * d + q] * A[(size_t)p * d + q];
        if (off <= 1e-30 * total || off == 0.0) break;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) {
                double apq = A[(size_t)p * d + q];
                if (apq == 0.0) continue;
                double app = A[(size_t)p * d + p], aqq = A[(size_t)q * d + q];
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < d; k++) { // columns p, q: A J
                    double akp = A[(size_t)k * d + p], akq = A[(size_t)k * d + q];
                    A[(size_t)k * d + p] = c * akp - s * akq;
                    A[(size_t)k * d + q] = s * akp + c * akq;
                }
                for (int k = 0; k < d; k++) { // rows p, q: J^T (A J)
                    double apk = A[(size_t)p * d + k], aqk = A[(size_t)q * d + k];
                    A[(size_t)p * d + k] = c * apk - s * aqk;
                    A[(size_t)q * d + k] = s * apk + c * aqk;
                }
                A[(size_t)p * d + q] = A[(size_t)q * d + p] = 0.0;
                for (int k = 0; k < d; k++) { // V J
                    double vkp = evecs[(size_t)k * d + p], vkq = evecs[(size_t)k * d + q];
                    evecs[(size_t)k * d + p] = c * vkp - s * vkq;
                    evecs[(size_t)k * d + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < d; i++) evals[i] = A[(size_t)i * d + i];
    return sweep;
}

// out = V diag(f(lambda)) V^T
static void eig_apply(double *out, const double *V, const double *lam, int d) {
    memset(out, 0, (size_t)d * d * sizeof(double));
    for (int k = 0; k < d; k++) {
        double l = lam[k];
        if (l == 0.0) continue;
        for (int i = 0; i < d; i++) {
            double vik = l * V[(size_t)i * d + k];
            double *row = out + (size_t)i * d;
            for (int j = 0; j < d; j++) row[j] += vik * V[(size_t)j * d + k];
        }
    }
}

void sym_sqrtm(const double *A, int d, double *out) {
    double *W = mallocCheck((size_t)d * d * sizeof(double)), *V = mallocCheck((size_t)d * d * sizeof(double));
    double *lam = mallocCheck((size_t)d * sizeof(double));
    memcpy(W, A, (size_t)d * d * sizeof(double));
    sym_eig(W, d, lam, V);
    for (int i = 0; i < d; i++) lam[i] = lam[i] > 0.0 ? sqrt(lam[i]) : 0.0;
    eig_apply(out, V, lam, d);
    free(W); free(V); free(lam);
}

// tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = sum_i sqrt(max(eig_i(M), 0)), M = R S2 R, R = S1^{1/2} (M symmetric PSD)
double frechet_distance(const double *mu1, const double *S1, const double *mu2, const double *S2, int d) {
    size_t dd = (size_t)d * d;
    double *R = mallocCheck(dd * sizeof(double)), *T = mallocCheck(dd * sizeof(double));
    double *M = mallocCheck(dd * sizeof(double)), *V = mallocCheck(dd * sizeof(double));
    double *lam = mallocCheck((size_t)d * sizeof(double));
    sym_sqrtm(S1, d, R);
    // T = S2 R, then M = R T (symmetrised against rounding)
    memset(T, 0, dd * sizeof(double));
    memset(M, 0, dd * sizeof(double));
    for (int i = 0; i < d; i++)
        for (int k = 0; k < d; k++) {
            double a = S2[(size_t)i * d + k];
            for (int j = 0; j < d; j++) T[(size_t)i * d + j] += a * R[(size_t)k * d + j];
        }
    for (int i = 0; i < d; i++)
        for (int k = 0; k < d; k++) {
            double a = R[(size_t)i * d + k];
            for (int j = 0; j < d; j++) M[(size_t)i * d + j] += a * T[(size_t)k * d + j];
        }
    for (int i = 0; i < d; i++)
        for (int j = i + 1; j < d; j++) {
            double v = 0.5 * (M[(size_t)i * d + j] + M[(size_t)j * d + i]);
            M[(size_t)i * d + j] = M[(size_t)j * d + i] = v;
        }
    sym_eig(M, d, lam, V);
    double tr_sqrt = 0.0, tr1 = 0.0, tr2 = 0.0, dmu = 0.0;
    for (int i = 0; i < d; i++) {
        tr_sqrt += lam[i] > 0.0 ? sqrt(lam[i]) : 0.0;
        tr1 += S1[(size_t)i * d + i];
        tr2 += S2[(size_t)i * d + i];
        double e = mu1[i] - mu2[i];
        dmu += e * e;
    }
    free(R); free(T); free(M); free(V); free(lam);
    double f = dmu + tr1 + tr2 - 2.0 * tr_sqrt;
    return f > 0.0 ? f : 0.0; // rounding can leave -1e-13 for identical sets
}

double fld_features(const float *f1, long n1, const float *f2, long n2, int d) {
    size_t dd = (size_t)d * d;
    double *mu1 = mallocCheck((size_t)d * sizeof(double)), *mu2 = mallocCheck((size_t)d * sizeof(double));
    double *S1 = mallocCheck(dd * sizeof(double)), *S2 = mallocCheck(dd * sizeof(double));
    gaussian_fit(f1, n1, d, mu1, S1);
    gaussian_fit(f2, n2, d, mu2, S2);
    double f = frechet_distance(mu1, S1, mu2, S2, d);
    free(mu1); free(mu2); free(S1); free(S2);
    return f;
}

// KL(p(y|x) || p(y)) = sum_y p(y|x) (log p(y|x) - log p(y)), with 0 log 0 = 0
double inception_score(const float *probs, long n, int C) {
    if (n <= 0) return 0.0;
    double *py = callocCheck((size_t)C, sizeof(double));
    for (long i = 0; i < n; i++)
        for (int c = 0; c < C; c++) py[c] += probs[(size_t)i * C + c];
    for (int c = 0; c < C; c++) py[c] /= (double)n;
    double kl = 0.0;
    for (long i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            double p = probs[(size_t)i * C + c];
            if (p > 0.0) kl += p * (log(p) - log(py[c]));
        }
    free(py);
    return exp(kl / (double)n);
}

double confident_share(const float *probs, long n, int C, double threshold) {
    if (n <= 0) return 0.0;
    long k = 0;
    for (long i = 0; i < n; i++) {
        float mx = probs[(size_t)i * C];
        for (int c = 1; c < C; c++) if (probs[(size_t)i * C + c] > mx) mx = probs[(size_t)i * C + c];
        k += mx >= threshold;
    }
    return (double)k / (double)n;
}

void class_histogram(const float *probs, long n, int C, long *hist) {
    memset(hist, 0, (size_t)C * sizeof(long));
    for (long i = 0; i < n; i++) {
        int a = 0;
        for (int c = 1; c < C; c++) if (probs[(size_t)i * C + c] > probs[(size_t)i * C + a]) a = c;
        hist[a]++;
    }
}
