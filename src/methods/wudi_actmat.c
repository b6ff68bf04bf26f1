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

/* The deltas arrive in the compute precision; wudi works in double (see merge_wudi). */
typedef struct gram_user {
    bool normalise; /* wudi: S_t = D_t^T D_t / ||D_t||^2, zero deltas skipped */
    bool src_f64;   /* precision of the incoming deltas */
    void *scratch;  /* m x n in the working precision when it differs, else NULL */
} gram_user;

/* Element i of a buffer in precision f64 (true: double). */
static inline double get_as(bool f64, const void *x, size_t i) {
    return f64 ? ((const double *)x)[i] : (double)((const float *)x)[i];
}

/* dst (working precision W) = src (precision src_f64), n elements. */
static void convert(const la *W, size_t n, const void *src, bool src_f64, void *dst) {
    for (size_t i = 0; i < n; i++)
        la_set(W, dst, i, get_as(src_f64, src, i));
}

/* S_t = scale * X^T X with X = D_t (converted to the working precision when needed). */
static int gram_estimate(const method_ctx *c, void *const *D, int t, void *S, cov_task *task,
                         void *user, acem_error *err) {
    (void)err;
    const la W = {c->f64, c->threads};
    gram_user *u = user;
    const void *X = D[t];
    if (u->scratch) {
        convert(&W, c->numel, D[t], u->src_f64, u->scratch);
        X = u->scratch;
    }
    double sq = u->normalise ? la_sumsq(&W, c->numel, X) : 1.0;
    task->X = X;
    task->skip = u->normalise && sq == 0.0;
    task->gram_scale = task->skip ? 0.0 : 1.0 / sq;
    if (!task->skip) la_gram(&W, c->rows, c->cols, task->gram_scale, X, 0.0, S);
    return 0;
}

enum { P_RIDGE, P_SOLVER };
static const char *const solver_choices[] = {"closed", "adam", NULL};
static const method_param wudi_params[] = {
    {"ridge", 1e-4, 0.0, 1.0, NULL, "ridge delta = ridge * trace(sum_t S_t) / n", 0, 0},
    {"solver", 0, 0, 0, solver_choices, "closed: the closed form; adam: the authors' solver", 0, 0},
};

/* Adam (Kingma & Ba 2015) on the WUDI loss; gradient 2 (M P - Y), P = sum S_t, Y = sum D_t S_t. */
static int wudi_adam(const la *L, const method_ctx *c, void *const *D, bool src_f64, const void *P,
                     const void *Y, void *M, acem_error *err) {
    const size_t m = c->rows, n = c->cols, mn = m * n;
    const double lr = 1e-5, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double *m1 = acem_alloc(mn, sizeof(double), "adam state", err);
    double *m2 = acem_alloc(mn, sizeof(double), "adam state", err);
    void *G = cov_alloc(L, mn, "a gradient", err);
    int rc = -1;
    if (!m1 || !m2 || !G) goto out;
    for (size_t i = 0; i < mn; i++) { /* start at sum_t D_t */
        double v = 0;
        for (int t = 0; t < c->T; t++)
            v += get_as(src_f64, D[t], i);
        la_set(L, M, i, v);
    }
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

/* work_f64: the precision of the accumulation and the solve (wudi: always double). */
static int merge_gram_family(const method_ctx *c, void *const *D, void *out, bool wudi,
                             bool work_f64, acem_error *err) {
    method_ctx wc = *c;
    wc.f64 = work_f64;
    const la L = {work_f64, c->threads}, Lout = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols;
    void *S = cov_alloc(&L, n * n, "a covariance", err), *P = cov_alloc(&L, n * n, "a system", err);
    void *Y = cov_alloc(&L, m * n, "a right-hand side", err);
    void *K = 2 * m < n ? cov_alloc(&L, m * m, "a workspace", err) : NULL;
    gram_user u = {wudi, c->f64,
                   work_f64 != c->f64 ? cov_alloc(&L, m * n, "a workspace", err) : NULL};
    int rc = -1;
    if (!S || !P || !Y || (2 * m < n && !K) || (work_f64 != c->f64 && !u.scratch)) goto out;
    if (cov_accumulate(&L, &wc, D, gram_estimate, &u, Y, P, S, K, err)) goto out;
    if (wudi && c->p[P_SOLVER] == 1) {
        /* the iterate lives in Y's precision; S is free for it */
        free(S);
        if (!(S = cov_alloc(&L, m * n, "the iterate", err)) ||
            wudi_adam(&L, &wc, D, c->f64, P, Y, S, err))
            goto out;
        la_copy(&L, m * n, S, Y);
    } else {
        if (wudi) {
            double trace = 0;
            for (size_t i = 0; i < n; i++)
                trace += la_get(&L, P, i * n + i);
            double delta = c->p[P_RIDGE] * trace / (double)n;
            info_add(c->info, "ridge_delta", delta);
            la_add_diag(&L, n, delta, P);
        }
        if (cov_solve(&L, wudi ? COV_CHOLESKY : COV_PINV, m, n, P, Y, machine_eps(c), NULL, err))
            goto out;
    }
    for (size_t i = 0; i < m * n; i++)
        la_set(&Lout, out, i, la_get(&L, Y, i));
    rc = 0;
out:
    free(S);
    free(P);
    free(Y);
    free(K);
    free(u.scratch);
    return rc;
}

/* WUDI's system sum_t S_t + delta I is as ill-conditioned as the tiny ridge makes it
 * (condition numbers of 1e4..1e5 wherever T m < n), and ActMat's sum_t D_t^T D_t squares
 * the deltas' condition numbers; float32 accumulation errors in either side are amplified
 * by that much. So both accumulate and solve in double at any --precision; only the
 * deltas and the result are in the compute precision, and ActMat's pseudo-inverse cut-off
 * keeps the compute precision's epsilon. */
static int merge_wudi(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    return merge_gram_family(c, D, out, true, true, err);
}

static int merge_actmat(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    return merge_gram_family(c, D, out, false, true, err);
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
