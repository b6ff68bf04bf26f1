/* cpu.c — the linalg interface on OpenBLAS (CBLAS) and LAPACKE.
 *
 * LAPACK is column-major; a row-major m x n buffer is the column-major n x m transpose.
 * So instead of transposing, each routine is called on the transposed problem:
 * X A^{-1} = (A^{-T} X^T)^T, and the SVD of A^T = V S U^T hands back U and V^T row-major. */
#include "linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

#define PICK(L, s, d) ((L)->f64 ? (d) : (s))

const char *la_strerror(int info) {
    if (info == LA_NONFINITE)
        return "the matrix holds NaN or Inf (values overflow the compute precision; "
               "--precision f64 may help)";
    if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
        return "out of memory for LAPACK's workspace";
    return "did not converge";
}

/* xBDSQR (inside xGESDD) can loop forever on Inf, and LAPACKE's own check only catches NaN. */
static bool all_finite(const la *L, size_t n, const void *A) {
    double sum = 0; /* NaN or Inf anywhere makes the sum non-finite: 0 * Inf is NaN */
    for (size_t i = 0; i < n; i++)
        sum += 0.0 * la_get(L, A, i);
    return sum == 0.0;
}

void la_copy(const la *L, size_t n, const void *x, void *y) { memcpy(y, x, n * la_size(L)); }
void la_zero(const la *L, size_t n, void *x) { memset(x, 0, n * la_size(L)); }

void la_axpy(const la *L, size_t n, double a, const void *x, void *y) {
    if (L->f64)
        cblas_daxpy((blasint)n, a, x, 1, y, 1);
    else
        cblas_saxpy((blasint)n, (float)a, x, 1, y, 1);
}

void la_scale(const la *L, size_t n, double a, void *x) {
    if (L->f64)
        cblas_dscal((blasint)n, a, x, 1);
    else
        cblas_sscal((blasint)n, (float)a, x, 1);
}

/* In fixed blocks summed in parallel, then the blocks' sums in order: the result does not
 * depend on the thread count. */
double la_sumsq(const la *L, size_t n, const void *x) {
    enum { BLOCK = 1 << 16, MAX_BLOCKS = 4096 };
    size_t block = n / MAX_BLOCKS + 1 > BLOCK ? n / MAX_BLOCKS + 1 : BLOCK;
    size_t blocks = (n + block - 1) / block;
    double part[MAX_BLOCKS + 1], s = 0;
#pragma omp parallel for num_threads(L->threads) schedule(static) if (blocks > 16)
    for (size_t b = 0; b < blocks; b++) {
        size_t end = (b + 1) * block < n ? (b + 1) * block : n;
        double acc = 0;
        if (L->f64)
            for (size_t i = b * block; i < end; i++)
                acc += ((const double *)x)[i] * ((const double *)x)[i];
        else
            for (size_t i = b * block; i < end; i++)
                acc += (double)((const float *)x)[i] * ((const float *)x)[i];
        part[b] = acc;
    }
    for (size_t b = 0; b < blocks; b++)
        s += part[b];
    return s;
}

void la_gemm(const la *L, bool ta, bool tb, size_t m, size_t n, size_t k, double alpha,
             const void *A, size_t lda, const void *B, size_t ldb, double beta, void *C,
             size_t ldc) {
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    if (L->f64)
        cblas_dgemm(CblasRowMajor, TA, TB, (blasint)m, (blasint)n, (blasint)k, alpha, A,
                    (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
    else
        cblas_sgemm(CblasRowMajor, TA, TB, (blasint)m, (blasint)n, (blasint)k, (float)alpha, A,
                    (blasint)lda, B, (blasint)ldb, (float)beta, C, (blasint)ldc);
}

/* G's upper triangle (k x k) = alpha op(X)^T op(X) + beta G by syrk; trans: X is rows x k
 * and G = X^T X, else X is k x rows and G = X X^T. */
static void syrk_upper(const la *L, bool trans, size_t k, size_t rows, double alpha, const void *X,
                       double beta, void *G) {
    CBLAS_TRANSPOSE t = trans ? CblasTrans : CblasNoTrans;
    blasint lda = (blasint)(trans ? k : rows);
    if (L->f64)
        cblas_dsyrk(CblasRowMajor, CblasUpper, t, (blasint)k, (blasint)rows, alpha, X, lda, beta, G,
                    (blasint)k);
    else
        cblas_ssyrk(CblasRowMajor, CblasUpper, t, (blasint)k, (blasint)rows, (float)alpha, X, lda,
                    (float)beta, G, (blasint)k);
}

void la_mirror_upper(const la *L, size_t k, void *G) {
    enum { TILE = 64 };
    for (size_t i0 = 0; i0 < k; i0 += TILE)
        for (size_t j0 = i0; j0 < k; j0 += TILE)
            for (size_t i = i0; i < i0 + TILE && i < k; i++)
                for (size_t j = j0 > i + 1 ? j0 : i + 1; j < j0 + TILE && j < k; j++)
                    la_set(L, G, j * k + i, la_get(L, G, i * k + j));
}

static void syrk_full(const la *L, bool trans, size_t k, size_t rows, double alpha, const void *X,
                      double beta, void *G) {
    syrk_upper(L, trans, k, rows, alpha, X, beta, G);
    la_mirror_upper(L, k, G);
}

void la_gram_upper(const la *L, size_t m, size_t n, double alpha, const void *X, double beta,
                   void *G) {
    syrk_upper(L, true, n, m, alpha, X, beta, G);
}

void la_symv_upper(const la *L, size_t n, double alpha, const void *S, const void *x, void *y) {
    if (L->f64)
        cblas_dsymv(CblasRowMajor, CblasUpper, (blasint)n, alpha, S, (blasint)n, x, 1, 1.0, y, 1);
    else
        cblas_ssymv(CblasRowMajor, CblasUpper, (blasint)n, (float)alpha, S, (blasint)n, x, 1, 1.0f,
                    y, 1);
}

void la_gram(const la *L, size_t m, size_t n, double alpha, const void *X, double beta, void *G) {
    syrk_full(L, true, n, m, alpha, X, beta, G);
}

void la_gram_rows(const la *L, size_t m, size_t n, double alpha, const void *X, double beta,
                  void *G) {
    syrk_full(L, false, m, n, alpha, X, beta, G);
}

/* Threads take ranges of 256 columns; each column sums its rows in order, as serially. */
void la_col_means(const la *L, size_t m, size_t n, const void *X, void *mu) {
    enum { COLS = 256 };
#pragma omp parallel for num_threads(L->threads) schedule(static) if (m * n > 1u << 20)
    for (size_t j0 = 0; j0 < n; j0 += COLS) {
        size_t w = n - j0 < COLS ? n - j0 : COLS;
        double acc[COLS] = {0};
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < w; j++)
                acc[j] += la_get(L, X, i * n + j0 + j);
        for (size_t j = 0; j < w; j++)
            la_set(L, mu, j0 + j, m ? acc[j] / (double)m : 0.0);
    }
}

void la_add_row(const la *L, size_t m, size_t n, double a, const void *v, void *X) {
    for (size_t i = 0; i < m; i++)
        la_axpy(L, n, a, v, la_at(L, X, i * n));
}

void la_transpose(const la *L, size_t m, size_t n, const void *src, void *dst) {
    const size_t B = 32; /* tiles keep both sides in cache */
    for (size_t i0 = 0; i0 < m; i0 += B)
        for (size_t j0 = 0; j0 < n; j0 += B)
            for (size_t i = i0; i < m && i < i0 + B; i++)
                for (size_t j = j0; j < n && j < j0 + B; j++)
                    la_set(L, dst, j * m + i, la_get(L, src, i * n + j));
}

void la_add_diag(const la *L, size_t n, double a, void *A) {
    for (size_t i = 0; i < n; i++)
        la_set(L, A, i * n + i, la_get(L, A, i * n + i) + a);
}

int la_solve_right_lu(const la *L, size_t m, size_t n, void *A, void *X, double *rcond) {
    /* Column-major, the buffer A is A^T and X is X^T: solve A^T Y = X^T, Y = (X A^{-1})^T. */
    lapack_int *ipiv = malloc((n ? n : 1) * sizeof *ipiv);
    if (!ipiv) return -1;
    lapack_int N = (lapack_int)n, M = (lapack_int)m;
    double anorm = L->f64 ? LAPACKE_dlange(LAPACK_COL_MAJOR, '1', N, N, A, N)
                          : LAPACKE_slange(LAPACK_COL_MAJOR, '1', N, N, A, N);
    int info = L->f64 ? LAPACKE_dgetrf(LAPACK_COL_MAJOR, N, N, A, N, ipiv)
                      : LAPACKE_sgetrf(LAPACK_COL_MAJOR, N, N, A, N, ipiv);
    if (info == 0 && rcond) {
        float rs;
        if (L->f64)
            LAPACKE_dgecon(LAPACK_COL_MAJOR, '1', N, A, N, anorm, rcond);
        else {
            LAPACKE_sgecon(LAPACK_COL_MAJOR, '1', N, A, N, (float)anorm, &rs);
            *rcond = rs;
        }
    }
    if (info == 0)
        info = L->f64 ? LAPACKE_dgetrs(LAPACK_COL_MAJOR, 'N', N, M, A, N, ipiv, X, N)
                      : LAPACKE_sgetrs(LAPACK_COL_MAJOR, 'N', N, M, A, N, ipiv, X, N);
    free(ipiv);
    return info;
}

int la_solve_right_chol(const la *L, size_t m, size_t n, void *A, void *X) {
    /* A symmetric, so the transposed view is A itself. */
    lapack_int N = (lapack_int)n, M = (lapack_int)m;
    int info = L->f64 ? LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', N, A, N)
                      : LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', N, A, N);
    if (info == 0)
        info = L->f64 ? LAPACKE_dpotrs(LAPACK_COL_MAJOR, 'U', N, M, A, N, X, N)
                      : LAPACKE_spotrs(LAPACK_COL_MAJOR, 'U', N, M, A, N, X, N);
    return info;
}

int la_svd(const la *L, size_t m, size_t n, void *A, void *U, void *s, void *VT) {
    /* Column-major the buffer is A^T (n x m) = V S U^T: its "U" (n x r) is our V^T
     * row-major, its "VT" (r x m) is our U row-major. */
    lapack_int M = (lapack_int)m, N = (lapack_int)n, r = (lapack_int)(m < n ? m : n);
    if (r == 0) return 0;
    if (!all_finite(L, m * n, A)) return LA_NONFINITE;
    return L->f64 ? LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', N, M, A, N, s, VT, N, U, r)
                  : LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', N, M, A, N, s, VT, N, U, r);
}

int la_singular_values(const la *L, size_t m, size_t n, void *A, void *s) {
    lapack_int M = (lapack_int)m, N = (lapack_int)n;
    if (m == 0 || n == 0) return 0;
    if (!all_finite(L, m * n, A)) return LA_NONFINITE;
    return L->f64 ? LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', N, M, A, N, s, NULL, 1, NULL, 1)
                  : LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'N', N, M, A, N, s, NULL, 1, NULL, 1);
}

int la_eig_sym(const la *L, size_t n, void *A, void *w, void *Z) {
    lapack_int N = (lapack_int)n, found;
    if (!all_finite(L, n * n, A)) return LA_NONFINITE;
    lapack_int *isuppz = malloc(2 * (n ? n : 1) * sizeof *isuppz);
    if (!isuppz) return -1;
    /* Column-major Z holds eigenvectors in columns; row-major that is Z^T, so transpose. */
    int info = L->f64 ? LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'A', 'U', N, A, N, 0, 0, 0, 0, 0,
                                       &found, w, Z, N, isuppz)
                      : LAPACKE_ssyevr(LAPACK_COL_MAJOR, 'V', 'A', 'U', N, A, N, 0, 0, 0, 0, 0,
                                       &found, w, Z, N, isuppz);
    free(isuppz);
    for (size_t i = 0; i < n && info == 0; i++)
        for (size_t j = i + 1; j < n; j++) {
            double a = la_get(L, Z, i * n + j), b = la_get(L, Z, j * n + i);
            la_set(L, Z, i * n + j, b);
            la_set(L, Z, j * n + i, a);
        }
    return info;
}

/* dsyevr finds a subset of eigenvectors by bisection and inverse iteration (dstebz +
 * dstein), and dstein reorthogonalises every cluster of eigenvalues closer than
 * 1e-3 ||A||: on a Gram matrix with a few dominant directions the whole bulk is one cluster,
 * O(n k^2) of BLAS1 work (4 s of a 10 s 4096 x 4096 solve). MRRR (dstemr) needs no
 * reorthogonalisation, but dsyevr calls it only for the whole spectrum; so the three steps
 * here: tridiagonal reduction A = Q T Q^T, MRRR on T's index range, Z = Q Z_T. A is full
 * and symmetric, so either triangle will do: OpenBLAS's lower reduction (in column-major
 * terms) is 15% faster at n = 4096 on the machine of README's Performance table. */
int la_eig_sym_top(const la *L, size_t n, size_t k, void *A, void *w, void *Vt) {
    /* Column-major Z (n x k, ldz n) holds the eigenvectors as columns: row-major, that
     * buffer is Vt (k x n) with the eigenvectors as rows. */
    lapack_int N = (lapack_int)n, K = (lapack_int)k, found = 0, il = N - K + 1;
    lapack_logical tryrac = 1;
    if (k == 0 || k > n || !L->f64) return k == 0 ? 0 : -1;
    if (!all_finite(L, n * n, A)) return LA_NONFINITE;
    double *d = malloc(4 * n * sizeof *d);
    lapack_int *isuppz = malloc(2 * k * sizeof *isuppz);
    int info = -1;
    if (d && isuppz) {
        /* e: n, the last as workspace; all_w: dstemr works in W up to n entries */
        double *e = d + n, *tau = d + 2 * n, *all_w = d + 3 * n;
        info = LAPACKE_dsytrd(LAPACK_COL_MAJOR, 'L', N, A, N, d, e, tau);
        if (info == 0)
            info = LAPACKE_dstemr(LAPACK_COL_MAJOR, 'V', 'I', N, d, e, 0, 0, il, N, &found, all_w,
                                  Vt, N, K, isuppz, &tryrac);
        if (info == 0 && found != K) info = -1;
        if (info == 0)
            info = LAPACKE_dormtr(LAPACK_COL_MAJOR, 'L', 'L', 'N', N, K, A, N, tau, Vt, N);
        if (info == 0) memcpy(w, all_w, k * sizeof *all_w);
    }
    free(d);
    free(isuppz);
    return info;
}

void la_set_threads(int n) { openblas_set_num_threads(n); }
