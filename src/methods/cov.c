/* cov.c — sum_t X_t S_t, sum_t S_t, and the right-hand solve shared by the covariance
 * family (regmean, actmat, wudi, ace). */
#include "cov.h"

#include <math.h>
#include <stdlib.h>

void *cov_alloc(const la *L, size_t n, const char *what, acem_error *err) {
    return acem_alloc(n ? n : 1, la_size(L), what, err);
}

int cov_accumulate(const la *L, const method_ctx *c, void *const *D, cov_estimate_fn estimate,
                   void *user, void *Y, void *P, void *S, void *K, acem_error *err) {
    const size_t m = c->rows, n = c->cols;
    la_zero(L, m * n, Y);
    la_zero(L, n * n, P);
    for (int t = 0; t < c->T; t++) {
        cov_task task = {0};
        if (estimate(c, D, t, S, &task, user, err)) return -1;
        if (task.skip) continue;
        if (task.gram_scale > 0 && K && 2 * m < n) {
            /* X (X^T X) = (X X^T) X: 4 m^2 n flops instead of 2 m n^2 (ace-merging.md, Cost) */
            la_gemm(L, false, true, m, m, n, 1.0, task.X, n, task.X, n, 0.0, K, m);
            la_gemm(L, false, false, m, n, m, task.gram_scale, K, m, task.X, n, 1.0, Y, n);
        } else {
            la_gemm(L, false, false, m, n, n, 1.0, task.X, n, S, n, 1.0, Y, n);
        }
        la_axpy(L, n * n, 1.0, S, P);
    }
    return 0;
}

/* Y[:, j] /= v[j] where v[j] > cut, else Y[:, j] = 0: the diagonal of a pseudo-inverse. */
static void divide_columns(const la *L, size_t m, size_t n, void *Y, const void *v, double cut) {
    for (size_t j = 0; j < n; j++) {
        double vj = la_get(L, v, j), inv = vj > cut ? 1.0 / vj : 0.0;
        for (size_t i = 0; i < m; i++)
            la_set(L, Y, i * n + j, la_get(L, Y, i * n + j) * inv);
    }
}

/* Y <- Y A^+ with A = V diag(w) V^T symmetric: A^+ = V diag(1/w_i for w_i > cut) V^T. */
static int solve_pinv_sym(const la *L, size_t m, size_t n, void *A, void *Y, double eps,
                          acem_error *err) {
    void *w = cov_alloc(L, n, "eigenvalues", err), *Z = cov_alloc(L, n * n, "eigenvectors", err);
    void *YZ = cov_alloc(L, m * n, "a projection", err);
    int rc = -1;
    if (!w || !Z || !YZ) goto out;
    if (la_eig_sym(L, n, A, w, Z)) {
        rc = acem_fail(err, "symmetric eigendecomposition did not converge");
        goto out;
    }
    double wmax = n ? la_get(L, w, n - 1) : 0;
    double cut = (double)n * eps * wmax;
    /* Y A^+ = ((Y Z) diag(1/w)) Z^T, dropping the columns of Z at or below the cut-off. */
    la_gemm(L, false, false, m, n, n, 1.0, Y, n, Z, n, 0.0, YZ, n);
    divide_columns(L, m, n, YZ, w, cut);
    la_gemm(L, false, true, m, n, n, 1.0, YZ, n, Z, n, 0.0, Y, n);
    rc = 0;
out:
    free(w);
    free(Z);
    free(YZ);
    return rc;
}

/* Y <- Y A^+ for a general A through its SVD: the reference's fallback when inversion fails. */
static int solve_pinv_general(const la *L, size_t m, size_t n, void *A, void *Y, double eps,
                              acem_error *err) {
    void *U = cov_alloc(L, n * n, "an SVD", err), *s = cov_alloc(L, n, "an SVD", err);
    void *VT = cov_alloc(L, n * n, "an SVD", err), *YV = cov_alloc(L, m * n, "an SVD", err);
    int rc = -1;
    if (!U || !s || !VT || !YV) goto out;
    if (la_svd(L, n, n, A, U, s, VT)) {
        rc = acem_fail(err, "SVD did not converge");
        goto out;
    }
    /* A^+ = V diag(1/s) U^T; Y A^+ = ((Y V) diag(1/s)) U^T */
    double cut = (double)n * eps * (n ? la_get(L, s, 0) : 0);
    la_gemm(L, false, true, m, n, n, 1.0, Y, n, VT, n, 0.0, YV, n);
    divide_columns(L, m, n, YV, s, cut);
    la_gemm(L, false, true, m, n, n, 1.0, YV, n, U, n, 0.0, Y, n);
    rc = 0;
out:
    free(U);
    free(s);
    free(VT);
    free(YV);
    return rc;
}

int cov_solve(const la *L, cov_solver solver, size_t m, size_t n, void *A, void *Y, double eps,
              double *rcond, acem_error *err) {
    if (rcond) *rcond = NAN;
    if (solver == COV_PINV) return solve_pinv_sym(L, m, n, A, Y, eps, err);
    void *copy = cov_alloc(L, n * n, "a copy of the system", err);
    if (!copy) return -1;
    la_copy(L, n * n, A, copy);
    int rc;
    if (solver == COV_CHOLESKY && la_solve_right_chol(L, m, n, A, Y) == 0) {
        rc = 0;
    } else {
        /* potrs never ran if potrf failed, so Y is intact; the LU works on the kept copy */
        la_copy(L, n * n, copy, A);
        int info = la_solve_right_lu(L, m, n, A, Y, rcond);
        rc = info == 0 ? 0 : solve_pinv_general(L, m, n, copy, Y, eps, err);
    }
    free(copy);
    return rc;
}
