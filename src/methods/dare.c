/* dare.c — DARE (Yu et al. 2024): drop entries of each Dt at random and rescale the
 * survivors, then add (dare_linear) or TIES-elect (dare_ties); weighted, and in a mergekit
 * config with mergekit's parameters (merge_methods/registry.py: random sparsification,
 * rescale on, normalize off, lambda 1).
 *
 * The keep/drop draw for element i of expert t is a pure function of (seed, tensor name,
 * t, i) (rng.c), so the mask is the same for any thread count or chunk size. mergekit
 * draws with torch.bernoulli, which no other program reproduces: the same probabilities,
 * acem's draws. */
#include "method.h"

#include <math.h>
#include <stdlib.h>

/* rescale: acem's choices; in a mergekit config the value is mergekit's boolean, false (0)
 * no rescale and true (1) the L1 one (sparsify.py's RescaleNorm.l1). */
enum { P_DROP, P_RESCALE, P_DENSITY, P_WEIGHT, P_NORMALIZE, P_INT8_MASK, N_DARE };
enum { RESCALE_INVERSE, RESCALE_L1, RESCALE_NONE };
static const char *const rescale_choices[] = {"inverse", "l1", NULL};

/* The two tables differ in normalize's default: dare_ties' disjoint mean is acem's, its
 * disjoint sum mergekit's (default_normalize false for both DARE methods). */
#define DARE_PARAMS(normalize_def, normalize_help)                                                  \
    {"p", 0.9, 0.0, 0.999999, NULL, "drop probability of each delta entry (1 - density)", 0, 0},    \
        {"rescale",                                                                                 \
         0,                                                                                         \
         0,                                                                                         \
         1,                                                                                         \
         rescale_choices,                                                                           \
         "inverse: survivors x 1/(1-p); l1: match each delta's L1 norm (as mergekit; in a "         \
         "mergekit config true / false)",                                                           \
         PARAM_MK_DEFAULT,                                                                          \
         RESCALE_L1},                                                                               \
        {"density",                                                                                 \
         NAN,                                                                                       \
         0.0,                                                                                       \
         1.0,                                                                                       \
         NULL,                                                                                      \
         "each expert's kept fraction, mergekit's (unset: 1 - p; 1 in a mergekit config)",          \
         PARAM_PER_MODEL | PARAM_MK_DEFAULT,                                                        \
         1.0},                                                                                      \
        {"weight", 1.0, -1e9, 1e9, NULL, "each expert's weight", PARAM_PER_MODEL, 0},               \
        {"normalize", normalize_def, 0, 1, NULL, normalize_help, PARAM_BOOL | PARAM_MK_DEFAULT, 0}, \
    {                                                                                               \
        "int8_mask", 0, 0, 1, NULL, "mergekit's storage of masks: no numeric effect", PARAM_BOOL,   \
            0                                                                                       \
    }
static const method_param dare_linear_params[] = {
    DARE_PARAMS(0, "divide by the sum of the weights")};
static const method_param dare_ties_params[] = {
    DARE_PARAMS(1, "divide by the sum of the agreeing weights")};

/* Chunks are independent unless the L1 rescale needs whole-tensor norms. */
static bool dare_elementwise(const double *p) { return p[P_RESCALE] != RESCALE_L1; }

static int rescale_of(const method_ctx *c) {
    int r = (int)c->p[P_RESCALE];
    return c->mergekit && r == RESCALE_INVERSE ? RESCALE_NONE : r;
}

/* Expert t's drop probability: 1 - density where a density is set, else p. */
static double drop_of(const method_ctx *c, int t) {
    double density = expert_param(c, t, P_DENSITY);
    return isnan(density) ? c->p[P_DROP] : 1.0 - density;
}

/* Entry i of Dt is dropped iff u_i < drop; density >= 1 keeps Dt whole and unscaled, as
 * sparsify.py's bernoulli. */
static void drop_and_rescale(const method_ctx *c, void *const *d) {
    const bool f64 = c->f64;
    const int rescale = rescale_of(c);
    for (int t = 0; t < c->T; t++) {
        const double drop = drop_of(c, t);
        if (drop <= 0) continue;
        const uint64_t key = acem_rng_key(c->seed, c->name_hash, (uint64_t)t);
        const double before = rescale == RESCALE_L1 ? delta_l1(c, d[t]) : 0;
#pragma omp parallel for num_threads(c->threads) schedule(static)
        for (uint64_t i = 0; i < c->numel; i++)
            if (acem_rng_uniform(key, c->offset + i) < drop) wr(d[t], i, 0.0, f64);
        if (rescale == RESCALE_L1) {
            delta_l1_rescale(c, d[t], before);
        } else if (rescale == RESCALE_INVERSE) {
            const double scale = drop < 1 ? 1.0 / (1.0 - drop) : 0.0;
#pragma omp parallel for num_threads(c->threads) schedule(static)
            for (uint64_t i = 0; i < c->numel; i++)
                wr(d[t], i, rd(d[t], i, f64) * scale, f64);
        }
    }
}

static int merge_dare(const method_ctx *c, void *const *d, void *out, bool consensus,
                      acem_error *err) {
    double *w = expert_weights(c, P_WEIGHT, err);
    if (!w) return -1;
    drop_and_rescale(c, d);
    gta_mix(c, d, w, consensus, c->p[P_NORMALIZE] != 0, out);
    free(w);
    return 0;
}

static int merge_dare_linear(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_dare(c, d, out, false, err);
}

static int merge_dare_ties(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_dare(c, d, out, true, err);
}

const method_def method_dare_linear = {
    .name = "dare_linear",
    .min_models = 1,
    .describe = "drop with probability p (or keep density), rescale, sum_t weight_t * Dt (Yu "
                "et al. 2024); p 0.9, lambda 0.3 (1 in a mergekit config)",
    .default_lambda = 0.3,
    .mergekit_lambda = 1.0,
    .random = true,
    .params = dare_linear_params,
    .n_params = N_DARE,
    .elementwise = dare_elementwise,
    .merge = merge_dare_linear,
};

const method_def method_dare_ties = {
    .name = "dare_ties",
    .min_models = 1,
    .describe = "drop with probability p (or keep density), rescale, TIES sign election and "
                "disjoint mean (sum in a mergekit config); p 0.9, lambda 1",
    .default_lambda = 1.0,
    .random = true,
    .params = dare_ties_params,
    .n_params = N_DARE,
    .elementwise = dare_elementwise,
    .merge = merge_dare_ties,
};
