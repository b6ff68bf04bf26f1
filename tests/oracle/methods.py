"""Float64 reference implementation of acem's merge methods (test oracle).

Independent of the C code; written from the method specification only.

Per float tensor: D_t = W_t - W_0 (t = 0..T-1, --model order),
output = W_0 + lambda * Delta, with Delta per method:

  average          mean_t D_t                                   (lambda 1)
  task_arithmetic  sum_t D_t                                    (lambda 0.3)
  ties             trim each D_t to its top-k magnitudes
                   (k = max(1, floor(density*numel)), keep |v| >= k-th
                   largest), elect sign(sum_t trimmed_t), disjoint mean
                   over tasks with non-zero value of the elected sign
                   (density 0.2, lambda 1)
  dare_linear      DARE drop (prob p) + rescale (inverse | l1), sum_t
                   (p 0.9, rescale inverse, lambda 0.3)
  dare_ties        DARE drop + rescale, then TIES election + disjoint
                   mean (no trimming)                           (lambda 1)
"""

import math

import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
C1 = 0xBF58476D1CE4E5B9
C2 = 0x94D049BB133111EB

DEFAULT_LAMBDA = {
    "average": 1.0,
    "task_arithmetic": 0.3,
    "ties": 1.0,
    "dare_linear": 0.3,
    "dare_ties": 1.0,
}
METHODS = tuple(DEFAULT_LAMBDA)


# ------------------------------------------------------------ hashing --

def mix_int(x):
    """splitmix64 finaliser on a Python int (mod 2^64)."""
    x = (x + GOLDEN) & M64
    x = ((x ^ (x >> 30)) * C1) & M64
    x = ((x ^ (x >> 27)) * C2) & M64
    return x ^ (x >> 31)


def mix_arr(x):
    """Same as mix_int, vectorised over a np.uint64 array (wrapping)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(C1)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(C2)
    return x ^ (x >> np.uint64(31))


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def dare_key(seed, name, t):
    return mix_int(mix_int(mix_int(seed & M64) ^ fnv1a64(name)) ^ (t & M64))


def dare_uniforms(seed, name, t, n):
    """u_i = (mix(key_t ^ mix(i)) >> 11) * 2^-53 for i in 0..n-1 (float64)."""
    key = np.uint64(dare_key(seed, name, t))
    i = np.arange(n, dtype=np.uint64)
    r = mix_arr(key ^ mix_arr(i)) >> np.uint64(11)
    return r.astype(np.float64) * (2.0 ** -53)


# ----------------------------------------------------------- building --

def trim_topk(d, density):
    """Keep entries with |v| >= k-th largest magnitude, k = max(1, floor(density*n))."""
    flat = d.ravel()
    n = flat.size
    if n == 0:
        return d.copy()
    k = max(1, int(math.floor(density * n)))
    k = min(k, n)
    a = np.abs(flat)
    thr = np.partition(a, n - k)[n - k]
    return np.where(a >= thr, flat, 0.0).reshape(d.shape)


def disjoint_mean(stack, elect=None):
    """stack: (T, ...) -> TIES sign election + mean over agreeing non-zeros.

    `elect` (same shape, default `stack`) is what the sign election sums.
    DARE with inverse rescaling passes the unscaled masked deltas: the
    common factor 1/(1-p) > 0 does not change sign(sum) in exact
    arithmetic, while multiplying by the inexact f64 value of 1/(1-p) first
    can turn an exact tie (sum 0 -> elected sign 0) into +-1e-17 noise.
    """
    if elect is None:
        elect = stack
    total = np.zeros(stack.shape[1:])
    for t in range(stack.shape[0]):  # sequential t-order accumulation
        total = total + elect[t]
    elected = np.sign(total)
    sel = (stack != 0) & (np.sign(stack) == elected)
    cnt = sel.sum(axis=0)
    ssum = np.zeros(stack.shape[1:])
    for t in range(stack.shape[0]):
        ssum = ssum + np.where(sel[t], stack[t], 0.0)
    return np.where(cnt > 0, ssum / np.maximum(cnt, 1), 0.0)


def dare_mask(d, name, t, p, seed):
    """Masked (dropped, not yet rescaled) delta."""
    u = dare_uniforms(seed, name, t, d.size).reshape(d.shape)
    return np.where(u < p, 0.0, d)


def dare(d, name, t, p, rescale, seed):
    m = dare_mask(d, name, t, p, seed)
    if rescale == "inverse":
        if p >= 1.0:
            return np.zeros_like(d)
        return m / (1.0 - p)
    if rescale == "l1":
        den = np.abs(m).sum()
        if den == 0:
            return np.zeros_like(d)
        return m * (np.abs(d).sum() / den)
    raise ValueError("unknown rescale %r" % rescale)


def _pf(params, key, default):
    v = params.get(key, default)
    return float(v)


def merge_delta(method, name, w0, ws, params=None, seed=0):
    """Delta for one tensor (float64). w0: array, ws: list of arrays."""
    params = params or {}
    d = [np.asarray(w, dtype=np.float64) - np.asarray(w0, dtype=np.float64) for w in ws]
    T = len(d)
    if method == "average":
        acc = np.zeros(w0.shape)
        for x in d:
            acc = acc + x
        return acc / T
    if method == "task_arithmetic":
        acc = np.zeros(w0.shape)
        for x in d:
            acc = acc + x
        return acc
    if method == "ties":
        dens = _pf(params, "density", 0.2)
        return disjoint_mean(np.stack([trim_topk(x, dens) for x in d]))
    if method in ("dare_linear", "dare_ties"):
        p = _pf(params, "p", 0.9)
        rescale = str(params.get("rescale", "inverse"))
        dd = [dare(x, name, t, p, rescale, seed) for t, x in enumerate(d)]
        if method == "dare_linear":
            acc = np.zeros(w0.shape)
            for x in dd:
                acc = acc + x
            return acc
        elect = None
        if rescale == "inverse":
            elect = np.stack([dare_mask(x, name, t, p, seed) for t, x in enumerate(d)])
        return disjoint_mean(np.stack(dd), elect)
    raise ValueError("unknown method %r" % method)


def merge(method, base, experts, lam=None, params=None, seed=0):
    """base: dict name->f64 array; experts: list of such dicts.

    Returns dict name->f64 merged array (W0 + lambda*Delta) for every name
    in base.  The caller passes only the float tensors to be merged.
    """
    if lam is None:
        lam = DEFAULT_LAMBDA[method]
    out = {}
    for name, w0 in base.items():
        w0 = np.asarray(w0, dtype=np.float64)
        delta = merge_delta(method, name, w0, [e[name] for e in experts], params, seed)
        out[name] = w0 + lam * delta
    return out
