"""A float64 numpy transcription of what mergekit computes for a `models:` config of
task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, linear or
slerp,
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

Independent of acem's C code; used by tests/test_mergekit.py."""

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
}


def evaluate(setting, tensor, t):
    """config.py's evaluate_setting; None when no condition matches."""
    if isinstance(setting, (int, float, bool)):
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


SPARSIFY = {"magnitude": magnitude, "magnitude_outliers": magnitude_outliers,
            "random": random}


def sparsify(method, d, density, rescale, **kw):
    if density >= 1:
        return d
    m = SPARSIFY[method](d, density, **kw)
    before, after = np.abs(d).sum(), np.abs(m).sum()
    if not rescale or before < 1e-7 or after < 1e-7:
        return m
    return m * (before / after)


def gta(method, base, deltas, weights, densities, normalize, lam, rescale=False, gammas=None,
        name="", seed=0):
    kind, consensus = METHODS[method][:2]
    if kind:
        gammas = gammas or [0.01] * len(deltas)
        deltas = [sparsify(kind, d, p, rescale, gamma=g, name=name, t=t, seed=seed)
                  for t, (d, p, g) in enumerate(zip(deltas, densities, gammas))]
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


TRANSCRIBED = set(METHODS) | {"linear", "slerp"}


def merge(cfg, models, n_layers, seed=0):
    """cfg: the parsed YAML (dict); models: path -> {tensor: float64 array}; seed: acem's
    --seed, for the random mask."""
    method = cfg["merge_method"]
    if "slices" in cfg and method in TRANSCRIBED | {"passthrough"}:
        return merge_slices(cfg, models, seed)[0]
    if "models" not in cfg or method not in TRANSCRIBED:
        # what this file does not transcribe (modules, other methods) is said so, for
        # callers that measure a corpus (tests/test_mergekit_corpus.py)
        raise NotImplementedError("no transcription of %s%s" % (
            method, "" if "models" in cfg else " with modules"))
    if method == "linear":
        return linear(cfg, models, n_layers)
    if method == "slerp":
        return slerp(cfg, models, n_layers)
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
        deltas = [models[m["model"]][name] - b for m in experts]
        out[name] = gta(method, b, deltas, weights, dens, bool(normalize), lam, bool(rescale),
                        gammas, name, seed)
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
            out[name] = gta(method, b, [v - b for _, v in experts], w, dens,
                            bool(glob["normalize"]), glob["lambda"], bool(glob["rescale"]), gam,
                            name, seed)
    return out, n_layers
