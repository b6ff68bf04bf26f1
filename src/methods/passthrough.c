/* passthrough.c — mergekit's passthrough (mergekit/merge_methods/passthrough.py): the one
 * model's tensor, copied, times its `scale` when one is set (frankenmerges zero the o_proj
 * and down_proj of repeated layers so). The pipeline hands the weights themselves
 * (method_def.weights), so Delta = scale * W is the output. */
#include "method.h"

enum { P_PT_SCALE };
static const method_param passthrough_params[] = {
    {"scale", 1.0, -1e9, 1e9, NULL, "the model's factor (mergekit: none, i.e. 1)", PARAM_PER_MODEL,
     0},
};

static double passthrough_scale(const method_ctx *c, double *w) {
    w[0] = expert_param(c, 0, P_PT_SCALE);
    return 1.0;
}

static int merge_passthrough(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    double w;
    passthrough_scale(c, &w);
    deltas_weighted_sum(c, d, &w, out, 1.0);
    return 0;
}

const method_def method_passthrough = {
    .name = "passthrough",
    .describe = "exactly 1 model's tensors, times its scale (mergekit's passthrough: "
                "frankenmerges with slices); no base needed",
    .default_lambda = 1.0,
    .params = passthrough_params,
    .n_params = 1,
    .elementwise = method_always_elementwise,
    .weights = true,
    .min_models = 1,
    .max_models = 1,
    .merge = merge_passthrough,
    .linear_scale = passthrough_scale,
};
