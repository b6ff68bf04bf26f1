/* karcher.c — mergekit's karcher (merge_methods/karcher.py): the weighted Karcher
 * (Riemannian) mean of the models' weights on the unit sphere, rescaled.
 *
 * With alpha_i = 1/N and u_i = W_i / |W_i| for the models whose norm exceeds tol (a_i their
 * alphas renormalised to sum 1): m = sum a_i u_i normalised (u of the first such model when
 * |m| < tol), then up to max_iter times the tangent
 * v = sum_{theta_i >= tol} a_i theta_i / sin theta_i (u_i - cos theta_i m), cos theta_i =
 * clamp(m . u_i, -1, 1), stops the loop when |v| < tol, else m = cos|v| m + sin|v| v / |v|,
 * renormalised when |m| > tol. The output is (sum_i alpha_i |W_i|) m.
 *
 * m and v stay in the span of the W_i, so they are kept as coefficients over the W_i and
 * every dot product comes from the N x N Gram matrix: one pass to build it, one to write
 * sum_i c_i W_i (the same values in exact arithmetic; mergekit rounds each step to the
 * tensor's dtype). A config's base_model is one of the models, put first (base_first), as
 * mergekit adds it to the inputs. */
#include "method.h"

#include <math.h>
#include <stdlib.h>

enum { P_MAX_ITER, P_TOL };
static const method_param karcher_params[] = {
    {"max_iter", 10, 0, 1e6, NULL, "at most this many steps of the mean", 0, 0},
    {"tol", 1e-5, 0, 1, NULL, "norm, angle and step below which the iteration stops", 0, 0},
};

typedef struct karcher {
    int N;
    const double *G;  /* Gram matrix of the W_i */
    const double *nr; /* |W_i| */
    const double *a;  /* a_i, 0 for a model at or below tol */
} karcher;

/* x . W_j for x = sum_i x_i W_i. */
static double dot_w(const karcher *k, const double *x, int j) {
    double s = 0;
    for (int i = 0; i < k->N; i++)
        s += x[i] * k->G[i * k->N + j];
    return s;
}

static double norm_of(const karcher *k, const double *x) {
    double s = 0;
    for (int j = 0; j < k->N; j++)
        s += x[j] * dot_w(k, x, j);
    return sqrt(s > 0 ? s : 0);
}

/* One step on m (coefficients); returns false when the tangent is below tol. */
static bool karcher_step(const karcher *k, double *m, double *v, double tol) {
    for (int i = 0; i < k->N; i++)
        v[i] = 0;
    for (int i = 0; i < k->N; i++) {
        if (!k->a[i]) continue;
        double cos = dot_w(k, m, i) / k->nr[i], theta;
        cos = cos < -1 ? -1 : cos > 1 ? 1 : cos;
        if ((theta = acos(cos)) < tol) continue;
        double f = k->a[i] * theta / sin(theta);
        for (int j = 0; j < k->N; j++)
            v[j] -= f * cos * m[j];
        v[i] += f / k->nr[i];
    }
    const double vn = norm_of(k, v);
    if (vn < tol) return false;
    for (int j = 0; j < k->N; j++)
        m[j] = cos(vn) * m[j] + sin(vn) * v[j] / vn;
    const double mn = norm_of(k, m);
    for (int j = 0; mn > tol && j < k->N; j++)
        m[j] /= mn;
    return true;
}

/* The coefficients of the output over the W_i into out_c (karcher.py, as above). */
static int karcher_coefficients(karcher *k, double *work, double tol, int max_iter, double *out_c) {
    double *a = work, *m = work + k->N, *v = work + 2 * k->N, sum = 0, scale = 0;
    int first = -1, steps = 0;
    for (int i = 0; i < k->N; i++) {
        a[i] = k->nr[i] > tol ? 1.0 / k->N : 0.0;
        sum += a[i];
        scale += k->nr[i] / k->N;
        if (a[i] && first < 0) first = i;
    }
    k->a = a;
    for (int i = 0; i < k->N; i++)
        out_c[i] = 0;
    if (first < 0) return 0; /* every norm at or below tol: zeros */
    for (int i = 0; i < k->N; i++)
        m[i] = (a[i] /= sum) ? a[i] / k->nr[i] : 0.0;
    const double mn = norm_of(k, m);
    for (int i = 0; i < k->N; i++)
        m[i] = mn < tol ? (i == first) / k->nr[first] : m[i] / mn;
    while (steps < max_iter && karcher_step(k, m, v, tol))
        steps++;
    for (int i = 0; i < k->N; i++)
        out_c[i] = scale * m[i];
    return steps;
}

static int merge_karcher(const method_ctx *c, void *const *w, void *out, acem_error *err) {
    const int N = c->T;
    if (N == 1) {
        double one = 1;
        deltas_weighted_sum(c, w, &one, out, 1.0);
        return 0;
    }
    double *G = acem_alloc((size_t)(N * N + 5 * N), sizeof *G, "karcher's Gram matrix", err);
    if (!G) return -1;
    double *nr = G + N * N, *coef = nr + N;
    for (int k = 0; k < N * N; k++)
        G[k] = 0;
#pragma omp parallel for num_threads(c->threads) schedule(static) reduction(+ : G[:N * N])
    for (uint64_t i = 0; i < c->numel; i++)
        for (int a = 0; a < N; a++)
            for (int b = a; b < N; b++)
                G[a * N + b] += rd(w[a], i, c->f64) * rd(w[b], i, c->f64);
    for (int a = 0; a < N; a++) {
        for (int b = 0; b < a; b++)
            G[a * N + b] = G[b * N + a];
        nr[a] = sqrt(G[a * N + a]);
    }
    karcher k = {N, G, nr, NULL};
    int steps = karcher_coefficients(&k, coef + N, c->p[P_TOL], (int)c->p[P_MAX_ITER], coef);
    deltas_weighted_sum(c, w, coef, out, 1.0);
    info_add(c->info, "steps", steps);
    free(G);
    return 0;
}

const method_def method_karcher = {
    .name = "karcher",
    .min_models = 1,
    .describe = "the Karcher mean of the models' weights on the unit sphere, times their mean "
                "norm (mergekit's karcher); max_iter 10, tol 1e-5; no base needed",
    .default_lambda = 1.0,
    .params = karcher_params,
    .n_params = 2,
    .weights = true,
    .base_first = true,
    .merge = merge_karcher,
};
