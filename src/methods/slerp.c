/* slerp.c — mergekit's slerp (mergekit/merge_methods/slerp.py): the spherical interpolation
 * of two models' weights, each tensor one flat vector. Model 0 is the base (t = 0), model 1
 * the other (t = 1); the pipeline hands the weights themselves (method_def.weights). */
#include "method.h"

#include <math.h>

/* slerp.py's DOT_THRESHOLD and eps: above the first |cos| the vectors count as colinear and
 * are lerped; a norm not above the second leaves its vector unnormalised. */
#define SLERP_DOT_THRESHOLD 0.9995
#define SLERP_EPS           1e-8

enum { P_SLERP_T };
static const method_param slerp_params[] = {
    {"t", 0.5, -1e9, 1e9, NULL, "interpolation: 0 the base (model 0), 1 the other", 0, 0},
};

/* slerp.py's normalize: the norm, or 1 when it is not above eps. */
static double norm_or_one(double sq) { return sqrt(sq) > SLERP_EPS ? sqrt(sq) : 1.0; }

/* The cosine of the angle between the two flattened tensors, as slerp.py takes it: the dot
 * product of their normalised copies (sums in double; mergekit's in f32). */
static double slerp_cos(const method_ctx *c, const void *a, const void *b) {
    double aa = 0, bb = 0, ab = 0;
    const bool f64 = c->f64;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : aa, bb, ab)
    for (uint64_t i = 0; i < c->numel; i++) {
        double x = rd(a, i, f64), y = rd(b, i, f64);
        aa += x * x;
        bb += y * y;
        ab += x * y;
    }
    return ab / (norm_or_one(aa) * norm_or_one(bb));
}

/* out = s0 * A + s1 * B: sin((1-t) theta) / sin theta and sin(t theta) / sin theta, or
 * 1 - t and t (lerp) when |cos theta| > DOT_THRESHOLD. */
static int merge_slerp(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    const double t = c->p[P_SLERP_T], dot = slerp_cos(c, d[0], d[1]);
    const bool lerp = fabs(dot) > SLERP_DOT_THRESHOLD;
    double s0 = 1 - t, s1 = t;
    if (!lerp) {
        double theta = acos(dot), sin_theta = sin(theta);
        s0 = sin(theta - theta * t) / sin_theta;
        s1 = sin(theta * t) / sin_theta;
    }
    const bool f64 = c->f64;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (uint64_t i = 0; i < c->numel; i++)
        wr(out, i, s0 * rd(d[0], i, f64) + s1 * rd(d[1], i, f64), f64);
    info_add(c->info, "cos", dot);
    if (c->info) c->info->branch = lerp ? "lerp" : "slerp";
    return 0;
}

const method_def method_slerp = {
    .name = "slerp",
    .describe = "spherical interpolation of 2 models' weights, flattened, t = 0 the first "
                "(mergekit's base); lerp when nearly colinear (mergekit's slerp)",
    .default_lambda = 1.0,
    .params = slerp_params,
    .n_params = 1,
    .weights = true,
    .base_first = true,
    .min_models = 2,
    .max_models = 2,
    .merge = merge_slerp,
};
