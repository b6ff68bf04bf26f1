#!/usr/bin/python3
"""mergekit's della, della_linear, model_stock, nuslerp, sce, karcher, passthrough and
arcee_fusion run by
`acem merge` from mergekit configurations, compared with the float64 numpy transcription of
mergekit's code (tests/oracle/mergekit_np.py), in f32 and bf16; and one real configuration
per method, verbatim, on tiny stand-in models.

Usage: /usr/bin/python3 tests/test_mergekit_methods.py PATH/TO/acem

Error measure and bounds as tests/test_mergekit.py: per tensor max |acem - oracle| /
max |oracle|, at most 1e-4 for f32 and 2^-8 for bf16 (one rounding at the tensor's scale).
The experts share a common delta (and each adds its own), so the cosines between deltas
are near 0.5: model_stock's t, nuslerp's and karcher's angles are far from their
degenerate ends."""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import mergekit_np as MK  # noqa: E402
import safetensors_np as ST  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402
from test_mergekit import N_LAYERS, as_yaml, merge_and_compare, shapes  # noqa: E402


def make_models(d, names, dtype, seed=0, scale=0.1):
    """names[0] is the base; each other model is base + common + own, both deltas of standard
    deviation `scale`. Hugging Face directories at d/<name>; returns name -> {tensor: float64
    values as stored}."""
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(v) for k, v in shapes().items()}
    common = {k: scale * rng.standard_normal(v.shape) for k, v in base.items()}
    out = {}
    for i, name in enumerate(names):
        vals = {k: v if i == 0 else v + common[k] + scale * rng.standard_normal(v.shape)
                for k, v in base.items()}
        tensors = {k: ST.from_f64(v, dtype) for k, v in vals.items()}
        path = os.path.join(d, name)
        os.makedirs(path, exist_ok=True)
        ST.write_file(os.path.join(path, "model.safetensors"), tensors)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"model_type": "llama", "num_hidden_layers": N_LAYERS}, f)
        out[name] = {k: t.to_f64() for k, t in tensors.items()}
    return out


def model(name, **parameters):
    return {"model": name, "parameters": parameters} if parameters else {"model": name}


GRAD = [0.2, 0.9, 0.5]
FILTERED = [{"filter": "self_attn", "value": 0.3}, {"filter": "mlp", "value": [0.6, 0.4]},
            {"value": 0.5}]


def cases():
    """(label, config): each method's parameters, gradients, filters and normalize."""
    b = "base"
    return [
        ("della/weights,densities,epsilons, base listed", {
            "merge_method": "della", "base_model": b,
            "models": [model(b), model("a", weight=0.6, density=0.5, epsilon=0.2),
                       model("b", weight=0.3, density=0.7, epsilon=0.1),
                       model("c", weight=-0.2, density=0.4)]}),
        ("della/normalize,rescale off,density gradient,filtered epsilon,lambda", {
            "merge_method": "della", "base_model": b,
            "models": [model("a", weight=0.8, density=[0.3, 0.7]),
                       model("b", weight=0.5, epsilon=[{"filter": "mlp", "value": 0.05}])],
            "parameters": {"normalize": False, "rescale": False, "density": 0.5,
                           "epsilon": 0.2, "lambda": 0.7, "int8_mask": True}}),
        ("della_linear/weights,top-level density and epsilon", {
            "merge_method": "della_linear", "base_model": b,
            "models": [model("a", weight=0.6), model("b", weight=0.4, density=0.9, epsilon=0.05),
                       model("c", weight=0.2)],
            "parameters": {"density": 0.35, "epsilon": 0.3, "lambda": 1.3}}),
        ("della_linear/normalize,weight gradient,one expert", {
            "merge_method": "della_linear", "base_model": b,
            "models": [model("a", weight=GRAD, density=0.6)],
            "parameters": {"normalize": True}}),
        ("model_stock/3 models, base listed", {
            "merge_method": "model_stock", "base_model": b,
            "models": [model(b), model("a"), model("b"), model("c")]}),
        ("model_stock/filter_wise, 2 models", {
            "merge_method": "model_stock", "base_model": b,
            "models": [model("a"), model("b")], "parameters": {"filter_wise": True}}),
        ("nuslerp/no base, weights", {
            "merge_method": "nuslerp",
            "models": [model("a", weight=0.7), model("b", weight=0.3)]}),
        ("nuslerp/base, rows (flatten off), weight gradient", {
            "merge_method": "nuslerp", "base_model": b,
            "models": [model("a", weight=GRAD), model("b", weight=0.5)],
            "parameters": {"nuslerp_flatten": False}}),
        ("nuslerp/base, columns (row_wise), filtered weight", {
            "merge_method": "nuslerp", "base_model": b,
            "models": [model("a", weight=FILTERED), model("b", weight=1.0)],
            "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True}}),
        ("sce/select_topk 0.5, base listed", {
            "merge_method": "sce", "base_model": b,
            "models": [model(b), model("a"), model("b"), model("c")],
            "parameters": {"select_topk": 0.5, "int8_mask": True}}),
        ("sce/select_topk 1 (no selection), filtered select_topk elsewhere", {
            "merge_method": "sce", "base_model": b,
            "models": [model("a"), model("b")],
            "parameters": {"select_topk": [{"filter": "mlp", "value": [0.2, 0.9]},
                                           {"value": 1.0}]}}),
        ("karcher/3 models, no base", {
            "merge_method": "karcher", "models": [model("a"), model("b"), model("c")]}),
        ("karcher/base listed, max_iter 3, tol", {
            "merge_method": "karcher", "base_model": b,
            "models": [model(b), model("a"), model("b")],
            "parameters": {"max_iter": 3, "tol": 1e-7}}),
        ("karcher/base not listed (an input, as mergekit adds it)", {
            "merge_method": "karcher", "base_model": b, "models": [model("a")]}),
        ("arcee_fusion/base listed second", {
            "merge_method": "arcee_fusion", "base_model": b, "models": [model("a"), model(b)]}),
        ("arcee_fusion/base not listed", {
            "merge_method": "arcee_fusion", "base_model": b, "models": [model("c")]}),
        ("della/slices (a gradient over each slice, a slice's own epsilon)", {
            "merge_method": "della", "base_model": b,
            "slices": [{"sources": [{"model": b, "layer_range": [0, 2]},
                                    {"model": "a", "layer_range": [0, 2],
                                     "parameters": {"weight": 0.7, "density": [0.3, 0.6]}},
                                    {"model": "b", "layer_range": [0, 2],
                                     "parameters": {"weight": 0.4, "density": 0.5}}]},
                       {"sources": [{"model": b, "layer_range": [2, 4]},
                                    {"model": "a", "layer_range": [2, 4],
                                     "parameters": {"weight": 0.5, "density": 0.6}},
                                    {"model": "b", "layer_range": [2, 4],
                                     "parameters": {"weight": 0.5, "density": 0.4}}],
                        "parameters": {"epsilon": 0.05}}]}),
        ("model_stock/slices, filter_wise", {
            "merge_method": "model_stock", "base_model": b, "parameters": {"filter_wise": True},
            "slices": [{"sources": [{"model": m, "layer_range": [0, 4]}
                                    for m in (b, "a", "b", "c")]}]}),
        ("passthrough/filtered scale", {
            "merge_method": "passthrough",
            "models": [model("a", scale=[{"filter": "mlp", "value": [0.5, 2.0]},
                                         {"value": 1.5}])]}),
        ("passthrough/no scale", {"merge_method": "passthrough", "models": [model("c")]}),
    ]


def test_generated(d):
    """karcher's models are far apart (deltas as large as the weights, cosines near 0.5
    between the models), where its iteration moves the mean well away from the normalised
    average it starts from; the others' deltas are a tenth of the weights."""
    for dtype in ("F32", "BF16"):
        for scale in (0.1, 1.0):
            sub = os.path.join(d, f"{dtype}-{scale}")
            models = make_models(sub, ["base", "a", "b", "c"], dtype, seed=40, scale=scale)
            for label, cfg in cases():
                if (cfg["merge_method"] == "karcher") == (scale == 1.0):
                    merge_and_compare(sub, f"{label} [{dtype}]", as_yaml(cfg), cfg, models,
                                      dtype)


def merge_cfg(d, name, cfg, *extra):
    path, out = os.path.join(d, name + ".yaml"), os.path.join(d, name + ".safetensors")
    with open(path, "w") as f:
        f.write(as_yaml(cfg))
    r = run("merge", "-q", path, "-o", out, *extra)
    return r, (ST.read_file(out)[0] if r.returncode == 0 else {})


def test_della_mask(d):
    """The keep probabilities rise with the magnitude rank: of each row, the larger half of
    the magnitudes survives more often than the smaller (density 0.5, epsilon 0.4: 0.1 at
    the bottom, 0.9 at the top); rescale off, so survivors are the deltas themselves."""
    models = make_models(d, ["base", "a"], "F32", seed=41)
    cfg = {"merge_method": "della_linear", "base_model": "base",
           "models": [model("a", weight=1.0, density=0.5, epsilon=0.4)],
           "parameters": {"rescale": False}}
    r, got = merge_cfg(d, "mask", cfg)
    name = "model.layers.1.mlp.up_proj.weight"
    kept_hi = kept_lo = 0
    if got:
        delta = models["a"][name] - models["base"][name]
        kept = got[name].to_f64() != models["base"][name]
        for row, k in zip(np.abs(delta), kept):
            hi = row >= np.median(row)
            kept_hi += k[hi].sum()
            kept_lo += k[~hi].sum()
    check(f"della keeps large magnitudes more often ({kept_hi} of the top halves' entries vs "
          f"{kept_lo} of the bottom's)", kept_hi > 2 * kept_lo > 0, r.stderr)
    cfg["models"][0]["parameters"]["epsilon"] = 0.6
    r, _ = merge_cfg(d, "bad", cfg)
    check("della with density - epsilon <= 0 is refused, naming the tensor and the values",
          one_error_line(r, "della needs density +/- epsilon within (0, 1)", "epsilon 0.6"),
          r.stderr)


def test_seed_and_lambda(d):
    """della draws from --seed (another seed, another mask, the oracle following it); sce
    and model_stock read no lambda, as mergekit, and say so."""
    models = make_models(d, ["base", "a", "b"], "F32", seed=42)
    cfg = {"merge_method": "della", "base_model": "base",
           "models": [model("a", weight=0.5, density=0.4), model("b", weight=0.5, density=0.6)]}
    r, got = merge_cfg(d, "seed", cfg, "--seed", "7")
    want = MK.merge(cfg, models, N_LAYERS, seed=7)
    other = MK.merge(cfg, models, N_LAYERS, seed=0)
    worst = max((np.max(np.abs(got[k].to_f64() - v)) / np.max(np.abs(v)) for k, v in
                 want.items()), default=1.0) if got else 1.0
    differs = any(not np.allclose(want[k], other[k]) for k in want)
    check(f"della --seed 7: max relative error {worst:.2e} against the oracle's seed 7 mask "
          "(which differs from seed 0's)", worst <= 1e-4 and differs, r.stderr)
    for method in ("sce", "model_stock"):
        cfg = {"merge_method": method, "base_model": "base",
               "models": [model("a"), model("b")], "parameters": {"lambda": 0.5}}
        r, got = merge_cfg(d, method, cfg)
        want = MK.merge(cfg, models, N_LAYERS)
        worst = max((np.max(np.abs(got[k].to_f64() - v)) / np.max(np.abs(v)) for k, v in
                     want.items()), default=1.0) if got else 1.0
        warned = f"{method} does not read lambda" in r.stderr
        check(f"{method} ignores lambda 0.5 with a warning (max relative error {worst:.2e})",
              worst <= 1e-4 and warned, r.stderr)


def test_model_counts(d):
    """mergekit's bounds: model_stock needs a base and two models, nuslerp two models (plus
    an optional base), passthrough exactly one."""
    make_models(d, ["base", "a", "b", "c"], "F32", seed=43)
    for label, cfg, phrase in (
            ("model_stock with one model", {"merge_method": "model_stock", "base_model": "base",
                                            "models": [model("a")]},
             "method model_stock needs at least 2"),
            ("nuslerp with three models and a base", {
                "merge_method": "nuslerp", "base_model": "base",
                "models": [model(x, weight=1) for x in "abc"]}, "method nuslerp"),
            ("passthrough with two models", {"merge_method": "passthrough",
                                             "models": [model("a"), model("b")]},
             "method passthrough merges exactly 1")):
        r, _ = merge_cfg(d, label.replace(" ", "_"), cfg)
        check(f"{label} is a usage error naming the method", one_error_line(r, phrase) and
              r.returncode == 2, r.stderr)
    r, _ = merge_cfg(d, "nuw", {"merge_method": "nuslerp", "base_model": "base",
                                "models": [model("a", weight=1), model("b")]})
    check("nuslerp without a model's weight is refused, naming it (the base needs none)",
          one_error_line(r, "no weight", "/b"), r.stderr)
    r, _ = merge_cfg(d, "nuw0", {"merge_method": "nuslerp", "models": [model("a"), model("b")]})
    check("nuslerp without any weight is refused in any config, as mergekit ('Missing "
          "required parameter weight')", one_error_line(r, "no weight for", "/a"), r.stderr)


def test_scale_zero(d):
    """passthrough's scale 0 (frankenmerges blank o_proj / down_proj so) gives exact zeros."""
    models = make_models(d, ["base", "a"], "BF16", seed=44)
    cfg = {"merge_method": "passthrough",
           "models": [model("a", scale=[{"filter": "o_proj", "value": 0.0},
                                        {"filter": "up_proj", "value": 0.0}, {"value": 1.0}])]}
    r, got = merge_cfg(d, "zero", cfg)
    ok = bool(got) and all(
        np.array_equal(got[k].to_f64(), np.zeros_like(v) if "up_proj" in k else v)
        for k, v in models["a"].items())
    check("passthrough scale 0 zeroes the filtered tensors exactly, the rest are the model's",
          ok, r.stderr)


def test_fusion_mask(d):
    """arcee_fusion takes the other model's value at the outliers of importance only: some
    entries of every matrix, far from all (median + 1.5 IQR; a norm vector of 16 entries may
    have none), the rest the base's exactly."""
    models = make_models(d, ["base", "a"], "F32", seed=46)
    r, got = merge_cfg(d, "fusion", {"merge_method": "arcee_fusion", "base_model": "base",
                                     "models": [model("a")]})
    fractions = [np.mean(got[k].to_f64() == v) for k, v in models["a"].items()
                 if v.ndim == 2] if got else [0]
    rest_base = bool(got) and all(np.all((got[k].to_f64() == models["a"][k]) |
                                         (got[k].to_f64() == models["base"][k])) for k in got)
    check(f"arcee_fusion takes {min(fractions):.0%} to {max(fractions):.0%} of each matrix from "
          "the other model, the rest from the base", 0 < min(fractions) and max(fractions) < 0.4
          and rest_base, r.stderr)


def test_cli(d):
    """The command line: -M nuslerp with three --model is the base and the two; -M della
    -p density=0.5 gives every expert that density; -M passthrough -p scale=0.5."""
    models = make_models(d, ["base", "a", "b"], "F32", seed=45)
    paths = {n: os.path.join(d, n) for n in models}
    for label, args, cfg in (
            ("-M nuslerp --model base --model a --model b -p weight=1", [
                "-M", "nuslerp", "--model", paths["base"], "--model", paths["a"], "--model",
                paths["b"], "-p", "weight=1"],
             {"merge_method": "nuslerp", "base_model": "base",
              "models": [model("a", weight=1), model("b", weight=1)]}),
            ("-M della --base base -p density=0.5", [
                "-M", "della", "--base", paths["base"], "--model", paths["a"], "--model",
                paths["b"], "-p", "density=0.5"],
             {"merge_method": "della", "base_model": "base",
              "models": [model("a", weight=1, density=0.5), model("b", weight=1, density=0.5)]}),
            ("-M della_linear --precision f64 -p density=0.3 -p epsilon=0.2 (f64 keys)", [
                "-M", "della_linear", "--precision", "f64", "--base", paths["base"], "--model",
                paths["a"], "--model", paths["b"], "-p", "density=0.3", "-p", "epsilon=0.2"],
             {"merge_method": "della_linear", "base_model": "base",
              "models": [model(x, weight=1, density=0.3, epsilon=0.2) for x in "ab"]}),
            ("-M passthrough --model a -p scale=0.5", [
                "-M", "passthrough", "--model", paths["a"], "-p", "scale=0.5"],
             {"merge_method": "passthrough", "models": [model("a", scale=0.5)]})):
        out = os.path.join(d, "-".join(label.split()[:3]) + ".safetensors")
        r = run("merge", "-q", *args, "-o", out)
        got = ST.read_file(out)[0] if r.returncode == 0 else {}
        want = MK.merge(cfg, models, N_LAYERS)
        worst = max((np.max(np.abs(got[k].to_f64() - v)) / np.max(np.abs(v)) for k, v in
                     want.items()), default=1.0) if got else 1.0
        check(f"{label}: max relative error {worst:.2e}", worst <= 1e-4, r.stderr)
    r = run("merge", "-q", "-M", "nuslerp", "--base", paths["base"], "--model", paths["a"],
            "--model", paths["b"], "-p", "weight=1", "-o", os.path.join(d, "based.safetensors"))
    check("-M nuslerp --base: a warning that the base is not merged and how to make it the base",
          r.returncode == 0 and "--base" in r.stderr and "the first, to make it the base"
          in r.stderr, r.stderr)


# ------------------------------------------------------------------ verbatim configs
# Each config as published (text unchanged), with its parse transcribed for the oracle
# (checked against PyYAML's where it is installed).

RASTOGI = ("R. Rastogi, 'Merging LLMs with mergekit' (Medium, 28 April 2025), the {} example, "
           "stored page id 59932803109 in the search tool's corpus")
HERMES, R1 = "NousResearch/Hermes-3-Llama-3.1-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def rastogi_della(method):
    return (RASTOGI.format(method), "F16", f"""models:
  - model: NousResearch/Hermes-3-Llama-3.1-8B
    parameters:
      weight: 0.3
  - model: deepseek-ai/DeepSeek-R1-Distill-Llama-8B
    parameters:
      weight: 0.7
merge_method: {method}
base_model: meta-llama/Llama-3.1-8B-Instruct
parameters:
  lambda: 0.5
  density: 0.7
  epsilon: 0.01
dtype: float16""", {"models": [{"model": HERMES, "parameters": {"weight": 0.3}},
                               {"model": R1, "parameters": {"weight": 0.7}}],
                    "merge_method": method, "base_model": LLAMA,
                    "parameters": {"lambda": 0.5, "density": 0.7, "epsilon": 0.01},
                    "dtype": "float16"})


KARCHER_DIRS = ("D:/Uni/Masterarbeit Code/jakob_finetuning/finetuned_models/"
                "meta_llama_full_colab_remerge_2",
                "D:/Huggingface/hub/models--VAGOsolutions--Llama-3.1-SauerkrautLM-8b-Instruct/"
                "snapshots/221e5f92f9dc5fedaf4556b1be6b20642638643c")

VERBATIM = [
    rastogi_della("della"),
    rastogi_della("della_linear"),
    (RASTOGI.format("model_stock"), "F16", """models:
  - model: NousResearch/Hermes-3-Llama-3.1-8B
  - model: deepseek-ai/DeepSeek-R1-Distill-Llama-8B
merge_method: model_stock
base_model: meta-llama/Llama-3.1-8B-Instruct
dtype: float16""", {"models": [{"model": HERMES}, {"model": R1}], "merge_method": "model_stock",
                    "base_model": LLAMA, "dtype": "float16"}),
    (RASTOGI.format("nuslerp"), "F16", """models:
  - model: deepseek-ai/DeepSeek-R1-Distill-Llama-8B
    parameters:
      weight: 0.5
  - model: NousResearch/Hermes-3-Llama-3.1-8B
    parameters:
      weight: 0.5
merge_method: nuslerp
base_model: meta-llama/Llama-3.1-8B-Instruct
dtype: float16""", {"models": [{"model": R1, "parameters": {"weight": 0.5}},
                               {"model": HERMES, "parameters": {"weight": 0.5}}],
                    "merge_method": "nuslerp", "base_model": LLAMA, "dtype": "float16"}),
    (RASTOGI.format("sce") + "; weight and lambda, unread, warned about", "F16", """models:
  - model: NousResearch/Hermes-3-Llama-3.1-8B
    parameters:
      weight: 0.3
  - model: deepseek-ai/DeepSeek-R1-Distill-Llama-8B
    parameters:
      weight: 0.7
merge_method: sce
base_model: meta-llama/Llama-3.1-8B-Instruct
parameters:
  lambda: 0.5
  select_topk: 0.7
dtype: float16""", {"models": [{"model": HERMES, "parameters": {"weight": 0.3}},
                               {"model": R1, "parameters": {"weight": 0.7}}],
                    "merge_method": "sce", "base_model": LLAMA,
                    "parameters": {"lambda": 0.5, "select_topk": 0.7}, "dtype": "float16"}),
    ("mergekit's examples/arcee_fusion.yml (arcee-ai/mergekit, commit 86c30b6)", "BF16",
     """models:
  - model: model_a
  - model: model_b
merge_method: arcee_fusion
base_model: model_a
dtype: bfloat16
""", {"models": [{"model": "model_a"}, {"model": "model_b"}], "merge_method": "arcee_fusion",
      "base_model": "model_a", "dtype": "bfloat16"}),
    ("model card of a karcher merge of a Llama-3.1-8B fine-tune and SauerkrautLM, stored page "
     "id 41572828170 in the search tool's corpus", "BF16", """models:
  - model: "D:/Uni/Masterarbeit Code/jakob_finetuning/finetuned_models/meta_llama_full_colab_remerge_2"
  - model: "D:/Huggingface/hub/models--VAGOsolutions--Llama-3.1-SauerkrautLM-8b-Instruct/snapshots/221e5f92f9dc5fedaf4556b1be6b20642638643c"

merge_method: karcher
dtype: bfloat16

parameters:
  max_iter: 10
  tol: 1e-5
""", {"models": [{"model": KARCHER_DIRS[0]}, {"model": KARCHER_DIRS[1]}],
      "merge_method": "karcher", "dtype": "bfloat16",
      "parameters": {"max_iter": 10, "tol": 1e-5}}),
]


def yaml12(x):
    """PyYAML reads YAML 1.1, where 1e-5 (no dot) is a string; YAML 1.2, libyaml's numbers
    in acem and the transcriptions read it as the number."""
    if isinstance(x, dict):
        return {k: yaml12(v) for k, v in x.items()}
    if isinstance(x, list):
        return [yaml12(v) for v in x]
    try:
        return float(x) if isinstance(x, str) and "e" in x else x
    except ValueError:
        return x


def test_verbatim(d):
    try:
        import yaml
    except ImportError:
        yaml = None
    for i, (source, dtype, text, cfg) in enumerate(VERBATIM):
        sub = os.path.join(d, str(i))
        if yaml:
            check(f"verbatim {i}: the transcribed parse is PyYAML's (as YAML 1.2 reads numbers)",
                  yaml12(yaml.safe_load(text)) == cfg)
        base = cfg.get("base_model")
        names = ([base] if base else ["unused-base"]) + [m["model"] for m in cfg["models"]
                                                         if m["model"] != base]
        models = make_models(sub, names, dtype, seed=50 + i)
        print(f"verbatim {i}: {source}")
        merge_and_compare(sub, f"verbatim {i} ({cfg['merge_method']})", text, cfg, models, dtype)


if __name__ == "__main__":
    sys.exit(run_groups([test_generated, test_della_mask, test_seed_and_lambda,
                         test_model_counts, test_scale_zero, test_fusion_mask, test_cli,
                         test_verbatim],
                        "acem-mkmethods-", sys.argv[2:]))
