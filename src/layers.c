// layers.c: forward/backward of every U-Net layer on plain NCHW float arrays.
// Backward passes accumulate (+=). Parallel loops hand out images (or chunks of them) to the
// threads dynamically; gradients of parameters are summed per fixed chunk of the batch into
// `ws` and then reduced in chunk order, so the result depends only on the inputs.
#include "layers.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm.h"
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
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f; // 1.5 * 2^23: adding it rounds to an integer
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = EXP_REDUCE(x, n);
    union { float f; int i; } u = {.i = ((int)n + 127) << 23};
    return EXP_POLY(r) * u.f;
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// Parameter gradients are summed over the batch in GRAD_CHUNKS fixed chunks of images (chunk c =
// images [c B / GRAD_CHUNKS, (c + 1) B / GRAD_CHUNKS)). The chunks are handed to the threads
// dynamically, so a thread the machine slows down takes fewer of them; each chunk has its own
// partial sum, and the partials are added in chunk order. The result depends neither on the
// schedule nor on the thread count. Chunk c's partial (psize floats) is slot c / nt of thread
// region c % nt, at `off` in the region: every region has room for GRAD_CHUNKS slots.
#define GRAD_CHUNKS 16

// n rounded up to whole 64-byte lines (so every thread region and partial stays aligned)
static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static float *chunk_partial(float *ws, size_t wsz, size_t off, size_t psize, int c, int nt) {
    return ws + (size_t)(c % nt) * wsz + off + (size_t)(c / nt) * psize;
}

// start chunk c: its images [*lo, *hi) and its partial, zeroed
static float *chunk_begin(float *ws, size_t wsz, size_t off, size_t psize, int c, int nt, int B, int *lo, int *hi) {
    float *part = chunk_partial(ws, wsz, off, psize, c, nt);
    memset(part, 0, psize * sizeof(float));
    *lo = (int)((long)B * c / GRAD_CHUNKS);
    *hi = (int)((long)B * (c + 1) / GRAD_CHUNKS);
    return part;
}

// dst[i] += sum_c partial_c[poff + i], c = 0 .. GRAD_CHUNKS - 1 in order
static void reduce_chunks(float *dst, float *ws, size_t wsz, size_t off, size_t psize, size_t poff, long n, int nt) {
    if (!dst) return;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float s = 0.0f;
        for (int c = 0; c < GRAD_CHUNKS; c++) s += chunk_partial(ws, wsz, off, psize, c, nt)[poff + i];
        dst[i] += s;
    }
}

// dst[j][i] += sum_c partial_c[i cols + j] (i < rows, j < cols), c = 0 .. GRAD_CHUNKS - 1 in order:
// partials kept transposed (dw^T[CKK, Co]) reduced into dst[Co, CKK]
static void reduce_chunks_transposed(float *dst, float *ws, size_t wsz, size_t off, size_t psize, int rows, int cols, int nt) {
    if (!dst) return;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float s = 0.0f;
            for (int c = 0; c < GRAD_CHUNKS; c++) s += chunk_partial(ws, wsz, off, psize, c, nt)[(size_t)i * cols + j];
            dst[(size_t)j * rows + i] += s;
        }
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

static inline float hsum8(const v8f *v) {
    float s = 0.0f;
    for (int k = 0; k < 8; k++) s += (*v)[k];
    return s;
}

// sum of x[n] on 16 float lanes (fixed order)
static float sum16(const float *x, long n) {
    v8f a = {0}, b = {0};
    long i = 0;
    for (; i + 16 <= n; i += 16) { a += load8(x + i); b += load8(x + i + 8); }
    a += b;
    float s = hsum8(&a);
    for (; i < n; i++) s += x[i];
    return s;
}

// ---------------------------------------------------------------------------------------
// im2col / col2im for one image: col[(ci K + kh) K + kw][oh Wo + ow] = in[ci][oh s - p + kh][ow s - p + kw]
// (rows ld floats apart: ld = Ho Wo for one image, or a multiple when images sit side by side)

// the output columns [*lo, *hi) whose input column ow s - p + kw lies inside [0, W)
static void valid_cols(int W, int Wo, int stride, int pad, int kw, int *lo, int *hi) {
    int off = kw - pad, l = 0, h = Wo;
    while (l < Wo && l * stride + off < 0) l++;
    while (h > l && (h - 1) * stride + off >= W) h--;
    *lo = l;
    *hi = h;
}

static void im2col(float *col, const float *in, int Ci, int H, int W, int K, int stride, int pad, int Ho, int Wo, size_t ld) {
    for (int kw = 0; kw < K; kw++) {
        int lo, hi, off = kw - pad; // iw = ow s + off, inside the image for ow in [lo, hi)
        valid_cols(W, Wo, stride, pad, kw, &lo, &hi);
        for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < K; kh++) {
                float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * stride - pad + kh;
                    float *r = row + oh * Wo;
                    if (ih < 0 || ih >= H) { memset(r, 0, Wo * sizeof(float)); continue; }
                    const float *src = in + ((size_t)ci * H + ih) * W + off;
                    for (int ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    if (stride == 1) memcpy(r + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
                    else for (int ow = lo; ow < hi; ow++) r[ow] = src[ow * stride];
                    for (int ow = hi; ow < Wo; ow++) r[ow] = 0.0f;
                }
            }
    }
}

// in[ci][ih][iw] += col[...] (the adjoint of im2col)
static void col2im(float *in, const float *col, int Ci, int H, int W, int K, int stride, int pad, int Ho, int Wo, size_t ld) {
    for (int kw = 0; kw < K; kw++) {
        int lo, hi, off = kw - pad;
        valid_cols(W, Wo, stride, pad, kw, &lo, &hi);
        for (int ci = 0; ci < Ci; ci++)
            for (int kh = 0; kh < K; kh++) {
                const float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                for (int oh = 0; oh < Ho; oh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    float *dst = in + ((size_t)ci * H + ih) * W + off;
                    const float *r = row + oh * Wo;
                    if (stride == 1) for (int ow = lo; ow < hi; ow++) dst[ow] += r[ow];
                    else for (int ow = lo; ow < hi; ow++) dst[ow * stride] += r[ow];
                }
            }
    }
}

// dbias[c] += sum_p dy[c, p] for one image
static void bias_grad_add(float *dbias, const float *dy, int C, int P) {
    for (int c = 0; c < C; c++) dbias[c] += sum16(dy + (size_t)c * P, P);
}

// ---------------------------------------------------------------------------------------
// conv2d: per image, out[Co, P] = w[Co, Ci K K] col[Ci K K, P] (+ bias), P = Ho Wo
//
// "Same" convolutions (stride 1, pad (K-1)/2: every 3x3 conv of the U-Net) are implicit GEMMs:
// the image is copied once into a zero-padded Xp[Ci][Hp][Wp] (Hp = H + 2p, Wp = W + p: each row
// is p zeros then W pixels, so the zeros before row r + 1 are also the right pad of row r), and
// row k = (ci K + kh) K + kw of the im2col matrix is Xp itself shifted by ci Hp Wp + kh Wp + kw,
// read in place through a row table. The output is computed at the Wp-wide positions
// p' = oh Wp + ow; the p columns ow >= W of each row are discarded.
// The data gradient of a same conv is a same conv of dY with wf[ci][co][kh][kw] =
// w[co][ci][K-1-kh][K-1-kw], and dw^T[CKK, Co] = Xrows[CKK, P'] dY'[Co, P']^T where dY' is dY
// in Wp-wide positions with zeros in the discarded columns (a view of the padded dY).
// Other convolutions (the 4x4 stride-2 downsampling, 1x1) use an explicit im2col or none.

static int is_pointwise(int K, int stride, int pad) { return K == 1 && stride == 1 && pad == 0; }
static int is_same(int K, int stride, int pad) { return K > 1 && stride == 1 && 2 * pad == K - 1; }

// Small outputs (7x7) would waste much of a GEMM on the wide columns (9 of every 7) and on a
// last, partly filled 16-column panel (49 = 3 x 16 + 1): there the im2col matrices of a group
// of G images sit side by side, col[CKK, G P], and one GEMM serves the group (G P ~ GROUP_COLS
// columns: 8 images at 7x7). Weight gradients are kept transposed (dw^T[CKK, Co] = col dY^T),
// as for the implicit same convs. (At 14x14 the im2col traffic costs more than it saves.)
#define GROUP_MAX_P 49
#define GROUP_COLS 400
static int is_grouped(int K, int stride, int pad, int P) { return !is_pointwise(K, stride, pad) && P <= GROUP_MAX_P; }
static int group_images(int P) { return GROUP_COLS / P > 1 ? GROUP_COLS / P : 1; }

#define PAD_SLACK 64 // floats after a padded image: the last shifted rows read K - 2 past its end

// xp = zero-padded copy of x[C][H][W]: [C][H + 2p][p zeros, W pixels] + PAD_SLACK zeros
static void pad_image(float *xp, const float *x, int C, int H, int W, int p) {
    int Hp = H + 2 * p, Wp = W + p;
    for (int c = 0; c < C; c++) {
        float *xc = xp + (size_t)c * Hp * Wp;
        memset(xc, 0, ((size_t)p * Wp + p) * sizeof(float)); // top rows, left pad of row p
        for (int h = 0; h < H; h++) {
            float *r = xc + (size_t)(h + p) * Wp + p;
            memcpy(r, x + ((size_t)c * H + h) * W, W * sizeof(float));
            memset(r + W, 0, p * sizeof(float)); // left pad of the next row = right pad of this one
        }
        memset(xc + (size_t)(H + p) * Wp + p, 0, ((size_t)p * Wp - p) * sizeof(float)); // bottom rows
    }
    memset(xp + (size_t)C * Hp * Wp, 0, PAD_SLACK * sizeof(float));
}

// off[(c K + kh) K + kw] = c Hp Wp + kh Wp + kw
static void shift_table(long *off, int C, int K, int Hp, int Wp) {
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) off[(c * K + kh) * K + kw] = (long)c * Hp * Wp + (long)kh * Wp + kw;
}

// floats of a table of n longs in a float workspace (rounded up to keep 64-byte alignment)
static size_t table_floats(size_t n) { return (n * sizeof(long) / sizeof(float) + 15) / 16 * 16; }
static size_t padded_floats(int C, int H, int W, int K) {
    return ((size_t)C * (H + K - 1) * (W + (K - 1) / 2) + PAD_SLACK + 15) / 16 * 16;
}

// Grouped convs (7x7 outputs) of stride 1 and "same" padding build their im2col columns from a
// zero-padded copy xp of each image (pad_image): the row segment of (ci, kh, kw, oh) is
// xp[ci][oh + kh][kw .. kw + Wo), one 8-float vector when Wo <= 8, with no bounds to test. A
// segment's vector also covers the first column of the next one, which is written after it;
// the last segment of each row is copied by element, so nothing is written past the image.
static int padded_im2col(int K, int stride, int pad, int Wo) { return is_same(K, stride, pad) && Wo <= 8; }

static void im2col_padded8(float *col, const float *xp, int Ci, int K, int Hp, int Wp, int Ho, int Wo, size_t ld) {
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                const float *src = xp + ((size_t)ci * Hp + kh) * Wp + kw;
                int oh = 0;
                for (; oh < Ho - 1; oh++) store8(row + oh * Wo, load8(src + (size_t)oh * Wp));
                for (int ow = 0; ow < Wo; ow++) row[oh * Wo + ow] = src[(size_t)oh * Wp + ow];
            }
}

// the adjoint: dxp[ci][oh + kh][kw + ow] += col[..][oh Wo + ow], lanes ow >= Wo masked off
static void col2im_padded8(float *dxp, const float *col, int Ci, int K, int Hp, int Wp, int Ho, int Wo, size_t ld) {
    v8i keep;
    for (int k = 0; k < 8; k++) keep[k] = k < Wo ? -1 : 0;
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
                const float *row = col + ((size_t)(ci * K + kh) * K + kw) * ld;
                float *dst = dxp + ((size_t)ci * Hp + kh) * Wp + kw;
                int oh = 0;
                for (; oh < Ho - 1; oh++) {
                    float *d = dst + (size_t)oh * Wp;
                    store8(d, load8(d) + (v8f)((v8i)load8(row + oh * Wo) & keep));
                }
                for (int ow = 0; ow < Wo; ow++) dst[(size_t)oh * Wp + ow] += row[oh * Wo + ow];
            }
}

// Per-thread workspace of a grouped conv: col | dcol [CKK, ld] | Y or dY [Co, ld] | xp (one
// padded image, or its gradient) | chunk partials. Offsets of Y, xp and the partials:
// Rows of a group are ld = group_ld(ng, P) >= ng P floats apart, a multiple of 16: rows that
// start on a cache line keep a 16-column panel of B (read in place by the GEMM) at one line per
// row instead of two (measured 1-5% faster GEMMs).
static size_t group_ld(int ng, int P) { return round16((size_t)ng * P); }
static size_t grouped_off_y(int Ci, int K, int G, int P) { return 2 * (size_t)Ci * K * K * group_ld(G, P); }
static size_t grouped_off_xp(int Ci, int K, int G, int P, int Co) { return grouped_off_y(Ci, K, G, P) + (size_t)Co * group_ld(G, P); }
static size_t grouped_off_part(int Ci, int H, int W, int K, int G, int P, int Co) {
    return grouped_off_xp(Ci, K, G, P, Co) + padded_floats(Ci, H, W, K);
}

// im2col of image x into columns [j P, (j + 1) P) of col (rows ld apart), through xp if padded_im2col
static void im2col_group(float *col, float *xp, const float *x, int Ci, int H, int W, int K, int stride, int pad,
                         int Ho, int Wo, size_t ld) {
    if (!padded_im2col(K, stride, pad, Wo)) {
        im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        return;
    }
    pad_image(xp, x, Ci, H, W, pad);
    im2col_padded8(col, xp, Ci, K, H + 2 * pad, W + pad, Ho, Wo, ld);
}

// dx += col2im(col), through the padded gradient dxp if padded_im2col
static void col2im_group(float *dx, float *dxp, const float *col, int Ci, int H, int W, int K, int stride, int pad,
                         int Ho, int Wo, size_t ld) {
    if (!padded_im2col(K, stride, pad, Wo)) {
        col2im(dx, col, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        return;
    }
    int Hp = H + 2 * pad, Wp = W + pad;
    memset(dxp, 0, ((size_t)Ci * Hp * Wp + PAD_SLACK) * sizeof(float));
    col2im_padded8(dxp, col, Ci, K, Hp, Wp, Ho, Wo, ld);
    for (int ci = 0; ci < Ci; ci++) // the pixels of dxp: rows pad.., columns pad.. of each
        for (int h = 0; h < H; h++) {
            float *d = dx + ((size_t)ci * H + h) * W;
            const float *src = dxp + ((size_t)ci * Hp + h + pad) * Wp + pad;
            for (int w = 0; w < W; w++) d[w] += src[w];
        }
}

// y[C][H][W] (+)= wide[C][H][Wp] (first W columns of each row) + bias[C] (bias may be NULL)
static void from_wide(float *y, const float *wide, const float *bias, int C, int H, int W, int Wp, int accumulate) {
    for (int c = 0; c < C; c++) {
        float bv = bias ? bias[c] : 0.0f;
        for (int h = 0; h < H; h++) {
            float *yr = y + ((size_t)c * H + h) * W;
            const float *wr = wide + ((size_t)c * H + h) * Wp;
            if (accumulate) for (int w = 0; w < W; w++) yr[w] += wr[w] + bv;
            else for (int w = 0; w < W; w++) yr[w] = wr[w] + bv;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The 4x4 stride-2 pad-1 convs (downsampling) through space-to-depth. With xpad = x zero-padded
// by 1 and H, W even, the s2d image xs[(ci 2 + a) 2 + b][r][q] = xpad[ci][2 r + a][2 q + b]
// (r < Ho + 1, q < Ws = Wo + 1) turns y[co][oh][ow] = sum w[co][ci][kh][kw] xpad[ci][2 oh + kh][2 ow + kw]
// into a 2x2 stride-1 conv over xs (kh = 2 dh + a, kw = 2 dw + b):
//   y[co][oh][ow] = sum w[co][ci][kh][kw] xs[(ci, kh % 2, kw % 2)][oh + kh / 2][ow + kw / 2],
// an implicit GEMM like the same convs: row k = (ci, kh, kw) of the im2col matrix is xs shifted by
// s2d_table's off[k], output at the Ws-wide positions oh Ws + ow (column ow = Wo is discarded).
// The data gradient, dxs[(ci, a, b)][r][q] = sum w[co][ci][2 dh + a][2 dw + b] dy[co][r - dh][q - dw],
// is a 2x2 conv of dyp = dy zero-padded by 1 (pad_image: Ho + 2 rows, Wo + 1 = Ws wide) with
// wf[(ci, a, b)][(co, e, f)] = w[co][ci][2 (1 - e) + a][2 (1 - f) + b] at all (Ho + 1) x Ws positions;
// dx is dxs put back to depth. dw^T[CKK, Co] = Xrows dY'^T with dY' = dyp shifted by (1, 1).
// A transposed conv is the data gradient of a conv: its forward is that data gradient, its
// backward a conv forward (din) and a weight gradient.
static int is_s2d(int K, int stride, int pad, int H, int W) { return K == 4 && stride == 2 && pad == 1 && H % 2 == 0 && W % 2 == 0; }

// floats of an s2d image of a [C][H][W] input (+ PAD_SLACK: the last shifted rows read past it)
static size_t s2d_floats(int C, int H, int W) { return round16((size_t)4 * C * (H / 2 + 1) * (W / 2 + 1) + PAD_SLACK); }

static void s2d_pack(float *xs, const float *x, int C, int H, int W) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int c = 0; c < C; c++)
        for (int a = 0; a < 2; a++) {
            float *p0 = xs + (size_t)(c * 2 + a) * 2 * Hs * Ws, *p1 = p0 + (size_t)Hs * Ws; // planes b = 0, 1
            for (int r = 0; r < Hs; r++) {
                int i = 2 * r + a - 1;
                float *d0 = p0 + (size_t)r * Ws, *d1 = p1 + (size_t)r * Ws;
                if (i < 0 || i >= H) {
                    memset(d0, 0, Ws * sizeof(float));
                    memset(d1, 0, Ws * sizeof(float));
                    continue;
                }
                const float *src = x + ((size_t)c * H + i) * W;
                d0[0] = 0.0f; // xpad column 0
                d1[Ws - 1] = 0.0f; // xpad column W + 1
                for (int q = 0; q < Ws - 1; q++) { // xpad columns 2q + 1 (b = 1) and 2q + 2 (b = 0)
                    d1[q] = src[2 * q];
                    d0[q + 1] = src[2 * q + 1];
                }
            }
        }
    memset(xs + (size_t)4 * C * Hs * Ws, 0, PAD_SLACK * sizeof(float));
}

// dx[c][i][j] (+)= dxs[(c, (i + 1) % 2, (j + 1) % 2)][(i + 1) / 2][(j + 1) / 2] + bias[c] (bias may be NULL)
static void s2d_unpack(float *dx, const float *dxs, const float *bias, int C, int H, int W, int accumulate) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int c = 0; c < C; c++) {
        float bv = bias ? bias[c] : 0.0f;
        for (int i = 0; i < H; i++) {
            float *d = dx + ((size_t)c * H + i) * W;
            const float *s0 = dxs + ((size_t)((c * 2 + (i + 1) % 2) * 2) * Hs + (i + 1) / 2) * Ws; // b = 0 plane
            const float *s1 = s0 + (size_t)Hs * Ws;                                                 // b = 1 plane
            for (int j = 0; j < W; j++) {
                float v = ((j + 1) % 2 ? s1 : s0)[(j + 1) / 2] + bv;
                d[j] = accumulate ? d[j] + v : v;
            }
        }
    }
}

// off[(ci 4 + kh) 4 + kw] = (ci, kh % 2, kw % 2) plane + (kh / 2) Ws + kw / 2
static void s2d_table(long *off, int Ci, int H, int W) {
    int Hs = H / 2 + 1, Ws = W / 2 + 1;
    for (int ci = 0; ci < Ci; ci++)
        for (int kh = 0; kh < 4; kh++)
            for (int kw = 0; kw < 4; kw++)
                off[(ci * 4 + kh) * 4 + kw] = (long)((ci * 2 + kh % 2) * 2 + kw % 2) * Hs * Ws + (long)(kh / 2) * Ws + kw / 2;
}

// wf[(ci, a, b)][(co, e, f)] = w[co][ci][2 (1 - e) + a][2 (1 - f) + b]
static void s2d_flip_weights(float *wf, const float *w, int Ci, int Co) {
    for (int ci = 0; ci < Ci; ci++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++)
                for (int co = 0; co < Co; co++)
                    for (int e = 0; e < 2; e++)
                        for (int f = 0; f < 2; f++)
                            wf[(size_t)((ci * 2 + a) * 2 + b) * 4 * Co + (co * 2 + e) * 2 + f] =
                                w[(((size_t)co * Ci + ci) * 4 + 2 * (1 - e) + a) * 4 + 2 * (1 - f) + b];
}

// Per-thread workspace of the s2d conv kernels below, in a float region `mine`
typedef struct { long *off_x, *off_dy; float *xs, *dyp, *dxs, *wf, *yw, *wfp; } S2dWs;

static size_t s2d_ws_floats(int Ci, int H, int W, int Co) {
    int Ho = H / 2, Wo = W / 2;
    return table_floats((size_t)Ci * 16) + table_floats((size_t)Co * 4) + 2 * s2d_floats(Ci, H, W) +
           padded_floats(Co, Ho, Wo, 3) + round16((size_t)Ci * 16 * Co) + round16((size_t)Co * Ho * (Wo + 1));
}

// carve `mine`; if w != NULL, the flipped weights wf, packed into wfp (gemm_pack_a) for the data gradient
static S2dWs s2d_setup(float *mine, const float *w, float *wfp, int Ci, int H, int W, int Co) {
    int Ho = H / 2, Wo = W / 2;
    S2dWs s;
    s.off_x = (long *)mine;
    s.off_dy = (long *)(mine + table_floats((size_t)Ci * 16));
    s.xs = mine + table_floats((size_t)Ci * 16) + table_floats((size_t)Co * 4);
    s.dxs = s.xs + s2d_floats(Ci, H, W);
    s.dyp = s.dxs + s2d_floats(Ci, H, W);
    s.wf = s.dyp + padded_floats(Co, Ho, Wo, 3);
    s.yw = s.wf + round16((size_t)Ci * 16 * Co);
    s2d_table(s.off_x, Ci, H, W);
    shift_table(s.off_dy, Co, 2, Ho + 2, Wo + 1);
    s.wfp = wfp;
    if (w) {
        s2d_flip_weights(s.wf, w, Ci, Co);
        gemm_pack_a(0, 4 * Ci, 4 * Co, s.wf, 4 * Co, wfp);
    }
    return s;
}

// y[Co][Ho][Wo] (+)= conv(x) + bias (bias may be NULL), one image whose s2d image is in s->xs
// (s2d_pack); wp: w[Co, Ci 16] packed (gemm_pack_a)
static void s2d_forward(const S2dWs *s, float *y, const float *wp, const float *bias, int Ci, int H, int W, int Co,
                        int accumulate) {
    int Ho = H / 2, Ws = W / 2 + 1;
    gemm_packed(Co, Ho * Ws, Ci * 16, wp, s->xs, 0, s->off_x, s->yw, Ho * Ws, 0);
    from_wide(y, s->yw, bias, Co, Ho, W / 2, Ws, accumulate);
}

// one image: dwt[Ci 16, Co] += Xrows dY'^T (if dwt; the image's s2d image in s->xs, s2d_pack),
// dx (+)= data gradient + bias (if dx)
static void s2d_backward(const S2dWs *s, float *dx, float *dwt, const float *dy, const float *bias, int Ci, int H,
                         int W, int Co, int accumulate) {
    int Ho = H / 2, Wo = W / 2, Ws = Wo + 1;
    pad_image(s->dyp, dy, Co, Ho, Wo, 1);
    if (dwt) {
        gemm_rows(0, 1, Ci * 16, Co, Ho * Ws, s->xs, 0, s->off_x, s->dyp + Ws + 1, (Ho + 2) * Ws, NULL, dwt, Co, 1);
    }
    if (dx) {
        gemm_packed(Ci * 4, (Ho + 1) * Ws, Co * 4, s->wfp, s->dyp, 0, s->off_dy, s->dxs, (Ho + 1) * Ws, 0);
        s2d_unpack(dx, s->dxs, bias, Ci, H, W, accumulate);
    }
}

// Each thread region ends with the layer's weight matrix packed for the GEMMs (gemm_pack_a), once
// per call instead of once per image: w[Co, CKK] in the forward; in the backward the data
// gradient's wf[Ci, Co K K] (same convs), w^T[CKK, Co] (im2col convs) or wf[4 Ci, 4 Co] (s2d convs)
static size_t conv_packed_floats(int Ci, int Co, int K) {
    size_t n[4] = {gemm_packed_a_floats(Co, Ci * K * K), gemm_packed_a_floats(Ci, Co * K * K),
                   gemm_packed_a_floats(Ci * K * K, Co), gemm_packed_a_floats(4 * Ci, 4 * Co)}, m = 0;
    for (int i = 0; i < 4; i++) m = n[i] > m ? n[i] : m;
    return round16(m);
}
static float *conv_packed(float *ws, size_t wsz, int Ci, int Co, int K) {
    return ws + (size_t)thread_id() * wsz + wsz - conv_packed_floats(Ci, Co, K);
}

static size_t conv2d_ws_base(int Ci, int H, int W, int Co, int K, int stride, int pad);
size_t conv2d_ws_floats(int Ci, int H, int W, int Co, int K, int stride, int pad) {
    return conv2d_ws_base(Ci, H, W, Co, K, stride, pad) + conv_packed_floats(Ci, Co, K);
}
static size_t conv2d_ws_base(int Ci, int H, int W, int Co, int K, int stride, int pad) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    size_t ckk = (size_t)Ci * K * K, P = (size_t)Ho * Wo;
    if (is_grouped(K, stride, pad, (int)P)) {
        int G = group_images((int)P);
        return grouped_off_part(Ci, H, W, K, G, (int)P, Co) + GRAD_CHUNKS * round16(ckk * Co + Co);
    }
    if (is_s2d(K, stride, pad, H, W)) return s2d_ws_floats(Ci, H, W, Co) + GRAD_CHUNKS * round16(ckk * Co + Co);
    if (is_same(K, stride, pad)) {
        size_t wide = (size_t)H * (W + (K - 1) / 2), ok = (size_t)Co * K * K;
        size_t fwd = table_floats(ckk) + padded_floats(Ci, H, W, K) + (size_t)Co * wide;
        size_t bwd = table_floats(ckk) + table_floats(ok) + padded_floats(Ci, H, W, K) + padded_floats(Co, H, W, K) +
                     (size_t)Ci * wide + (size_t)Ci * ok + GRAD_CHUNKS * round16(ckk * Co + Co); // .., dX wide, wf, partials
        return round16(fwd > bwd ? fwd : bwd);
    }
    return round16(2 * ckk * P) + GRAD_CHUNKS * round16((size_t)Co * ckk + Co); // col, dcol, GRAD_CHUNKS (dw, dbias) partials
}

void conv2d_forward(float *out, const float *in, const float *w, const float *bias,
                    int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                    int accumulate, float *ws) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    int P = Ho * Wo, CKK = Ci * K * K;
    size_t wsz = conv2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    int same = is_same(K, stride, pad), G = group_images(P);
    int Hp = H + K - 1, Wp = W + (K - 1) / 2;
    if (is_grouped(K, stride, pad, P)) {
#pragma omp parallel
        {
            float *col = ws + (size_t)thread_id() * wsz, *yg = col + grouped_off_y(Ci, K, G, P);
            float *xp = col + grouped_off_xp(Ci, K, G, P, Co), *wp = conv_packed(ws, wsz, Ci, Co, K);
            gemm_pack_a(0, Co, CKK, w, CKK, wp);
#pragma omp for schedule(dynamic, 1)
            for (int b0 = 0; b0 < B; b0 += G) {
                int ng = B - b0 < G ? B - b0 : G;
                size_t ld = group_ld(ng, P);
                for (int j = 0; j < ng; j++)
                    im2col_group(col + (size_t)j * P, xp, in + (size_t)(b0 + j) * Ci * H * W, Ci, H, W, K, stride, pad, Ho, Wo, ld);
                gemm_packed(Co, ng * P, CKK, wp, col, (int)ld, NULL, yg, (int)ld, 0); // yg[Co, ng P] = w col
                for (int j = 0; j < ng; j++)
                    for (int co = 0; co < Co; co++) {
                        float bv = bias ? bias[co] : 0.0f, *yc = out + ((size_t)(b0 + j) * Co + co) * P;
                        const float *src = yg + (size_t)co * ld + (size_t)j * P;
                        if (accumulate) for (int p = 0; p < P; p++) yc[p] += src[p] + bv;
                        else for (int p = 0; p < P; p++) yc[p] = src[p] + bv;
                    }
            }
        }
        return;
    }
    if (is_s2d(K, stride, pad, H, W)) {
#pragma omp parallel
        {
            S2dWs s = s2d_setup(ws + (size_t)thread_id() * wsz, NULL, NULL, Ci, H, W, Co);
            float *wp = conv_packed(ws, wsz, Ci, Co, K);
            gemm_pack_a(0, Co, CKK, w, CKK, wp);
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < B; b++) {
                s2d_pack(s.xs, in + (size_t)b * Ci * H * W, Ci, H, W);
                s2d_forward(&s, out + (size_t)b * Co * P, wp, bias, Ci, H, W, Co, accumulate);
            }
        }
        return;
    }
#pragma omp parallel
    {
        float *col = ws + (size_t)thread_id() * wsz, *wp = conv_packed(ws, wsz, Ci, Co, K);
        long *off = (long *)col;
        gemm_pack_a(0, Co, CKK, w, CKK, wp);
        float *xp = col + table_floats(CKK), *yw = xp + padded_floats(Ci, H, W, K);
        if (same) shift_table(off, Ci, K, Hp, Wp);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            const float *x = in + (size_t)b * Ci * H * W;
            float *y = out + (size_t)b * Co * P;
            if (same) { // yw[Co, H Wp] = w[Co, CKK] Xrows[CKK, H Wp]; y (+)= yw + bias
                pad_image(xp, x, Ci, H, W, pad);
                gemm_packed(Co, H * Wp, CKK, wp, xp, 0, off, yw, H * Wp, 0);
                from_wide(y, yw, bias, Co, H, W, Wp, accumulate);
                continue;
            }
            for (int co = 0; co < Co; co++) {
                float bv = bias ? bias[co] : 0.0f;
                float *yc = y + (size_t)co * P;
                if (accumulate) for (int p = 0; p < P; p++) yc[p] += bv;
                else for (int p = 0; p < P; p++) yc[p] = bv;
            }
            const float *cb = x;
            if (!is_pointwise(K, stride, pad)) {
                im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo, P);
                cb = col;
            }
            gemm_packed(Co, P, CKK, wp, cb, P, NULL, y, P, 1);
        }
    }
}

// per-thread part of the same-conv backward workspace (layout of conv2d_ws_floats)
typedef struct { long *off_x, *off_dy; float *xp, *dyp, *dxw, *wf, *wfp; } SameBwd;

// carve `mine`; if need_wf, the flipped weights wf, packed into wfp (gemm_pack_a) for the data gradient
static SameBwd same_backward_setup(float *mine, const float *w, int need_wf, float *wfp, int Ci, int H, int W, int Co,
                                   int K) {
    int Hp = H + K - 1, Wp = W + (K - 1) / 2, CKK = Ci * K * K, OKK = Co * K * K;
    SameBwd s;
    s.off_x = (long *)mine;
    s.off_dy = (long *)(mine + table_floats(CKK));
    s.xp = mine + table_floats(CKK) + table_floats(OKK);
    s.dyp = s.xp + padded_floats(Ci, H, W, K);
    s.dxw = s.dyp + padded_floats(Co, H, W, K);
    s.wf = s.dxw + (size_t)Ci * H * Wp;
    shift_table(s.off_x, Ci, K, Hp, Wp);
    shift_table(s.off_dy, Co, K, Hp, Wp);
    if (need_wf) // wf[ci][(co K + kh) K + kw] = w[co][ci][K-1-kh][K-1-kw]
        for (int ci = 0; ci < Ci; ci++)
            for (int co = 0; co < Co; co++)
                for (int kk = 0; kk < K * K; kk++)
                    s.wf[(size_t)ci * OKK + (size_t)co * K * K + kk] = w[((size_t)co * Ci + ci) * K * K + (K * K - 1 - kk)];
    s.wfp = wfp;
    if (need_wf) gemm_pack_a(0, Ci, OKK, s.wf, OKK, wfp);
    return s;
}

// the same-conv backward of images [lo, hi): dw^T and dbias into one chunk's partials
static void conv2d_same_backward(const SameBwd *s, float *din, float *dwt, float *dbp, const float *dout,
                                 const float *in, int lo, int hi, int Ci, int H, int W, int Co, int K, int pad) {
    int Hp = H + K - 1, Wp = W + (K - 1) / 2, OKK = Co * K * K, HWp = H * Wp;
    for (int b = lo; b < hi; b++) {
        const float *x = in + (size_t)b * Ci * H * W;
        const float *dy = dout + (size_t)b * Co * H * W;
        pad_image(s->xp, x, Ci, H, W, pad);
        pad_image(s->dyp, dy, Co, H, W, pad);
        bias_grad_add(dbp, dy, Co, H * W);
        // dw^T[CKK, Co] += Xrows[CKK, H Wp] dY'[Co, H Wp]^T, dY' = dyp shifted by (pad, pad)
        gemm_rows(0, 1, Ci * K * K, Co, HWp, s->xp, 0, s->off_x, s->dyp + (size_t)pad * Wp + pad, Hp * Wp, NULL, dwt, Co, 1);
        if (din) { // dx += same conv of dy with wf
            gemm_packed(Ci, HWp, OKK, s->wfp, s->dyp, 0, s->off_dy, s->dxw, HWp, 0);
            from_wide(din + (size_t)b * Ci * H * W, s->dxw, NULL, Ci, H, W, Wp, 1);
        }
    }
}

// the grouped-conv backward of images [lo, hi), G at a time: dw^T and dbias into one chunk's partials;
// wtp: w^T[CKK, Co] packed (gemm_pack_a)
static void conv2d_grouped_backward(float *mine, float *din, float *dwt, float *dbp, const float *dout,
                                    const float *in, const float *wtp, int lo, int hi, int G, int Ci, int H,
                                    int W, int Co, int K, int stride, int pad) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    int P = Ho * Wo, CKK = Ci * K * K;
    float *col = mine, *dcol = col + (size_t)CKK * group_ld(G, P), *dyg = mine + grouped_off_y(Ci, K, G, P);
    float *xp = mine + grouped_off_xp(Ci, K, G, P, Co);
    for (int b0 = lo; b0 < hi; b0 += G) {
        int ng = hi - b0 < G ? hi - b0 : G;
        size_t ld = group_ld(ng, P);
        for (int j = 0; j < ng; j++) { // dyg[Co, ng P] and col[CKK, ng P]: the group side by side
            const float *dy = dout + (size_t)(b0 + j) * Co * P;
            bias_grad_add(dbp, dy, Co, P);
            for (int co = 0; co < Co; co++) memcpy(dyg + (size_t)co * ld + (size_t)j * P, dy + (size_t)co * P, P * sizeof(float));
            im2col_group(col + (size_t)j * P, xp, in + (size_t)(b0 + j) * Ci * H * W, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        }
        gemm(0, 1, CKK, Co, ng * P, col, (int)ld, dyg, (int)ld, dwt, Co, 1); // dw^T += col dY^T
        if (din) {                                                           // dx += col2im(w^T dY)
            gemm_packed(CKK, ng * P, Co, wtp, dyg, (int)ld, NULL, dcol, (int)ld, 0);
            for (int j = 0; j < ng; j++)
                col2im_group(din + (size_t)(b0 + j) * Ci * H * W, xp, dcol + (size_t)j * P, Ci, H, W, K, stride, pad, Ho, Wo, ld);
        }
    }
}

void conv2d_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int B, int Ci, int H, int W, int Co, int K, int stride,
                     int pad, float *ws) {
    int Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
    int P = Ho * Wo, CKK = Ci * K * K;
    size_t wsz = conv2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    int same = is_same(K, stride, pad), grouped = is_grouped(K, stride, pad, P), G = group_images(P);
    int s2d = !grouped && is_s2d(K, stride, pad, H, W);
    // where the chunk partials (dw, or dw^T for same, grouped and s2d convs, then dbias) start in a thread's region
    size_t off_part = round16(2 * (size_t)CKK * P), psize = round16((size_t)Co * CKK + Co);
    if (grouped) off_part = grouped_off_part(Ci, H, W, K, G, P, Co);
    else if (s2d) off_part = s2d_ws_floats(Ci, H, W, Co);
    else if (same)
        off_part = table_floats(CKK) + table_floats((size_t)Co * K * K) + padded_floats(Ci, H, W, K) +
                   padded_floats(Co, H, W, K) + (size_t)Ci * H * (W + (K - 1) / 2) + (size_t)Ci * Co * K * K;
    int nt = 1;
#pragma omp parallel
    {
#pragma omp single
        nt = thread_count();
        float *mine = ws + (size_t)thread_id() * wsz;
        float *col = mine, *dcol = mine + (size_t)CKK * P;
        float *wp = conv_packed(ws, wsz, Ci, Co, K);
        SameBwd sb;
        S2dWs s2 = {0};
        if (same && !grouped) sb = same_backward_setup(mine, w, din != NULL, wp, Ci, H, W, Co, K);
        else if (s2d) s2 = s2d_setup(mine, din ? w : NULL, wp, Ci, H, W, Co);
        else if (din) gemm_pack_a(1, CKK, Co, w, CKK, wp); // w^T[CKK, Co] for the data gradient
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < GRAD_CHUNKS; c++) {
            int lo, hi;
            float *dwp = chunk_begin(ws, wsz, off_part, psize, c, nt, B, &lo, &hi), *dbp = dwp + (size_t)Co * CKK;
            if (grouped) {
                conv2d_grouped_backward(mine, din, dwp, dbp, dout, in, wp, lo, hi, G, Ci, H, W, Co, K, stride, pad);
                continue;
            }
            if (same) {
                conv2d_same_backward(&sb, din, dwp, dbp, dout, in, lo, hi, Ci, H, W, Co, K, pad);
                continue;
            }
            if (s2d) {
                for (int b = lo; b < hi; b++) {
                    const float *dy = dout + (size_t)b * Co * P;
                    bias_grad_add(dbp, dy, Co, P);
                    s2d_pack(s2.xs, in + (size_t)b * Ci * H * W, Ci, H, W);
                    s2d_backward(&s2, din ? din + (size_t)b * Ci * H * W : NULL, dwp, dy, NULL, Ci, H, W, Co, 1);
                }
                continue;
            }
            for (int b = lo; b < hi; b++) {
                const float *x = in + (size_t)b * Ci * H * W;
                const float *dy = dout + (size_t)b * Co * P;
                bias_grad_add(dbp, dy, Co, P);
                // dw[Co, CKK] += dy[Co, P] col[CKK, P]^T
                const float *cb = x;
                if (!is_pointwise(K, stride, pad)) {
                    im2col(col, x, Ci, H, W, K, stride, pad, Ho, Wo, P);
                    cb = col;
                }
                gemm(0, 1, Co, CKK, P, dy, P, cb, P, dwp, CKK, 1);
                // din += col2im(w^T dy)
                if (din) {
                    float *dx = din + (size_t)b * Ci * H * W;
                    if (is_pointwise(K, stride, pad)) {
                        gemm_packed(CKK, P, Co, wp, dy, P, NULL, dx, P, 1);
                    } else {
                        gemm_packed(CKK, P, Co, wp, dy, P, NULL, dcol, P, 0);
                        col2im(dx, dcol, Ci, H, W, K, stride, pad, Ho, Wo, P);
                    }
                }
            }
        }
    }
    if (same || grouped || s2d) reduce_chunks_transposed(dw, ws, wsz, off_part, psize, CKK, Co, nt);
    else reduce_chunks(dw, ws, wsz, off_part, psize, 0, (long)Co * CKK, nt);
    reduce_chunks(dbias, ws, wsz, off_part, psize, (size_t)Co * CKK, Co, nt);
}

// ---------------------------------------------------------------------------------------
// transposed conv: per image, col[Co K K, H W] = w[Ci, Co K K]^T in[Ci, H W]; out = col2im(col) + bias.
// It is the adjoint (data gradient) of a conv from (Co, Ho, Wo) to (Ci, H, W).

// The 4x4 stride-2 pad-1 transposed conv (the upsampling) is the data gradient of the s2d conv
// from (Co, 2H, 2W) to (Ci, H, W), whose weights w[Ci][Co][K][K] are this layer's.
static int is_s2d_transposed(int K, int stride, int pad) { return is_s2d(K, stride, pad, 2, 2); }

size_t conv_transpose2d_ws_floats(int Ci, int H, int W, int Co, int K, int stride, int pad) {
    size_t ckk = (size_t)Co * K * K, P = (size_t)H * W;
    if (is_s2d_transposed(K, stride, pad)) // + the packed weights (the conv's wf forward, its w backward) at the end
        return s2d_ws_floats(Co, 2 * H, 2 * W, Ci) + GRAD_CHUNKS * round16((size_t)Ci * ckk + Co) + conv_packed_floats(Co, Ci, K);
    return round16(ckk * P) + GRAD_CHUNKS * round16((size_t)Ci * ckk + Co); // col, GRAD_CHUNKS (dw, dbias) partials
}

void conv_transpose2d_forward(float *out, const float *in, const float *w, const float *bias,
                              int B, int Ci, int H, int W, int Co, int K, int stride, int pad,
                              float *ws) {
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
    int P = H * W, CKK = Co * K * K;
    size_t wsz = conv_transpose2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    if (is_s2d_transposed(K, stride, pad)) { // out = data gradient of the conv (Co, Ho, Wo) -> (Ci, H, W) at in, + bias
#pragma omp parallel
        {
            S2dWs s = s2d_setup(ws + (size_t)thread_id() * wsz, w, conv_packed(ws, wsz, Co, Ci, K), Co, Ho, Wo, Ci);
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < B; b++)
                s2d_backward(&s, out + (size_t)b * Co * Ho * Wo, NULL, in + (size_t)b * Ci * P, bias, Co, Ho, Wo, Ci, 0);
        }
        return;
    }
#pragma omp parallel
    {
        float *col = ws + (size_t)thread_id() * wsz;
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            const float *x = in + (size_t)b * Ci * P;
            float *y = out + (size_t)b * Co * Ho * Wo;
            for (int co = 0; co < Co; co++)
                for (int p = 0; p < Ho * Wo; p++) y[(size_t)co * Ho * Wo + p] = bias ? bias[co] : 0.0f;
            gemm(1, 0, CKK, P, Ci, w, CKK, x, P, col, P, 0);
            col2im(y, col, Co, Ho, Wo, K, stride, pad, H, W, P);
        }
    }
}

void conv_transpose2d_backward(float *din, float *dw, float *dbias, const float *dout,
                               const float *in, const float *w, int B, int Ci, int H, int W,
                               int Co, int K, int stride, int pad, float *ws) {
    int Ho = (H - 1) * stride - 2 * pad + K, Wo = (W - 1) * stride - 2 * pad + K;
    int P = H * W, CKK = Co * K * K;
    size_t wsz = conv_transpose2d_ws_floats(Ci, H, W, Co, K, stride, pad);
    int s2d = is_s2d_transposed(K, stride, pad);
    // chunk partials: dw (dw^T[Co K K, Ci] for s2d), then dbias
    size_t off_part = s2d ? s2d_ws_floats(Co, Ho, Wo, Ci) : round16((size_t)CKK * P), psize = round16((size_t)Ci * CKK + Co);
    int nt = 1;
#pragma omp parallel
    {
#pragma omp single
        nt = thread_count();
        float *col = ws + (size_t)thread_id() * wsz;
        S2dWs s = {0};
        float *wp = s2d ? conv_packed(ws, wsz, Co, Ci, K) : NULL;
        if (s2d) s = s2d_setup(col, NULL, NULL, Co, Ho, Wo, Ci);
        if (s2d && din) gemm_pack_a(0, Ci, CKK, w, CKK, wp); // the conv's w[Ci, Co K K]
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < GRAD_CHUNKS; c++) {
            int lo, hi;
            float *dwp = chunk_begin(ws, wsz, off_part, psize, c, nt, B, &lo, &hi), *dbp = dwp + (size_t)Ci * CKK;
            for (int b = lo; b < hi; b++) {
                if (s2d) { // the conv's weight gradient (x = dout, dy = in), then din += conv(dout)
                    const float *x = in + (size_t)b * Ci * P, *dy = dout + (size_t)b * Co * Ho * Wo;
                    bias_grad_add(dbp, dy, Co, Ho * Wo);
                    s2d_pack(s.xs, dy, Co, Ho, Wo); // the conv's x, once for both products
                    s2d_backward(&s, NULL, dwp, /* the conv's dy */ x, NULL, Co, Ho, Wo, Ci, 1);
                    if (din) s2d_forward(&s, din + (size_t)b * Ci * P, wp, NULL, Co, Ho, Wo, Ci, 1);
                    continue;
                }
                const float *x = in + (size_t)b * Ci * P;
                const float *dy = dout + (size_t)b * Co * Ho * Wo;
                bias_grad_add(dbp, dy, Co, Ho * Wo);
                im2col(col, dy, Co, Ho, Wo, K, stride, pad, H, W, P); // dcol[CKK, P]
                gemm(0, 1, Ci, CKK, P, x, P, col, P, dwp, CKK, 1);  // dw[Ci, CKK] += x dcol^T
                if (din) gemm(0, 0, Ci, P, CKK, w, CKK, col, P, din + (size_t)b * Ci * P, P, 1); // dx += w dcol
            }
        }
    }
    if (s2d) reduce_chunks_transposed(dw, ws, wsz, off_part, psize, CKK, Ci, nt);
    else reduce_chunks(dw, ws, wsz, off_part, psize, 0, (long)Ci * CKK, nt);
    reduce_chunks(dbias, ws, wsz, off_part, psize, (size_t)Ci * CKK, Co, nt);
}

// ---------------------------------------------------------------------------------------
// GroupNorm: for each (b, g) over its C/G channels x HW positions:
// xhat = (x - mean) rstd, rstd = 1/sqrt(var + 1e-5) (biased var); y = xhat gamma[c] + beta[c]

// mean and 1/sqrt(var + 1e-5) of x[n]: two passes with 16 float partial sums each (they
// vectorise), combined in double
static void mean_rstd(const float *x, long n, float *mean, float *rstd) {
    v8f a = {0}, b = {0}; // lanes 0-7 and 8-15
    long i = 0;
    for (; i + 16 <= n; i += 16) { a += load8(x + i); b += load8(x + i + 8); }
    double s = 0.0;
    for (; i < n; i++) s += x[i];
    for (int j = 0; j < 8; j++) s += a[j];
    for (int j = 0; j < 8; j++) s += b[j];
    float m = (float)(s / n);
    a = (v8f){0};
    b = (v8f){0};
    for (i = 0; i + 16 <= n; i += 16) {
        v8f d0 = load8(x + i) - m, d1 = load8(x + i + 8) - m;
        a += d0 * d0;
        b += d1 * d1;
    }
    double ss = 0.0;
    for (; i < n; i++) { double d = x[i] - m; ss += d * d; }
    for (int j = 0; j < 8; j++) ss += a[j];
    for (int j = 0; j < 8; j++) ss += b[j];
    *mean = m;
    *rstd = (float)(1.0 / sqrt(ss / n + 1e-5));
}

// out = GroupNorm(in); if act: act = SiLU(out) in the same pass, while the group is in cache
static void groupnorm_forward_impl(float *out, float *act, float *mean, float *rstd, const float *in,
                                   const float *gamma, const float *beta, int B, int C, int HW, int G) {
    int Cg = C / G;
    long n = (long)Cg * HW;
#pragma omp parallel for schedule(dynamic, 4)
    for (int bg = 0; bg < B * G; bg++) {
        const float *x = in + (size_t)bg * n;
        float *y = out ? out + (size_t)bg * n : NULL;
        float mf, r;
        mean_rstd(x, n, &mf, &r);
        mean[bg] = mf;
        rstd[bg] = r;
        int g = bg % G;
        for (int cc = 0; cc < Cg; cc++) {
            int c = g * Cg + cc;
            float a = r * gamma[c], b0 = beta[c] - mf * a; // y = x a + (beta - mean a)
            const float *xc = x + (size_t)cc * HW;
            if (out) {
                float *yc = y + (size_t)cc * HW;
                for (int p = 0; p < HW; p++) yc[p] = xc[p] * a + b0;
            }
            if (act) {
                float *ac = act + (size_t)bg * n + (size_t)cc * HW;
                int p = 0;
                for (; p + 8 <= HW; p += 8) {
                    v8f v = load8(xc + p) * a + b0, e = -v;
                    exp8(&e);
                    store8(ac + p, v / (1.0f + e));
                }
                for (; p < HW; p++) {
                    float v = xc[p] * a + b0;
                    ac[p] = v / (1.0f + exp_approx(-v));
                }
            }
        }
    }
}

void groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                       const float *beta, int B, int C, int HW, int G) {
    groupnorm_forward_impl(out, NULL, mean, rstd, in, gamma, beta, B, C, HW, G);
}

void groupnorm_silu_forward(float *out, float *act, float *mean, float *rstd, const float *in,
                            const float *gamma, const float *beta, int B, int C, int HW, int G) {
    groupnorm_forward_impl(out, act, mean, rstd, in, gamma, beta, B, C, HW, G);
}

// din = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy gamma[c] (means over the group)
// sum_p dy[p] and sum_p dy[p] (x[p] - m) over n positions, on 16 float lanes (they vectorise)
static void dy_sums(const float *dy, const float *x, float m, int n, float *s_dy, float *s_dyx) {
    v8f a0 = {0}, a1 = {0}, c0 = {0}, c1 = {0};
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        v8f d0 = load8(dy + p), d1 = load8(dy + p + 8);
        a0 += d0;
        a1 += d1;
        c0 += d0 * (load8(x + p) - m);
        c1 += d1 * (load8(x + p + 8) - m);
    }
    a0 += a1;
    c0 += c1;
    float sa = hsum8(&a0), sc = hsum8(&c0);
    for (; p < n; p++) { sa += dy[p]; sc += dy[p] * (x[p] - m); }
    *s_dy = sa;
    *s_dyx = sc;
}

void groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *gamma, int B, int C, int HW, int G) {
    int Cg = C / G;
    long n = (long)Cg * HW;
    if (din) {
#pragma omp parallel for schedule(dynamic, 4)
        for (int bg = 0; bg < B * G; bg++) {
            const float *x = in + (size_t)bg * n, *dy = dout + (size_t)bg * n;
            float *dx = din + (size_t)bg * n;
            float m = mean[bg], r = rstd[bg];
            int g = bg % G;
            // md = mean(dy gamma), mdx = mean(dy gamma xhat), from per-channel sums
            double sd = 0.0, sdx = 0.0;
            for (int cc = 0; cc < Cg; cc++) {
                float gm = gamma[g * Cg + cc], s_dy, s_dyx;
                dy_sums(dy + (size_t)cc * HW, x + (size_t)cc * HW, m, HW, &s_dy, &s_dyx);
                sd += (double)gm * s_dy;
                sdx += (double)gm * s_dyx * r;
            }
            float md = (float)(sd / n), mdx = (float)(sdx / n);
            for (int cc = 0; cc < Cg; cc++) { // dx += r (dy gamma - md - xhat mdx)
                float gm = gamma[g * Cg + cc];
                const float *xc = x + (size_t)cc * HW, *dyc = dy + (size_t)cc * HW;
                float *dxc = dx + (size_t)cc * HW;
                for (int p = 0; p < HW; p++) dxc[p] += r * (dyc[p] * gm - md - (xc[p] - m) * r * mdx);
            }
        }
    }
    // dgamma[c] += sum_{b,p} dy xhat, dbeta[c] += sum_{b,p} dy (loop over b inside: deterministic)
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < C; c++) {
        float sg = 0.0f, sb = 0.0f;
        int g = c / Cg;
        for (int b = 0; b < B; b++) {
            float s_dy, s_dyx;
            dy_sums(dout + ((size_t)b * C + c) * HW, in + ((size_t)b * C + c) * HW, mean[b * G + g], HW, &s_dy, &s_dyx);
            sg += s_dyx * rstd[b * G + g];
            sb += s_dy;
        }
        dgamma[c] += sg;
        dbeta[c] += sb;
    }
}

// ---------------------------------------------------------------------------------------
// SiLU: y = x s(x), s = 1/(1+e^-x); dy/dx = s (1 + x (1 - s))

void silu_forward(float *out, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) out[i] = in[i] / (1.0f + exp_approx(-in[i]));
}

void silu_backward(float *din, const float *dout, const float *in, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_approx(-in[i]));
        din[i] += dout[i] * s * (1.0f + in[i] * (1.0f - s));
    }
}

// dgn += dact s (1 + v (1 - s)), s = sigmoid(v), where v = GroupNorm(x) is recomputed from x and
// the saved mean / rstd (so the GroupNorm output of a fused GN+SiLU need not be stored)
void silu_backward_groupnorm(float *dgn, const float *dact, const float *in, const float *mean, const float *rstd,
                             const float *gamma, const float *beta, int B, int C, int HW, int G) {
    int Cg = C / G;
#pragma omp parallel for schedule(dynamic, 8)
    for (int bc = 0; bc < B * C; bc++) {
        int c = bc % C, bg = (bc / C) * G + c / Cg;
        float a = rstd[bg] * gamma[c], b0 = beta[c] - mean[bg] * a;
        const float *x = in + (size_t)bc * HW, *da = dact + (size_t)bc * HW;
        float *dg = dgn + (size_t)bc * HW;
        int p = 0;
        for (; p + 8 <= HW; p += 8) {
            v8f v = load8(x + p) * a + b0, e = -v;
            exp8(&e);
            v8f sg = 1.0f / (1.0f + e);
            store8(dg + p, load8(dg + p) + load8(da + p) * sg * (1.0f + v * (1.0f - sg)));
        }
        for (; p < HW; p++) {
            float v = x[p] * a + b0, sg = 1.0f / (1.0f + exp_approx(-v));
            dg[p] += da[p] * sg * (1.0f + v * (1.0f - sg));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Linear (small: the time embedding path), single-threaded

void linear_forward(float *out, const float *in, const float *w, const float *bias, int B, int I, int O) {
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++) out[(size_t)b * O + o] = bias ? bias[o] : 0.0f;
    gemm(0, 1, B, O, I, in, I, w, I, out, O, 1);
}

void linear_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int B, int I, int O) {
    gemm(1, 0, O, I, B, dout, O, in, I, dw, I, 1);              // dw[O,I] += dout^T in
    if (dbias)
        for (int b = 0; b < B; b++)
            for (int o = 0; o < O; o++) dbias[o] += dout[(size_t)b * O + o];
    if (din) gemm(0, 0, B, I, O, dout, O, w, I, din, I, 1);      // din[B,I] += dout w
}

// ---------------------------------------------------------------------------------------
// Multi-head self-attention, per image and head h (D = C/NH, rows of qkv are [q; k; v]):
//   S = scale Q^T K [N,N], P = softmax_rows(S), O = V P^T [D,N]; out += w_out O + b_out.
// The forward keeps lse_i = log sum_j exp(S_ij); the backward recomputes P_ij = exp(S_ij - lse_i),
// dS = P o (dP - rowsum(dO o O)) with dP = dO^T V, dQ = scale K dS^T, dK = scale Q dS, dV = dO P^T.
// Heads whose width is a multiple of 16 or at most NARROW_D run the fused (flash) kernels below.
// Other heads process queries in blocks of ATT_R rows with GEMMs, so only an ATT_R x N block of
// S exists at a time: ATT_R = 32 keeps the backward's P and dS blocks (2 x 32 x 784 floats at
// 28x28) in L2, measured 12% faster than 128.

#define ATT_R 32
#define ATT_J 16 // keys per panel: the flash kernels' tile width

// a [D, N] array as panels of ATT_J keys: t[(j / ATT_J) D ATT_J + d ATT_J + j % ATT_J], the last
// panel zero-padded: the flash kernels then read one contiguous stream of D x ATT_J per step
static void key_panels(float *t, const float *X, int D, int N) {
    for (int j0 = 0; j0 < N; j0 += ATT_J, t += (size_t)D * ATT_J) {
        int n = N - j0 < ATT_J ? N - j0 : ATT_J;
        for (int d = 0; d < D; d++) {
            memcpy(t + d * ATT_J, X + (size_t)d * N + j0, n * sizeof(float));
            for (int j = n; j < ATT_J; j++) t[d * ATT_J + j] = 0.0f;
        }
    }
}

// P[i][j] <- exp(P[i][j] - m) for j < n; returns sum_j (16 lanes, fixed order)
static float exp_row_sum(float *s, int n, float m) {
    v8f a = {0}, b = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        v8f x = load8(s + j) - m, y = load8(s + j + 8) - m;
        exp8_neg(&x);
        exp8_neg(&y);
        store8(s + j, x);
        store8(s + j + 8, y);
        a += x;
        b += y;
    }
    a += b;
    float sum = hsum8(&a);
    for (; j < n; j++) { s[j] = exp_approx(s[j] - m); sum += s[j]; }
    return sum;
}

// max_j s[j] for j < n (8 lanes, then the tail)
static float max_row(const float *s, int n) {
    v8f mx = V8(-INFINITY);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f v = load8(s + j);
        mx = VSEL(v > mx, v, mx);
    }
    float m = -INFINITY;
    for (int k = 0; k < 8; k++) m = mx[k] > m ? mx[k] : m;
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    return m;
}

// one query row of the backward from its scores s and dP: p_j = exp(scale s_j - l),
// ds_j = scale p_j (dP_j - di), in place (s <- p, dp <- ds)
static void p_ds_row(float *s, float *dp, int n, float scale, float l, float di) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8f p = load8(s + j) * scale - l;
        exp8_neg(&p);
        store8(s + j, p);
        store8(dp + j, p * (load8(dp + j) - di) * scale);
    }
    for (; j < n; j++) {
        s[j] = exp_approx(s[j] * scale - l);
        dp[j] = s[j] * (dp[j] - di) * scale;
    }
}

// Fused ("flash") kernels, for heads whose width D is a multiple of 16 or at most NARROW_D: a
// tile of queries x 16 keys of scores lives in registers, is exponentiated there and multiplied
// into O (or, in the backward, into dQ, dK, dV) at once, so S and P never exist beyond one tile.
// - Wide heads (D % 16 == 0) take FLASH_R queries per tile; the products over d run in 16-wide
//   chunks (a FLASH_R x 16 register tile each).
// - Narrow heads (D <= NARROW_D) have too few d for that: a product over d would load and store
//   more than it multiplies. Their kernels keep the 16 keys of a panel in the vector lanes
//   throughout, and the products over keys (O, dQ) accumulate per (query, d) in 8-lane registers
//   that are summed across lanes once per tile of NARROW_RF (forward) or NARROW_RB queries.
// Both shift the softmax by the Cauchy-Schwarz bound m_i = |q_i| max_j |k_j| >= s_ij instead of
// the row max (which would need a pass over S first): exp(s - m) / sum_j exp(s_j - m) is the same
// softmax. A row whose sum would underflow (m_i - max_j s_ij > ~57) is redone with its true max.
#define FLASH_R 6
#define NARROW_D 8
// queries per narrow tile, forward and backward (measured: 1 is 25% slower in the backward; 1 or
// 3-4 no better in the forward)
#define NARROW_RF 2
#define NARROW_RB 2
static int is_flash(int D) { return D % 16 == 0 || D <= NARROW_D; }
static int tile_rows(int D, int fwd) { return D <= NARROW_D ? (fwd ? NARROW_RF : NARROW_RB) : FLASH_R; }
#define AI inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))

// scratch of the flash kernels for heads up to C wide: tiles P and dS [FLASH_R][16], q, scaled q,
// dO and O or dQ [FLASH_R][D], then K^T, dK^T, dV^T [16 np][D] of one head (backward; narrow heads: dK
// and dV in key-panel layout)
static size_t flash_ws_floats(int C, int N) {
    return 2 * FLASH_R * 16 + 4 * (size_t)FLASH_R * C + 3 * (size_t)(N + 15) / 16 * 16 * C;
}

// xt[n][d] = a X[d][n] (a [D, N] array transposed, scaled)
static void transpose_scaled(float *xt, const float *X, int D, int N, float a) {
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) xt[(size_t)n * D + d] = X[(size_t)d * N + n] * a;
}

// lanes [0, n) of an 8-float vector kept, the others zeroed (n in 0..8); a macro, like load8
#define keep_first(x, n)                                                                           \
    ((v8f)((v8i)(x) & ((v8i){0, 1, 2, 3, 4, 5, 6, 7} < (v8i){(n), (n), (n), (n), (n), (n), (n), (n)})))

// x, y (keys 0-7 and 8-15 of a panel, arguments <= 0) <- 2^x, 2^y, keys from n on (past N)
// zeroed
static AI void exp_panel(v8f *x, v8f *y, int n) {
    exp2_8_neg(x);
    exp2_8_neg(y);
    if (n < 16) { *x = keep_first(*x, n < 8 ? n : 8); *y = keep_first(*y, n > 8 ? n - 8 : 0); }
}

// The products of the flash kernels on a tile of R queries x 16 keys (register accumulators lo,
// hi: keys 0-7 and 8-15), inlined into the kernels:
// lo/hi[r] = c[r] + sum_d a[r D + d] panel[d][0..16): R rows of scores against one key panel
static AI void flash_scores(v8f *lo, v8f *hi, const float *c, const float *a, const float *panel, int D, int R) {
    for (int r = 0; r < R; r++) lo[r] = hi[r] = V8(c[r]);
    for (int d = 0; d < D; d++) {
        v8f bl = load8(panel + d * 16), bh = load8(panel + d * 16 + 8);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            v8f ar = V8(a[r * D + d]);
            lo[r] += ar * bl;
            hi[r] += ar * bh;
        }
    }
}

// acc[r][0..16) (rows ld apart) += sum_j t[r][j] x[j][0..16) (rows ldx apart): over 16 keys
static AI void flash_keys_product(float *acc, int ld, const float *t, const float *x, int ldx) {
    v8f lo[FLASH_R], hi[FLASH_R];
    for (int r = 0; r < FLASH_R; r++) { lo[r] = load8(acc + r * ld); hi[r] = load8(acc + r * ld + 8); }
    for (int j = 0; j < 16; j++) {
        v8f xl = load8(x + j * ldx), xh = load8(x + j * ldx + 8);
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) {
            v8f tr = V8(t[r * 16 + j]);
            lo[r] += tr * xl;
            hi[r] += tr * xh;
        }
    }
    for (int r = 0; r < FLASH_R; r++) { store8(acc + r * ld, lo[r]); store8(acc + r * ld + 8, hi[r]); }
}

// acc[j][0..16) (rows ld apart) += sum_r t[r][j] x[r][0..16) (rows ld apart): over the FLASH_R
// queries, with the x rows in registers
static AI void flash_queries_product(float *acc, const float *t, const float *x, int ld) {
    v8f lo[FLASH_R], hi[FLASH_R];
    for (int r = 0; r < FLASH_R; r++) { lo[r] = load8(x + r * ld); hi[r] = load8(x + r * ld + 8); }
    for (int j = 0; j < 16; j++) {
        v8f al = load8(acc + j * ld), ah = load8(acc + j * ld + 8);
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) {
            v8f tr = V8(t[r * 16 + j]);
            al += tr * lo[r];
            ah += tr * hi[r];
        }
        store8(acc + j * ld, al);
        store8(acc + j * ld + 8, ah);
    }
}

// One tile row of the flash forward: for the FLASH_R queries q ([r][D], scaled so that s_rj =
// q_r . k_j is in log2 units) with shifts m_r = -nm[r], ob[r][d] = sum_j 2^(s_rj - m_r) v_j[d] and
// l[r] = sum_j 2^(s_rj - m_r) over the keys of the np panels of kp (key_panels) and vt
// (V^T [16 np][D]); the last panel holds nt valid keys.
static AI void flash_tile_forward(float *ob, float *l, const float *q, const float *nm, const float *kp,
                                  const float *vt, int D, int np, int nt, float *pt) {
    v8f sum[FLASH_R];
    for (int r = 0; r < FLASH_R; r++) sum[r] = V8(0.0f);
    for (int i = 0; i < FLASH_R * D; i++) ob[i] = 0.0f;
    for (int p = 0; p < np; p++) {
        const float *k = kp + (size_t)p * 16 * D, *v = vt + (size_t)p * 16 * D;
        v8f lo[FLASH_R], hi[FLASH_R];
        flash_scores(lo, hi, nm, q, k, D, FLASH_R); // s[r][j] - m_r
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) { // p = 2^(s - m)
            v8f x = lo[r], y = hi[r];
            exp_panel(&x, &y, p == np - 1 ? nt : 16);
            sum[r] += x + y;
            store8(pt + r * 16, x);
            store8(pt + r * 16 + 8, y);
        }
        // ob[r][c..c+16) += sum_j p[r][j] v_j[c..c+16)
        for (int c = 0; c < D; c += 16) flash_keys_product(ob + c, D, pt, v + c, D);
    }
    for (int r = 0; r < FLASH_R; r++) l[r] = hsum8(&sum[r]);
}

// The narrow forward tile: as flash_tile_forward for NARROW_RF queries, with V as key panels vp
static AI void narrow_tile_forward(float *ob, float *l, const float *q, const float *nm, const float *kp,
                                   const float *vp, int D, int np, int nt) {
    v8f acc[NARROW_RF][NARROW_D], sum[NARROW_RF]; // acc[r][d]: lanes of sum_j p_rj v_j[d]
    for (int r = 0; r < NARROW_RF; r++) {
        sum[r] = V8(0.0f);
        for (int d = 0; d < D; d++) acc[r][d] = V8(0.0f);
    }
    for (int p = 0; p < np; p++) {
        const float *k = kp + (size_t)p * 16 * D, *v = vp + (size_t)p * 16 * D;
        v8f lo[NARROW_RF], hi[NARROW_RF];
        flash_scores(lo, hi, nm, q, k, D, NARROW_RF);
        for (int r = 0; r < NARROW_RF; r++) {
            v8f x = lo[r], y = hi[r];
            exp_panel(&x, &y, p == np - 1 ? nt : 16);
            sum[r] += x + y;
            for (int d = 0; d < D; d++) {
                acc[r][d] += x * load8(v + d * 16);
                acc[r][d] += y * load8(v + d * 16 + 8);
            }
        }
    }
    for (int r = 0; r < NARROW_RF; r++) {
        l[r] = hsum8(&sum[r]);
        for (int d = 0; d < D; d++) ob[r * D + d] = hsum8(&acc[r][d]);
    }
}

// the tile kernels compiled for D = 4, 8, 16, 32, 64 (constant trip counts) and for any other D;
// vx: V^T (wide heads) or key_panels(V) (narrow)
#define TILE_FWD_ARGS float *ob, float *l, const float *q, const float *nm, const float *kp, const float *vx, int np, int nt, float *pt
#define FLASH_FWD(D) flash_tile_forward(ob, l, q, nm, kp, vx, D, np, nt, pt)
#define NARROW_FWD(D) narrow_tile_forward(ob, l, q, nm, kp, vx, D, np, nt)
#define TILE_FWD_PASS ob, l, q, nm, kp, vx, np, nt, pt
// The specialised kernels name4 .. name64 and the dispatcher name(D, ...) over them; widths not
// listed run the generic kernel. One list for the forward and the backward, so they cannot differ.
#define TILE_KERNELS(name, ARGS, PASS, NARROW, FLASH, UNUSED_NARROW)                                 \
    static NOINLINE void name##4(ARGS) { UNUSED_NARROW; NARROW(4); }                                \
    static NOINLINE void name##8(ARGS) { UNUSED_NARROW; NARROW(8); }                                \
    static NOINLINE void name##16(ARGS) { FLASH(16); }                                              \
    static NOINLINE void name##32(ARGS) { FLASH(32); }                                              \
    static NOINLINE void name##64(ARGS) { FLASH(64); }                                              \
    static NOINLINE void name(int D, ARGS) {                                                        \
        switch (D) {                                                                                \
        case 4: name##4(PASS); break;                                                               \
        case 8: name##8(PASS); break;                                                               \
        case 16: name##16(PASS); break;                                                             \
        case 32: name##32(PASS); break;                                                             \
        case 64: name##64(PASS); break;                                                             \
        default: if (D <= NARROW_D) NARROW(D); else FLASH(D);                                       \
        }                                                                                           \
    }
TILE_KERNELS(tile_forward, TILE_FWD_ARGS, TILE_FWD_PASS, NARROW_FWD, FLASH_FWD, (void)pt)

// Flash forward of one head (is_flash(D)): O[d][i] = sum_j P_ij V[d][j] with
// P = softmax_j(scale q_i . k_j), lse[i] = log sum_j exp(scale q_i . k_j), computed in base 2
// (exp2_8_neg). kp = key_panels(K);
// vx = V^T [16 np][D] with rows past N zero (wide heads) or key_panels(V) (narrow);
// fl: flash_ws_floats scratch.
static void flash_forward(float *O, float *lse, const float *Q, const float *kp, const float *vx, int D, int N,
                          float scale, float *fl) {
    int R = tile_rows(D, 1), np = (N + 15) / 16, nt = N - (np - 1) * 16;
    float *pt = fl, *q = fl + 2 * FLASH_R * 16, *ob = q + 2 * FLASH_R * D;
    float kmax = 0.0f; // max_j |k_j|
    for (int j = 0; j < N; j++) {
        const float *k = kp + (size_t)(j / 16) * 16 * D + j % 16;
        float n2 = 0.0f;
        for (int d = 0; d < D; d++) n2 += k[d * 16] * k[d * 16];
        kmax = n2 > kmax ? n2 : kmax;
    }
    kmax = sqrtf(kmax);
    float qscale = scale * LOG2E; // scores in log2 units: exp(x) = 2^(x log2 e)
    for (int i = 0; i < N; i += R) {
        float m[FLASH_R], nm[FLASH_R], l[FLASH_R];
        for (int r = 0; r < R; r++) { // rows past N repeat row N - 1 (not stored)
            int ir = i + r < N ? i + r : N - 1;
            float n2 = 0.0f;
            for (int d = 0; d < D; d++) {
                float x = Q[(size_t)d * N + ir] * qscale;
                q[r * D + d] = x;
                n2 += x * x;
            }
            m[r] = sqrtf(n2) * kmax;
            nm[r] = -m[r];
        }
        tile_forward(D, ob, l, q, nm, kp, vx, np, nt, pt);
        int redo = 0;
        for (int r = 0; r < R; r++)
            if (!(l[r] >= 1e-25f)) { // underflow (or NaN): shift by the true row max
                float mx = -INFINITY;
                for (int j = 0; j < N; j++) {
                    const float *k = kp + (size_t)(j / 16) * 16 * D + j % 16;
                    float sj = 0.0f;
                    for (int d = 0; d < D; d++) sj += q[r * D + d] * k[d * 16];
                    mx = sj > mx ? sj : mx;
                }
                if (mx == mx && mx != m[r]) { m[r] = mx; nm[r] = -mx; redo = 1; }
            }
        if (redo) tile_forward(D, ob, l, q, nm, kp, vx, np, nt, pt);
        for (int r = 0; r < R && i + r < N; r++) {
            float inv = 1.0f / l[r];
            for (int d = 0; d < D; d++) O[(size_t)d * N + i + r] = ob[r * D + d] * inv;
            lse[i + r] = (m[r] + log2f(l[r])) * LN2;
        }
    }
}

// One query tile of the flash backward (flash_backward) against all np key panels: with
// p_rj = exp(scale q_r . k_j - lse_r) = 2^(qs_r . k_j + nl_r) and ds_rj = scale p_rj (g_r . v_j - dd_r)
// (zero for keys past N and rows r >= rows): dq[r] = sum_j ds_rj k_j, dkt[j] += sum_r ds_rj q_r,
// dvt[j] += sum_r p_rj g_r. q, qs, g: [FLASH_R][D] rows of Q, of Q scaled by scale log2(e), and of
// dO; nl_r = -lse_r log2(e); ndd_r = -dd_r; kp, vp: key panels of K and V; kt: K^T [16 np][D];
// pt, dst: FLASH_R x 16 tiles of scratch.
static AI void flash_tile_backward(float *dq, float *dkt, float *dvt, const float *q, const float *qs,
                                   const float *g, const float *nl, const float *ndd, int rows, const float *kp,
                                   const float *vp, const float *kt, int D, int np, int nt, float scale, float *pt,
                                   float *dst) {
    for (int i = 0; i < FLASH_R * D; i++) dq[i] = 0.0f;
    for (int p = 0; p < np; p++) {
        size_t po = (size_t)p * 16 * D;
        const float *k = kp + po, *v = vp + po, *ktp = kt + po;
        float *dkp = dkt + po, *dvp = dvt + po;
        v8f lo[FLASH_R], hi[FLASH_R];
        flash_scores(lo, hi, nl, qs, k, D, FLASH_R); // p = 2^(qs . k + nl)
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) {
            v8f x = lo[r], y = hi[r];
            exp_panel(&x, &y, p == np - 1 ? nt : 16);
            if (r >= rows) x = y = V8(0.0f);
            store8(pt + r * 16, x);
            store8(pt + r * 16 + 8, y);
        }
        flash_scores(lo, hi, ndd, g, v, D, FLASH_R); // ds = scale p (g . v - dd)
#pragma GCC unroll 6
        for (int r = 0; r < FLASH_R; r++) {
            store8(dst + r * 16, load8(pt + r * 16) * lo[r] * scale);
            store8(dst + r * 16 + 8, load8(pt + r * 16 + 8) * hi[r] * scale);
        }
        for (int c = 0; c < D; c += 16) {
            flash_keys_product(dq + c, D, dst, ktp + c, D); // dq[r] += sum_j ds_rj k_j (rows of K^T)
            flash_queries_product(dvp + c, pt, g + c, D);   // dvt[j] += sum_r p_rj g_r
            flash_queries_product(dkp + c, dst, q + c, D);  // dkt[j] += sum_r ds_rj q_r
        }
    }
}

// The narrow backward tile: as flash_tile_backward for NARROW_RB queries, with dK and dV
// accumulated in key-panel layout (dkp, dvp: [np][D][16])
static AI void narrow_tile_backward(float *dq, float *dkp, float *dvp, const float *q, const float *qs,
                                    const float *g, const float *nl, const float *ndd, int rows, const float *kp,
                                    const float *vp, int D, int np, int nt, float scale) {
    v8f acc[NARROW_RB][NARROW_D]; // acc[r][d]: lanes of sum_j ds_rj k_j[d]
    for (int r = 0; r < NARROW_RB; r++)
        for (int d = 0; d < D; d++) acc[r][d] = V8(0.0f);
    for (int p = 0; p < np; p++) {
        size_t po = (size_t)p * 16 * D;
        const float *k = kp + po, *v = vp + po;
        float *dk = dkp + po, *dv = dvp + po;
        v8f pl[NARROW_RB], ph[NARROW_RB], sl[NARROW_RB], sh[NARROW_RB];
        flash_scores(pl, ph, nl, qs, k, D, NARROW_RB); // p = 2^(qs . k + nl)
        for (int r = 0; r < NARROW_RB; r++) {
            exp_panel(&pl[r], &ph[r], p == np - 1 ? nt : 16);
            if (r >= rows) pl[r] = ph[r] = V8(0.0f);
        }
        flash_scores(sl, sh, ndd, g, v, D, NARROW_RB); // ds = scale p (g . v - dd)
        for (int r = 0; r < NARROW_RB; r++) {
            sl[r] = pl[r] * sl[r] * scale;
            sh[r] = ph[r] * sh[r] * scale;
        }
        for (int d = 0; d < D; d++) {
            v8f kl = load8(k + d * 16), kh = load8(k + d * 16 + 8);
            v8f dkl = load8(dk + d * 16), dkh = load8(dk + d * 16 + 8);
            v8f dvl = load8(dv + d * 16), dvh = load8(dv + d * 16 + 8);
            for (int r = 0; r < NARROW_RB; r++) {
                v8f qr = V8(q[r * D + d]), gr = V8(g[r * D + d]);
                acc[r][d] += sl[r] * kl;
                acc[r][d] += sh[r] * kh;
                dkl += sl[r] * qr;
                dkh += sh[r] * qr;
                dvl += pl[r] * gr;
                dvh += ph[r] * gr;
            }
            store8(dk + d * 16, dkl);
            store8(dk + d * 16 + 8, dkh);
            store8(dv + d * 16, dvl);
            store8(dv + d * 16 + 8, dvh);
        }
    }
    for (int r = 0; r < NARROW_RB; r++)
        for (int d = 0; d < D; d++) dq[r * D + d] = hsum8(&acc[r][d]);
}

#define TILE_BWD_ARGS float *dq, float *dkt, float *dvt, const float *q, const float *qs, const float *g, \
        const float *nl, const float *ndd, int rows, const float *kp, const float *vp, const float *kt, int np, int nt, float scale, \
        float *pt, float *dst
#define FLASH_BWD(D) flash_tile_backward(dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, kt, D, np, nt, scale, pt, dst)
#define NARROW_BWD(D) narrow_tile_backward(dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, D, np, nt, scale)
#define TILE_BWD_PASS dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, kt, np, nt, scale, pt, dst
TILE_KERNELS(tile_backward, TILE_BWD_ARGS, TILE_BWD_PASS, NARROW_BWD, FLASH_BWD, ((void)kt, (void)pt, (void)dst))

// Flash backward of one head (is_flash(D); see attention_backward): dQ, dK, dV [D, N] written
// from Q, K, dO [D, N], lse and di = rowsum(dO o O) per query. kp, vp: key panels of K and V;
// fl: flash_ws_floats scratch (tiles; K^T, dK^T, dV^T, or dK, dV as key panels when narrow).
static void flash_backward(float *dQ, float *dK, float *dV, const float *Q, const float *K, const float *dO,
                           const float *lse, const float *di, const float *kp, const float *vp, int D, int N,
                           float scale, float *fl) {
    int R = tile_rows(D, 0), narrow = D <= NARROW_D, np = (N + 15) / 16, nt = N - (np - 1) * 16;
    size_t n16 = (size_t)np * 16 * D;
    float *pt = fl, *dst = pt + FLASH_R * 16, *q = dst + FLASH_R * 16, *qs = q + FLASH_R * D, *g = qs + FLASH_R * D;
    float *dq = g + FLASH_R * D, *kt = dq + FLASH_R * D, *dkt = kt + n16, *dvt = dkt + n16;
    float qscale = scale * LOG2E;
    if (!narrow) {
        transpose_scaled(kt, K, D, N, 1.0f);
        memset(kt + (size_t)N * D, 0, (n16 - (size_t)N * D) * sizeof(float));
    }
    memset(dkt, 0, 2 * n16 * sizeof(float));
    for (int i = 0; i < N; i += R) {
        int rows = N - i < R ? N - i : R;
        float nl[FLASH_R], ndd[FLASH_R];
        for (int r = 0; r < R; r++) { // rows past N repeat row i (masked in the tile)
            int ir = r < rows ? i + r : i;
            nl[r] = -lse[ir] * LOG2E;
            ndd[r] = -di[ir];
            for (int d = 0; d < D; d++) {
                q[r * D + d] = Q[(size_t)d * N + ir];
                qs[r * D + d] = q[r * D + d] * qscale;
                g[r * D + d] = dO[(size_t)d * N + ir];
            }
        }
        tile_backward(D, dq, dkt, dvt, q, qs, g, nl, ndd, rows, kp, vp, kt, np, nt, scale, pt, dst);
        for (int r = 0; r < rows; r++)
            for (int d = 0; d < D; d++) dQ[(size_t)d * N + i + r] = dq[r * D + d];
    }
    for (int d = 0; d < D; d++)
        for (int j = 0; j < N; j++) { // from [j][d] (wide) or [j / 16][d][j % 16] (narrow)
            size_t at = narrow ? (size_t)(j / 16) * 16 * D + (size_t)d * 16 + j % 16 : (size_t)j * D + d;
            dK[(size_t)d * N + j] = dkt[at];
            dV[(size_t)d * N + j] = dvt[at];
        }
}

// Per-thread workspace layout: dO[C,N] | dqkv[3C,N] | S[R,N] | dP[R,N] | T[R,C] | inv[R] | mx[R] |
// di[N] | kp, vp (key panels of one head, <= C (N + ATT_J)) | fl (flash_ws_floats) |
// grp (grouped projections) | chunk partials of the parameter grads (w_in, b_in, w_out, b_out).
// The forward uses S, T, inv, mx, kp and vp, and keeps (scale Q)^T and V^T of a wide head
// (2 N D <= 4 C N floats) where the backward has dO and dqkv; flash heads keep V (V^T or panels) in vp.
typedef struct { size_t dqkv, S, dP, T, inv, mx, di, kp, vp, fl, grp, part, dwin, dbin, dwout, dbout, psize, total; } AttnWs;

static AttnWs attention_ws_layout(int C, int N) {
    size_t R = N < ATT_R ? N : ATT_R;
    AttnWs w;
    w.dqkv = (size_t)C * N;
    w.S = w.dqkv + 3 * (size_t)C * N;
    w.dP = w.S + R * N;
    w.T = w.dP + R * N;
    w.inv = w.T + R * C;
    w.mx = w.inv + R;
    w.di = w.mx + R;
    w.kp = w.di + N;
    w.vp = w.kp + (size_t)C * (N + ATT_J);
    w.fl = round16(w.vp + (size_t)C * (N + ATT_J));
    // grouped projections (attention_group): 4 C G N floats (forward), 9 C G N (backward)
    w.grp = round16(w.fl + flash_ws_floats(C, N));
    size_t G = N <= GROUP_MAX_P ? (size_t)group_images(N) : 1;
    // one chunk's partial: dw_in | db_in | dw_out | db_out at these offsets; GRAD_CHUNKS slots
    w.part = round16(w.grp + (G > 1 ? 9 * (size_t)C * G * N : 0));
    w.dwin = 0;
    w.dbin = w.dwin + 3 * (size_t)C * C;
    w.dwout = w.dbin + 3 * (size_t)C;
    w.dbout = w.dwout + (size_t)C * C;
    w.psize = round16(w.dbout + C);
    w.total = w.part + GRAD_CHUNKS * w.psize;
    return w;
}

size_t attention_ws_floats(int C, int N, int NH) {
    (void)NH;
    return attention_ws_layout(C, N).total;
}

// Small images (N <= GROUP_MAX_P, the 7x7 level) project G = group_images(N) images side by side
// per GEMM, as the grouped convs do: at N = 49 a GEMM per image would leave most of its last
// 16-column panel empty and repack w for few columns. g[r][j N + i] = x_{b0+j}[r][i], ld = n N.
static int attention_group(int N) { return N <= GROUP_MAX_P ? group_images(N) : 1; }

static void gather_images(float *g, const float *x, int b0, int n, int R, int N) {
    size_t ld = (size_t)n * N;
    for (int j = 0; j < n; j++)
        for (int r = 0; r < R; r++)
            memcpy(g + (size_t)r * ld + (size_t)j * N, x + ((size_t)(b0 + j) * R + r) * N, N * sizeof(float));
}

// the inverse of gather_images: x_{b0+j}[r][i] (+)= g[r][j N + i]
static void scatter_images(float *x, const float *g, int b0, int n, int R, int N, int accumulate) {
    size_t ld = (size_t)n * N;
    for (int j = 0; j < n; j++)
        for (int r = 0; r < R; r++) {
            float *d = x + ((size_t)(b0 + j) * R + r) * N;
            const float *src = g + (size_t)r * ld + (size_t)j * N;
            if (accumulate) for (int i = 0; i < N; i++) d[i] += src[i];
            else memcpy(d, src, N * sizeof(float));
        }
}

// the heads of one image: O [C,N] and lse [NH,N] from qkv [3C,N] (mine: the thread's workspace)
static void attention_heads_forward(float *ob, float *lb, const float *qb, float *mine, const AttnWs *L, int C,
                                    int N, int NH) {
    int D = C / NH;
    float scale = 1.0f / sqrtf((float)D);
    float *S = mine + L->S, *T = mine + L->T, *inv = mine + L->inv, *mx = mine + L->mx, *kp = mine + L->kp;
    for (int h = 0; h < NH; h++) {
        const float *Q = qb + (size_t)h * D * N, *K = qb + (size_t)(C + h * D) * N,
                    *V = qb + (size_t)(2 * C + h * D) * N;
        float *Oh = ob + (size_t)h * D * N;
        if (is_flash(D)) { // K in panels; V^T (wide heads, zero rows up to a multiple of 16) or in panels
            float *vx = mine + L->vp;
            int np = (N + 15) / 16;
            key_panels(kp, K, D, N);
            if (D <= NARROW_D) key_panels(vx, V, D, N);
            else {
                transpose_scaled(vx, V, D, N, 1.0f);
                memset(vx + (size_t)N * D, 0, (size_t)(np * 16 - N) * D * sizeof(float));
            }
            flash_forward(Oh, lb + (size_t)h * N, Q, kp, vx, D, N, scale, mine + L->fl);
            continue;
        }
        // (scale Q)^T and V^T (in the backward's dO region)
        float *qst = mine, *vt = mine + (size_t)N * D;
        transpose_scaled(qst, Q, D, N, scale);
        transpose_scaled(vt, V, D, N, 1.0f);
        for (int i0 = 0; i0 < N; i0 += ATT_R) {
            int R = N - i0 < ATT_R ? N - i0 : ATT_R;
            gemm(0, 0, R, N, D, qst + (size_t)i0 * D, D, K, N, S, N, 0); // S = (scale Q_blk)^T K
            for (int i = 0; i < R; i++) mx[i] = max_row(S + (size_t)i * N, N);
            for (int i = 0; i < R; i++) { // S <- exp(S - max), unnormalised
                float sum = exp_row_sum(S + (size_t)i * N, N, mx[i]);
                inv[i] = 1.0f / sum;
                lb[(size_t)h * N + i0 + i] = mx[i] + logf(sum);
            }
            // O[:, blk]^T = P V^T = (S V^T) / rowsum
            gemm(0, 0, R, D, N, S, N, vt, D, T, D, 0);
            for (int d = 0; d < D; d++)
                for (int i = 0; i < R; i++) Oh[(size_t)d * N + i0 + i] = T[(size_t)i * D + d] * inv[i];
        }
    }
}

void attention_forward(float *out, float *qkv, float *o, float *lse, const float *a,
                       const float *w_in, const float *b_in, const float *w_out,
                       const float *b_out, int B, int C, int N, int NH, float *ws) {
    AttnWs L = attention_ws_layout(C, N);
    int G = attention_group(N);
#pragma omp parallel
    {
        float *mine = ws + (size_t)thread_id() * L.total;
        // qkv[3C,N] = w_in a + b_in, G images per GEMM
#pragma omp for schedule(dynamic, 1)
        for (int b0 = 0; b0 < B; b0 += G) {
            int n = B - b0 < G ? B - b0 : G;
            size_t ld = (size_t)n * N;
            const float *ag = a + (size_t)b0 * C * N;
            float *qg = qkv + (size_t)b0 * 3 * C * N;
            if (n > 1) {
                float *t = mine + L.grp;
                gather_images(t, a, b0, n, C, N);
                ag = t;
                qg = t + (size_t)C * ld;
            }
            for (int r = 0; r < 3 * C; r++)
                for (size_t i = 0; i < ld; i++) qg[(size_t)r * ld + i] = b_in[r];
            gemm(0, 0, 3 * C, (int)ld, C, w_in, C, ag, (int)ld, qg, (int)ld, 1);
            if (n > 1) scatter_images(qkv, qg, b0, n, 3 * C, N, 0);
        }
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            attention_heads_forward(o + (size_t)b * C * N, lse + (size_t)b * NH * N, qkv + (size_t)b * 3 * C * N,
                                    mine, &L, C, N, NH);
        // out += w_out O + b_out, G images per GEMM
#pragma omp for schedule(dynamic, 1)
        for (int b0 = 0; b0 < B; b0 += G) {
            int n = B - b0 < G ? B - b0 : G;
            size_t ld = (size_t)n * N;
            if (n == 1) {
                float *yb = out + (size_t)b0 * C * N;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < N; i++) yb[(size_t)c * N + i] += b_out[c];
                gemm(0, 0, C, N, C, w_out, C, o + (size_t)b0 * C * N, N, yb, N, 1);
                continue;
            }
            float *og = mine + L.grp, *yg = og + (size_t)C * ld;
            gather_images(og, o, b0, n, C, N);
            for (int c = 0; c < C; c++)
                for (size_t i = 0; i < ld; i++) yg[(size_t)c * ld + i] = b_out[c];
            gemm(0, 0, C, (int)ld, C, w_out, C, og, (int)ld, yg, (int)ld, 1);
            scatter_images(out, yg, b0, n, C, N, 1);
        }
    }
}

// the heads of one image backward: dqkv [3C,N] (written) from dO [C,N] (the gradient of the
// concatenated head outputs), qkv, O and lse of the forward
static void attention_heads_backward(float *dqkv, const float *dO, const float *qb, const float *ob,
                                     const float *lb, float *mine, const AttnWs *L, int C, int N, int NH) {
    int D = C / NH;
    float scale = 1.0f / sqrtf((float)D);
    float *S = mine + L->S, *dP = mine + L->dP, *T = mine + L->T;
    float *di = mine + L->di, *kp = mine + L->kp, *vp = mine + L->vp;
    for (int h = 0; h < NH; h++) {
        const float *Q = qb + (size_t)h * D * N, *K = qb + (size_t)(C + h * D) * N,
                    *V = qb + (size_t)(2 * C + h * D) * N;
        const float *Oh = ob + (size_t)h * D * N, *dOh = dO + (size_t)h * D * N;
        float *dQ = dqkv + (size_t)h * D * N, *dK = dqkv + (size_t)(C + h * D) * N,
              *dV = dqkv + (size_t)(2 * C + h * D) * N;
        // di_i = rowsum(dO o O)_i = sum_d dO[d,i] O[d,i]
        for (int i = 0; i < N; i++) di[i] = 0.0f;
        for (int d = 0; d < D; d++)
            for (int i = 0; i < N; i++) di[i] += dOh[(size_t)d * N + i] * Oh[(size_t)d * N + i];
        if (is_flash(D)) {
            key_panels(kp, K, D, N);
            key_panels(vp, V, D, N);
            flash_backward(dQ, dK, dV, Q, K, dOh, lb + (size_t)h * N, di, kp, vp, D, N, scale, mine + L->fl);
            continue;
        }
        float *kt = kp; // K^T [N, D] for dQ
        transpose_scaled(kt, K, D, N, 1.0f);
        for (int i0 = 0; i0 < N; i0 += ATT_R) {
            int R = N - i0 < ATT_R ? N - i0 : ATT_R;
            const float *lse = lb + (size_t)h * N;
            gemm(1, 0, R, N, D, Q + i0, N, K, N, S, N, 0);   // S = Q_blk^T K
            gemm(1, 0, R, N, D, dOh + i0, N, V, N, dP, N, 0); // dP = dO_blk^T V
            for (int i = 0; i < R; i++) // S <- P, dP <- dS
                p_ds_row(S + (size_t)i * N, dP + (size_t)i * N, N, scale, lse[i0 + i], di[i0 + i]);
            gemm(0, 0, D, N, R, dOh + i0, N, S, N, dV, N, i0 > 0);  // dV (+)= dO_blk P
            gemm(0, 0, R, D, N, dP, N, kt, D, T, D, 0);             // dQ_blk^T = dS K^T
            for (int d = 0; d < D; d++)
                for (int i = 0; i < R; i++) dQ[(size_t)d * N + i0 + i] = T[(size_t)i * D + d];
            gemm(0, 0, D, N, R, Q + i0, N, dP, N, dK, N, i0 > 0);   // dK (+)= Q_blk dS
        }
    }
}

void attention_backward(float *da, float *dw_in, float *db_in, float *dw_out, float *db_out,
                        const float *dout, const float *a, const float *qkv, const float *o,
                        const float *lse, const float *w_in, const float *w_out, int B, int C,
                        int N, int NH, float *ws) {
    AttnWs L = attention_ws_layout(C, N);
    int G = attention_group(N), nt = 1;
#pragma omp parallel
    {
#pragma omp single
        nt = thread_count();
        float *mine = ws + (size_t)thread_id() * L.total;
#pragma omp for schedule(dynamic, 1)
        for (int ch = 0; ch < GRAD_CHUNKS; ch++) {
            int lo, hi;
            float *part = chunk_begin(ws, L.total, L.part, L.psize, ch, nt, B, &lo, &hi);
            for (int b0 = lo; b0 < hi; b0 += G) { // up to G images at a time
                int n = hi - b0 < G ? hi - b0 : G;
                size_t ld = (size_t)n * N;
                // dO, dqkv of the n images ([C,N] and [3C,N] each); t: n > 1 scratch (5 C n N)
                float *dO = mine, *dqkv = mine + L.dqkv, *t = NULL;
                const float *dyg = dout + (size_t)b0 * C * N, *og = o + (size_t)b0 * C * N;
                float *dOg = dO;
                if (n > 1) {
                    dO = mine + L.grp;
                    dqkv = dO + (size_t)C * ld;
                    t = dqkv + 3 * (size_t)C * ld;
                    gather_images(t, dout, b0, n, C, N);
                    gather_images(t + (size_t)C * ld, o, b0, n, C, N);
                    dyg = t;
                    og = t + (size_t)C * ld;
                    dOg = t + 2 * (size_t)C * ld;
                }
                // out_proj: dw_out += dy O^T, db_out += rowsum dy, dO = w_out^T dy
                gemm(0, 1, C, C, (int)ld, dyg, (int)ld, og, (int)ld, part + L.dwout, C, 1);
                for (int c = 0; c < C; c++) part[L.dbout + c] += sum16(dyg + (size_t)c * ld, (long)ld);
                gemm(1, 0, C, (int)ld, C, w_out, C, dyg, (int)ld, dOg, (int)ld, 0);
                if (n > 1) scatter_images(dO, dOg, 0, n, C, N, 0);
                for (int j = 0; j < n; j++) {
                    size_t b = (size_t)b0 + j;
                    attention_heads_backward(dqkv + (size_t)j * 3 * C * N, dO + (size_t)j * C * N, qkv + b * 3 * C * N,
                                             o + b * C * N, lse + b * NH * N, mine, &L, C, N, NH);
                }
                // in_proj: dw_in += dqkv a^T, db_in += rowsum dqkv, da += w_in^T dqkv
                const float *dqg = dqkv, *ag = a + (size_t)b0 * C * N;
                float *dag = da ? da + (size_t)b0 * C * N : NULL;
                if (n > 1) {
                    gather_images(t, dqkv, 0, n, 3 * C, N);
                    gather_images(t + 3 * (size_t)C * ld, a, b0, n, C, N);
                    dqg = t;
                    ag = t + 3 * (size_t)C * ld;
                    dag = t + 4 * (size_t)C * ld;
                }
                gemm(0, 1, 3 * C, C, (int)ld, dqg, (int)ld, ag, (int)ld, part + L.dwin, C, 1);
                for (int r = 0; r < 3 * C; r++) part[L.dbin + r] += sum16(dqg + (size_t)r * ld, (long)ld);
                if (da) {
                    gemm(1, 0, C, (int)ld, 3 * C, w_in, C, dqg, (int)ld, dag, (int)ld, n > 1 ? 0 : 1);
                    if (n > 1) scatter_images(da, dag, b0, n, C, N, 1);
                }
            }
        }
    }
    reduce_chunks(dw_in, ws, L.total, L.part, L.psize, L.dwin, 3L * C * C, nt);
    reduce_chunks(db_in, ws, L.total, L.part, L.psize, L.dbin, 3L * C, nt);
    reduce_chunks(dw_out, ws, L.total, L.part, L.psize, L.dwout, (long)C * C, nt);
    reduce_chunks(db_out, ws, L.total, L.part, L.psize, L.dbout, C, nt);
}

// ---------------------------------------------------------------------------------------
// time embedding: f_i = 10000^(i/half), e = [sin(t/f_0..), cos(t/f_0..)] (computed in double)

void timestep_embedding(float *out, const int *t, int B, int D) {
    int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            double arg = (double)t[b] / pow(10000.0, (double)i / (double)half);
            out[(size_t)b * D + i] = (float)sin(arg);
            out[(size_t)b * D + half + i] = (float)cos(arg);
        }
}

// ---------------------------------------------------------------------------------------

// [lo, hi) of n elements for this thread, in multiples of 16 floats (whole cache lines)
static void thread_span(long n, long *lo, long *hi) {
    long chunks = (n + 15) / 16;
    int t = thread_id(), nt = thread_count();
    *lo = chunks * t / nt * 16;
    *hi = chunks * (t + 1) / nt * 16;
    if (*hi > n) *hi = n;
    if (*lo > n) *lo = n;
}

void array_zero(float *y, long n) {
#pragma omp parallel
    {
        long lo, hi;
        thread_span(n, &lo, &hi);
        if (hi > lo) memset(y + lo, 0, (size_t)(hi - lo) * sizeof(float));
    }
}

void array_copy(float *y, const float *x, long n) {
#pragma omp parallel
    {
        long lo, hi;
        thread_span(n, &lo, &hi);
        if (hi > lo) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
    }
}

void array_add(float *y, const float *x, long n) {
#pragma omp parallel
    {
        long lo, hi;
        thread_span(n, &lo, &hi);
        for (long i = lo; i < hi; i++) y[i] += x[i];
    }
}

void concat_channels_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb, int HW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < B; n++) {
        memcpy(out + (size_t)n * (Ca + Cb) * HW, a + (size_t)n * Ca * HW, (size_t)Ca * HW * sizeof(float));
        memcpy(out + ((size_t)n * (Ca + Cb) + Ca) * HW, b + (size_t)n * Cb * HW, (size_t)Cb * HW * sizeof(float));
    }
}

void concat_channels_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb, int HW) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < B; n++) {
        const float *src = dout + (size_t)n * (Ca + Cb) * HW;
        float *pa = da + (size_t)n * Ca * HW, *pb = db + (size_t)n * Cb * HW;
        for (long i = 0; i < (long)Ca * HW; i++) pa[i] += src[i];
        for (long i = 0; i < (long)Cb * HW; i++) pb[i] += src[(long)Ca * HW + i];
    }
}

void add_bias_bc_forward(float *out, const float *bias, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        float v = bias[bc];
        float *o = out + (size_t)bc * HW;
        for (int p = 0; p < HW; p++) o[p] += v;
    }
}

void add_bias_bc_backward(float *dbias, const float *dout, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        dbias[bc] += sum16(dout + (size_t)bc * HW, HW);
    }
}

float mse_forward(const float *pred, const float *target, long n) {
    double s = 0.0;
    for (long i = 0; i < n; i++) { double d = (double)pred[i] - target[i]; s += d * d; }
    return (float)(s / n);
}

void mse_backward(float *dpred, const float *pred, const float *target, long n) {
    float k = 2.0f / (float)n;
    for (long i = 0; i < n; i++) dpred[i] = k * (pred[i] - target[i]);
}

// ---------------------------------------------------------------------------------------
// softmax cross-entropy: p = exp(z - max z) / sum exp(z - max z); loss_b = -log p[label_b]
// = log sum exp(z) - z[label] (computed from the log-sum-exp, so p -> 0 gives no log(0)).

float softmax_cross_entropy_forward(float *probs, const float *logits, const int *labels, int B, int C) {
    double loss = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *p = probs + (size_t)b * C;
        float mx = z[0];
        for (int c = 1; c < C; c++) if (z[c] > mx) mx = z[c];
        double sum = 0.0;
        for (int c = 0; c < C; c++) { p[c] = expf(z[c] - mx); sum += p[c]; }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < C; c++) p[c] *= inv;
        if (labels) loss += log(sum) + mx - z[labels[b]];
    }
    return labels ? (float)(loss / B) : 0.0f;
}

void softmax_cross_entropy_backward(float *dlogits, const float *probs, const int *labels, int B, int C) {
    float k = 1.0f / (float)B;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            dlogits[(size_t)b * C + c] += k * (probs[(size_t)b * C + c] - (c == labels[b] ? 1.0f : 0.0f));
}
