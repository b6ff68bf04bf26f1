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
    bool mirror_sum = false;
    for (int t = 0; t < c->T; t++) {
        cov_task task = {0};
        if (estimate(c, D, t, S, &task, user, err)) return -1;
        if (task.skip) continue;
        mirror_sum |= task.upper_only;
        if (task.gram_scale > 0 && K && 2 * m < n) {
            /* X (X^T X) = (X X^T) X: 3 m^2 n flops (syrk, gemm) instead of 2 m n^2
             * (ace-merging.md, Cost) */
            la_gram_rows(L, m, n, 1.0, task.X, 0.0, K);
            la_gemm(L, false, false, m, n, m, task.gram_scale, K, m, task.X, n, 1.0, Y, n);
        } else {
            if (task.upper_only) la_mirror_upper(L, n, S);
            la_gemm(L, false, false, m, n, n, 1.0, task.X, n, S, n, 1.0, Y, n);
        }
        la_axpy(L, n * n, 1.0, S, P);
    }
    if (mirror_sum) la_mirror_upper(L, n, P);
    return 0;
}

/* Y <- ((Y op(R)) diag(1/v)) Q^T, the columns with v[j] <= cut dropped: Y A^+ once A has
 * been factored so that A^+ = op(R) diag(1/v) Q^T (op(R) = R^T when r_trans). */
static int apply_pinv(const la *L, size_t m, size_t n, void *Y, const void *R, bool r_trans,
                      const void *v, double cut, const void *Q, acem_error *err) {
    void *YR = cov_alloc(L, m * n, "a projection", err);
    if (!YR) return -1;
    la_gemm(L, false, r_trans, m, n, n, 1.0, Y, n, R, n, 0.0, YR, n);
    for (size_t j = 0; j < n; j++) {
        double vj = la_get(L, v, j), inv = vj > cut ? 1.0 / vj : 0.0;
        for (size_t i = 0; i < m; i++)
            la_set(L, YR, i * n + j, la_get(L, YR, i * n + j) * inv);
    }
    la_gemm(L, false, true, m, n, n, 1.0, YR, n, Q, n, 0.0, Y, n);
    free(YR);
    return 0;
}

/* Y <- Y A^+ with A = Z diag(w) Z^T symmetric (eigenvalues ascending, Z's columns). */
static int solve_pinv_sym(const la *L, size_t m, size_t n, void *A, void *Y, double eps,
                          acem_error *err) {
    void *w = cov_alloc(L, n, "eigenvalues", err), *Z = cov_alloc(L, n * n, "eigenvectors", err);
    int rc = -1;
    if (!w || !Z) goto out;
    int info = la_eig_sym(L, n, A, w, Z);
    if (info) {
        rc = acem_fail(err, "symmetric eigendecomposition: %s", la_strerror(info));
        goto out;
    }
    double cut = (double)n * eps * (n ? la_get(L, w, n - 1) : 0);
    rc = apply_pinv(L, m, n, Y, Z, false, w, cut, Z, err);
out:
    free(w);
    free(Z);
    return rc;
}

/* Y <- Y A^+ for a general A = U diag(s) V^T through its SVD: A^+ = V diag(1/s) U^T.
 * The reference's fallback when inversion fails. */
static int solve_pinv_general(const la *L, size_t m, size_t n, void *A, void *Y, double eps,
                              acem_error *err) {
    void *U = cov_alloc(L, n * n, "an SVD", err), *s = cov_alloc(L, n, "an SVD", err);
    void *VT = cov_alloc(L, n * n, "an SVD", err);
    int rc = -1;
    if (!U || !s || !VT) goto out;
    int info = la_svd(L, n, n, A, U, s, VT);
    if (info) {
        rc = acem_fail(err, "SVD: %s", la_strerror(info));
        goto out;
    }
    double cut = (double)n * eps * (n ? la_get(L, s, 0) : 0);
    rc = apply_pinv(L, m, n, Y, VT, true, s, cut, U, err);
out:
    free(U);
    free(s);
    free(VT);
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
