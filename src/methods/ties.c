/* ties.c — TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean.
 *
 * Trim: keep the k = max(1, floor(density * numel)) largest magnitudes of each Dt (every
 * entry whose magnitude is >= the k-th largest). The k-th largest is found by a radix
 * select over the IEEE bit patterns of |Dt| — for non-negative floats the bit pattern
 * orders like the value — so no copy or sort of the tensor is needed. */
#include "method.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { DIGIT_BITS = 16, DIGITS = 1 << DIGIT_BITS, MAX_THREADS = 64 };

/* Walks a histogram from the largest digit down to the one holding the k-th largest key;
 * k becomes that key's rank within the digit. */
static unsigned digit_of_kth(const uint64_t *hist, uint64_t *k) {
    unsigned digit = DIGITS - 1;
    for (; digit > 0 && *k > hist[digit]; digit--)
        *k -= hist[digit];
    return digit;
}

/* The k-th largest key among the entries idx[0..n) (all n entries when idx is NULL) whose
 * bits from `shift` up are `prefix`: radix passes over the lower bits, 16 at a time. */
static uint64_t kth_among(const void *p, const uint64_t *idx, uint64_t n, uint64_t k,
                          uint64_t prefix, int shift, bool f64) {
    static _Thread_local uint64_t hist[DIGITS];
    uint64_t mask = shift >= 64 ? 0 : ~0ULL << shift;
    for (shift -= DIGIT_BITS; shift >= 0; shift -= DIGIT_BITS) {
        memset(hist, 0, sizeof hist);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t key = magnitude_key(p, idx ? idx[i] : i, f64);
            if ((key & mask) == prefix) hist[(key >> shift) & (DIGITS - 1)]++;
        }
        prefix |= (uint64_t)digit_of_kth(hist, &k) << shift;
        mask |= (uint64_t)(DIGITS - 1) << shift;
    }
    return prefix;
}

/* Thread th's share [lo, hi) of n entries split in chunks. */
static void slice(uint64_t n, uint64_t chunk, int th, uint64_t *lo, uint64_t *hi) {
    *lo = (uint64_t)th * chunk < n ? (uint64_t)th * chunk : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

/* Entries [b, e) of d whose key's top digit is below `digit` become +0 (all-zero bits);
 * returns whether any has the top digit `digit` itself. Branch-free on the bit patterns, so
 * that it vectorises. */
enum { ZERO_BLOCK = 64 };
static bool zero_below(void *d, uint64_t b, uint64_t e, uint64_t digit, int top, bool f64) {
    int hit = 0;
    if (f64) {
        uint64_t *x = d;
        for (uint64_t i = b; i < e; i++) {
            uint64_t t = (x[i] & 0x7fffffffffffffffULL) >> top;
            hit |= t == digit;
            x[i] = t < digit ? 0 : x[i];
        }
    } else {
        uint32_t *x = d, dg = (uint32_t)digit, sh = (uint32_t)top;
        for (uint64_t i = b; i < e; i++) {
            uint32_t t = (x[i] & 0x7fffffffu) >> sh;
            hit |= t == dg;
            x[i] = t < dg ? 0 : x[i];
        }
    }
    return hit;
}

/* TIES' trim of one delta d (n entries): every entry whose magnitude is below the k-th
 * largest becomes 0. Two parallel passes instead of a full radix select and a trim:
 *  1. a histogram of the top 16 key bits (per thread, over a static split) finds the digit
 *     D of the k-th largest;
 *  2. entries with a top digit below D are zeroed, those in D are listed (each thread
 *     at its offset from pass 1's counts, so the list is in index order);
 * then the k-th largest is selected among the listed entries alone. When the digit holds
 * so many entries that its list would outweigh the memory bound, pass 2 only zeroes and
 * the remaining bits are selected over the whole delta. The k-th largest key goes to *kth. */
static int trim(const method_ctx *c, void *d, uint64_t k, uint64_t *kth, acem_error *err) {
    const bool f64 = c->f64;
    const uint64_t n = c->numel;
    const int top = f64 ? 48 : 16, threads = c->threads < MAX_THREADS ? c->threads : MAX_THREADS;
    uint64_t(*hist)[DIGITS] = acem_alloc((size_t)threads, sizeof *hist, "TIES histograms", err);
    if (!hist) return -1;
    const uint64_t chunk = (n + (uint64_t)threads - 1) / (uint64_t)threads;
#pragma omp parallel num_threads(threads)
    {
        int th = omp_get_thread_num();
        uint64_t lo, hi;
        slice(n, chunk, th, &lo, &hi);
        memset(hist[th], 0, sizeof hist[th]);
        for (uint64_t i = lo; i < hi; i++)
            hist[th][magnitude_key(d, i, f64) >> top]++;
    }
    uint64_t total[DIGITS] = {0}, at[MAX_THREADS + 1] = {0};
    for (int th = 0; th < threads; th++)
        for (unsigned j = 0; j < DIGITS; j++)
            total[j] += hist[th][j];
    const unsigned digit = digit_of_kth(total, &k);
    for (int th = 0; th < threads; th++)
        at[th + 1] = at[th] + hist[th][digit];
    free(hist);
    /* the listed indices take 8 bytes each: at most a quarter of the delta's own size */
    const bool listed = total[digit] * 8 <= n * (f64 ? 8 : 4) / 4;
    uint64_t *idx =
        listed ? acem_alloc(total[digit] ? total[digit] : 1, 8, "TIES' trim", err) : NULL;
    if (listed && !idx) return -1;
#pragma omp parallel num_threads(threads)
    {
        int th = omp_get_thread_num();
        uint64_t lo, hi, *out = idx ? idx + at[th] : NULL;
        slice(n, chunk, th, &lo, &hi);
        for (uint64_t b = lo; b < hi; b += ZERO_BLOCK) {
            uint64_t e = hi - b < ZERO_BLOCK ? hi : b + ZERO_BLOCK;
            if (zero_below(d, b, e, digit, top, f64) && out)
                for (uint64_t i = b; i < e; i++) /* the rare block with digit entries */
                    if (magnitude_key(d, i, f64) >> top == digit) *out++ = i;
        }
    }
    const uint64_t prefix = (uint64_t)digit << top;
    if (idx) {
        uint64_t threshold = *kth = kth_among(d, idx, total[digit], k, prefix, top, f64);
        for (uint64_t i = 0; i < total[digit]; i++)
            if (magnitude_key(d, idx[i], f64) < threshold) wr(d, idx[i], 0.0, f64);
        free(idx);
    } else { /* the entries below the digit are 0 now and outside the prefix */
        uint64_t threshold = *kth = kth_among(d, NULL, n, k, prefix, top, f64);
        for (uint64_t i = 0; i < n; i++)
            if (magnitude_key(d, i, f64) < threshold) wr(d, i, 0.0, f64);
    }
    return 0;
}

static uint64_t count_above(const method_ctx *c, const void *d, uint64_t kth) {
    uint64_t above = 0;
    for (uint64_t i = 0; i < c->numel; i++)
        above += magnitude_key(d, i, c->f64) > kth;
    return above;
}

/* mergekit's trim keeps exactly k entries (sparsify.py's magnitude: the first k of an
 * argsort); of the entries tied with the k-th largest, acem keeps the first in index
 * order, as many as make k (which of them torch's argsort keeps is unspecified). */
static void keep_exactly(const method_ctx *c, void *d, uint64_t k, uint64_t kth) {
    const uint64_t above = count_above(c, d, kth);
    for (uint64_t i = 0, tied = 0; i < c->numel; i++)
        if (magnitude_key(d, i, c->f64) == kth && tied++ >= k - above) wr(d, i, 0.0, c->f64);
}

double kth_largest_magnitude(const method_ctx *c, const void *d, uint64_t k) {
    const uint64_t key = kth_among(d, NULL, c->numel, k, 0, c->f64 ? 64 : 32, c->f64);
    if (c->f64) {
        double v;
        memcpy(&v, &key, 8);
        return v;
    }
    const uint32_t bits = (uint32_t)key;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

int keep_top_k(const method_ctx *c, void *d, uint64_t k, acem_error *err) {
    uint64_t kth;
    if (trim(c, d, k, &kth, err)) return -1;
    keep_exactly(c, d, k, kth);
    return 0;
}

/* The k largest magnitudes of d become 0 (k >= 1; of those tied with the k-th largest,
 * the first in index order): the k-th largest selected over every bit of the keys. */
static void drop_largest(const method_ctx *c, void *d, uint64_t k) {
    const uint64_t kth = kth_among(d, NULL, c->numel, k, 0, c->f64 ? 64 : 32, c->f64);
    const uint64_t above = count_above(c, d, kth);
    for (uint64_t i = 0, tied = 0; i < c->numel; i++) {
        uint64_t key = magnitude_key(d, i, c->f64);
        if (key > kth || (key == kth && tied++ < k - above)) wr(d, i, 0.0, c->f64);
    }
}

/* Elect sign and disjoint merge (method.h). In blocks, so that each loop runs over
 * contiguous elements of one delta and vectorises; the sums run over t in order, as
 * element by element. With every w_t = 1 the products are exact, so the unweighted merge
 * is the same arithmetic as a plain one. */
void ties_disjoint_merge(const method_ctx *c, void *const *d, ties_rule rule, void *out) {
    enum { B = 256 };
    const bool f64 = c->f64;
    const uint64_t blocks = (c->numel + B - 1) / B;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (uint64_t b = 0; b < blocks; b++) {
        const uint64_t i0 = b * B, len = c->numel - i0 < B ? c->numel - i0 : B;
        double sum[B], acc[B], div[B];
        for (uint64_t j = 0; j < len; j++)
            sum[j] = acc[j] = div[j] = 0;
        for (int t = 0; t < c->T; t++) {
            const double w = rule.w && !rule.elect_unweighted ? rule.w[t] : 1.0;
            for (uint64_t j = 0; j < len; j++)
                sum[j] += w * rd(d[t], i0 + j, f64);
        }
        for (int t = 0; t < c->T; t++) {
            const double w = rule.w ? rule.w[t] : 1.0;
            for (uint64_t j = 0; j < len; j++) {
                double v = w * rd(d[t], i0 + j, f64);
                bool plus = sum[j] > 0 || (rule.zero_plus && sum[j] == 0);
                bool agree = (v > 0 && plus) || (v < 0 && sum[j] < 0);
                acc[j] += agree ? v : 0.0;
                div[j] += agree ? w : 0.0;
            }
        }
        for (uint64_t j = 0; j < len; j++)
            wr(out, i0 + j, rule.normalize && div[j] != 0 ? acc[j] / div[j] : acc[j], f64);
    }
}

/* The magnitude family, as mergekit's registry.py defines it: ties (magnitude
 * sparsification, sum consensus, normalize on) and breadcrumbs / breadcrumbs_ties
 * (magnitude_outliers, without / with sum consensus, normalize off); none rescales by
 * default. Per-expert weight, density (and gamma). */
enum { P_DENSITY, P_WEIGHT, P_NORMALIZE, P_INT8_MASK, P_RESCALE, P_GAMMA };
#define P_SHARED(normalize_def, normalize_help)                                                    \
    {"weight",        1.0, -1e9, 1e9, NULL, "each expert's weight in the election and the merge",  \
     PARAM_PER_MODEL, 0},                                                                          \
        {"normalize", normalize_def, 0, 1, NULL, normalize_help, PARAM_BOOL, 0},                   \
        {"int8_mask", 0, 0, 1, NULL, "mergekit's storage of masks: no numeric effect",             \
         PARAM_BOOL,  0},                                                                          \
    {                                                                                              \
        "rescale", 0, 0, 1, NULL, "scale each trimmed delta back to its L1 norm (mergekit's)",     \
            PARAM_BOOL, 0                                                                          \
    }
static const method_param ties_params[] = {
    {"density", 0.2, 0.0, 1.0, NULL, "fraction of each delta's entries kept by magnitude",
     PARAM_PER_MODEL | PARAM_MK_DEFAULT, 1.0},
    P_SHARED(1, "divide by the sum of the agreeing weights"),
};
static const method_param breadcrumbs_params[] = {
    {"density", 1.0, 0.0, 1.0, NULL, "fraction of each delta's entries kept", PARAM_PER_MODEL, 0},
    P_SHARED(0, "divide by the sum of the (agreeing) weights"),
    {"gamma", 0.01, 0.0, 1.0, NULL, "fraction of each delta's largest magnitudes dropped",
     PARAM_PER_MODEL, 0},
};

/* TIES' trim: k = floor(density * numel) as mergekit's sparsify.magnitude (acem keeps at
 * least one entry where mergekit stops). Entries tied with the k-th largest are all kept
 * (acem's rule), or in a mergekit config only as many as make k (keep_exactly). */
static int trim_ties(const method_ctx *c, int t, void *d, acem_error *err) {
    uint64_t k = (uint64_t)(expert_param(c, t, P_DENSITY) * (double)c->numel), kth;
    k = k < 1 ? 1 : k;
    if (trim(c, d, k, &kth, err)) return -1;
    if (c->mergekit) keep_exactly(c, d, k, kth);
    return 0;
}

/* mergekit's magnitude_outliers (sparsify.py): of n entries ranked by magnitude, the
 * n_top = floor(gamma n) largest and the n - floor(density n) - n_top smallest are dropped
 * (n_top shrinks where that count would be negative); exactly floor(density n) remain,
 * ties at either threshold settled in index order. With n_top = 0 no large entry is
 * dropped (mergekit's slice indices[n_bot:-0] keeps none: docs/methods.md). */
static int trim_breadcrumbs(const method_ctx *c, int t, void *d, acem_error *err) {
    const uint64_t n = c->numel, keep = (uint64_t)(expert_param(c, t, P_DENSITY) * (double)n);
    uint64_t n_top = (uint64_t)(expert_param(c, t, P_GAMMA) * (double)n), kth;
    n_top = keep + n_top > n ? n - keep : n_top;
    if (!keep) {
        for (uint64_t i = 0; i < n; i++)
            wr(d, i, 0.0, c->f64);
        return 0;
    }
    if (trim(c, d, keep + n_top, &kth, err)) return -1;
    keep_exactly(c, d, keep + n_top, kth);
    if (n_top) drop_largest(c, d, n_top);
    return 0;
}

typedef int (*trim_fn)(const method_ctx *c, int t, void *d, acem_error *err);

/* Each delta trimmed (density >= 1 keeps it whole), with rescale scaled back to its L1
 * norm, then mixed (gta.c). */
static int merge_magnitude(const method_ctx *c, void *const *d, void *out, trim_fn trim_one,
                           bool consensus, acem_error *err) {
    double *w = expert_weights(c, P_WEIGHT, err);
    if (!w) return -1;
    for (int t = 0; t < c->T; t++) {
        if (expert_param(c, t, P_DENSITY) >= 1 || !c->numel) continue;
        double before = c->p[P_RESCALE] ? delta_l1(c, d[t]) : 0;
        if (trim_one(c, t, d[t], err)) {
            free(w);
            return -1;
        }
        if (c->p[P_RESCALE]) delta_l1_rescale(c, d[t], before);
    }
    gta_mix(c, d, w, consensus, c->p[P_NORMALIZE] != 0, out);
    free(w);
    return 0;
}

static int merge_ties(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_magnitude(c, d, out, trim_ties, true, err);
}

static int merge_breadcrumbs(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_magnitude(c, d, out, trim_breadcrumbs, false, err);
}

static int merge_breadcrumbs_ties(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    return merge_magnitude(c, d, out, trim_breadcrumbs, true, err);
}

const method_def method_ties = {
    .name = "ties",
    .min_models = 1,
    .describe = "trim to top density by magnitude, elect sign, disjoint mean (Yadav et al. "
                "2023), per-expert weight and density; density 0.2 (1 in a mergekit config), "
                "lambda 1",
    .default_lambda = 1.0,
    .params = ties_params,
    .n_params = 5,
    .merge = merge_ties,
};

const method_def method_breadcrumbs = {
    .name = "breadcrumbs",
    .min_models = 1,
    .describe = "drop each delta's gamma largest and smallest magnitudes down to density, "
                "sum_t weight_t * Dt (Davari & Belilovsky 2023, as mergekit); density 1, gamma "
                "0.01, lambda 1",
    .default_lambda = 1.0,
    .params = breadcrumbs_params,
    .n_params = 6,
    .merge = merge_breadcrumbs,
};

const method_def method_breadcrumbs_ties = {
    .name = "breadcrumbs_ties",
    .min_models = 1,
    .describe = "breadcrumbs' trim, then TIES sign election and disjoint sum (mean with "
                "normalize), as mergekit; density 1, gamma 0.01, lambda 1",
    .default_lambda = 1.0,
    .params = breadcrumbs_params,
    .n_params = 6,
    .merge = merge_breadcrumbs_ties,
};
