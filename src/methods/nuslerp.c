/* nuslerp.c — mergekit's nuslerp (merge_methods/nuslerp.py): the spherical interpolation
 * of two models at t = w_2 / (w_1 + w_2) (0.5 when |w_1 + w_2| < 1e-6), of their weights,
 * or with a base of their task vectors, the result added to the base. The vectors are the
 * flattened tensors (nuslerp_flatten, the default), else each row, or with
 * nuslerp_row_wise each column (a 1-D tensor is one vector). Per vector pair a, b: the
 * cosine of a / max(|a|, 1e-7) and b / max(|b|, 1e-7), clamped to [-1, 1], gives theta;
 * (sin((1 - t) theta) a + sin(t theta) b) / sin theta, or the lerp (1 - t) a + t b when
 * |sin theta| < 1e-8.
 *
 * The pipeline hands the weights (method_def.weights); a config's base_model comes first
 * (base_first), so three models are the base and the two, two models the two alone. */
#include "method.h"

#include <math.h>

enum { P_WEIGHT, P_FLATTEN, P_ROW_WISE };
static const method_param nuslerp_params[] = {
    {"weight", 1.0, -1e9, 1e9, NULL,
     "each model's weight (a config must give it, as mergekit): t = w_2 / (w_1 + w_2)",
     PARAM_PER_MODEL | PARAM_CONFIG_REQUIRED, 0},
    {"nuslerp_flatten", 1, 0, 1, NULL, "each tensor one vector (else rows or columns)", PARAM_BOOL,
     0},
    {"nuslerp_row_wise", 0, 0, 1, NULL, "without flatten: columns as the vectors, not rows",
     PARAM_BOOL, 0},
};

/* One vector pair: n entries from `from`, `stride` apart; x - x0 when based. */
typedef struct pair_view {
    void *const *w;
    int a, b, base; /* model indices; base < 0: none */
    uint64_t from, stride, n;
} pair_view;

static double value(const method_ctx *c, const pair_view *v, int m, uint64_t j) {
    const uint64_t i = v->from + j * v->stride;
    return rd(v->w[m], i, c->f64) - (v->base >= 0 ? rd(v->w[v->base], i, c->f64) : 0.0);
}

/* The pair's interpolation into out; parallel for the one vector of a flattened tensor,
 * serial within each of many rows or columns. */
static void nuslerp_pair(const method_ctx *c, const pair_view *v, double t, void *out,
                         bool parallel) {
    double aa = 0, bb = 0, ab = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : aa, bb, ab) \
    if (parallel)
    for (uint64_t j = 0; j < v->n; j++) {
        double x = value(c, v, v->a, j), y = value(c, v, v->b, j);
        aa += x * x;
        bb += y * y;
        ab += x * y;
    }
    double na = sqrt(aa) > 1e-7 ? sqrt(aa) : 1e-7, nb = sqrt(bb) > 1e-7 ? sqrt(bb) : 1e-7;
    double cos = ab / na / nb, theta = acos(cos < -1 ? -1 : cos > 1 ? 1 : cos), s = sin(theta);
    double s0 = 1 - t, s1 = t;
    if (fabs(s) >= 1e-8) {
        s0 = sin((1 - t) * theta) / s;
        s1 = sin(t * theta) / s;
    }
#pragma omp parallel for num_threads(c->threads) schedule(static) if (parallel)
    for (uint64_t j = 0; j < v->n; j++) {
        const uint64_t i = v->from + j * v->stride;
        double w0 = v->base >= 0 ? rd(v->w[v->base], i, c->f64) : 0.0;
        wr(out, i, w0 + s0 * value(c, v, v->a, j) + s1 * value(c, v, v->b, j), c->f64);
    }
}

static int merge_nuslerp(const method_ctx *c, void *const *w, void *out, acem_error *err) {
    (void)err;
    const int base = c->T == method_nuslerp.max_models ? 0 : -1, a = base + 1, b = base + 2;
    const double wa = expert_param(c, a, P_WEIGHT), wb = expert_param(c, b, P_WEIGHT);
    const double t = fabs(wa + wb) < 1e-6 ? 0.5 : wb / (wa + wb);
    const bool whole = c->p[P_FLATTEN] || c->ndim < 2, cols = !whole && c->p[P_ROW_WISE];
    const uint64_t vectors = whole ? 1 : cols ? c->cols : c->rows;
    pair_view v = {w, a, b, base, 0, cols ? c->cols : 1, whole ? c->numel : c->numel / vectors};
    if (whole) {
        nuslerp_pair(c, &v, t, out, true);
    } else {
#pragma omp parallel for num_threads(c->threads) schedule(static) firstprivate(v)
        for (uint64_t k = 0; k < vectors; k++) {
            v.from = cols ? k : k * v.n;
            nuslerp_pair(c, &v, t, out, false);
        }
    }
    info_add(c->info, "t", t);
    return 0;
}

const method_def method_nuslerp = {
    .name = "nuslerp",
    .describe = "spherical interpolation of 2 models at t = w_2 / (w_1 + w_2), flattened or "
                "per row / column; with a base (3 models, the first the base) of their task "
                "vectors (mergekit's nuslerp)",
    .default_lambda = 1.0,
    .params = nuslerp_params,
    .n_params = 3,
    .weights = true,
    .base_first = true,
    .base_optional = true,
    .min_models = 2,
    .max_models = 3,
    .merge = merge_nuslerp,
};
