// test_gemm.c: the packed GEMM against a double-precision naive product, all transposes,
// odd shapes that exercise every edge of the MR x NR tiles and KC/MC/NC blocks; and gemm_rows
// with row tables (rows stored in a shuffled order) for A, B or both; and gemm_packed with A
// packed once by gemm_pack_a, which must give the same bits as gemm. Every variant the CPU runs
// (avx512, avx2, generic) is checked; the variants that use FMAs must agree bit for bit (each C
// element is summed over k in the same order), which makes training byte-identical across them.
#define _DEFAULT_SOURCE // MAP_ANONYMOUS
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/gemm.h"
#include "core/rng.h"
#include "testutil.h"

static int g_bf16; // the products are in bf16: the reference rounds A and B to bf16 first

// x rounded to bf16 when the products are in bf16
static double bf16(float x) { return g_bf16 ? tu_bf16(x) : x; }

static const char *g_same_bits_as; // a variant whose results the active one must match bit for bit

// a row table that stores the rows of an [n, ld] matrix in a random order
static long *shuffled_rows(int n, int ld, Rng *r) {
    long *off = malloc((size_t)n * sizeof(long));
    int *perm = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) perm[i] = i;
    rng_shuffle(r, perm, n);
    for (int i = 0; i < n; i++) off[i] = (long)perm[i] * ld;
    free(perm);
    return off;
}

static void check(int ta, int tb, int M, int N, int K, int acc, int tables, Rng *r) {
    int lda = ta ? M + 3 : K + 1, ldb = tb ? K + 2 : N + 5, ldc = N + 7;
    long asz = (long)(ta ? K : M) * lda, bsz = (long)(tb ? N : K) * ldb, csz = (long)M * ldc;
    float *A = malloc(asz * 4), *B = malloc(bsz * 4), *C = malloc(csz * 4), *C0 = malloc(csz * 4);
    for (long i = 0; i < asz; i++) A[i] = rng_normal(r);
    for (long i = 0; i < bsz; i++) B[i] = rng_normal(r);
    for (long i = 0; i < csz; i++) C[i] = C0[i] = rng_normal(r);
    long *aoff = tables & 1 ? shuffled_rows(ta ? K : M, lda, r) : NULL;
    long *boff = tables & 2 ? shuffled_rows(tb ? N : K, ldb, r) : NULL;
    if (tables) gemm_rows(ta, tb, M, N, K, A, lda, aoff, B, ldb, boff, C, ldc, acc);
    else gemm(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, acc);
    if (g_same_bits_as) { // the same product with the reference FMA variant: the same bits
        const char *mine = gemm_isa();
        float *Cr = malloc(csz * 4);
        memcpy(Cr, C0, csz * 4);
        gemm_set_isa(g_same_bits_as);
        if (tables) gemm_rows(ta, tb, M, N, K, A, lda, aoff, B, ldb, boff, Cr, ldc, acc);
        else gemm(ta, tb, M, N, K, A, lda, B, ldb, Cr, ldc, acc);
        gemm_set_isa(mine);
        CHECK(memcmp(Cr, C, csz * 4) == 0, "%s and %s differ: ta=%d tb=%d %dx%dx%d acc=%d tables=%d", mine, g_same_bits_as,
              ta, tb, M, N, K, acc, tables);
        free(Cr);
    }
#define AR(row) (aoff ? aoff[row] : (long)(row) * lda)
#define BR(row) (boff ? boff[row] : (long)(row) * ldb)
    double maxerr = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? C0[(long)i * ldc + j] : 0;
            for (int k = 0; k < K; k++)
                s += bf16(ta ? A[AR(k) + i] : A[AR(i) + k]) * bf16(tb ? B[BR(j) + k] : B[BR(k) + j]);
            double e = fabs(s - C[(long)i * ldc + j]);
            if (e > maxerr) maxerr = e;
        }
    // padding columns of C (j >= N) must be untouched
    int untouched = 1;
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) untouched &= C[(long)i * ldc + j] == C0[(long)i * ldc + j];
    CHECK(maxerr < 1e-4 * sqrt((double)K + 1), "gemm ta=%d tb=%d %dx%dx%d acc=%d tables=%d: max err %g", ta, tb, M, N, K, acc,
          tables, maxerr);
    CHECK(untouched, "gemm ta=%d tb=%d %dx%dx%d wrote outside C", ta, tb, M, N, K);
    if (!tb && !aoff) { // A packed once (gemm_pack_a) then gemm_packed: the same C, bit for bit
        float *Ap = malloc((gemm_packed_a_floats(M, K) + 1) * 4), *C2 = malloc(csz * 4);
        memcpy(C2, C0, csz * 4);
        gemm_pack_a(ta, M, K, A, lda, Ap);
        gemm_packed(M, N, K, Ap, B, ldb, boff, C2, ldc, acc);
        CHECK(memcmp(C2, C, csz * 4) == 0, "gemm_packed ta=%d %dx%dx%d acc=%d tables=%d differs from gemm", ta, M, N, K, acc,
              tables);
        free(Ap); free(C2);
    }
    free(A); free(B); free(C); free(C0); free(aoff); free(boff);
}

// bf16 only: gemm_packed_pairs with B given as bf16 pair rows (gemm_bf16_pairs) in a random
// order, against the double product of the rounded inputs, and bit for bit against gemm_packed of
// the same B as floats (the same pairs summed in the same order)
static void check_pairs(int M, int N, int K, int acc, Rng *r) {
    int ldq = N + 3, ldc = N + 7, K2 = K / 2;
    long csz = (long)M * ldc;
    float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc(csz * 4), *C0 = malloc(csz * 4);
    uint32_t *Bq = malloc(((size_t)K2 * ldq + 32) * 4); // 32 pairs past the last row: whole panels are read
    for (long i = 0; i < (long)M * K; i++) A[i] = rng_normal(r);
    for (long i = 0; i < (long)K * N; i++) B[i] = rng_normal(r);
    for (long i = 0; i < csz; i++) C[i] = C0[i] = rng_normal(r);
    long *off = shuffled_rows(K2, ldq, r);
    for (int kp = 0; kp < K2; kp++) gemm_bf16_pairs(Bq + off[kp], N, B + (size_t)2 * kp * N, B + (size_t)(2 * kp + 1) * N, N, 1, N);
    for (long i = (long)K2 * ldq; i < (long)K2 * ldq + 32; i++) Bq[i] = 0x7fc07fc0u; // NaN pairs: never stored
    float *Ap = malloc((gemm_packed_a_floats(M, K) + 1) * 4), *C2 = malloc(csz * 4);
    gemm_pack_a(0, M, K, A, K, Ap);
    gemm_packed_pairs(M, N, K, Ap, Bq, off, C, ldc, acc);
    memcpy(C2, C0, csz * 4);
    gemm_packed(M, N, K, Ap, B, N, NULL, C2, ldc, acc);
    double maxerr = 0;
    int untouched = 1;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = acc ? C0[(long)i * ldc + j] : 0;
            for (int k = 0; k < K; k++) s += bf16(A[(long)i * K + k]) * bf16(B[(long)k * N + j]);
            maxerr = fmax(maxerr, fabs(s - C[(long)i * ldc + j]));
        }
        for (int j = N; j < ldc; j++) untouched &= C[(long)i * ldc + j] == C0[(long)i * ldc + j];
    }
    CHECK(maxerr < 1e-4 * sqrt((double)K + 1), "gemm_packed_pairs %dx%dx%d acc=%d: max err %g", M, N, K, acc, maxerr);
    CHECK(untouched, "gemm_packed_pairs %dx%dx%d wrote outside C", M, N, K);
    CHECK(memcmp(C, C2, csz * 4) == 0, "gemm_packed_pairs %dx%dx%d acc=%d differs from gemm_packed", M, N, K, acc);
    free(A); free(B); free(C); free(C0); free(Bq); free(off); free(Ap); free(C2);
}

static uint16_t bf16_bits(float x) {
    float r = tu_bf16(x);
    uint32_t u;
    memcpy(&u, &r, 4);
    return (uint16_t)(u >> 16);
}

// bf16 only: gemm_bf16_pairs and gemm_bf16_round on `rows` rows of n values (source rows lds
// apart): each dst row (ldd apart) holds the rounded values, then zeros up to ldd; nothing is
// written past the last row's ldd; a NULL hi gives zero high halves
// n floats that end where an unreadable page begins: reading past them crashes the test
static float *at_page_end(size_t n, void **map, size_t *mapsz) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), bytes = (n * sizeof(float) + pg - 1) / pg * pg;
    *mapsz = bytes + pg;
    char *m = mmap(NULL, *mapsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + bytes, pg, PROT_NONE)) abort();
    *map = m;
    return (float *)(m + bytes) - n;
}

// the rows of lo and hi end at an unreadable page: the conversions may read no value past the last
// row's n (the rows above them spill whole vectors into the gaps and the next rows, the last ones
// are masked); nothing is written past rows ldd
static void check_convert(int rows, int n, int ldd, int lds, int with_hi, Rng *r) {
    size_t dsz = (size_t)rows * ldd + 40, ssz = (size_t)(rows - 1) * lds + n, lsz, hsz;
    void *lmap, *hmap;
    float *lo = at_page_end(ssz, &lmap, &lsz), *hi = at_page_end(ssz, &hmap, &hsz);
    uint32_t *q = malloc(dsz * 4);
    uint16_t *h = malloc(dsz * 2);
    for (size_t i = 0; i < ssz; i++) lo[i] = rng_normal(r), hi[i] = rng_normal(r) * 1e-3f;
    for (size_t i = 0; i < dsz; i++) q[i] = 0xdeadbeefu, h[i] = 0xbeef;
    gemm_bf16_pairs(q, ldd, lo, with_hi ? hi : NULL, lds, rows, n);
    gemm_bf16_round(h, ldd, lo, lds, rows, n);
    int bad = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < ldd; j++) {
            size_t d = (size_t)i * ldd + j, s = (size_t)i * lds + j;
            uint32_t want = j < n ? bf16_bits(lo[s]) | (with_hi ? (uint32_t)bf16_bits(hi[s]) << 16 : 0) : 0;
            bad += q[d] != want || h[d] != (j < n ? bf16_bits(lo[s]) : 0);
        }
    for (size_t d = (size_t)rows * ldd; d < dsz; d++) bad += q[d] != 0xdeadbeefu || h[d] != 0xbeef;
    CHECK(bad == 0, "gemm_bf16_pairs/round rows=%d n=%d ldd=%d lds=%d hi=%d: %d wrong values", rows, n, ldd, lds,
          with_hi, bad);
    munmap(lmap, lsz); munmap(hmap, hsz); free(q); free(h);
}

// bf16 only: gemm_rows_a16 (A in bf16, read in place at any 2-byte alignment, through a row table
// or lda) bit for bit against gemm_rows on the float A, and against the double product; an odd K
// reads one value past each row (here 1.0, or the next row's first value)
static void check_a16(int tb, int M, int N, int K, int table, int acc, Rng *r) {
    int lda = K + 3, ldb = tb ? K + 2 : N + 5, ldc = N + 7;
    long asz = (long)M * lda + 1, bsz = (long)(tb ? N : K) * ldb, csz = (long)M * ldc;
    float *A = malloc(asz * 4), *B = malloc(bsz * 4), *C = malloc(csz * 4), *C0 = malloc(csz * 4), *C2 = malloc(csz * 4);
    uint16_t *Ah = malloc((asz + 1) * 2);
    for (long i = 0; i < asz; i++) A[i] = rng_normal(r);
    for (long i = 0; i < bsz; i++) B[i] = rng_normal(r);
    for (long i = 0; i < csz; i++) C[i] = C2[i] = C0[i] = rng_normal(r);
    long *aoff = table ? shuffled_rows(M, lda, r) : NULL;
    if (aoff) for (int i = 0; i < M; i++) aoff[i] += i % 3; // rows at odd offsets too
    gemm_bf16_round(Ah, asz, A, asz, 1, asz);
    for (long i = 0; i < asz; i++) if (i % lda >= K + (table ? 2 : 0)) Ah[i] = 0x3f80; // 1.0: what lies past a row
    gemm_rows_a16(tb, M, N, K, Ah, lda, aoff, B, ldb, NULL, C, ldc, acc);
    gemm_rows(0, tb, M, N, K, A, lda, aoff, B, ldb, NULL, C2, ldc, acc);
    double maxerr = 0;
    int untouched = 1;
    for (int i = 0; i < M; i++) {
        long ar = aoff ? aoff[i] : (long)i * lda;
        for (int j = 0; j < N; j++) {
            double s = acc ? C0[(long)i * ldc + j] : 0;
            for (int k = 0; k < K; k++) s += bf16(A[ar + k]) * bf16(tb ? B[(long)j * ldb + k] : B[(long)k * ldb + j]);
            maxerr = fmax(maxerr, fabs(s - C[(long)i * ldc + j]));
        }
        for (int j = N; j < ldc; j++) untouched &= C[(long)i * ldc + j] == C0[(long)i * ldc + j];
    }
    CHECK(maxerr < 1e-4 * sqrt((double)K + 1), "gemm_rows_a16 tb=%d %dx%dx%d table=%d acc=%d: max err %g", tb, M, N, K,
          table, acc, maxerr);
    CHECK(untouched, "gemm_rows_a16 %dx%dx%d wrote outside C", M, N, K);
    CHECK(memcmp(C, C2, csz * 4) == 0, "gemm_rows_a16 tb=%d %dx%dx%d table=%d acc=%d differs from gemm_rows", tb, M, N, K,
          table, acc);
    free(A); free(B); free(C); free(C0); free(C2); free(Ah); free(aoff);
}

// bf16 only: gemm_rows_a16_q (B[N, K] as its pair image) bit for bit against gemm_rows_a16 on the
// float B; the words past each pair row's K are not zero (1.0 pairs), and must not be read as B
static void check_a16_q(int M, int N, int K, int acc, Rng *r) {
    int lda = K + 3, ldb = K + 2, ldq = K + 5, ldc = N + 7, N2 = (N + 1) / 2;
    long asz = (long)M * lda + 1, bsz = (long)N * ldb, qsz = (long)N2 * ldq, csz = (long)M * ldc;
    float *A = malloc(asz * 4), *B = malloc(bsz * 4), *C = malloc(csz * 4), *C0 = malloc(csz * 4), *C2 = malloc(csz * 4);
    uint16_t *Ah = malloc((asz + 1) * 2);
    uint32_t *Bq = malloc(qsz * 4);
    for (long i = 0; i < asz; i++) A[i] = rng_normal(r);
    for (long i = 0; i < bsz; i++) B[i] = rng_normal(r);
    for (long i = 0; i < csz; i++) C[i] = C2[i] = C0[i] = rng_normal(r);
    gemm_bf16_round(Ah, asz, A, asz, 1, asz);
    for (long i = 0; i < qsz; i++) Bq[i] = 0x3f803f80u;
    if (N / 2) gemm_bf16_pairs(Bq, ldq, B, B + ldb, 2 * (size_t)ldb, N / 2, K);
    if (N % 2) gemm_bf16_pairs(Bq + (long)(N2 - 1) * ldq, ldq, B + (long)(N - 1) * ldb, NULL, 0, 1, K);
    for (long c = 0; c < N2; c++)
        for (int k = K; k < ldq; k++) Bq[c * ldq + k] = 0x3f803f80u;
    gemm_rows_a16_q(M, N, K, Ah, lda, NULL, Bq, ldq, C, ldc, acc);
    gemm_rows_a16(1, M, N, K, Ah, lda, NULL, B, ldb, NULL, C2, ldc, acc);
    int untouched = 1;
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) untouched &= C[(long)i * ldc + j] == C0[(long)i * ldc + j];
    CHECK(untouched, "gemm_rows_a16_q %dx%dx%d wrote outside C", M, N, K);
    CHECK(memcmp(C, C2, csz * 4) == 0, "gemm_rows_a16_q %dx%dx%d acc=%d differs from gemm_rows_a16", M, N, K, acc);
    free(A); free(B); free(C); free(C0); free(C2); free(Ah); free(Bq);
}

static int uses_fma(const char *isa) {
#if defined(__FMA__)
    (void)isa;
    return 1; // the generic variant's vector code contracts to FMAs too
#else
    return strcmp(isa, "generic") != 0;
#endif
}

int main(void) {
    int ran = 0;
    // last tiles of 1-7 rows (4 and fewer take the 4-row kernels), last panels of 1-31 columns
    static const int shapes[][3] = {{1, 1, 1},    {7, 33, 5},   {6, 32, 256}, {13, 65, 257}, {97, 1030, 300}, {64, 49, 576},
                       {3, 784, 16}, {9, 24, 7},   {5, 45, 20},  {4, 784, 32},  {16, 50, 9},
                       /* AVX-512 8 x 32 tiles: 4-row and 16-column tails */ {12, 47, 33}, {8, 32, 64}, {20, 97, 40}, {17, 16, 3}};
    for (int v = 0; v < gemm_variant_count(); v++) {
    const char *isa = gemm_variant_name(v);
    if (!gemm_variant_supported(v)) { printf("SKIP gemm variant %s: this CPU lacks it\n", isa); continue; }
    gemm_set_isa(isa);
    // the first FMA variant checked is the reference of the others
    g_same_bits_as = NULL;
    for (int u = 0; u < v; u++)
        if (gemm_variant_supported(u) && uses_fma(gemm_variant_name(u)) && uses_fma(isa)) { g_same_bits_as = gemm_variant_name(u); break; }
    int before = tu_failures;
    Rng r;
    rng_seed(&r, 1);
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++)
                    for (int tables = 0; tables < 4; tables++) check(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], acc, tables, &r);
    printf("gemm variant %s: %s%s%s\n", isa, tu_failures == before ? "all shapes pass" : "FAILED",
           g_same_bits_as ? ", compared bit for bit with " : "", g_same_bits_as ? g_same_bits_as : "");
    ran++;
    }
    CHECK(ran > 0, "no GEMM variant ran");
    // bf16 products (fp32 accumulation) against the double product of the bf16-rounded inputs
    if (gemm_set_precision(GEMM_BF16) != 0) printf("SKIP gemm bf16: this CPU lacks AVX512_BF16\n");
    else {
        int before = tu_failures;
        g_bf16 = 1;
        g_same_bits_as = NULL;
        Rng r;
        rng_seed(&r, 2);
        for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int acc = 0; acc < 2; acc++)
                        for (int tables = 0; tables < 4; tables++) check(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], acc, tables, &r);
        // pair rows: M past the 96-row block, N tails of 1-31 columns, K in 1-3 chunks of pairs
        static const int pshapes[][3] = {{1, 1, 2}, {7, 33, 6}, {97, 100, 1026}, {8, 32, 64}, {200, 47, 1152}, {9, 31, 2},
                                         {64, 812, 576}};
        for (int s = 0; s < (int)(sizeof pshapes / sizeof pshapes[0]); s++)
            for (int acc = 0; acc < 2; acc++) check_pairs(pshapes[s][0], pshapes[s][1], pshapes[s][2], acc, &r);
        // the conversions: whole vectors, tails, zero fill of 0-19 values, one row and several, a
        // spill over one gap and over whole rows (7 of 8), gaps between the rows (lds > n), wider
        // than a destination row
        static const int cshapes[][4] = {{1, 3, 3, 3},   {3, 28, 29, 28}, {5, 16, 16, 20}, {4, 7, 9, 7},  {2, 33, 49, 40},
                                         {1, 0, 5, 1},   {3, 14, 15, 14}, {28, 28, 29, 28}, {7, 7, 8, 7}, {14, 14, 15, 14},
                                         {6, 20, 20, 40}, {1, 48, 48, 0}, {2, 5, 5, 11}, {3, 3, 4, 20}};
        for (int s = 0; s < (int)(sizeof cshapes / sizeof cshapes[0]); s++)
            for (int hi = 0; hi < 2; hi++) check_convert(cshapes[s][0], cshapes[s][1], cshapes[s][2], cshapes[s][3], hi, &r);
        // A in bf16: odd and even K, K in 1-3 chunks, M and N tails, N past one 1024-column block
        static const int ashapes[][3] = {{1, 1, 1}, {7, 33, 5}, {576, 64, 812}, {13, 65, 257}, {9, 1030, 1031}, {8, 32, 2}};
        for (int s = 0; s < (int)(sizeof ashapes / sizeof ashapes[0]); s++)
            for (int tb = 0; tb < 2; tb++)
                for (int t = 0; t < 2; t++) check_a16(tb, ashapes[s][0], ashapes[s][1], ashapes[s][2], t, s % 2, &r);
        // B as its pair image: odd N (a last pair row with no high half), N past one panel and one
        // 1024-column block, K odd, below 16 words, in 1-3 chunks
        static const int qshapes[][3] = {{1, 1, 1}, {7, 33, 5}, {576, 64, 812}, {13, 65, 257}, {9, 1030, 1031}, {8, 32, 2}};
        for (int s = 0; s < (int)(sizeof qshapes / sizeof qshapes[0]); s++)
            for (int acc = 0; acc < 2; acc++) check_a16_q(qshapes[s][0], qshapes[s][1], qshapes[s][2], acc, &r);
        printf("gemm bf16 (%s): %s\n", gemm_isa(), tu_failures == before ? "all shapes pass" : "FAILED");
        gemm_set_precision(GEMM_FP32);
        g_bf16 = 0;
    }
    TEST_DONE("test_gemm");
}
