/* spectral.c — methods built on singular value decompositions of the deltas
 * (methods.md): tsv (TSV-M, Gargiulo et al. 2025), iso_c and iso_cts (Marczak et al.
 * 2025), cart (Choi et al. 2024). All act on 2-D tensors; r = min(m, n). */
#include "cov.h"

#include <math.h>
#include <stdlib.h>

/* A thin SVD of a copy of A (m x n): U m x r, s r, VT r x n, all allocated here. */
typedef struct svd {
    void *U, *s, *VT;
} svd;

static void svd_free(svd *d) {
    free(d->U);
    free(d->s);
    free(d->VT);
    d->U = d->s = d->VT = NULL;
}

static int svd_of(const la *L, size_t m, size_t n, const void *A, svd *d, acem_error *err) {
    size_t r = m < n ? m : n;
    void *work = cov_alloc(L, m * n, "an SVD", err);
    d->U = cov_alloc(L, m * r, "an SVD", err);
    d->s = cov_alloc(L, r, "an SVD", err);
    d->VT = cov_alloc(L, r * n, "an SVD", err);
    int rc = -1;
    if (work && d->U && d->s && d->VT) {
        la_copy(L, m * n, A, work);
        int info = la_svd(L, m, n, work, d->U, d->s, d->VT);
        rc = info ? acem_fail(err, "SVD: %s", la_strerror(info)) : 0;
    }
    free(work);
    if (rc) svd_free(d);
    return rc;
}

/* X (rows x cols) <- its polar factor P Q^T, the nearest matrix with orthonormal columns
 * (or rows, when rows < cols), from the thin SVD X = P S Q^T. */
static int polar(const la *L, size_t rows, size_t cols, void *X, acem_error *err) {
    svd d;
    if (svd_of(L, rows, cols, X, &d, err)) return -1;
    size_t r = rows < cols ? rows : cols;
    la_gemm(L, false, false, rows, cols, r, 1.0, d.U, r, d.VT, cols, 0.0, X, cols);
    svd_free(&d);
    return 0;
}

/* Column j of dst (ld dcols) = column i of U (m x r) or row i of VT (r x n, transposed). */
static void put_column(const la *L, size_t len, const void *src, size_t stride, void *dst,
                       size_t dcols, size_t j) {
    for (size_t k = 0; k < len; k++)
        la_set(L, dst, k * dcols + j, la_get(L, src, k * stride));
}

/* The columns of U (m x w) and V (n x w) are orthogonalised, then
 * out = U' diag(s) V'^T (s NULL: every singular value replaced by iso). */
static int combine(const la *L, const method_ctx *c, size_t w, void *U, void *V, void *s,
                   double iso, void *out, acem_error *err) {
    const size_t m = c->rows, n = c->cols;
    if (polar(L, m, w, U, err) || polar(L, n, w, V, err)) return -1;
    for (size_t j = 0; j < w; j++) { /* U' diag(s) */
        double sj = s ? la_get(L, s, j) : iso;
        for (size_t i = 0; i < m; i++)
            la_set(L, U, i * w + j, la_get(L, U, i * w + j) * sj);
    }
    la_gemm(L, false, true, m, n, w, 1.0, U, w, V, w, 0.0, out, n);
    return 0;
}

/* TSV-M: each task keeps its top k = floor(r/T) singular triplets; the stacked U and V
 * are orthogonalised; Delta = U' diag(s) V'^T. With k = 0 the tensor gets the mean. */
static int merge_tsv(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n, k = r / (size_t)c->T;
    const size_t w = k * (size_t)c->T;
    if (k == 0) {
        if (c->info) c->info->warning = "floor(min(m, n) / T) = 0: tsv falls back to the mean";
        deltas_weighted_sum(c, D, NULL, out, 1.0 / c->T);
        return 0;
    }
    void *U = cov_alloc(&L, m * w, "tsv", err), *V = cov_alloc(&L, n * w, "tsv", err);
    void *s = cov_alloc(&L, w, "tsv", err);
    int rc = -1;
    if (!U || !V || !s) goto out;
    for (int t = 0; t < c->T; t++) {
        svd d;
        if (svd_of(&L, m, n, D[t], &d, err)) goto out;
        for (size_t i = 0; i < k; i++) {
            size_t j = (size_t)t * k + i;
            put_column(&L, m, la_at(&L, d.U, i), r, U, w, j);
            put_column(&L, n, la_at(&L, d.VT, i * n), 1, V, w, j);
            la_set(&L, s, j, la_get(&L, d.s, i));
        }
        svd_free(&d);
    }
    rc = combine(&L, c, w, U, V, s, 0, out, err);
out:
    free(U);
    free(V);
    free(s);
    return rc;
}

/* S = sum_t Dt into a fresh buffer. */
static void *sum_deltas(const la *L, const method_ctx *c, void *const *D, acem_error *err) {
    void *S = cov_alloc(L, c->numel, "the sum of deltas", err);
    if (S)
        for (int t = 0; t < c->T; t++)
            la_axpy(L, c->numel, 1.0, D[t], S);
    return S;
}

static double mean_of(const la *L, const void *x, size_t n) {
    double acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += la_get(L, x, i);
    return n ? acc / (double)n : 0.0;
}

/* Iso-C: S = sum_t Dt = U diag(sigma) V^T; Delta = mean(sigma) U V^T. */
static int merge_iso_c(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n;
    void *S = sum_deltas(&L, c, D, err);
    svd d;
    if (!S || svd_of(&L, m, n, S, &d, err)) {
        free(S);
        return -1;
    }
    la_gemm(&L, false, false, m, n, r, mean_of(&L, d.s, r), d.U, r, d.VT, n, 0.0, out, n);
    svd_free(&d);
    free(S);
    return 0;
}

/* Round half to even, as Python's round(). */
static double round_half_even(double x) {
    double f = floor(x), diff = x - f;
    if (diff > 0.5) return f + 1;
    if (diff < 0.5) return f;
    return fmod(f, 2.0) == 0 ? f : f + 1;
}

enum { P_COMMON_FRAC };
static const method_param iso_cts_params[] = {
    {"common_frac", 0.8, 0.0, 1.0, NULL, "share of the rank given to the common subspace", 0, 0},
};

/* Iso-CTS: the top-c subspace of S = sum_t Dt is shared; each task adds the top-p triplets
 * of its delta with that subspace projected out; the stacked bases are orthogonalised and
 * every singular value is replaced by the mean of the stacked ones. */
static int merge_iso_cts(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n, T = (size_t)c->T;
    const double common = floor(c->p[P_COMMON_FRAC] * (double)r);
    const size_t cc = r - T * (size_t)round_half_even(((double)r - common) / (double)T);
    const size_t p = (r - cc) / T;
    info_add(c->info, "common_rank", (double)cc);
    info_add(c->info, "task_rank", (double)p);
    void *S = sum_deltas(&L, c, D, err);
    void *U = cov_alloc(&L, m * r, "iso_cts", err), *V = cov_alloc(&L, n * r, "iso_cts", err);
    void *sig = cov_alloc(&L, r, "iso_cts", err), *proj = cov_alloc(&L, r * n, "iso_cts", err);
    void *resid = cov_alloc(&L, m * n, "iso_cts", err);
    svd d = {0};
    int rc = -1;
    if (!S || !U || !V || !sig || !proj || !resid || svd_of(&L, m, n, S, &d, err)) goto out;
    for (size_t i = 0; i < cc; i++) {
        put_column(&L, m, la_at(&L, d.U, i), r, U, r, i);
        put_column(&L, n, la_at(&L, d.VT, i * n), 1, V, r, i);
        la_set(&L, sig, i, la_get(&L, d.s, i));
    }
    for (size_t t = 0; t < T && p > 0; t++) {
        /* resid = D_t - Uc (Uc^T D_t), with Uc the first cc columns of S's U */
        la_copy(&L, m * n, D[t], resid);
        if (cc > 0) {
            la_gemm(&L, true, false, cc, n, m, 1.0, d.U, r, D[t], n, 0.0, proj, n);
            la_gemm(&L, false, false, m, n, cc, -1.0, d.U, r, proj, n, 1.0, resid, n);
        }
        svd e;
        if (svd_of(&L, m, n, resid, &e, err)) goto out;
        for (size_t i = 0; i < p; i++) {
            size_t j = cc + t * p + i;
            put_column(&L, m, la_at(&L, e.U, i), r, U, r, j);
            put_column(&L, n, la_at(&L, e.VT, i * n), 1, V, r, j);
            la_set(&L, sig, j, la_get(&L, e.s, i));
        }
        svd_free(&e);
    }
    rc = combine(&L, c, r, U, V, NULL, mean_of(&L, sig, r), out, err);
out:
    svd_free(&d);
    free(S);
    free(U);
    free(V);
    free(sig);
    free(proj);
    free(resid);
    return rc;
}

enum { P_RANK_RATIO };
static const method_param cart_params[] = {
    {"rank_ratio", 0.08, 0.0, 1.0, NULL, "rank kept per task: k = ceil(rank_ratio * min(m, n))", 0,
     0},
};

/* CART: Delta = Dbar + sum_t LowRank_k(Dt - Dbar), Dbar = mean_t Dt. */
static int merge_cart(const method_ctx *c, void *const *D, void *out, acem_error *err) {
    const la L = {c->f64, c->threads};
    const size_t m = c->rows, n = c->cols, r = m < n ? m : n;
    size_t k = (size_t)ceil(c->p[P_RANK_RATIO] * (double)r);
    if (k > r) k = r;
    info_add(c->info, "k", (double)k);
    deltas_weighted_sum(c, D, NULL, out, 1.0 / c->T); /* out = Dbar */
    void *resid = cov_alloc(&L, m * n, "cart", err);
    void *mean = cov_alloc(&L, m * n, "cart", err);
    int rc = -1;
    if (!resid || !mean) goto out;
    la_copy(&L, m * n, out, mean);
    for (int t = 0; t < c->T && k > 0; t++) {
        la_copy(&L, m * n, D[t], resid);
        la_axpy(&L, m * n, -1.0, mean, resid);
        svd d;
        if (svd_of(&L, m, n, resid, &d, err)) goto out;
        for (size_t i = 0; i < k; i++) /* U_k diag(s_k) */
            for (size_t row = 0; row < m; row++)
                la_set(&L, d.U, row * r + i, la_get(&L, d.U, row * r + i) * la_get(&L, d.s, i));
        la_gemm(&L, false, false, m, n, k, 1.0, d.U, r, d.VT, n, 1.0, out, n);
        svd_free(&d);
    }
    rc = 0;
out:
    free(resid);
    free(mean);
    return rc;
}

const method_def method_tsv = {
    .name = "tsv",
    .describe = "TSV-M (Gargiulo et al. 2025): top floor(r/T) singular triplets per task, "
                "orthogonalised; lambda 1",
    .default_lambda = 1.0,
    .matrix = true,
    .merge = merge_tsv,
};

const method_def method_iso_c = {
    .name = "iso_c",
    .describe = "Iso-C (Marczak et al. 2025): sum of deltas with a flat spectrum; lambda 1",
    .default_lambda = 1.0,
    .matrix = true,
    .merge = merge_iso_c,
};

const method_def method_iso_cts = {
    .name = "iso_cts",
    .describe = "Iso-CTS (Marczak et al. 2025): common + task-specific subspaces, flat "
                "spectrum; common_frac 0.8, lambda 1",
    .default_lambda = 1.0,
    .params = iso_cts_params,
    .n_params = 1,
    .matrix = true,
    .merge = merge_iso_cts,
};

const method_def method_cart = {
    .name = "cart",
    .describe = "CART (Choi et al. 2024): mean + low-rank residuals of each task; rank_ratio "
                "0.08, lambda 1",
    .default_lambda = 1.0,
    .params = cart_params,
    .n_params = 1,
    .matrix = true,
    .merge = merge_cart,
};
