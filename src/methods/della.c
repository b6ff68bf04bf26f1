/* della.c — DELLA (Deep et al. 2024) as mergekit has it: sparsify.py's della_magprune, then
 * the task-vector mix with (della) or without (della_linear) TIES' sign election
 * (merge_methods/registry.py: della normalize and rescale on, della_linear normalize off
 * and rescale on; generalized_task_arithmetic.py: per-model weight, density, epsilon 0.15,
 * lambda 1).
 *
 * MagPrune: in each row of Dt (a 1-D tensor is one row) the entries are ranked by
 * magnitude, r = 0 the smallest to r = n - 1 the largest, and entry r is kept with
 * probability p_r = density - epsilon + 2 epsilon r / (n - 1). As in dare.c the draw is
 * acem's: entry i is dropped iff u_i < 1 - p_r, u_i a pure function of (seed, tensor name,
 * t, i) (rng.c); mergekit's torch.bernoulli cannot be reproduced. */
#include "method.h"

#include <math.h>
#include <stdlib.h>

enum { P_DENSITY, P_EPSILON, P_WEIGHT, P_NORMALIZE, P_RESCALE, P_INT8_MASK, N_DELLA };

#define DELLA_PARAMS(normalize_def, normalize_help)                                                \
    {"density", 1.0, 0.0, 1.0, NULL, "each expert's mean keep probability", PARAM_PER_MODEL, 0},   \
        {"epsilon",                                                                                \
         0.15,                                                                                     \
         0.0,                                                                                      \
         1.0,                                                                                      \
         NULL,                                                                                     \
         "half the spread of the keep probabilities over the magnitude ranks",                     \
         PARAM_PER_MODEL,                                                                          \
         0},                                                                                       \
        {"weight", 1.0, -1e9, 1e9, NULL, "each expert's weight", PARAM_PER_MODEL, 0},              \
        {"normalize", normalize_def, 0, 1, NULL, normalize_help, PARAM_BOOL, 0},                   \
        {"rescale", 1, 0, 1, NULL, "scale each pruned delta back to its L1 norm", PARAM_BOOL, 0},  \
    {                                                                                              \
        "int8_mask", 0, 0, 1, NULL, "mergekit's storage of masks: no numeric effect", PARAM_BOOL,  \
            0                                                                                      \
    }
static const method_param della_params[] = {
    DELLA_PARAMS(1, "divide by the sum of the agreeing weights")};
static const method_param della_linear_params[] = {
    DELLA_PARAMS(0, "divide by the sum of the weights")};

/* order[0..n) = the row's entries from `from` in ascending magnitude, equal magnitudes in
 * index order (torch's argsort leaves them unspecified): an LSD radix sort of the
 * magnitude keys, 8 bits a pass (a pass whose digit is the same for all is skipped), stable,
 * so that ties keep the index order. tmp: n more entries of scratch. Returns the array that
 * holds the order (order or tmp). */
static uint64_t *rank_row(const method_ctx *c, const void *d, uint64_t from, uint64_t n,
                          uint64_t *order, uint64_t *tmp) {
    const int bits = c->f64 ? 64 : 32;
    for (uint64_t j = 0; j < n; j++)
        order[j] = from + j;
    for (int shift = 0; shift < bits; shift += 8) {
        uint64_t count[257] = {0};
        for (uint64_t j = 0; j < n; j++)
            count[((magnitude_key(d, order[j], c->f64) >> shift) & 255) + 1]++;
        bool one_digit = false;
        for (int b = 1; b <= 256 && !one_digit; b++)
            one_digit = count[b] == n;
        if (one_digit) continue;
        for (int b = 1; b <= 256; b++)
            count[b] += count[b - 1];
        for (uint64_t j = 0; j < n; j++)
            tmp[count[(magnitude_key(d, order[j], c->f64) >> shift) & 255]++] = order[j];
        uint64_t *swap = order;
        order = tmp;
        tmp = swap;
    }
    return order;
}

/* One row of n entries starting at `from`, ranked with buf (2n entries), each dropped with
 * probability 1 - p_r. A row of one entry has r / (n - 1) taken as 0 (mergekit's 0 / 0 is
 * NaN). */
static void prune_row(const method_ctx *c, void *d, uint64_t from, uint64_t n, double density,
                      double epsilon, uint64_t key, uint64_t *buf) {
    const uint64_t *order = rank_row(c, d, from, n, buf, buf + n);
    for (uint64_t r = 0; r < n; r++) {
        double p = density - epsilon + (n > 1 ? (double)r / (double)(n - 1) : 0.0) * 2 * epsilon;
        if (acem_rng_uniform(key, c->offset + order[r]) < 1.0 - p) wr(d, order[r], 0.0, c->f64);
    }
}

/* sparsify.py's della_magprune on expert t's delta: density >= 1 keeps it, density <= 0
 * zeroes it, and density +/- epsilon must lie in (0, 1), as mergekit requires. */
static int magprune(const method_ctx *c, int t, void *d, acem_error *err) {
    const double density = expert_param(c, t, P_DENSITY), epsilon = expert_param(c, t, P_EPSILON);
    if (density >= 1) return 0;
    const uint64_t rows = c->ndim >= 2 ? c->rows : 1, n = c->numel / rows;
    if (density <= 0) {
        for (uint64_t i = 0; i < c->numel; i++)
            wr(d, i, 0.0, c->f64);
        return 0;
    }
    if (!(density - epsilon > 0 && density + epsilon < 1))
        return acem_fail(err,
                         "della needs density +/- epsilon within (0, 1) (expert %d: density %g, "
                         "epsilon %g)",
                         t + 1, density, epsilon);
    const uint64_t key = acem_rng_key(c->seed, c->name_hash, (uint64_t)t);
    int failed = 0;
#pragma omp parallel num_threads(c->threads) reduction(| : failed)
    {
        uint64_t *buf = malloc(2 * (size_t)n * sizeof *buf);
        failed = !buf;
#pragma omp for schedule(dynamic, 16)
        for (uint64_t row = 0; row < rows; row++)
            if (buf) prune_row(c, d, row * n, n, density, epsilon, key, buf);
        free(buf);
    }
    if (failed) return acem_fail(err, "out of memory for della's ranks of \"%s\"", c->tensor);
    return 0;
}

static int merge_della_mix(const method_ctx *c, void *const *d, void *out, bool consensus,
                           acem_error *err) {
    double *w = expert_weights(c, P_WEIGHT, err);
    if (!w) return -1;
    int rc = 0;
    for (int t = 0; t < c->T && !rc && c->numel; t++) {
        const double before = c->p[P_RESCALE] ? delta_l1(c, d[t]) : 0;
        rc = magprune(c, t, d[t], err);
        if (!rc && c->p[P_RESCALE] && expert_param(c, t, P_DENSITY) < 1)
            delta_l1_rescale(c, d[t], before);
    }
    if (!rc) gta_mix(c, d, w, consensus, c->p[P_NORMALIZE] != 0, out);
    free(w);
    return rc;
}

static int merge_della(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_della_mix(c, d, out, true, err);
}

static int merge_della_linear(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_della_mix(c, d, out, false, err);
}

const method_def method_della = {
    .name = "della",
    .min_models = 1,
    .describe = "keep each delta entry with a probability rising with its magnitude rank in "
                "its row (density +/- epsilon), L1 rescale, TIES sign election and disjoint "
                "mean (Deep et al. 2024, mergekit's della); density 1, epsilon 0.15, lambda 1",
    .default_lambda = 1.0,
    .random = true,
    .params = della_params,
    .n_params = N_DELLA,
    .merge = merge_della,
};

const method_def method_della_linear = {
    .name = "della_linear",
    .min_models = 1,
    .describe = "della's magnitude-ranked pruning and L1 rescale, then sum_t weight_t * Dt "
                "(mergekit's della_linear); density 1, epsilon 0.15, lambda 1",
    .default_lambda = 1.0,
    .random = true,
    .params = della_linear_params,
    .n_params = N_DELLA,
    .merge = merge_della_linear,
};
