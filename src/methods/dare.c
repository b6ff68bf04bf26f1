/* dare.c — DARE (Yu et al. 2024): drop each entry of Dt with probability p and rescale
 * the survivors, then add (dare_linear) or TIES-elect (dare_ties).
 *
 * The keep/drop draw for element i of expert t is a pure function of (seed, tensor name,
 * t, i) (rng.c), so the mask is the same for any thread count or chunk size. */
#include "method.h"

#include <math.h>

enum { P_DROP, P_RESCALE };
static const char *const rescale_choices[] = {"inverse", "l1", NULL};
static const method_param dare_params[] = {
    {"p", 0.9, 0.0, 0.999999, NULL, "drop probability of each delta entry", 0, 0},
    {"rescale", 0, 0, 0, rescale_choices,
     "inverse: survivors x 1/(1-p); l1: match each delta's L1 norm (as mergekit)", 0, 0},
};

/* Chunks are independent unless the L1 rescale needs whole-tensor norms. */
static bool dare_elementwise(const double *p) { return p[P_RESCALE] == 0; }

static void drop_and_rescale(const method_ctx *c, void *const *d) {
    const bool f64 = c->f64;
    const double p = c->p[P_DROP];
    for (int t = 0; t < c->T; t++) {
        const uint64_t key = acem_rng_key(c->seed, c->name_hash, (uint64_t)t);
        double l1_all = 0, l1_kept = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : l1_all, l1_kept)
        for (uint64_t i = 0; i < c->numel; i++) {
            double v = rd(d[t], i, f64);
            bool keep = acem_rng_uniform(key, c->offset + i) >= p;
            l1_all += fabs(v);
            l1_kept += keep ? fabs(v) : 0.0;
            wr(d[t], i, keep ? v : 0.0, f64);
        }
        double scale = c->p[P_RESCALE] == 0 ? 1.0 / (1.0 - p)
                       : l1_kept > 0        ? l1_all / l1_kept
                                            : 0.0;
#pragma omp parallel for num_threads(c->threads) schedule(static)
        for (uint64_t i = 0; i < c->numel; i++)
            wr(d[t], i, rd(d[t], i, f64) * scale, f64);
    }
}

static int merge_dare_linear(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    drop_and_rescale(c, d);
    deltas_weighted_sum(c, d, NULL, out, 1.0);
    return 0;
}

static int merge_dare_ties(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    drop_and_rescale(c, d);
    ties_disjoint_merge(c, d, (ties_rule){NULL, true, false}, out);
    return 0;
}

const method_def method_dare_linear = {
    .name = "dare_linear",
    .describe = "drop with probability p, rescale, sum (Yu et al. 2024); p 0.9, lambda 0.3",
    .default_lambda = 0.3,
    .params = dare_params,
    .n_params = 2,
    .elementwise = dare_elementwise,
    .merge = merge_dare_linear,
};

const method_def method_dare_ties = {
    .name = "dare_ties",
    .describe = "drop with probability p, rescale, TIES sign election and disjoint mean; "
                "p 0.9, lambda 1",
    .default_lambda = 1.0,
    .params = dare_params,
    .n_params = 2,
    .elementwise = dare_elementwise,
    .merge = merge_dare_ties,
};
