/* gta.c — the steps mergekit's task-vector methods share after sparsification
 * (mergekit/merge_methods/generalized_task_arithmetic.py, mergekit/sparsify.py): the L1
 * rescale of a masked delta, each expert's weight, and the mix with or without sign
 * consensus. */
#include "method.h"

#include <math.h>
#include <stdlib.h>

double delta_l1(const method_ctx *c, const void *d) {
    double l1 = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : l1)
    for (uint64_t i = 0; i < c->numel; i++)
        l1 += fabs(rd(d, i, c->f64));
    return l1;
}

/* sparsify.py's rescaled_masked_tensor with RescaleNorm.l1: the masked delta times
 * before / after; left as masked when either norm is below its eps, 1e-7. */
void delta_l1_rescale(const method_ctx *c, void *d, double before) {
    const double after = delta_l1(c, d);
    if (before < 1e-7 || after < 1e-7) return;
    const double scale = before / after;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (uint64_t i = 0; i < c->numel; i++)
        wr(d, i, rd(d, i, c->f64) * scale, c->f64);
}

double *expert_weights(const method_ctx *c, int weight_param, acem_error *err) {
    double *w = acem_alloc((size_t)c->T + 1, sizeof *w, "weights", err);
    for (int t = 0; w && t < c->T; t++)
        w[t] = expert_param(c, t, weight_param);
    return w;
}

double weight_sum_scale(const double *w, int T, bool normalize) {
    double sum = 0;
    for (int t = 0; t < T; t++)
        sum += w[t];
    return !normalize || fabs(sum) < 1e-8 ? 1.0 : 1.0 / sum;
}

/* Without consensus, mixed = sum_t w_t Dt and divisor = sum_t w_t (1 when |sum| < 1e-8);
 * with it, the TIES election (ties_disjoint_merge). mergekit's zero sum elects + in a
 * mergekit config only (method.h). */
void gta_mix(const method_ctx *c, void *const *d, const double *w, bool consensus, bool normalize,
             void *out) {
    if (consensus)
        ties_disjoint_merge(c, d, (ties_rule){w, normalize, c->mergekit, false}, out);
    else
        deltas_weighted_sum(c, d, w, out, weight_sum_scale(w, c->T, normalize));
}
