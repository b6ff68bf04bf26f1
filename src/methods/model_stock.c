/* model_stock.c — Model Stock (Jang et al. 2024) as mergekit's merge_methods/model_stock.py
 * computes it: for each tensor (or each row, with filter_wise; a 1-D tensor is one row),
 * cos = the mean over pairs i < j of the deltas' cosines (norm product clamped to >= 1e-6,
 * cosine to [-1, 1]), t = N cos / (1 + (N - 1) cos), and the output
 * t * mean_i Wi + (1 - t) W0 = W0 + t * mean_i Di. */
#include "method.h"

#include <math.h>
#include <stdlib.h>

enum { P_FILTER_WISE };
static const method_param model_stock_params[] = {
    {"filter_wise", 0, 0, 1, NULL, "one t per row instead of one per tensor", PARAM_BOOL, 0},
};

/* G (T x T, row-major) = the Gram matrix of the deltas over elements [from, from + n),
 * summed in double. */
static void gram(const method_ctx *c, void *const *d, uint64_t from, uint64_t n, double *G,
                 bool parallel) {
    const int T = c->T;
    for (int k = 0; k < T * T; k++)
        G[k] = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : G[ : T * T]) \
    if (parallel)
    for (uint64_t i = from; i < from + n; i++)
        for (int a = 0; a < T; a++) {
            const double x = rd(d[a], i, c->f64);
            for (int b = a; b < T; b++)
                G[a * T + b] += x * rd(d[b], i, c->f64);
        }
}

/* model_stock.py's t from the Gram matrix; the mean cosine into *cos. */
static double stock_t(const double *G, int T, double *cos) {
    double sum = 0;
    int pairs = 0;
    for (int a = 0; a < T; a++)
        for (int b = a + 1; b < T; b++, pairs++) {
            double norms = sqrt(G[a * T + a]) * sqrt(G[b * T + b]);
            double x = G[a * T + b] / (norms > 1e-6 ? norms : 1e-6);
            sum += x < -1 ? -1 : x > 1 ? 1 : x;
        }
    *cos = sum / pairs;
    return T * *cos / (1 + (T - 1) * *cos);
}

/* out over [from, from + n) = t * mean_i Di. */
static void stock_mix(const method_ctx *c, void *const *d, uint64_t from, uint64_t n, double t,
                      void *out) {
    for (uint64_t i = from; i < from + n; i++) {
        double acc = 0;
        for (int a = 0; a < c->T; a++)
            acc += rd(d[a], i, c->f64);
        wr(out, i, t * (acc / c->T), c->f64);
    }
}

static int merge_model_stock(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    const bool rows = c->p[P_FILTER_WISE] && c->ndim >= 2;
    const uint64_t groups = rows ? c->rows : 1, n = c->numel / groups;
    const int T = c->T;
    if (!rows) {
        double cos, t;
        double *G = acem_alloc((size_t)T * (size_t)T, sizeof *G, "model_stock's Gram", err);
        if (!G) return -1;
        gram(c, d, 0, n, G, true);
        t = stock_t(G, T, &cos);
        free(G);
        info_add(c->info, "cos", cos);
        info_add(c->info, "t", t);
#pragma omp parallel for num_threads(c->threads) schedule(static)
        for (uint64_t b = 0; b < (n + 4095) / 4096; b++)
            stock_mix(c, d, b * 4096, n - b * 4096 < 4096 ? n - b * 4096 : 4096, t, out);
    } else {
        int failed = 0;
#pragma omp parallel num_threads(c->threads) reduction(| : failed)
        {
            double *G = malloc((size_t)T * (size_t)T * sizeof *G);
            failed = !G;
#pragma omp for schedule(static)
            for (uint64_t g = 0; g < groups; g++) {
                double row_cos;
                if (!G) continue;
                gram(c, d, g * n, n, G, false);
                stock_mix(c, d, g * n, n, stock_t(G, T, &row_cos), out);
            }
            free(G);
        }
        if (failed) return acem_fail(err, "out of memory for model_stock's Gram matrices");
    }
    return 0;
}

const method_def method_model_stock = {
    .name = "model_stock",
    .min_models = 2,
    .describe = "W0 + t * mean_i Di, t = N cos / (1 + (N - 1) cos) from the deltas' mean "
                "pairwise cosine, per tensor or per row with filter_wise (Jang et al. 2024, "
                "mergekit's model_stock); needs a base and 2 or more models",
    .default_lambda = 1.0,
    .no_lambda = true,
    .params = model_stock_params,
    .n_params = 1,
    .merge = merge_model_stock,
};
