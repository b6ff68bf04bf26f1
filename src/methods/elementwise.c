/* elementwise.c — average and task arithmetic: Delta = scale * sum_t Dt. */
#include "method.h"

static bool always(const double *p) {
    (void)p;
    return true;
}

void deltas_scaled_sum(const method_ctx *c, void *const *d, void *out, double scale) {
    const bool f64 = c->f64;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (uint64_t i = 0; i < c->numel; i++) {
        double acc = 0;
        for (int t = 0; t < c->T; t++)
            acc += rd(d[t], i, f64);
        wr(out, i, acc * scale, f64);
    }
}

/* The uniform soup: Delta = (1/T) sum_t Dt. */
static int merge_average(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    deltas_scaled_sum(c, d, out, 1.0 / c->T);
    return 0;
}

/* Ilharco et al. 2023: Delta = sum_t Dt, applied with lambda (default 0.3). */
static int merge_task_arithmetic(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    deltas_scaled_sum(c, d, out, 1.0);
    return 0;
}

static double mean_scale(int T) { return 1.0 / T; }
static double sum_scale(int T) {
    (void)T;
    return 1.0;
}

const method_def method_average = {
    .name = "average",
    .describe = "mean of the deltas (uniform soup); lambda 1",
    .default_lambda = 1.0,
    .elementwise = always,
    .merge = merge_average,
    .linear_scale = mean_scale,
};

const method_def method_task_arithmetic = {
    .name = "task_arithmetic",
    .describe = "sum of the deltas (Ilharco et al. 2023); lambda 0.3",
    .default_lambda = 0.3,
    .elementwise = always,
    .merge = merge_task_arithmetic,
    .linear_scale = sum_scale,
};
