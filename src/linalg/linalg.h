/* linalg.h — the one interface through which methods do linear algebra.
 *
 * Matrices are dense, row-major, in the compute precision (float, or double when f64),
 * passed as void pointers so that a method is written once for both precisions. The CPU
 * backend (cpu.c) calls OpenBLAS + LAPACKE; a CUDA backend can implement the same calls.
 * Functions that can fail return 0 or a LAPACK info code; the decompositions return
 * LA_NONFINITE for a matrix holding NaN or Inf, on which LAPACK may never return. */
#ifndef ACEM_LINALG_H
#define ACEM_LINALG_H

#include <stdbool.h>
#include <stddef.h>

#define LA_NONFINITE (-1000)
/* "did not converge", "out of memory" or what LA_NONFINITE means, for an error message. */
const char *la_strerror(int info);

typedef struct la {
    bool f64;
    int threads;
} la;

static inline size_t la_size(const la *L) { return L->f64 ? sizeof(double) : sizeof(float); }
/* Address of element i of a buffer. */
static inline void *la_at(const la *L, void *p, size_t i) { return (char *)p + i * la_size(L); }

/* ---- level 1, on n contiguous elements ---- */
/* Element access, inline so that loops over elements hoist the precision test. */
static inline double la_get(const la *L, const void *x, size_t i) {
    return L->f64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}
static inline void la_set(const la *L, void *x, size_t i, double v) {
    if (L->f64)
        ((double *)x)[i] = v;
    else
        ((float *)x)[i] = (float)v;
}
void la_copy(const la *L, size_t n, const void *x, void *y);           /* y = x */
void la_axpy(const la *L, size_t n, double a, const void *x, void *y); /* y += a x */
void la_scale(const la *L, size_t n, double a, void *x);               /* x *= a */
void la_zero(const la *L, size_t n, void *x);
double la_sumsq(const la *L, size_t n, const void *x); /* sum x_i^2, accumulated in double */

/* ---- level 2/3 on row-major matrices ---- */
/* C (m x n) = alpha op(A) op(B) + beta C; op(A) is m x k. lda/ldb/ldc are row strides. */
void la_gemm(const la *L, bool ta, bool tb, size_t m, size_t n, size_t k, double alpha,
             const void *A, size_t lda, const void *B, size_t ldb, double beta, void *C,
             size_t ldc);
/* G (n x n, full) = alpha X^T X + beta G for X (m x n): syrk, then the lower triangle mirrored. */
void la_gram(const la *L, size_t m, size_t n, double alpha, const void *X, double beta, void *G);
/* G's upper triangle only (row-major: G[i][j], j >= i) = alpha X^T X + beta G, by syrk;
 * the lower triangle is left as it was. For sums of Gram matrices mirrored once at the end. */
void la_gram_upper(const la *L, size_t m, size_t n, double alpha, const void *X, double beta,
                   void *G);
/* G[j][i] = G[i][j] for j > i: the upper triangle copied onto the lower, in cache tiles. */
void la_mirror_upper(const la *L, size_t n, void *G);
/* y (n) += alpha S x for S (n x n) symmetric, read from its upper triangle alone. */
void la_symv_upper(const la *L, size_t n, double alpha, const void *S, const void *x, void *y);
/* G (m x m, full) = alpha X X^T + beta G for X (m x n), the same way. */
void la_gram_rows(const la *L, size_t m, size_t n, double alpha, const void *X, double beta,
                  void *G);
/* Column means of X (m x n) into mu (n). */
void la_col_means(const la *L, size_t m, size_t n, const void *X, void *mu);
/* X[i][j] += a * v[j] for every row i. */
void la_add_row(const la *L, size_t m, size_t n, double a, const void *v, void *X);
/* dst (n x m) = src (m x n)^T; src and dst must not overlap. */
void la_transpose(const la *L, size_t m, size_t n, const void *src, void *dst);
/* A[i][i] += a. */
void la_add_diag(const la *L, size_t n, double a, void *A);

/* ---- solves and decompositions ---- */
/* X <- X A^{-1} for X (m x n), A (n x n, general, destroyed) by LU with partial pivoting.
 * rcond, when non-NULL, receives LAPACK's estimate of 1 / cond_1(A). */
int la_solve_right_lu(const la *L, size_t m, size_t n, void *A, void *X, double *rcond);
/* The same for a symmetric positive definite A, by Cholesky. */
int la_solve_right_chol(const la *L, size_t m, size_t n, void *A, void *X);
/* Thin SVD of A (m x n, destroyed): A = U diag(s) VT, r = min(m, n), s descending,
 * U m x r, VT r x n. */
int la_svd(const la *L, size_t m, size_t n, void *A, void *U, void *s, void *VT);
/* Singular values only (descending) of A (m x n, destroyed). */
int la_singular_values(const la *L, size_t m, size_t n, void *A, void *s);
/* Symmetric eigendecomposition of A (n x n): eigenvalues w ascending, eigenvectors as the
 * columns of Z (n x n). A is destroyed. */
int la_eig_sym(const la *L, size_t n, void *A, void *w, void *Z);

/* The k largest eigenpairs of a symmetric A (n x n, destroyed): eigenvalues w (k,
 * ascending) and the eigenvectors as the rows of Vt (k x n). Double only (L->f64): in float32
 * the subset's eigenvectors lose orthogonality on a clustered bulk. */
int la_eig_sym_top(const la *L, size_t n, size_t k, void *A, void *w, void *Vt);

/* Threads used by BLAS/LAPACK calls. */
void la_set_threads(int n);

#endif
