/* elementwise.c — average and task arithmetic: Delta = scale * sum_t w_t Dt. */
#include "method.h"

#include <stdlib.h>

bool method_always_elementwise(const double *p) {
    (void)p;
    return true;
}

void deltas_weighted_sum(const method_ctx *c, void *const *d, const double *w, void *out,
                         double scale) {
    const bool f64 = c->f64;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (uint64_t i = 0; i < c->numel; i++) {
        double acc = 0;
        for (int t = 0; t < c->T; t++)
            acc += w ? w[t] * rd(d[t], i, f64) : rd(d[t], i, f64);
        wr(out, i, acc * scale, f64);
    }
}

/* The uniform soup: Delta = (1/T) sum_t Dt. */
static double mean_scale(const method_ctx *c, double *w) {
    for (int t = 0; t < c->T; t++)
        w[t] = 1.0;
    return 1.0 / c->T;
}

/* Task arithmetic (Ilharco et al. 2023) as mergekit's generalized_task_arithmetic.py with
 * neither sparsification nor consensus: Delta = sum_t w_t Dt, divided by sum_t w_t with
 * normalize (by 1 when |sum_t w_t| < 1e-8), applied with lambda. */
enum { P_TA_WEIGHT, P_TA_NORMALIZE, P_TA_INT8_MASK };
static const method_param task_arithmetic_params[] = {
    {"weight", 1.0, -1e9, 1e9, NULL, "each expert's weight w_t", PARAM_PER_MODEL, 0},
    {"normalize", 0, 0, 1, NULL, "divide by the sum of the weights", PARAM_BOOL, 0},
    {"int8_mask", 0, 0, 1, NULL, "mergekit's storage of masks: no numeric effect", PARAM_BOOL, 0},
};

/* task_arithmetic and linear share the layout: weight first, normalize second. */
static double task_arithmetic_scale(const method_ctx *c, double *w) {
    for (int t = 0; t < c->T; t++)
        w[t] = expert_param(c, t, P_TA_WEIGHT);
    return weight_sum_scale(w, c->T, c->p[P_TA_NORMALIZE] != 0);
}

/* mergekit's linear (merge_methods/linear.py): the weighted sum of the models' weights,
 * divided with normalize (the default) by the sum of the weights. The pipeline hands it
 * the weights themselves (method_def.weights). mergekit divides by a zero sum, giving
 * non-finite values; acem divides by 1 when |sum| < 1e-8, as for the task vectors. */
static const method_param linear_params[] = {
    {"weight", 1.0, -1e9, 1e9, NULL, "each model's weight w_i", PARAM_PER_MODEL, 0},
    {"normalize", 1, 0, 1, NULL, "divide by the sum of the weights", PARAM_BOOL, 0},
};

/* The same sum outside the fused kernel (the lab, the unit tests). */
static int weighted_merge(const method_def *m, const method_ctx *c, void *const *d, void *out,
                          acem_error *err) {
    double *w = acem_alloc((size_t)c->T, sizeof *w, "weights", err);
    if (!w) return -1;
    double scale = m->linear_scale(c, w);
    deltas_weighted_sum(c, d, w, out, scale);
    free(w);
    return 0;
}

static int merge_linear_weights(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return weighted_merge(&method_linear, c, d, out, err);
}

static int merge_average(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return weighted_merge(&method_average, c, d, out, err);
}

static int merge_task_arithmetic(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return weighted_merge(&method_task_arithmetic, c, d, out, err);
}

const method_def method_average = {
    .name = "average",
    .min_models = 1,
    .describe = "mean of the deltas (uniform soup); lambda 1",
    .default_lambda = 1.0,
    .elementwise = method_always_elementwise,
    .merge = merge_average,
    .linear_scale = mean_scale,
};

const method_def method_task_arithmetic = {
    .name = "task_arithmetic",
    .min_models = 1,
    .describe = "sum_t weight_t * Dt (Ilharco et al. 2023), / sum of weights with normalize; "
                "lambda 0.3 (1 in a mergekit config)",
    .default_lambda = 0.3,
    .mergekit_lambda = 1.0,
    .params = task_arithmetic_params,
    .n_params = 3,
    .elementwise = method_always_elementwise,
    .merge = merge_task_arithmetic,
    .linear_scale = task_arithmetic_scale,
};

const method_def method_linear = {
    .name = "linear",
    .min_models = 1,
    .describe = "sum_i weight_i * W_i of the models' weights, / sum of weights with normalize "
                "(mergekit's linear); no base needed (the first model names the tensors)",
    .default_lambda = 1.0,
    .params = linear_params,
    .n_params = 2,
    .elementwise = method_always_elementwise,
    .weights = true,
    .merge = merge_linear_weights,
    .linear_scale = task_arithmetic_scale,
};
