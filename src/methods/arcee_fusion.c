/* arcee_fusion.c — mergekit's arcee_fusion (merge_methods/arcee_fusion.py): the base W0
 * takes the other model W1's value where the change matters most. Per row (the last axis;
 * a 1-D tensor is one row) KL = sum_j p_j log(p_j / q_j), p = softmax(W1 row) + 1e-8,
 * q = softmax(W0 row) + 1e-8; importance_i = |W1_i - W0_i| KL(row of i); with s the
 * importances sorted ascending and s(q) = s[floor(q (n - 1))], the threshold is
 * s(0.5) + 1.5 (s(0.75) - s(0.25)), and the output W0 + (W1 - W0) [importance >= threshold].
 *
 * mergekit takes the three quantiles of a random sample (1,000,000 entries drawn with
 * replacement) when a tensor has more entries; acem takes them over every entry, the
 * values that sample estimates. The pipeline hands the weights (method_def.weights), the
 * base first (base_first). */
#include "method.h"

#include <math.h>
#include <stdlib.h>

#define FUSION_EPS 1e-8

/* log sum_j exp(x_j) over one row, stably. */
static double log_sum_exp(const method_ctx *c, const void *w, uint64_t from, uint64_t n) {
    double max = -INFINITY, sum = 0;
    for (uint64_t j = 0; j < n; j++)
        max = fmax(max, rd(w, from + j, c->f64));
    for (uint64_t j = 0; j < n; j++)
        sum += exp(rd(w, from + j, c->f64) - max);
    return max + log(sum);
}

/* KL of the row's softmaxes, each + eps; a value rounded below 0 (it is >= 0 exactly, by
 * the log-sum inequality) is taken as 0, so that importances stay magnitudes. */
static double row_kl(const method_ctx *c, const void *w0, const void *w1, uint64_t from,
                     uint64_t n) {
    const double l0 = log_sum_exp(c, w0, from, n), l1 = log_sum_exp(c, w1, from, n);
    double kl = 0;
    for (uint64_t j = 0; j < n; j++) {
        double p = exp(rd(w1, from + j, c->f64) - l1) + FUSION_EPS;
        double q = exp(rd(w0, from + j, c->f64) - l0) + FUSION_EPS;
        kl += p * log(p / q);
    }
    return kl > 0 ? kl : 0;
}

/* s(q) as above, from the k-th largest: s[i] is the (n - i)-th largest. */
static double quantile(const method_ctx *c, const void *imp, double q) {
    const uint64_t i = (uint64_t)(q * (double)(c->numel - 1));
    return kth_largest_magnitude(c, imp, c->numel - i);
}

static int merge_arcee_fusion(const method_ctx *c, void *const *w, void *out, acem_error *err) {
    (void)err;
    const uint64_t rows = c->ndim >= 2 ? c->rows : 1, n = c->numel / rows;
    const bool f64 = c->f64;
#pragma omp parallel for num_threads(c->threads) schedule(dynamic, 16)
    for (uint64_t r = 0; r < rows; r++) {
        const double kl = row_kl(c, w[0], w[1], r * n, n);
        for (uint64_t j = r * n; j < (r + 1) * n; j++)
            wr(out, j, fabs(rd(w[1], j, f64) - rd(w[0], j, f64)) * kl, f64);
    }
    const double threshold =
        quantile(c, out, 0.5) + 1.5 * (quantile(c, out, 0.75) - quantile(c, out, 0.25));
    uint64_t taken = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : taken)
    for (uint64_t i = 0; i < c->numel; i++) {
        const double w0 = rd(w[0], i, f64), take = rd(out, i, f64) >= threshold;
        wr(out, i, w0 + (rd(w[1], i, f64) - w0) * take, f64);
        taken += take != 0;
    }
    info_add(c->info, "threshold", threshold);
    info_add(c->info, "taken", (double)taken / (double)c->numel);
    return 0;
}

const method_def method_arcee_fusion = {
    .name = "arcee_fusion",
    .describe = "of 2 models the first (the base), with the other's values where |W1 - W0| "
                "times the KL of the rows' softmaxes is an outlier (above median + 1.5 IQR; "
                "mergekit's arcee_fusion)",
    .default_lambda = 1.0,
    .weights = true,
    .base_first = true,
    .min_models = 2,
    .max_models = 2,
    .merge = merge_arcee_fusion,
};
