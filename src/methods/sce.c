/* sce.c — SCE (Wan et al. 2024, FuseChat) as mergekit's merge_methods/sce.py computes it:
 *  1. Select: with select_topk < 1, keep the deltas only at the
 *     k = floor(select_topk * #{i : var_i != 0}) positions of largest variance across the
 *     models (var_i = (1/T) sum_t (d_ti - mean_t d_ti)^2; ties in index order);
 *  2. Calculate: w_t = ||Dt||^2 / numel of the selected deltas, divided by their sum
 *     (1/T each when the sum is 0);
 *  3. Erase: the sign of sum_t d_ti (unweighted) is elected, a zero sum electing +, and
 *     Delta_i = sum of the agreeing w_t d_ti / sum of their w_t (a zero sum divides by 1). */
#include "method.h"

#include <stdlib.h>

enum { P_SELECT_TOPK, P_INT8_MASK };
static const method_param sce_params[] = {
    {"select_topk", 1.0, 0.0, 1.0, NULL, "fraction of the positions of largest variance kept", 0,
     0},
    {"int8_mask", 0, 0, 1, NULL, "mergekit's storage of masks: no numeric effect", PARAM_BOOL, 0},
};

/* var[i] = the population variance of the T deltas at i; returns how many are non-zero. */
static uint64_t variances(const method_ctx *c, void *const *d, void *var) {
    uint64_t nonzero = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : nonzero)
    for (uint64_t i = 0; i < c->numel; i++) {
        double mean = 0, sq = 0;
        for (int t = 0; t < c->T; t++)
            mean += rd(d[t], i, c->f64);
        mean /= c->T;
        for (int t = 0; t < c->T; t++) {
            double x = rd(d[t], i, c->f64) - mean;
            sq += x * x;
        }
        wr(var, i, sq / c->T, c->f64);
        nonzero += rd(var, i, c->f64) != 0;
    }
    return nonzero;
}

/* Step 1: the deltas zeroed outside the k positions of largest variance. */
static int select_topk(const method_ctx *c, void *const *d, acem_error *err) {
    void *var = acem_alloc((size_t)c->numel, c->f64 ? 8 : 4, "sce's variances", err);
    if (!var) return -1;
    const uint64_t k = (uint64_t)(c->p[P_SELECT_TOPK] * (double)variances(c, d, var));
    if (k && keep_top_k(c, var, k, err)) {
        free(var);
        return -1;
    }
    for (int t = 0; t < c->T; t++)
#pragma omp parallel for num_threads(c->threads) schedule(static)
        for (uint64_t i = 0; i < c->numel; i++)
            if (!k || rd(var, i, c->f64) == 0) wr(d[t], i, 0.0, c->f64);
    free(var);
    return 0;
}

/* Step 2: the mean squares, normalised. */
static void sce_weights(const method_ctx *c, void *const *d, double *w) {
    double sum = 0;
    for (int t = 0; t < c->T; t++) {
        double sq = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : sq)
        for (uint64_t i = 0; i < c->numel; i++)
            sq += rd(d[t], i, c->f64) * rd(d[t], i, c->f64);
        sum += w[t] = sq / (double)c->numel;
    }
    for (int t = 0; t < c->T; t++)
        w[t] = sum == 0 ? 1.0 / c->T : w[t] / sum;
}

static int merge_sce(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    if (!c->numel) return 0;
    if (c->p[P_SELECT_TOPK] < 1 && select_topk(c, d, err)) return -1;
    double *w = acem_alloc((size_t)c->T, sizeof *w, "weights", err);
    if (!w) return -1;
    sce_weights(c, d, w);
    ties_disjoint_merge(c, d, (ties_rule){w, true, true, true}, out);
    free(w);
    return 0;
}

const method_def method_sce = {
    .name = "sce",
    .min_models = 1,
    .describe = "select the positions of largest variance across the deltas (select_topk), "
                "weight each delta by its mean square, elect the sign of their sum, weighted "
                "disjoint mean (FuseChat's SCE, mergekit's sce); select_topk 1, lambda 1",
    .default_lambda = 1.0,
    .no_lambda = true,
    .params = sce_params,
    .n_params = 2,
    .merge = merge_sce,
};
