/* regmean.c — RegMean (Jin et al. 2023), the data-dependent member of the covariance family:
 * the user supplies each task's input Gram matrix G_t = X_t^T X_t (n x n, one safetensors
 * file per expert, tensors named like the weights). With G_t' = alpha G_t +
 * (1 - alpha) diag(G_t):  M = (sum_t D_t G_t') (sum_t G_t')^{-1}.
 * Tensors for which some expert has no Gram matrix get the mean of their deltas. */
#include "cov.h"

#include <stdlib.h>

enum { P_ALPHA };
static const method_param regmean_params[] = {
    {"alpha", 0.95, 0.0, 1.0, NULL, "weight of the off-diagonal Gram entries", 0, 0},
};

static int gram_given(const method_ctx *c, void *const *D, int t, void *S, cov_task *task,
                      void *user, acem_error *err) {
    (void)user;
    (void)err;
    const la L = {c->f64, c->threads};
    const size_t n = c->cols;
    la_copy(&L, n * n, c->grams[t], S);
    la_scale(&L, n * n, c->p[P_ALPHA], S);
    /* the diagonal keeps its full weight: alpha G_ii + (1 - alpha) G_ii */
    for (size_t i = 0; i < n; i++)
        la_set(&L, S, i * n + i, la_get(&L, c->grams[t], i * n + i));
    task->X = D[t];
    return 0;
}

static int merge_regmean(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols;
    if (!c->grams) {
        if (c->info) c->info->warning = "no Gram matrix for some expert: mean of the deltas";
        deltas_weighted_sum(c, D, NULL, out, 1.0 / c->T);
        return 0;
    }
    void *S = cov_alloc(&L, n * n, "a Gram matrix", err),
         *P = cov_alloc(&L, n * n, "a system", err);
    void *Y = cov_alloc(&L, m * n, "a right-hand side", err);
    int rc = -1;
    if (S && P && Y && !cov_accumulate(&L, c, D, gram_given, NULL, Y, P, S, NULL, err) &&
        !cov_solve(&L, COV_CHOLESKY, m, n, P, Y, machine_eps(c), NULL, err)) {
        la_copy(&L, m * n, Y, out);
        rc = 0;
    }
    free(S);
    free(P);
    free(Y);
    return rc;
}

const method_def method_regmean = {
    .name = "regmean",
    .describe = "RegMean (Jin et al. 2023) with user-supplied Gram matrices (--gram "
                "MODEL=GRAMS.safetensors); alpha 0.95, lambda 1",
    .default_lambda = 1.0,
    .params = regmean_params,
    .n_params = 1,
    .matrix = true,
    .covariance = true,
    .uses_grams = true,
    .merge = merge_regmean,
};
