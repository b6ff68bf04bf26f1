/* ties.c — TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean.
 *
 * Trim: keep the k = max(1, floor(density * numel)) largest magnitudes of each Dt (every
 * entry whose magnitude is >= the k-th largest). The k-th largest is found by a radix
 * select over the IEEE bit patterns of |Dt| — for non-negative floats the bit pattern
 * orders like the value — so no copy or sort of the tensor is needed. */
#include "method.h"

#include <string.h>

static inline uint64_t magnitude_key(const void *p, size_t i, bool f64) {
    if (f64) {
        uint64_t x;
        memcpy(&x, (const double *)p + i, 8);
        return x & 0x7fffffffffffffffULL;
    }
    uint32_t x;
    memcpy(&x, (const float *)p + i, 4);
    return x & 0x7fffffffu;
}

/* Key of the k-th largest magnitude (1 <= k <= n), 16 bits of the key per pass. */
static uint64_t kth_largest_key(const void *p, uint64_t n, uint64_t k, bool f64) {
    static _Thread_local uint64_t hist[1 << 16];
    uint64_t prefix = 0, mask = 0;
    for (int shift = f64 ? 48 : 16; shift >= 0; shift -= 16) {
        memset(hist, 0, sizeof hist);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t key = magnitude_key(p, i, f64);
            if ((key & mask) == prefix) hist[(key >> shift) & 0xffff]++;
        }
        int digit = 0xffff;
        for (; digit > 0 && k > hist[digit]; digit--)
            k -= hist[digit];
        prefix |= (uint64_t)digit << shift;
        mask |= (uint64_t)0xffff << shift;
    }
    return prefix;
}

/* Elect sign and disjoint mean: per element, the mean of the Dt that agree in sign with
 * sum_t Dt (0 when none does). In blocks, so that each loop runs over contiguous elements
 * of one delta and vectorises; the sums run over t in order, as element by element. */
void ties_disjoint_mean(const method_ctx *c, void *const *d, void *out) {
    enum { B = 256 };
    const bool f64 = c->f64;
    const uint64_t blocks = (c->numel + B - 1) / B;
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (uint64_t b = 0; b < blocks; b++) {
        const uint64_t i0 = b * B, len = c->numel - i0 < B ? c->numel - i0 : B;
        double sum[B], acc[B];
        int count[B];
        for (uint64_t j = 0; j < len; j++) {
            sum[j] = acc[j] = 0;
            count[j] = 0;
        }
        for (int t = 0; t < c->T; t++)
            for (uint64_t j = 0; j < len; j++)
                sum[j] += rd(d[t], i0 + j, f64);
        for (int t = 0; t < c->T; t++)
            for (uint64_t j = 0; j < len; j++) {
                double v = rd(d[t], i0 + j, f64);
                bool agree = (v > 0 && sum[j] > 0) || (v < 0 && sum[j] < 0);
                acc[j] += agree ? v : 0.0;
                count[j] += agree;
            }
        for (uint64_t j = 0; j < len; j++)
            wr(out, i0 + j, count[j] ? acc[j] / count[j] : 0.0, f64);
    }
}

enum { P_DENSITY };
static const method_param ties_params[] = {
    {"density", 0.2, 0.0, 1.0, NULL, "fraction of each delta's entries kept by magnitude"},
};

static int merge_ties(const method_ctx *c, void *const *d, void *out, acem_error *err) {
    (void)err;
    uint64_t k = (uint64_t)(c->p[P_DENSITY] * (double)c->numel);
    if (k < 1) k = 1;
        /* the experts trim independently (the histogram is per thread) */
#pragma omp parallel for num_threads(c->threads) schedule(dynamic, 1)
    for (int t = 0; t < c->T; t++) {
        if (c->numel == 0) continue;
        uint64_t threshold = kth_largest_key(d[t], c->numel, k, c->f64);
        for (uint64_t i = 0; i < c->numel; i++)
            if (magnitude_key(d[t], i, c->f64) < threshold) wr(d[t], i, 0.0, c->f64);
    }
    ties_disjoint_mean(c, d, out);
    return 0;
}

const method_def method_ties = {
    .name = "ties",
    .describe = "trim to top density by magnitude, elect sign, disjoint mean (Yadav et al. "
                "2023); density 0.2, lambda 1",
    .default_lambda = 1.0,
    .params = ties_params,
    .n_params = 1,
    .merge = merge_ties,
};
