"""A float64 numpy transcription of what mergekit computes for a `models:` config of
task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della,
della_linear, linear, slerp, model_stock, nuslerp, sce, karcher, passthrough or
arcee_fusion,
written from mergekit's own source (arcee-ai/mergekit):

- config.py: evaluate_setting (numbers, gradients interpolated at t * (n - 1), the first
  {filter, value} condition whose filter is absent, "*" or a substring of the tensor
  name; no match passes on) and ConfigReader.parameter (the model's own parameters, then
  the top level, then the method's default; `weight` required for non-base models);
- plan.py: a `models:` config is one slice over all layers; layer i of n is read at
  t = i / (n - 1) (1 when n is 1), the pre-weights (embeddings) at t = 0, the
  post-weights (final norm, head) at t = 1; the base listed under models is the base;
- merge_methods/registry.py: task_arithmetic (no sparsification, no consensus, normalize
  false), ties (magnitude sparsification, sum consensus, normalize true), dare_linear /
  dare_ties (random sparsification, no / sum consensus, normalize false, rescale true),
  breadcrumbs / breadcrumbs_ties (magnitude_outliers, no / sum consensus, normalize false),
  lambda 1 (a global parameter of every task-vector method);
- merge_methods/linear.py: sum_i w_i W_i over every listed model, divided by sum_i w_i
  with normalize (default true); no base;
- merge_methods/generalized_task_arithmetic.py: deltas against the base, sparsify each
  with its density, weight, sign consensus on the weighted deltas (a zero sum elects +),
  mixed = sum of the agreeing weighted deltas, divisor = sum of their weights (0 -> 1; no
  consensus: all, |sum| < 1e-8 -> 1), divided when normalize, times lambda, plus base;
- merge_methods/slerp.py: two models, the base at t = 0 and the other at t = 1, `t` a
  global parameter (required); each tensor one flat vector, the dot product of copies
  normalised by their norms (left alone when a norm is not above eps = 1e-8) gives cos
  theta; |cos| > DOT_THRESHOLD = 0.9995 lerps, else sin((1 - t) theta) / sin theta * A +
  sin(t theta) / sin theta * B on the unnormalised tensors (mergekit computes in numpy
  f32, this in float64);
- sparsify.py's della_magprune (della, della_linear: registry.py's normalize true / false,
  rescale true; epsilon 0.15 per model), model_stock.py, nuslerp.py, sce.py, karcher.py,
  passthrough.py and arcee_fusion.py: each transcribed in its function below;
- sparsify.py: magnitude keeps k = int(density * numel) largest |d| (density >= 1: all);
  magnitude_outliers drops the n_top = int(gamma * numel) largest and the smallest down to
  int(density * numel) kept; bernoulli keeps each entry with probability density; with
  rescale, rescaled_masked_tensor scales the masked delta to the L1 norm of the unmasked
  one (unless either norm is below 1e-7).

Two rules are acem's, not mergekit's, as docs/methods.md states: the random mask is acem's
(a pure function of seed, tensor name, expert and element, transcribed in methods.py;
torch's RNG cannot be reproduced), and magnitude_outliers with n_top = 0 drops no large
entry (mergekit's slice indices[n_bot:-0] keeps none). A linear normalize by a zero sum
divides by 1 (mergekit: non-finite values).

Independent of acem's C code; used by tests/test_mergekit.py and
tests/test_mergekit_methods.py."""

import re

import numpy as np

from methods import dare_uniforms

METHODS = {  # (sparsification, consensus, normalize default, rescale default)
    "task_arithmetic": (None, False, False, False),
    "ties": ("magnitude", True, True, False),
    "dare_linear": ("random", False, False, True),
    "dare_ties": ("random", True, False, True),
    "breadcrumbs": ("magnitude_outliers", False, False, False),
    "breadcrumbs_ties": ("magnitude_outliers", True, False, False),
    "della": ("della_magprune", True, True, True),
    "della_linear": ("della_magprune", False, False, True),
}


def evaluate(setting, tensor, t):
    """config.py's evaluate_setting; None when no condition matches. A string is read as
    pydantic's lax mode reads it into ScalarOrGradient's float (PyYAML, YAML 1.1, leaves
    1e-5 without a dot a string)."""
    if isinstance(setting, (int, float, bool, str)):
        return float(setting)
    if isinstance(setting, dict):
        setting = [setting]
    if all(isinstance(e, (int, float)) for e in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        f = cond.get("filter")
        if f is None or f == "*" or f in tensor:
            return evaluate(cond["value"], tensor, t)
    return None


def parameter(name, own, top, tensor, t, default=None, required=False, model=""):
    """ConfigReader.parameter for a `models:` config (own: the model's parameters)."""
    for level in (own, top):
        if level and name in level:
            v = evaluate(level[name], tensor, t)
            if v is not None:
                return v
    if required:
        raise RuntimeError("Missing required parameter %s for %s.%s" % (name, model, tensor))
    return default


def layer_of(name):
    m = re.search(r"\.(\d+)(\.|$)", name)
    return int(m.group(1)) if m else None


def position(name, n_layers):
    """plan.py's t: per layer in the slice; pre-weights 0, post-weights 1."""
    layer = layer_of(name)
    if layer is None:
        return 0.0 if "embed" in name else 1.0
    return layer / (n_layers - 1) if n_layers > 1 else 1.0


def masked(d, keep):
    out = np.zeros(d.size)
    out[keep] = d.ravel()[keep]
    return out.reshape(d.shape)


def magnitude(d, density, **_):
    k = int(density * d.size)
    assert k > 0
    return masked(d, np.argsort(-np.abs(d.ravel()), kind="stable")[:k])


def magnitude_outliers(d, density, gamma, **_):
    n = d.size
    target, n_top = int(density * n), int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top, n_bot = n_top + n_bot, 0
    # mergekit's ascending indices[n_bot:-n_top], as descending ranks [n_top, n - n_bot):
    # the same set where magnitudes differ; ties go by index (torch's order is unspecified,
    # acem's is the index's), and n_top = 0 drops no large entry (acem's rule)
    order = np.argsort(-np.abs(d.ravel()), kind="stable")
    return masked(d, order[n_top:n - n_bot])


def random(d, density, name, t, seed, **_):
    """bernoulli(density), drawn with acem's uniforms: entry i dropped iff u_i < 1 - density."""
    u = dare_uniforms(seed, name, t, d.size).reshape(d.shape)
    return np.where(u < 1.0 - density, 0.0, d)


def della_magprune(d, density, epsilon, name, t, seed, **_):
    """sparsify.py's della_magprune: per row (a 1-D tensor one row) rank r = 0 (smallest
    |d|, ties by index) .. n - 1 kept with p = density - epsilon + 2 epsilon r / (n - 1),
    drawn with acem's uniforms (dropped iff u < 1 - p); density <= 0 zeroes."""
    if density <= 0:
        return np.zeros_like(d)
    if not (density - epsilon > 0 and density + epsilon < 1):
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")
    rows = d.reshape(1, -1) if d.ndim < 2 else d.reshape(d.shape[0], -1)
    u = dare_uniforms(seed, name, t, d.size).reshape(rows.shape)
    n = rows.shape[1]
    ranks = np.empty(rows.shape)
    for r, row in enumerate(rows):
        ranks[r, np.argsort(np.abs(row), kind="stable")] = np.arange(n)
    p = density - epsilon + (ranks / (n - 1) if n > 1 else 0.0) * 2 * epsilon
    return np.where(u < 1.0 - p, 0.0, rows).reshape(d.shape)


SPARSIFY = {"magnitude": magnitude, "magnitude_outliers": magnitude_outliers,
            "random": random, "della_magprune": della_magprune}


def sparsify(method, d, density, rescale, **kw):
    if density >= 1:
        return d
    m = SPARSIFY[method](d, density, **kw)
    before, after = np.abs(d).sum(), np.abs(m).sum()
    if not rescale or before < 1e-7 or after < 1e-7:
        return m
    return m * (before / after)


def gta(method, base, deltas, weights, densities, normalize, lam, rescale=False, gammas=None,
        name="", seed=0, epsilons=None):
    kind, consensus = METHODS[method][:2]
    if kind:
        gammas = gammas or [0.01] * len(deltas)
        epsilons = epsilons or [0.15] * len(deltas)
        deltas = [sparsify(kind, d, p, rescale, gamma=g, epsilon=e, name=name, t=t, seed=seed)
                  for t, (d, p, g, e) in enumerate(zip(deltas, densities, gammas, epsilons))]
    D = np.stack(deltas)
    w = np.array(weights, dtype=np.float64).reshape((-1,) + (1,) * base.ndim)
    wd = D * w
    if consensus:
        majority = np.where(wd.sum(axis=0) >= 0, 1.0, -1.0)
        mask = (np.sign(wd) == majority).astype(np.float64)
        mixed = (wd * mask).sum(axis=0)
        divisor = (w * mask).sum(axis=0)
        divisor[divisor == 0] = 1
    else:
        mixed = wd.sum(axis=0)
        divisor = np.full_like(mixed, w.sum())
        divisor[np.abs(divisor) < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return base + lam * mixed


def linear(cfg, models, n_layers):
    """linear.py: every listed model (the base too, when listed), weight required."""
    top = cfg.get("parameters") or {}
    listed = cfg["models"]
    out = {}
    for name in models[listed[0]["model"]]:
        t = position(name, n_layers)
        normalize = parameter("normalize", None, top, name, t, True)
        w = [parameter("weight", m.get("parameters") or {}, top, name, t, required=True,
                       model=m["model"]) for m in listed]
        res = sum(wi * models[m["model"]][name] for wi, m in zip(w, listed))
        total = sum(w)
        out[name] = res / total if normalize and abs(total) >= 1e-8 else res
    return out


DOT_THRESHOLD, EPS = 0.9995, 1e-8


def slerp_pair(t, a, b):
    """slerp.py's slerp(t, v0, v1); returns (result, lerped)."""
    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > EPS else v
    dot = np.sum(unit(a) * unit(b))
    if abs(dot) > DOT_THRESHOLD:
        return (1 - t) * a + t * b, True
    theta = np.arccos(dot)
    return (np.sin(theta - theta * t) / np.sin(theta) * a
            + np.sin(theta * t) / np.sin(theta) * b), False


def slerp(cfg, models, n_layers):
    """SlerpTask: the base and the one other model, t read without a model (top level)."""
    base = cfg["base_model"]
    other = [m["model"] for m in cfg["models"] if m["model"] != base]
    assert len(other) == 1, "Slerp merge expects exactly two models"
    top = cfg.get("parameters") or {}
    return {name: slerp_pair(parameter("t", None, top, name, position(name, n_layers),
                                       required=True), a, models[other[0]][name])[0]
            for name, a in models[base].items()}


def per_tensor(cfg, models, n_layers, fn):
    """fn(P, base tensor or None, [(model, tensor)] of the other inputs) for every tensor of
    the first input (the base when there is one); P(key, model=None, default=None,
    required=False) is ConfigReader.parameter for that tensor (merge_slices gives its own)."""
    base = cfg.get("base_model")
    top = cfg.get("parameters") or {}
    own = {m["model"]: m.get("parameters") or {} for m in cfg["models"]}
    others = [m["model"] for m in cfg["models"] if m["model"] != base]
    ref = models[base] if base else models[others[0]]

    def one(name):
        t = position(name, n_layers)

        def P(key, model=None, default=None, required=False):
            return parameter(key, own.get(model) if model else None, top, name, t, default,
                             required, model or "")
        return fn(P, models[base][name] if base else None,
                  [(m, models[m][name]) for m in others])
    return {name: one(name) for name in ref}


def model_stock_tensor(P, w0, inputs):
    """model_stock.py: cosines of the deltas (flattened, or per row with filter_wise; a
    1-D tensor one row), norm product clamped >= 1e-6, cosine to [-1, 1], mean over pairs;
    t = N cos / (1 + (N - 1) cos); t * mean(Wi) + (1 - t) * W0."""
    assert len(inputs) >= 2, "ModelStockMerge requires at least 3 models"
    ws = [w for _, w in inputs]
    fw = P("filter_wise", default=False)
    shape = w0.shape
    if fw:
        w0v = w0.reshape(1, -1) if w0.ndim == 1 else w0.reshape(w0.shape[0], -1)
    else:
        w0v = w0.reshape(1, -1)
    offs = [w.reshape(w0v.shape) - w0v for w in ws]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            norms = np.linalg.norm(offs[i], axis=-1) * np.linalg.norm(offs[j], axis=-1)
            cos.append(np.clip((offs[i] * offs[j]).sum(-1) / np.maximum(norms, 1e-6), -1, 1))
    c = np.mean(cos, axis=0)[:, None]
    n = len(ws)
    tt = n * c / (1 + (n - 1) * c)
    avg = sum(w.reshape(w0v.shape) for w in ws) / n
    return (tt * avg + (1 - tt) * w0v).reshape(shape)


def nuslerp_pair(t, v0, v1, flatten, row_wise):
    """nuslerp.py's nuslerp(t, v0, v1, dim=0 if row_wise else -1, flatten)."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(1, -1), v1.reshape(1, -1)
    elif row_wise:
        v0, v1 = v0.T, v1.T
    if v0.ndim == 1:
        v0, v1 = v0[None], v1[None]

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-7)
    cos = np.sum(unit(v0) * unit(v1), axis=-1, keepdims=True)
    theta = np.arccos(np.clip(cos, -1, 1))
    s = np.sin(theta)
    lerp = np.abs(s) < 1e-8
    with np.errstate(divide="ignore", invalid="ignore"):
        res = (np.sin((1 - t) * theta) * v0 + np.sin(t * theta) * v1) / s
    res = np.where(lerp, (1 - t) * v0 + t * v1, res)
    if row_wise and not flatten and len(shape) > 1:
        res = res.T
    return res.reshape(shape)


def nuslerp_tensor(P, w0, inputs):
    """NuSlerpTask: exactly two inputs besides the base, t = w2 / (w1 + w2) (0.5 when
    |sum| < 1e-6); with a base the task vectors are interpolated and added to it."""
    assert len(inputs) == 2, "NuSlerp merge expects exactly two models"
    w = [P("weight", m, required=True) for m, _ in inputs]
    tt = 0.5 if abs(sum(w)) < 1e-6 else w[1] / sum(w)
    flatten = P("nuslerp_flatten", default=True)
    row_wise = P("nuslerp_row_wise", default=False)
    a, b = inputs[0][1], inputs[1][1]
    if w0 is None:
        return nuslerp_pair(tt, a, b, flatten, row_wise)
    return w0 + nuslerp_pair(tt, a - w0, b - w0, flatten, row_wise)


def sce_tensor(P, w0, inputs):
    """sce.py: variance mask (select_topk < 1: the k = int(topk * #nonzero variances)
    largest, ties by index), weights = mean squares normalised (1/T if all 0), sign of the
    plain sum elected (0 -> +), sum of the agreeing w_t d_t / sum of their w_t (0 -> 1)."""
    D = np.stack([w - w0 for _, w in inputs])
    topk = P("select_topk", default=1.0)
    if topk < 1:
        var = D.var(axis=0)
        k = int(abs(topk) * np.count_nonzero(var))
        mask = np.zeros(var.size)
        if k:
            mask[np.argsort(-var.ravel(), kind="stable")[:k]] = 1
        D = D * mask.reshape(var.shape)
    w = np.array([np.sum(d ** 2) / d.size for d in D])
    w = np.full(len(D), 1.0 / len(D)) if w.sum() == 0 else w / w.sum()
    w = w.reshape((-1,) + (1,) * w0.ndim)
    majority = np.where(D.sum(axis=0) >= 0, 1.0, -1.0)
    ew = w * (np.sign(D) == majority)
    div = ew.sum(axis=0)
    div[div == 0] = 1
    return w0 + (D * ew).sum(axis=0) / div


def karcher_tensor(P, w0, inputs):
    """karcher.py's karcher_merge_tensors over every input (the base too, when listed),
    alphas 1/N."""
    ts = ([] if w0 is None else [w0]) + [w for _, w in inputs]
    if len(ts) == 1:
        return ts[0]
    max_iter = int(P("max_iter", default=10))
    tol = P("tol", default=1e-5)
    alphas = [1.0 / len(ts)] * len(ts)
    norms = [np.linalg.norm(x) for x in ts]
    units = [x / n if n else np.zeros_like(x) for x, n in zip(ts, norms)]
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return np.zeros_like(ts[0])
    a = [alphas[i] / sum(alphas[i] for i in valid) for i in valid]
    us = [units[i] for i in valid]
    mean = sum(ai * u for ai, u in zip(a, us))
    mn = np.linalg.norm(mean)
    mean = us[0].copy() if mn < tol else mean / mn
    for _ in range(max_iter):
        tangent = np.zeros_like(mean)
        for ai, u in zip(a, us):
            dot = np.clip(np.sum(mean * u), -1, 1)
            theta = np.arccos(dot)
            if theta < tol:
                continue
            tangent += ai * (theta / np.sin(theta)) * (u - dot * mean)
        tn = np.linalg.norm(tangent)
        if tn < tol:
            break
        mean = np.cos(tn) * mean + np.sin(tn) * (tangent / tn)
        un = np.linalg.norm(mean)
        if un > tol:
            mean = mean / un
    return sum(al * n for al, n in zip(alphas, norms)) * mean


def passthrough_tensor(P, w0, inputs):
    """passthrough.py: exactly one tensor, times the model's scale when set."""
    ts = ([] if w0 is None else [(None, w0)]) + inputs
    assert len(ts) == 1, "Passthrough merge expects exactly one tensor"
    m, w = ts[0]
    scale = P("scale", m)
    return w if scale is None else w * scale


def arcee_fusion_tensor(P, w0, inputs):
    """arcee_fusion.py: the base and one other model; per row (last axis) KL(softmax(W1) +
    1e-8 || softmax(W0) + 1e-8), importance |W1 - W0| * KL, threshold median + 1.5 IQR from
    the sorted importances at int(q * (n - 1)) (mergekit samples 1e6 entries of larger
    tensors at random: none of these is that large), W0 + (W1 - W0) * [importance >= it]."""
    assert w0 is not None and len(inputs) == 1
    w1 = inputs[0][1]

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    p, q = softmax(w1) + 1e-8, softmax(w0) + 1e-8
    kl = np.sum(p * np.log(p / q), axis=-1)
    imp = np.abs(w1 - w0) * (kl[..., None] if w0.ndim > 1 else kl)
    s = np.sort(imp.ravel())
    q1, med, q3 = (s[int(x * (s.size - 1))] for x in (0.25, 0.5, 0.75))
    return w0 + (w1 - w0) * (imp >= med + 1.5 * (q3 - q1))


PER_TENSOR = {"model_stock": model_stock_tensor, "nuslerp": nuslerp_tensor,
              "sce": sce_tensor, "karcher": karcher_tensor,
              "passthrough": passthrough_tensor, "arcee_fusion": arcee_fusion_tensor}
TRANSCRIBED = set(METHODS) | {"linear", "slerp"} | set(PER_TENSOR)


def single_module(cfg):
    """mergekit's `modules:` for an architecture of one module, `default` (config.py,
    OutputModuleDefinition; plan.py plans each module of the architecture): the module's
    slices or models stand for the config's, and its parameters come between a slice's and
    the top level's (ConfigReader.parameter). Other module names are left as they are."""
    module = (cfg.get("modules") or {}).get("default")
    if not module or len(cfg["modules"]) != 1:
        return cfg
    out = {k: v for k, v in cfg.items() if k != "modules"}
    out.update({k: module[k] for k in ("slices", "models") if k in module})
    if module.get("parameters"):
        out["parameters"] = {**(cfg.get("parameters") or {}), **module["parameters"]}
    return out


def merge(cfg, models, n_layers, seed=0):
    """cfg: the parsed YAML (dict); models: path -> {tensor: float64 array}; seed: acem's
    --seed, for the random mask."""
    cfg = single_module(cfg)
    method = cfg["merge_method"]
    if "slices" in cfg and method in TRANSCRIBED:
        return merge_slices(cfg, models, seed)[0]
    if "models" not in cfg or method not in TRANSCRIBED:
        # what this file does not transcribe (modules, other methods) is said so, for
        # callers that measure a corpus (tests/test_mergekit_corpus.py)
        raise NotImplementedError("no transcription of %s%s" % (
            method, "" if "models" in cfg else " with other modules"))
    if method == "linear":
        return linear(cfg, models, n_layers)
    if method == "slerp":
        return slerp(cfg, models, n_layers)
    if method in PER_TENSOR:
        return per_tensor(cfg, models, n_layers, PER_TENSOR[method])
    base_ref = cfg["base_model"]
    top = cfg.get("parameters") or {}
    experts = [m for m in cfg["models"] if m["model"] != base_ref]
    out = {}
    for name, b in models[base_ref].items():
        t = position(name, n_layers)
        normalize = parameter("normalize", None, top, name, t, METHODS[method][2])
        rescale = parameter("rescale", None, top, name, t, METHODS[method][3])
        lam = parameter("lambda", None, top, name, t, 1.0)
        own = [m.get("parameters") or {} for m in experts]
        weights = [parameter("weight", o, top, name, t, required=True, model=m["model"])
                   for o, m in zip(own, experts)]
        dens = [parameter("density", o, top, name, t, 1.0) for o in own]
        gammas = [parameter("gamma", o, top, name, t, 0.01) for o in own]
        eps = [parameter("epsilon", o, top, name, t, 0.15) for o in own]
        deltas = [models[m["model"]][name] - b for m in experts]
        out[name] = gta(method, b, deltas, weights, dens, bool(normalize), lam, bool(rescale),
                        gammas, name, seed, eps)
    return out


# ------------------------------------------------------------------ slices (plan.py)

def layer_count(tensors):
    return 1 + max((layer_of(n) for n in tensors if layer_of(n) is not None), default=-1)


def with_layer(name, i):
    return re.sub(r"\.(\d+)(\.|$)", lambda m: ".%d%s" % (i, m.group(2)), name, count=1)


def before_layers(name):
    """The pre_weights of mergekit's architecture definitions (_data/architectures/*.json:
    llama's embed_tokens, gpt2's wte and wpe, bert's embeddings.word_embeddings)."""
    return any(m in name for m in ("embed", "wte", "wpe", "word_embeddings"))


def slice_plan(cfg, models):
    """MergePlanner._plan: the pre-weights (embeddings) from the first slice's sources at
    t = 0, every slice's layers in turn (output layers numbered consecutively, t = j / (L - 1)
    over the slice, 1 when L = 1), the post-weights (final norm, head) from the last slice's
    sources at t = 1. Returns [(out_name, slice, [input names per source], t)]; the tensor
    set of a layer is the first source's."""
    slices, plan, out_layer = cfg["slices"], [], 0

    def outside(sl, before, t):
        first = models[sl["sources"][0]["model"]]
        for n in first:
            if layer_of(n) is None and (before_layers(n) == before):
                plan.append((n, sl, [n] * len(sl["sources"]), t))

    outside(slices[0], True, 0.0)
    for sl in slices:
        srcs = sl["sources"]
        L = srcs[0]["layer_range"][1] - srcs[0]["layer_range"][0]
        assert all(s["layer_range"][1] - s["layer_range"][0] == L for s in srcs)
        first = models[srcs[0]["model"]]
        for j in range(L):
            t = j / (L - 1) if L > 1 else 1.0
            for n in first:
                if layer_of(n) == srcs[0]["layer_range"][0] + j:
                    plan.append((with_layer(n, out_layer), sl,
                                 [with_layer(n, s["layer_range"][0] + j) for s in srcs], t))
            out_layer += 1
    outside(slices[-1], False, 1.0)
    return plan, out_layer


def slice_parameter(name, cfg, sl, model, tensor, t, default=None, required=False):
    """ConfigReader.parameter with an output slice: the sources of `model` in the slice (the
    first that sets it), the slice's parameters, the top level; every level read for
    `tensor`."""
    levels = [s.get("parameters") or {} for s in sl["sources"] if model and s["model"] == model]
    levels += [sl.get("parameters") or {}, cfg.get("parameters") or {}]
    for level in levels:
        if name in level:
            v = evaluate(level[name], tensor, t)
            if v is not None:
                return v
    if required:
        raise RuntimeError("Missing required parameter %s for %s.%s" % (name, model, tensor))
    return default


def merge_slices(cfg, models, seed=0):
    """A `slices:` config: {output name: float64 values} and the output's layer count."""
    cfg = single_module(cfg)
    method, base = cfg["merge_method"], cfg.get("base_model")
    plan, n_layers = slice_plan(cfg, models)
    out = {}
    for name, sl, names, t in plan:
        srcs = [(s["model"], models[s["model"]][n]) for s, n in zip(sl["sources"], names)]
        inputs = {s["model"]: n for s, n in zip(sl["sources"], names)}
        if method == "passthrough":
            (m, w), = srcs
            scale = slice_parameter("scale", cfg, sl, m, inputs[m], t)
            out[name] = w if scale is None else w * scale
        elif method in PER_TENSOR:
            def P(key, model=None, default=None, required=False):
                return slice_parameter(key, cfg, sl, model, inputs[model] if model else name,
                                       t, default, required)
            out[name] = PER_TENSOR[method](P, dict(srcs).get(base) if base else None,
                                           [(m, v) for m, v in srcs if m != base])
        elif method == "slerp":
            other = [w for m, w in srcs if m != base]
            tt = slice_parameter("t", cfg, sl, None, name, t, required=True)
            out[name] = slerp_pair(tt, dict(srcs)[base], other[0])[0]
        elif method == "linear":
            normalize = slice_parameter("normalize", cfg, sl, None, name, t, True)
            w = [slice_parameter("weight", cfg, sl, m, inputs[m], t, required=True)
                 for m, _ in srcs]
            res = sum(wi * v for wi, (_, v) in zip(w, srcs))
            out[name] = res / sum(w) if normalize and abs(sum(w)) >= 1e-8 else res
        else:
            b = dict(srcs)[base]
            experts = [(m, v) for m, v in srcs if m != base]
            glob = {k: slice_parameter(k, cfg, sl, None, name, t, d) for k, d in
                    (("normalize", METHODS[method][2]), ("rescale", METHODS[method][3]),
                     ("lambda", 1.0))}
            w = [slice_parameter("weight", cfg, sl, m, inputs[m], t, required=True)
                 for m, _ in experts]
            dens = [slice_parameter("density", cfg, sl, m, inputs[m], t, 1.0) for m, _ in experts]
            gam = [slice_parameter("gamma", cfg, sl, m, inputs[m], t, 0.01) for m, _ in experts]
            eps = [slice_parameter("epsilon", cfg, sl, m, inputs[m], t, 0.15)
                   for m, _ in experts]
            out[name] = gta(method, b, [v - b for _, v in experts], w, dens,
                            bool(glob["normalize"]), glob["lambda"], bool(glob["rescale"]), gam,
                            name, seed, eps)
    return out, n_layers
