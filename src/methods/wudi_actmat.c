/* wudi_actmat.c — two members of the covariance family whose covariance estimate is the
 * delta's own Gram matrix (methods.md; cov.h for the shared form
 * M = (sum_t D_t S_t)(sum_t S_t + R)^{-1}).
 *
 * wudi (Cheng et al. 2025): S_t = D_t^T D_t / ||D_t||_F^2, R = delta I with
 *   delta = ridge * trace(sum_t S_t) / n; the minimiser of
 *   sum_t ||(M - D_t) D_t^T||_F^2 / ||D_t||_F^2. solver=adam runs the authors' iterative
 *   solver instead: Adam on that loss, lr 1e-5, 300 steps, from M = sum_t D_t.
 * actmat (Abdel Hameed et al. 2026): S_t = D_t^T D_t, M = (sum_t D_t S_t)(sum_t S_t)^+ with
 *   eigenvalues at or below n * eps * max treated as zero. */
#include "cov.h"

#include <math.h>
#include <stdlib.h>

/* S_t = scale * D_t^T D_t; with normalise, scale = 1/||D_t||^2 and zero deltas are skipped. */
static int gram_estimate(const method_ctx *c, void *const *D, int t, void *S, cov_task *task,
                         void *user, acem_error *err) {
    (void)err;
    const la L = {c->f64, c->threads};
    bool normalise = *(const bool *)user;
    double sq = normalise ? la_sumsq(&L, c->numel, D[t]) : 1.0;
    task->X = D[t];
    task->skip = normalise && sq == 0.0;
    task->gram_scale = task->skip ? 0.0 : 1.0 / sq;
    if (!task->skip) la_gram(&L, c->rows, c->cols, task->gram_scale, D[t], 0.0, S);
    return 0;
}

enum { P_RIDGE, P_SOLVER };
static const char *const solver_choices[] = {"closed", "adam", NULL};
static const method_param wudi_params[] = {
    {"ridge", 1e-4, 0.0, 1.0, NULL, "ridge delta = ridge * trace(sum_t S_t) / n"},
    {"solver", 0, 0, 0, solver_choices, "closed: the closed form; adam: the authors' solver"},
};

/* Adam (Kingma & Ba 2015) on the WUDI loss; gradient 2 (M P - Y), P = sum S_t, Y = sum D_t S_t. */
static int wudi_adam(const la *L, const method_ctx *c, void *const *D, const void *P, const void *Y,
                     void *M, acem_error *err) {
    const size_t m = c->rows, n = c->cols, mn = m * n;
    const double lr = 1e-5, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double *m1 = acem_alloc(mn, sizeof(double), "adam state", err);
    double *m2 = acem_alloc(mn, sizeof(double), "adam state", err);
    void *G = cov_alloc(L, mn, "a gradient", err);
    int rc = -1;
    if (!m1 || !m2 || !G) goto out;
    la_zero(L, mn, M);
    for (int t = 0; t < c->T; t++)
        la_axpy(L, mn, 1.0, D[t], M);
    for (int step = 1; step <= 300; step++) {
        la_copy(L, mn, Y, G);
        la_gemm(L, false, false, m, n, n, 2.0, M, n, P, n, -2.0, G, n); /* G = 2(M P - Y) */
        double c1 = 1.0 - pow(b1, step), c2 = 1.0 - pow(b2, step);
        for (size_t i = 0; i < mn; i++) {
            double g = la_get(L, G, i);
            m1[i] = b1 * m1[i] + (1 - b1) * g;
            m2[i] = b2 * m2[i] + (1 - b2) * g * g;
            la_set(L, M, i, la_get(L, M, i) - lr * (m1[i] / c1) / (sqrt(m2[i] / c2) + eps));
        }
    }
    rc = 0;
out:
    free(m1);
    free(m2);
    free(G);
    return rc;
}

static int merge_gram_family(const method_ctx *c, void *const *D, void *out, bool wudi,
                             acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols;
    void *S = cov_alloc(&L, n * n, "a covariance", err), *P = cov_alloc(&L, n * n, "a system", err);
    void *Y = cov_alloc(&L, m * n, "a right-hand side", err);
    void *K = 2 * m < n ? cov_alloc(&L, m * m, "a workspace", err) : NULL;
    int rc = -1;
    if (!S || !P || !Y || (2 * m < n && !K)) goto out;
    bool normalise = wudi;
    if (cov_accumulate(&L, c, D, gram_estimate, &normalise, Y, P, S, K, err)) goto out;
    if (wudi && c->p[P_SOLVER] == 1) {
        rc = wudi_adam(&L, c, D, P, Y, out, err);
        goto out;
    }
    if (wudi) {
        double trace = 0;
        for (size_t i = 0; i < n; i++)
            trace += la_get(&L, P, i * n + i);
        double delta = c->p[P_RIDGE] * trace / (double)n;
        info_add(c->info, "ridge_delta", delta);
        la_add_diag(&L, n, delta, P);
    }
    if (cov_solve(&L, wudi ? COV_CHOLESKY : COV_PINV, m, n, P, Y, NULL, err)) goto out;
    la_copy(&L, m * n, Y, out);
    rc = 0;
out:
    free(S);
    free(P);
    free(Y);
    free(K);
    return rc;
}

static int merge_wudi(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    return merge_gram_family(c, D, out, true, err);
}

static int merge_actmat(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    return merge_gram_family(c, D, out, false, err);
}

const method_def method_wudi = {
    .name = "wudi",
    .describe = "WUDI (Cheng et al. 2025): argmin sum_t ||(M - Dt) Dt^T||^2 / ||Dt||^2 in closed "
                "form with a tiny ridge (solver=adam: the authors' Adam solver); lambda 1",
    .default_lambda = 1.0,
    .params = wudi_params,
    .n_params = 2,
    .matrix = true,
    .covariance = true,
    .merge = merge_wudi,
};

const method_def method_actmat = {
    .name = "actmat",
    .describe = "ActMat (Abdel Hameed et al. 2026): (sum Dt Dt^T Dt)(sum Dt^T Dt)^+; lambda 1",
    .default_lambda = 1.0,
    .matrix = true,
    .covariance = true,
    .merge = merge_actmat,
};
