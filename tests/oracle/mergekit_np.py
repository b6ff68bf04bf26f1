"""A float64 numpy transcription of what mergekit computes for a `models:` config of
task_arithmetic or ties, written from mergekit's own source (arcee-ai/mergekit):

- config.py: evaluate_setting (numbers, gradients interpolated at t * (n - 1), the first
  {filter, value} condition whose filter is absent, "*" or a substring of the tensor
  name; no match passes on) and ConfigReader.parameter (the model's own parameters, then
  the top level, then the method's default; `weight` required for non-base models);
- plan.py: a `models:` config is one slice over all layers; layer i of n is read at
  t = i / (n - 1) (1 when n is 1), the pre-weights (embeddings) at t = 0, the
  post-weights (final norm, head) at t = 1; the base listed under models is the base;
- merge_methods/registry.py: task_arithmetic (no sparsification, no consensus, normalize
  false), ties (magnitude sparsification, sum consensus, normalize true), lambda 1;
- merge_methods/generalized_task_arithmetic.py: deltas against the base, sparsify each
  with its density, weight, sign consensus on the weighted deltas (a zero sum elects +),
  mixed = sum of the agreeing weighted deltas, divisor = sum of their weights (0 -> 1; no
  consensus: all, |sum| < 1e-8 -> 1), divided when normalize, times lambda, plus base;
- sparsify.py: magnitude keeps k = int(density * numel) largest |d| (density >= 1: all).

Independent of acem's C code; used by tests/test_mergekit.py."""

import re

import numpy as np

METHODS = {  # (sparsify, consensus, normalize default)
    "task_arithmetic": (False, False, False),
    "ties": (True, True, True),
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


def magnitude(d, density):
    if density >= 1:
        return d
    k = int(density * d.size)
    assert k > 0
    flat = d.ravel()
    keep = np.argsort(-np.abs(flat), kind="stable")[:k]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(d.shape)


def gta(method, base, deltas, weights, densities, normalize, lam):
    sparsify, consensus, _ = METHODS[method]
    if sparsify:
        deltas = [magnitude(d, p) for d, p in zip(deltas, densities)]
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


def merge(cfg, models, n_layers):
    """cfg: the parsed YAML (dict); models: path -> {tensor: float64 array}."""
    method = cfg["merge_method"]
    base_ref = cfg["base_model"]
    top = cfg.get("parameters") or {}
    experts = [m for m in cfg["models"] if m["model"] != base_ref]
    out = {}
    for name, b in models[base_ref].items():
        t = position(name, n_layers)
        normalize = parameter("normalize", None, top, name, t, METHODS[method][2])
        lam = parameter("lambda", None, top, name, t, 1.0)
        own = [m.get("parameters") or {} for m in experts]
        weights = [parameter("weight", o, top, name, t, required=True, model=m["model"])
                   for o, m in zip(own, experts)]
        dens = [parameter("density", o, top, name, t, 1.0) for o in own]
        deltas = [models[m["model"]][name] - b for m in experts]
        out[name] = gta(method, b, deltas, weights, dens, bool(normalize), lam)
    return out
