// metrics.h: sample-quality metrics on the judge's outputs (judge.h), all computed in double.
//   FLD  Frechet distance between Gaussian fits of two feature sets (FID with the judge's features):
//        |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})
//   IS   classifier Inception Score exp(mean_x KL(p(y|x) || p(y))), p(y) = mean_x p(y|x):
//        1 (all predictions alike) .. C (confident and uniformly spread over the C classes)
//   confident share: fraction of samples with max_y p(y|x) >= a threshold; class histogram of argmax_y p(y|x)
#ifndef DDPM_METRICS_H
#define DDPM_METRICS_H

// mu[d] and cov[d,d] of n feature rows f[n,d]: mean and covariance with the 1/(n-1) normalisation
// (numpy.cov, as FID implementations); n = 1 gives cov = 0
void gaussian_fit(const float *f, long n, int d, double *mu, double *cov);

// Symmetric eigendecomposition by cyclic Jacobi rotations: A = V diag(evals) V^T.
// A[d,d] (row-major, symmetric) is overwritten; evecs[d,d] receives V (eigenvectors in its columns).
// Returns the number of sweeps used.
int sym_eig(double *A, int d, double *evals, double *evecs);
// out[d,d] = A^{1/2} = V diag(sqrt(max(lambda, 0))) V^T for symmetric PSD A (tiny negative
// eigenvalues from rounding are clamped to 0). out may not alias A.
void sym_sqrtm(const double *A, int d, double *out);

double frechet_distance(const double *mu1, const double *S1, const double *mu2, const double *S2, int d);
// the FLD of two feature sets f1[n1,d], f2[n2,d]
double fld_features(const float *f1, long n1, const float *f2, long n2, int d);

// probs[n,C] rows are distributions p(y|x)
double inception_score(const float *probs, long n, int C);
double confident_share(const float *probs, long n, int C, double threshold);
void class_histogram(const float *probs, long n, int C, long *hist); // hist[C] = counts of argmax

#endif
