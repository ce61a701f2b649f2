// gemm.h: single-threaded packed SGEMM (callers parallelise over images), one variant per
// instruction set, chosen at run time.
#ifndef DDPM_GEMM_H
#define DDPM_GEMM_H

#include <stddef.h>
#include <stdint.h>

// C[M,N] = (accumulate ? C : 0) + op(A)[M,K] op(B)[K,N], row-major.
// op(A) = A[M,K] (lda >= K) if !transA, else A^T with A stored [K,M] (lda >= M); same for B.
void gemm(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, float *C, int ldc, int accumulate);

// The same with row tables: row r of the stored A is at A + aoff[r] (and of B at B + boff[r])
// instead of A + r lda; a NULL table means the usual leading dimension. A row table lets a
// GEMM read a virtual matrix in place, e.g. the im2col matrix of a convolution as shifted
// views of a zero-padded image (implicit GEMM), with no copy.
void gemm_rows(int transA, int transB, int M, int N, int K, const float *A, int lda, const long *aoff,
               const float *B, int ldb, const long *boff, float *C, int ldc, int accumulate);

// A weight matrix used by many GEMMs (one per image) packed once: gemm_pack_a writes op(A)[M, K]
// in the micro-kernel's layout into Ap (gemm_packed_a_floats(M, K) floats); gemm_packed is
// gemm_rows(0, 0, ..) with that A. Same results, bit for bit, as packing it in every call.
size_t gemm_packed_a_floats(int M, int K);
void gemm_pack_a(int transA, int M, int K, const float *A, int lda, float *Ap);
void gemm_packed(int M, int N, int K, const float *Ap, const float *B, int ldb, const long *boff, float *C, int ldc,
                 int accumulate);

// The variants (gemm_<isa>.c): 0 = avx512, 1 = avx2, 2 = generic, fastest first (isa.h). The
// active one is the active instruction set of all kernels: DDPM_ISA=avx512|avx2|generic, else the
// first this CPU supports.
int gemm_variant_count(void);
const char *gemm_variant_name(int i);
int gemm_variant_supported(int i);   // 1 if this CPU runs variant i
const char *gemm_isa(void);          // the active variant's name ("avx512bf16" in bf16)
// make the named instruction set active for every kernel (isa_set: not inside a parallel region,
// and not between gemm_pack_a and gemm_packed: the packed layout is the variant's): 0, or -1 if
// the CPU lacks it, -2 if unknown
int gemm_set_isa(const char *name);

// Precision of the products: fp32, or bf16 inputs (rounded to nearest even) with fp32
// accumulation, on CPUs with AVX512_BF16 (VDPBF16PS: two products per fp32 lane). Same rules as
// gemm_set_isa; 0, or -1 if the CPU lacks bf16 instructions.
typedef enum { GEMM_FP32 = 0, GEMM_BF16 = 1 } GemmPrecision;
int gemm_bf16_supported(void);
int gemm_set_precision(GemmPrecision p);
GemmPrecision gemm_precision(void);

// bf16 precision only. A bf16 pair packs two values rounded to bf16, the first in the low half of
// 32 bits. For each of `rows` rows (dst rows ldd apart, lo and hi rows lds apart):
// dst[i] = (bf16(lo[i]), bf16(hi[i])) for i < n (hi NULL: zeros), then zero pairs up to ldd >= n
// (the zero padding between the rows of a padded image).
void gemm_bf16_pairs(uint32_t *dst, size_t ldd, const float *lo, const float *hi, size_t lds, int rows, size_t n);
// gemm_packed with B[K, N] given as pair rows, read in place: row kp (= rows 2 kp and 2 kp + 1 of
// B) at B + boff[kp]; K even, Ap packed by gemm_pack_a in bf16 precision. Each row is read in
// whole 32-pair panels: up to 31 pairs past its column N - 1, which must be readable. It saves
// the GEMM the bf16 rounding of B, which it would repeat in every call that reads the same
// values (the 9 shifted views of one image in a convolution).
void gemm_packed_pairs(int M, int N, int K, const float *Ap, const uint32_t *B, const long *boff, float *C, int ldc,
                       int accumulate);
// for each of `rows` rows: dst[i] = bf16(src[i]) for i < n, then zeros up to ldd >= n (rows ldd and
// lds apart)
void gemm_bf16_round(uint16_t *dst, size_t ldd, const float *src, size_t lds, int rows, size_t n);
// gemm_rows(0, transB, ..) with A given in bf16 (gemm_bf16_round of the float A), read in place:
// row i at A + aoff[i] (or A + i lda) in bf16 elements, at any alignment. Each row is read in
// pairs: when K is odd, one value past its end, which must be readable and finite. Bit for bit
// the result of gemm_rows on the float A; it saves the packing of A, which costs as much as the
// products when few columns of B reuse it (a convolution's weight gradient: N = Co).
void gemm_rows_a16(int transB, int M, int N, int K, const uint16_t *A, int lda, const long *aoff, const float *B,
                   int ldb, const long *boff, float *C, int ldc, int accumulate);
// gemm_rows_a16(1, ..) with B[N, K] given as its pair image (gemm_bf16_pairs of rows 2c and 2c + 1):
// word k of pair row c at Bq + c ldq + k. Bit for bit the result on the float B; a convolution's
// weight gradient reads dY from the pair image that its data gradient reads too.
void gemm_rows_a16_q(int M, int N, int K, const uint16_t *A, int lda, const long *aoff, const uint32_t *Bq, int ldq,
                     float *C, int ldc, int accumulate);

#endif
