"""Float64 reference implementation of acem's covariance / spectral merge methods.

Test oracle, independent of the C code, written from docs/ace-merging.md and
docs/methods.md (shared docs) only.  Python stdlib + numpy.

Per float tensor: D_t = W_t - W_0 (t = 0..T-1 in --model order); output
W_0 + lambda * Delta (every method here: default lambda 1).  Tensors that are
not 2-D get Delta = mean_t D_t; so does every tensor whose name contains
"text_projection" under `ace`.  Integer / bool tensors are the caller's business
(copied from base); `merge` only sees float tensors.

  ace      ace-merging.md steps 1-7 (tiny 1e-12; params eps 1e-2, k_frac 0.3,
           threshold 0.3).  M0 = Q A^{-1} by a linear solve.  k == 0 in the
           heterogeneous branch: refinement skipped (Delta = M0).
  wudi     C_t = D_t^T D_t / ||D_t||_F^2 (zero deltas skipped in both sums),
           delta = ridge * trace(sum_t C_t) / n (ridge 1e-4),
           M = (sum_t D_t C_t)(sum_t C_t + delta I)^{-1}.
  actmat   C_t = D_t^T D_t, A = sum_t C_t, A^+ through the symmetric
           eigendecomposition keeping w_i > n * eps_mach * max(w) (eps_mach of
           the compute precision under test: f32 2^-23, f64 2^-52),
           M = (sum_t D_t C_t) A^+.
  tsv      per task the first k = floor(r/T) SVD triplets (r = min(m,n));
           concatenated U, V replaced by their polar factors; U' diag(s) V'^T.
           k == 0: mean.
  iso_c    S = sum_t D_t = U diag(sigma) V^T; mean(sigma) U V^T.
  iso_cts  common rank c = r - T*round_half_even((r - floor(cf*r))/T),
           p = (r-c)/T; top-c triplets of S, top-p triplets of each
           D_t - Uc Uc^T D_t; stacked U, V orthogonalised (polar); Delta =
           mean(all r stacked singular values) U' V'^T (common_frac 0.8).
  cart     Dbar + sum_t LowRank_k(D_t - Dbar), k = ceil(rank_ratio*r)
           (rank_ratio 0.08).

covariance_axis="input": ace, wudi and actmat transpose D_t of tensors whose
name contains one of `conv1d_names` (default: GPT-2 Conv1D layers, stored
(in, out)) and transpose Delta back.

Every *_delta function also accepts dt=np.float32 to evaluate the same
formulas in single precision (true float32 LAPACK through lapack32.py when the
system has LAPACKE; numpy.linalg itself always works in float64); the golden
test uses that only to show what a plain f32 implementation reaches.
"""

import math

import numpy as np

METHODS = ("ace", "wudi", "actmat", "tsv", "iso_c", "iso_cts", "cart")
COVARIANCE_METHODS = ("ace", "wudi", "actmat")
DEFAULT_LAMBDA = {m: 1.0 for m in METHODS}
DEFAULT_PARAMS = {
    "ace": {"eps": 1e-2, "k_frac": 0.3, "threshold": 0.3},
    "wudi": {"ridge": 1e-4},
    "actmat": {},
    "tsv": {},
    "iso_c": {},
    "iso_cts": {"common_frac": 0.8},
    "cart": {"rank_ratio": 0.08},
}
GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
MACH_EPS = {"f32": 2.0 ** -23, "f64": 2.0 ** -52}
ACE_TINY = 1e-12


# ----------------------------------------------------------- helpers --

def _mean(ds, dt=np.float64):
    acc = np.zeros(ds[0].shape, dtype=dt)
    for d in ds:
        acc = acc + d
    return acc / dt(len(ds))


# float32 arrays (diagnostics only): numpy.linalg would silently compute in float64, so
# use true single-precision LAPACK when the system has LAPACKE (lapack32.py).
try:
    import lapack32 as _l32
except ImportError:  # pragma: no cover
    _l32 = None
TRUE_F32_LAPACK = bool(_l32 and _l32.AVAILABLE)


def _f32(x):
    return TRUE_F32_LAPACK and x.dtype == np.float32


def _svd(x):
    """Thin SVD, singular values descending."""
    if _f32(x):
        return _l32.svd(x)
    return np.linalg.svd(x, full_matrices=False)


def _eigh(a):
    if _f32(a):
        return _l32.eigh(a)
    return np.linalg.eigh(a)


def polar(a):
    """Nearest matrix with orthonormal columns (a: p x q, p >= q): P Q^T of a = P S Q^T."""
    u, _, vt = _svd(a)
    return u @ vt


def _right_solve(b, a):
    """X with X a = b (b: m x n, a: n x n)."""
    if _f32(a):
        return _l32.solve(a.T, b.T).T
    return np.linalg.solve(a.T, b.T).T


def _times_gram(x, c):
    """x @ (c^T c), the cheaper way round (x: m x n, c: m' x n)."""
    if c.shape[0] < c.shape[1]:
        return (x @ c.T) @ c
    return x @ (c.T @ c)


# --------------------------------------------------------------- ACE --

def ace_gamma(ds, tiny=ACE_TINY):
    """Step 1 only: gamma = var(l, ddof=1) / (mean(l)^2 + tiny), l_t = ln(||D_t||_F^2 + tiny)."""
    s = np.array([np.sum(np.asarray(d, dtype=np.float64) ** 2) for d in ds])
    l = np.log(s + tiny)
    return float(np.var(l, ddof=1) / (np.mean(l) ** 2 + tiny))


def ace_delta(ds, eps=1e-2, k_frac=0.3, threshold=0.3, info=None, dt=np.float64):
    """ace-merging.md steps 1-7 for one 2-D tensor. ds: list of m x n arrays."""
    ds = [np.asarray(d, dtype=dt) for d in ds]
    T = len(ds)
    m, n = ds[0].shape
    tiny = dt(ACE_TINY)
    eps = dt(eps)
    # 1. heterogeneity (uncentred squared norms)
    s = np.array([np.sum(d * d) for d in ds], dtype=dt)
    l = np.log(s + tiny)
    gamma = float(np.var(l, ddof=1) / (np.mean(l) ** 2 + tiny))
    hetero = gamma > threshold
    eye = np.eye(n, dtype=dt)
    P = np.zeros((n, n), dtype=dt)
    Q = np.zeros((m, n), dtype=dt)
    Ssum = np.zeros((n, n), dtype=dt)
    Ss, taus, es = [], [], []
    for d in ds:
        # 2. centring over rows (column means)
        C = d - d.mean(axis=0, dtype=dt)[None, :]
        G = C.T @ C
        tau = np.trace(G) + tiny
        # 3. adaptive normalisation
        if hetero:
            S, e = G / tau, eps / tau
        else:
            S, e = G, eps
        # 4. sums; Q uses the centred C: C (S + e I) = C S + e C
        P += S + e * eye
        CS = _times_gram(C, C)
        if hetero:
            CS = CS / tau
        Q += CS + e * C
        Ssum += S
        Ss.append(S)
        taus.append(float(tau))
        es.append(float(e))
    # 5. collective structural prior, added to every row of P
    c = Ssum.mean(axis=0)
    if hetero:
        c = c / (np.mean(s) + tiny)
    A = P + c[None, :]
    # 6. closed form
    M0 = _right_solve(Q, A)
    r = min(m, n)
    k = int(math.floor(r * k_frac))
    if info is not None:
        info.update(gamma=gamma, branch="hetero" if hetero else "homo", k=k,
                    taus=taus, es=es, s=[float(x) for x in s])
    if not hetero:
        return M0
    # 7. spectral refinement (uncentred D_t)
    Pbar = P / dt(T)
    R = np.zeros((m, n), dtype=dt)
    for d, S, tau in zip(ds, Ss, taus):
        # d @ S with S = G/tau (G from the centred C of this d)
        C = d - d.mean(axis=0, dtype=dt)[None, :]
        R += _times_gram(d, C) / dt(tau)
    Dsum = np.zeros((m, n), dtype=dt)
    for d in ds:
        Dsum += d
    R -= Dsum @ Pbar
    F = R + M0
    if k == 0:
        if info is not None:
            info.update(sigma_iso=None, refinement="skipped (k == 0)")
        return M0
    U, sig, Vt = _svd(F)
    sigma_iso = sig[:k].mean()
    if info is not None:
        info.update(sigma_iso=float(sigma_iso), sigma=sig, refinement="done")
    return M0 + sigma_iso * (U[:, :k] @ Vt[:k])


def ace_delta_plain(ds, eps=1e-2, k_frac=0.3, threshold=0.3):
    """Literal transcription of the steps (explicit St, explicit inverse); for self-checks."""
    ds = [np.asarray(d, dtype=np.float64) for d in ds]
    T = len(ds)
    m, n = ds[0].shape
    tiny = 1e-12
    s = np.array([np.linalg.norm(d) ** 2 for d in ds])
    l = np.log(s + tiny)
    gamma = np.var(l, ddof=1) / (np.mean(l) ** 2 + tiny)
    hetero = gamma > threshold
    Cs = [d - d.mean(axis=0, keepdims=True) for d in ds]
    Gs = [C.T @ C for C in Cs]
    taus = [np.trace(G) + tiny for G in Gs]
    if hetero:
        Ss = [G / t for G, t in zip(Gs, taus)]
        es = [eps / t for t in taus]
    else:
        Ss, es = Gs, [eps] * T
    I = np.eye(n)
    P = sum(S + e * I for S, e in zip(Ss, es))
    Q = sum(C @ (S + e * I) for C, S, e in zip(Cs, Ss, es))
    c = sum(Ss).mean(axis=1)  # symmetric: row means == column means
    if hetero:
        c = c / (np.mean(s) + tiny)
    A = P + np.ones((n, 1)) @ c[None, :]
    M0 = Q @ np.linalg.inv(A)
    if not hetero:
        return M0
    Pbar = P / T
    R = sum(d @ (S - Pbar) for d, S in zip(ds, Ss))
    U, sig, Vt = np.linalg.svd(R + M0, full_matrices=False)
    k = int(math.floor(min(m, n) * k_frac))
    if k == 0:
        return M0
    return M0 + sig[:k].mean() * U[:, :k] @ Vt[:k]


# -------------------------------------------------------------- WUDI --

def wudi_delta(ds, ridge=1e-4, info=None, dt=np.float64):
    ds = [np.asarray(d, dtype=dt) for d in ds]
    m, n = ds[0].shape
    Csum = np.zeros((n, n), dtype=dt)
    B = np.zeros((m, n), dtype=dt)
    used = 0
    for d in ds:
        nn = np.sum(d * d)
        if nn == 0:
            continue
        used += 1
        Csum += (d.T @ d) / nn
        B += _times_gram(d, d) / nn
    if used == 0:
        return np.zeros((m, n), dtype=dt)
    delta = dt(ridge) * np.trace(Csum) / dt(n)
    if info is not None:
        info.update(ridge_delta=float(delta), used=used)
    return _right_solve(B, Csum + delta * np.eye(n, dtype=dt))


# ------------------------------------------------------------ ActMat --

def actmat_delta(ds, mach_eps=MACH_EPS["f32"], info=None, dt=np.float64):
    ds = [np.asarray(d, dtype=dt) for d in ds]
    m, n = ds[0].shape
    A = np.zeros((n, n), dtype=dt)
    B = np.zeros((m, n), dtype=dt)
    for d in ds:
        A += d.T @ d
        B += _times_gram(d, d)
    w, V = _eigh(A)
    wmax = float(np.max(w)) if w.size else 0.0
    if wmax <= 0:
        return np.zeros((m, n), dtype=dt)
    cut = n * mach_eps * wmax
    keep = w > cut
    if info is not None:
        kept, dropped = w[keep], w[~keep]
        info.update(rank=int(keep.sum()), cutoff=cut,
                    min_kept_over_cut=float(kept.min() / cut) if kept.size else None,
                    max_dropped_over_cut=float(dropped.max() / cut) if dropped.size else None)
    Vk = V[:, keep]
    Ap = (Vk / w[keep][None, :]) @ Vk.T
    return B @ Ap


# --------------------------------------------------------------- TSV --

def tsv_delta(ds, info=None, dt=np.float64):
    ds = [np.asarray(d, dtype=dt) for d in ds]
    T = len(ds)
    m, n = ds[0].shape
    r = min(m, n)
    k = r // T
    if info is not None:
        info.update(k=k)
    if k == 0:
        return _mean(ds, dt)
    Us, ss, Vs = [], [], []
    for d in ds:
        U, s, Vt = _svd(d)
        Us.append(U[:, :k])
        ss.append(s[:k])
        Vs.append(Vt[:k].T)
    U = polar(np.concatenate(Us, axis=1))
    V = polar(np.concatenate(Vs, axis=1))
    s = np.concatenate(ss)
    return (U * s[None, :]) @ V.T


# ------------------------------------------------------------- Iso-C --

def iso_c_delta(ds, info=None, dt=np.float64):
    ds = [np.asarray(d, dtype=dt) for d in ds]
    S = np.zeros(ds[0].shape, dtype=dt)
    for d in ds:
        S += d
    U, sig, Vt = _svd(S)
    return sig.mean() * (U @ Vt)


# ----------------------------------------------------------- Iso-CTS --

def iso_cts_ranks(r, T, common_frac=0.8):
    """-> (c, p): common rank and per-task rank (round half to even)."""
    c = r - T * int(round((r - math.floor(common_frac * r)) / T))
    p = (r - c) // T
    assert c + p * T == r
    return c, p


def iso_cts_delta(ds, common_frac=0.8, info=None, dt=np.float64):
    ds = [np.asarray(d, dtype=dt) for d in ds]
    T = len(ds)
    m, n = ds[0].shape
    r = min(m, n)
    c, p = iso_cts_ranks(r, T, common_frac)
    if info is not None:
        info.update(c=c, p=p)
    S = np.zeros((m, n), dtype=dt)
    for d in ds:
        S += d
    U, sig, Vt = _svd(S)
    Uc, sc, Vc = U[:, :c], sig[:c], Vt[:c].T
    Ul, sl, Vl = [Uc], [sc], [Vc]
    if p > 0:
        for d in ds:
            res = d - Uc @ (Uc.T @ d)
            u, s, vt = _svd(res)
            Ul.append(u[:, :p])
            sl.append(s[:p])
            Vl.append(vt[:p].T)
    Us = polar(np.concatenate(Ul, axis=1))
    Vs = polar(np.concatenate(Vl, axis=1))
    s = np.concatenate(sl)
    return s.mean() * (Us @ Vs.T)


# -------------------------------------------------------------- CART --

def cart_delta(ds, rank_ratio=0.08, info=None, dt=np.float64):
    ds = [np.asarray(d, dtype=dt) for d in ds]
    m, n = ds[0].shape
    r = min(m, n)
    k = int(math.ceil(rank_ratio * r))
    if info is not None:
        info.update(k=k)
    Dbar = _mean(ds, dt)
    out = Dbar.copy()
    for d in ds:
        U, s, Vt = _svd(d - Dbar)
        out += (U[:, :k] * s[None, :k]) @ Vt[:k]
    return out


# ------------------------------------------------------------ driver --

def _params(method, params):
    p = dict(DEFAULT_PARAMS[method])
    for k, v in (params or {}).items():
        p[k] = float(v)
    return p


def is_conv1d(name, conv1d_names=()):
    pats = tuple(conv1d_names) or GPT2_CONV1D
    return any(x in name for x in pats)


def merge_delta(method, name, w0, ws, params=None, covariance_axis="stored",
                conv1d_names=(), precision="f32", info=None, dt=np.float64):
    """Delta for one float tensor. w0: array, ws: list of arrays (same shape)."""
    if method not in METHODS:
        raise ValueError("unknown method %r" % method)
    p = _params(method, params)
    w0 = np.asarray(w0, dtype=np.float64)
    ds = [np.asarray(w, dtype=np.float64) - w0 for w in ws]
    if dt is not np.float64:
        ds = [d.astype(dt) for d in ds]
    if w0.ndim != 2 or (method == "ace" and "text_projection" in name):
        if info is not None:
            info.update(path="mean")
        return _mean(ds, dt)
    transpose = (covariance_axis == "input" and method in COVARIANCE_METHODS
                 and is_conv1d(name, conv1d_names))
    if transpose:
        ds = [np.ascontiguousarray(d.T) for d in ds]
    if info is not None:
        info.update(path="2d", transposed=transpose)
    if method == "ace":
        out = ace_delta(ds, p["eps"], p["k_frac"], p["threshold"], info, dt)
    elif method == "wudi":
        out = wudi_delta(ds, p["ridge"], info, dt)
    elif method == "actmat":
        out = actmat_delta(ds, MACH_EPS[precision], info, dt)
    elif method == "tsv":
        out = tsv_delta(ds, info, dt)
    elif method == "iso_c":
        out = iso_c_delta(ds, info, dt)
    elif method == "iso_cts":
        out = iso_cts_delta(ds, p["common_frac"], info, dt)
    else:
        out = cart_delta(ds, p["rank_ratio"], info, dt)
    return out.T if transpose else out


def merge(method, base, experts, lam=None, params=None, covariance_axis="stored",
          conv1d_names=(), precision="f32", infos=None):
    """base: dict name->float array; experts: list of such dicts (float tensors only).

    Returns dict name -> W0 + lambda * Delta (float64).  `infos`, if a dict, gets
    name -> per-tensor diagnostics (ace: gamma, branch, k, sigma_iso, ...).
    `conv1d_names`: name substrings transposed under covariance_axis="input"
    (empty: the GPT-2 Conv1D layers).  `precision`: "f32" or "f64", only
    used for actmat's pseudo-inverse cut-off.
    """
    if lam is None:
        lam = DEFAULT_LAMBDA[method]
    out = {}
    for name, w0 in base.items():
        w0 = np.asarray(w0, dtype=np.float64)
        inf = {} if infos is not None else None
        delta = merge_delta(method, name, w0, [e[name] for e in experts], params,
                            covariance_axis, conv1d_names, precision, inf)
        if infos is not None:
            infos[name] = inf
        out[name] = w0 + lam * delta
    return out
