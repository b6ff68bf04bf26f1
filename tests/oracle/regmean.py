"""Float64 RegMean (Jin et al. 2023) as acem documents it (docs/methods.md):
G' = alpha G + (1 - alpha) diag(G);  M = (sum_t D_t G_t') (sum_t G_t')^{-1}."""

import numpy as np


def regmean_delta(deltas, grams, alpha=0.95):
    gp = [alpha * g + (1 - alpha) * np.diag(np.diag(g)) for g in grams]
    return sum(d @ g for d, g in zip(deltas, gp)) @ np.linalg.inv(sum(gp))
