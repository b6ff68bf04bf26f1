/* ace.c — ACE-Merging (Xu et al., CVPR 2026), exactly as the authors' implementation
 * computes it; step numbers refer to ../shared/docs/ace-merging.md.
 *
 * For a 2-D tensor m x n: each task's covariance over the column axis is estimated from its
 * own delta (S_t from the centred Gram C_t^T C_t), optionally normalised when the tasks'
 * strengths are heterogeneous, a shared prior c is added to every row of the system, and
 *     M0 = (sum_t C_t (S_t + e_t I)) (sum_t (S_t + e_t I) + 1 c)^{-1};
 * in the heterogeneous branch an isotropic spectral refinement follows.
 *
 * Quirks kept on purpose: the variance in gamma is unbiased; Q uses the centred C_t while
 * the refinement R uses the uncentred D_t; eps is inside Pbar; the prior c is added to every
 * row (A is not symmetric); k = floor(k_frac r). Where the reference divides by zero
 * (k = 0) acem skips the refinement and reports it. */
#include "cov.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TINY 1e-12

enum { P_EPS, P_KFRAC, P_THRESHOLD };
static const method_param ace_params[] = {
    {"eps", 1e-2, 0.0, 1e12, NULL, "ridge added to every task covariance (e_t)", 0, 0},
    {"k_frac", 0.3, 0.0, 1.0, NULL, "refined directions: k = floor(k_frac * min(m, n))", 0, 0},
    {"threshold", 0.3, 0.0, 1e300, NULL, "gamma above which the heterogeneous branch runs", 0, 0},
};

typedef struct ace_state {
    bool hetero;
    void *mu;     /* n: column means of the task being accumulated */
    void *mu_sum; /* n: sum_t mu_t, so that sum_t D_t = sum_t C_t + 1 mu_sum */
    void *v;      /* n: sum_t mu_t S_t (hetero only, for R) */
    double *e;    /* T: the ridges e_t */
    double sum_e; /* sum_t e_t */
} ace_state;

/* Step 1: gamma = var(l) / (mean(l)^2 + tiny), l_t = ln(||Dt||_F^2 + tiny), var unbiased. */
double ace_heterogeneity(const method_ctx *c, void *const *D, double *sq) {
    const la L0 = {c->f64, c->threads}, *L = &L0;
    double l[c->T], mean = 0, var = 0;
    for (int t = 0; t < c->T; t++) {
        sq[t] = la_sumsq(L, c->numel, D[t]); /* no matrix product needed */
        l[t] = log(sq[t] + TINY);
        mean += l[t] / c->T;
    }
    for (int t = 0; t < c->T; t++)
        var += (l[t] - mean) * (l[t] - mean) / (c->T - 1);
    return var / (mean * mean + TINY);
}

/* Steps 2-3 for task t: C_t = D_t - 1 mu_t (in place: D_t is not needed again), S_t =
 * C_t^T C_t (/ tau_t if hetero), e_t. */
static int ace_estimate(const method_ctx *c, void *const *D, int t, void *S, cov_task *task,
                        void *user, acem_error *err) {
    (void)err;
    ace_state *st = user;
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols;
    void *C = D[t];
    la_col_means(&L, m, n, C, st->mu);
    la_add_row(&L, m, n, -1.0, st->mu, C);
    la_axpy(&L, n, 1.0, st->mu, st->mu_sum);
    la_gram_upper(&L, m, n, 1.0, C, 0.0, S); /* cov_accumulate mirrors it where needed */
    double tau = TINY;
    for (size_t i = 0; i < n; i++)
        tau += la_get(&L, S, i * n + i);
    double scale = st->hetero ? 1.0 / tau : 1.0, e = st->hetero ? c->p[P_EPS] / tau : c->p[P_EPS];
    if (st->hetero) la_scale(&L, n * n, scale, S);
    st->e[t] = e;
    st->sum_e += e;
    if (st->hetero) /* v += mu_t S_t, so that sum_t D_t S_t = sum_t C_t S_t + 1 v */
        la_symv_upper(&L, n, 1.0, S, st->mu, st->v);
    task->X = C;
    task->gram_scale = scale;
    task->upper_only = true;
    return 0;
}

/* One pass over the centred deltas: D[1] = sum_t e_t C_t (Q's ridge term) and, when
 * with_sum, D[0] = sum_t C_t + 1 mu_sum = sum_t D_t. Each element is read from every
 * delta before it is written, and summed in double. */
static void gather_deltas(const method_ctx *c, void *const *D, const double *e, const void *mu_sum,
                          bool with_sum) {
    const la L = {c->f64, c->threads};
    const size_t n = c->cols, mn = c->rows * c->cols;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (size_t i = 0; i < mn; i++) {
        double ridge = 0, sum = 0;
        for (int t = 0; t < c->T; t++) {
            double x = la_get(&L, D[t], i);
            ridge += e[t] * x;
            sum += x;
        }
        la_set(&L, D[1], i, ridge);
        if (with_sum) la_set(&L, D[0], i, sum + la_get(&L, mu_sum, i % n));
    }
}

/* sigma_iso U_k V_k^T through the thin SVD of F (Fd, m x n in double, destroyed); into R. */
static int refine_svd(const method_ctx *c, size_t k, double *Fd, double *R, double *sigma_iso,
                      acem_error *err) {
    const la D = {true, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n;
    double *U = acem_alloc(m * r, sizeof(double), "the refinement SVD", err);
    double *VT = acem_alloc(r * n, sizeof(double), "the refinement SVD", err);
    double *s = acem_alloc(r, sizeof(double), "the refinement SVD", err);
    int rc = -1;
    if (U && VT && s) {
        int info = la_svd(&D, m, n, Fd, U, s, VT);
        if (info) {
            acem_fail(err, "SVD: %s", la_strerror(info));
        } else {
            *sigma_iso = 0;
            for (size_t i = 0; i < k; i++)
                *sigma_iso += s[i] / (double)k;
            /* U_k: m x k with row stride r; V_k^T: the first k rows of VT */
            la_gemm(&D, false, false, m, n, k, *sigma_iso, U, r, VT, n, 0.0, R, n);
            rc = 0;
        }
    }
    free(U);
    free(VT);
    free(s);
    return rc;
}

/* F's long side in blocks of about 2^20 doubles: rows of F when m >= n, columns when m < n
 * (transposed), so that a block B is always (rows x r), r = min(m, n), and F's Gram matrix
 * on the short side is the sum of the blocks' B^T B. */
typedef struct f_blocks {
    const la *L;
    const void *F; /* m x n in the compute precision */
    size_t m, n, r, len, rows;
    bool by_cols;
} f_blocks;

static f_blocks blocks_of(const la *L, const void *F, size_t m, size_t n) {
    f_blocks b = {L, F, m, n, m < n ? m : n, m < n ? n : m, 0, m < n};
    b.rows = (1u << 20) / b.r ? (1u << 20) / b.r : 1;
    if (b.rows > b.len) b.rows = b.len;
    return b;
}

/* Block starting at `at` (of `rows` rows) into B (rows x r, double). */
static void load_block(const f_blocks *b, size_t at, size_t rows, double *B) {
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < b->r; j++)
            B[i * b->r + j] = b->by_cols ? la_get(b->L, b->F, j * b->n + at + i)
                                         : la_get(b->L, b->F, (at + i) * b->n + j);
}

/* The same through the top-k eigenpairs of the r x r Gram matrix of F on its smaller side
 * (r = min(m, n)): with F^T F = V diag(sigma^2) V^T (m >= n),
 *     sigma_iso U_k V_k^T = (F V_k) diag(sigma_iso / sigma_i) V_k^T,
 * and U_k diag(sigma_iso / sigma_i) (U_k^T F) from F F^T = U diag(sigma^2) U^T when m < n.
 * Exact whenever sigma_k > 0 and several times cheaper than a full SVD: the Gram matrix
 * (accumulated from F one block at a time in double) and its eigenpairs need double (see
 * refine()), the two thin products (4 m n k flops, not the 2 m n r of F times an r x r W)
 * run in the compute precision. Returns 1 (nothing done) when F is too close to
 * rank-deficient within its top k, where the singular vectors are not determined and the
 * SVD decides. */
static int refine_gram(const method_ctx *c, size_t k, const void *F, void *out, double *sigma_iso,
                       acem_error *err) {
    const la L = {c->f64, c->threads}, D = {true, c->threads};
    const f_blocks b = blocks_of(&L, F, c->rows, c->cols);
    const size_t m = c->rows, n = c->cols, r = b.r;
    double *G = acem_alloc(r * r, sizeof(double), "the refinement", err);
    double *Vt = acem_alloc(k * r, sizeof(double), "the refinement", err);
    double *w = acem_alloc(k, sizeof(double), "the refinement", err);
    double *B = acem_alloc(b.rows * r, sizeof(double), "the refinement", err);
    void *V = NULL, *S = NULL, *Y = NULL;
    int rc = -1;
    if (!G || !Vt || !w || !B) goto out;
    for (size_t at = 0; at < b.len; at += b.rows) { /* G = sum over blocks of B^T B */
        size_t rows = b.len - at < b.rows ? b.len - at : b.rows;
        load_block(&b, at, rows, B);
        la_gram_upper(&D, rows, r, 1.0, B, at ? 1.0 : 0.0, G);
    }
    la_mirror_upper(&D, r, G);
    if (la_eig_sym_top(&D, r, k, G, w, Vt)) {
        rc = 1;
        goto out;
    }
    double top = sqrt(w[k - 1] > 0 ? w[k - 1] : 0), sum = 0;
    if (!(w[0] > 1e-16 * w[k - 1]) || top == 0) { /* sigma_k / sigma_1 below 1e-8 */
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < k; i++)
        sum += sqrt(w[i]);
    *sigma_iso = sum / (double)k;
    free(G); /* the products' memory */
    free(B);
    G = B = NULL;
    V = cov_alloc(&L, k * r, "the refinement", err); /* V_k^T (or U_k^T), k x r */
    S = cov_alloc(&L, k * r, "the refinement", err); /* diag(sigma_iso / sigma_i) V_k^T */
    Y = cov_alloc(&L, k * b.len, "the refinement", err);
    if (!V || !S || !Y) goto out;
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < r; j++) {
            la_set(&L, V, i * r + j, Vt[i * r + j]);
            la_set(&L, S, i * r + j, Vt[i * r + j] * (*sigma_iso / sqrt(w[i])));
        }
    if (!b.by_cols) {
        la_gemm(&L, false, true, m, k, n, 1.0, F, n, V, n, 0.0, Y, k);    /* Y = F V_k */
        la_gemm(&L, false, false, m, n, k, 1.0, Y, k, S, n, 1.0, out, n); /* out += Y S */
    } else {
        la_gemm(&L, false, false, k, n, m, 1.0, V, m, F, n, 0.0, Y, n);  /* Y = U_k^T F */
        la_gemm(&L, true, false, m, n, k, 1.0, S, m, Y, n, 1.0, out, n); /* out += S^T Y */
    }
    rc = 0;
out:
    free(G);
    free(Vt);
    free(w);
    free(B);
    free(V);
    free(S);
    free(Y);
    return rc;
}

/* Step 7: Delta = M0 + sigma_iso U_k V_k^T, (U, sigma, V) the thin SVD of F = R + M0.
 *
 * The singular subspace is found in double, also at --precision f32: k = floor(0.3 r)
 * usually falls inside the bulk of F's spectrum where sigma_k / sigma_{k+1} is within 1e-3
 * of 1, and the top-k subspace is then so ill-conditioned that float32 SVDs (LAPACK's,
 * PyTorch's) land up to 2e-4 away from the exact result. In double the subspace is exact to
 * ~1e-9; applying it to F in float32 adds ~1e-6. */
static int refine(const method_ctx *c, const void *F, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n;
    const size_t k = (size_t)floor((double)r * c->p[P_KFRAC]);
    info_add(c->info, "k", (double)k);
    if (k == 0) {
        if (c->info) c->info->warning = "k = floor(k_frac * min(m, n)) = 0: refinement skipped";
        return 0;
    }
    double sigma_iso = 0;
    int g = refine_gram(c, k, F, out, &sigma_iso, err);
    if (g == 1) { /* rank-deficient: the full SVD of F in double, on the rare path */
        double *Fd = acem_alloc(m * n, sizeof(double), "the refinement", err);
        double *R = acem_alloc(m * n, sizeof(double), "the refinement", err);
        g = Fd && R ? 0 : -1;
        for (size_t i = 0; !g && i < m * n; i++)
            Fd[i] = la_get(&L, F, i);
        if (!g) g = refine_svd(c, k, Fd, R, &sigma_iso, err);
        for (size_t i = 0; !g && i < m * n; i++)
            la_set(&L, out, i, la_get(&L, out, i) + R[i]);
        free(Fd);
        free(R);
    }
    if (g) return -1;
    info_add(c->info, "sigma_iso", sigma_iso);
    return 0;
}

static int merge_ace(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols;
    if (strstr(c->tensor, "text_projection")) { /* the reference averages these */
        deltas_weighted_sum(c, D, NULL, out, 1.0 / c->T);
        return 0;
    }
    double sq[c->T];
    double gamma = ace_heterogeneity(c, D, sq);
    ace_state st = {.hetero = gamma > c->p[P_THRESHOLD]};
    info_add(c->info, "gamma", gamma);
    if (c->info) c->info->branch = st.hetero ? "hetero" : "homo";
    for (int t = 0; t < c->T && st.hetero && c->info; t++)
        if (sq[t] ==
            0.0) /* tau_t = tiny: e_t = eps / 1e-12 swamps the system, as in the reference */
            c->info->warning = "an expert's delta is all zero in the heterogeneous branch: its "
                               "ridge eps / 1e-12 dominates (faithful to the reference)";

    /* Workspaces: the n x n matrices only. The deltas are centred in place; Y = sum_t C_t S_t
     * builds up in out; D[1] then holds Q and M0, D[0] sum_t D_t; out ends as Delta. */
    int rc = -1;
    double e[c->T];
    st.e = e;
    void *S = cov_alloc(&L, n * n, "ace workspace", err);
    void *P = cov_alloc(&L, n * n, "ace workspace", err);
    void *K = 2 * m < n ? cov_alloc(&L, m * m, "ace workspace", err) : NULL;
    st.mu = cov_alloc(&L, n, "ace workspace", err);
    st.mu_sum = cov_alloc(&L, n, "ace workspace", err);
    st.v = cov_alloc(&L, n, "ace workspace", err);
    void *prior = cov_alloc(&L, n, "ace workspace", err);
    if (!S || !P || (2 * m < n && !K) || !st.mu || !st.mu_sum || !st.v || !prior) goto out;
    /* Steps 2-4: Y = sum_t C_t S_t (in out), P = sum_t S_t */
    if (cov_accumulate(&L, c, D, ace_estimate, &st, out, P, S, K, err)) goto out;
    free(S); /* S and K are spent: the refinement gets their memory */
    free(K);
    S = K = NULL;

    /* Step 5: c = column means of sum_t S_t (no eps), / (mean_t s_t + tiny) if hetero */
    la_col_means(&L, n, n, P, prior);
    if (st.hetero) {
        double mean_sq = 0;
        for (int t = 0; t < c->T; t++)
            mean_sq += sq[t] / c->T;
        la_scale(&L, n, 1.0 / (mean_sq + TINY), prior);
    }
    la_add_diag(&L, n, st.sum_e, P); /* P = sum_t (S_t + e_t I) */
    gather_deltas(c, D, e, st.mu_sum, st.hetero);
    la_axpy(&L, m * n, 1.0, out, D[1]); /* D[1] = Q = sum_t C_t (S_t + e_t I) */
    if (st.hetero) {
        /* Step 7's R = sum_t D_t (S_t - Pbar) = Y + 1 v - (sum_t D_t) P / T, in out, built
         * before P turns into A. */
        la_add_row(&L, m, n, 1.0, st.v, out);
        la_gemm(&L, false, false, m, n, n, -1.0 / c->T, D[0], n, P, n, 1.0, out, n);
    }
    la_add_row(&L, n, n, 1.0, prior, P); /* A = P + 1 c: the prior on every row */

    /* Step 6: M0 = Q A^{-1}, by LU (A is not symmetric) */
    double rcond;
    if (cov_solve(&L, COV_LU, m, n, P, D[1], machine_eps(c), &rcond, err)) goto out;
    info_add(c->info, "cond", rcond > 0 ? 1.0 / rcond : INFINITY);
    free(P);
    P = NULL;
    if (st.hetero) {
        la_axpy(&L, m * n, 1.0, D[1], out); /* F = R + M0 */
        double t0 = acem_now();
        if (refine(c, out, D[1], err)) goto out;
        info_add(c->info, "svd_seconds", acem_now() - t0);
    }
    la_copy(&L, m * n, D[1], out);
    rc = 0;
out:
    free(S);
    free(P);
    free(K);
    free(st.mu);
    free(st.mu_sum);
    free(st.v);
    free(prior);
    return rc;
}

const method_def method_ace = {
    .name = "ace",
    .describe = "ACE-Merging (Xu et al. 2026): adaptive covariance estimate from each delta, "
                "closed-form solve, spectral refinement; eps 1e-2, k_frac 0.3, threshold 0.3, "
                "lambda 1",
    .default_lambda = 1.0,
    .params = ace_params,
    .n_params = 3,
    .matrix = true,
    .covariance = true,
    .merge = merge_ace,
};
