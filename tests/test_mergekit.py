#!/usr/bin/python3
"""mergekit configurations (per-model weight and density, gradients, filters, normalize,
the base listed under models) run by `acem merge`, compared with a float64 numpy
transcription of mergekit's semantics (tests/oracle/mergekit_np.py), in f32, bf16 and
f16; and real mergekit configurations, verbatim, on tiny stand-in models.

Usage: /usr/bin/python3 tests/test_mergekit.py PATH/TO/acem

Error measure, per tensor: max |acem - oracle| / max |oracle|; the worst is printed per case.
Bounds: 1e-4 for f32 (the brief's bound; acem computes in f32), and 2^-8 (bf16) / 2^-10
(f16) for 16-bit outputs, one rounding of the stored type at the tensor's scale."""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import mergekit_np as MK  # noqa: E402
import safetensors_np as ST  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402

N_LAYERS = 4
BOUND = {"F32": 1e-4, "BF16": 2.0 ** -8, "F16": 2.0 ** -10}


def shapes():
    s = {"model.embed_tokens.weight": (32, 16), "model.norm.weight": (16,),
         "lm_head.weight": (32, 16)}
    for i in range(N_LAYERS):
        s[f"model.layers.{i}.self_attn.q_proj.weight"] = (16, 16)
        s[f"model.layers.{i}.mlp.up_proj.weight"] = (24, 16)
        s[f"model.layers.{i}.input_layernorm.weight"] = (16,)
    return s


def make_models(d, names, dtype, seed=0, scale=0.1):
    """names[0] is the base; each other model is the base plus its own random delta
    (standard deviation `scale`).
    Written as Hugging Face directories at d/<name> (names may hold a slash, as hub ids
    do). Returns name -> {tensor: float64 values as stored}."""
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(v) for k, v in shapes().items()}
    out = {}
    for i, name in enumerate(names):
        vals = {k: v + (0 if i == 0 else scale * rng.standard_normal(v.shape)) for k, v in base.items()}
        tensors = {k: ST.from_f64(v, dtype) for k, v in vals.items()}
        path = os.path.join(d, name)
        os.makedirs(path, exist_ok=True)
        ST.write_file(os.path.join(path, "model.safetensors"), tensors)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"model_type": "llama", "num_hidden_layers": N_LAYERS}, f)
        out[name] = {k: t.to_f64() for k, t in tensors.items()}
    return out


def merge_and_compare(d, label, cfg_text, cfg, models, dtype, extra=()):
    path = os.path.join(d, label.replace("/", "_") + ".yaml")
    with open(path, "w") as f:
        f.write(cfg_text)
    out = os.path.join(d, label.replace("/", "_") + ".safetensors")
    r = run("merge", "-q", path, "-o", out, *extra)
    if r.returncode != 0:
        check(f"{label}: merges", False, r.stderr)
        return
    got = ST.read_file(out)[0]
    want = MK.merge(cfg, models, N_LAYERS)  # acem's default --seed 0 draws DARE's masks
    worst, types = 0.0, {t.dtype for t in got.values()}
    for name, w in want.items():
        err = np.max(np.abs(got[name].to_f64() - w)) / np.max(np.abs(w))
        worst = max(worst, err)
    check(f"{label}: max relative error {worst:.2e} <= {BOUND[dtype]:.0e} ({dtype} out)",
          worst <= BOUND[dtype] and types == {dtype}, (worst, types, r.stderr))


def as_yaml(cfg):
    """JSON is YAML: the generated configs are written so, each model a path."""
    return json.dumps(cfg, indent=1) + "\n"


# ------------------------------------------------------------------ generated configs

def cases():
    """(label, config): every rule of the config model at least once."""
    m = ["base", "a", "b", "c"]
    return [
        ("task_arithmetic/weights", {
            "merge_method": "task_arithmetic", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.5}},
                       {"model": m[2], "parameters": {"weight": 0.3}},
                       {"model": m[3], "parameters": {"weight": -0.2}}]}),
        ("task_arithmetic/normalize,gradient,filter,top-level weight", {
            "merge_method": "task_arithmetic", "base_model": m[0],
            "models": [{"model": m[0]},
                       {"model": m[1], "parameters": {"weight": [0.2, 1.0, 0.4]}},
                       {"model": m[2], "parameters": {"weight": [
                           {"filter": "self_attn", "value": 0.7}, {"value": [0.1, 0.3]}]}},
                       {"model": m[3], "parameters": {}}],
            "parameters": {"normalize": True, "weight": 0.4, "lambda": 0.9}}),
        ("ties/weights,densities,base listed", {
            "merge_method": "ties", "base_model": m[0],
            "models": [{"model": m[0]},
                       {"model": m[1], "parameters": {"weight": 1.0, "density": 0.5}},
                       {"model": m[2], "parameters": {"weight": 0.6, "density": 0.3}},
                       {"model": m[3], "parameters": {"weight": 0.3, "density": 0.7}}]}),
        ("ties/normalize off,int8_mask,density gradient,missed filter", {
            "merge_method": "ties", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.8,
                                                      "density": [0.9, 0.2, 0.5]}},
                       {"model": m[2], "parameters": {"weight": 0.5, "density": [
                           {"filter": "no_such_tensor", "value": 0.1}]}},
                       {"model": m[3], "parameters": {"weight": -0.4, "density": 0.6}}],
            "parameters": {"normalize": False, "int8_mask": True, "density": 0.4,
                           "lambda": 0.8}}),
        ("ties/default density 1 (mergekit's), filtered weights", {
            "merge_method": "ties", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": [
                           {"filter": "mlp", "value": [1.0, 0.0]}, {"value": 0.5}]}},
                       {"model": m[2], "parameters": {"weight": 1.0}},
                       {"model": m[3], "parameters": {"weight": 0.25}}]}),
        ("ties/rescale on (L1)", {
            "merge_method": "ties", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.7, "density": 0.3}},
                       {"model": m[2], "parameters": {"weight": 0.4, "density": 0.6}}],
            "parameters": {"rescale": True}}),
        ("dare_ties/weights,densities (rescale, no normalize by default)", {
            "merge_method": "dare_ties", "base_model": m[0],
            "models": [{"model": m[0]},
                       {"model": m[1], "parameters": {"weight": 0.5, "density": 0.5}},
                       {"model": m[2], "parameters": {"weight": 0.3, "density": 0.7}},
                       {"model": m[3], "parameters": {"weight": 0.4, "density": 0.2}}],
            "parameters": {"int8_mask": True}}),
        ("dare_ties/normalize,rescale off,density gradient,filter,lambda", {
            "merge_method": "dare_ties", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": [0.2, 0.8],
                                                      "density": [0.9, 0.3, 0.6]}},
                       {"model": m[2], "parameters": {"weight": -0.3, "density": [
                           {"filter": "mlp", "value": 0.4}, {"value": 0.8}]}},
                       {"model": m[3], "parameters": {"weight": 0.6}}],
            "parameters": {"normalize": True, "rescale": False, "density": 0.5,
                           "lambda": 0.7}}),
        ("dare_linear/weights,top-level density,lambda", {
            "merge_method": "dare_linear", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.6}},
                       {"model": m[2], "parameters": {"weight": 0.4, "density": 0.9}},
                       {"model": m[3], "parameters": {"weight": 0.2}}],
            "parameters": {"density": 0.35, "lambda": 1.3}}),
        ("dare_linear/normalize,rescale off,filtered weight", {
            "merge_method": "dare_linear", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": [
                           {"filter": "self_attn", "value": 2.0}, {"value": 1.0}],
                           "density": 0.5}},
                       {"model": m[2], "parameters": {"weight": 1.0, "density": 0.25}}],
            "parameters": {"normalize": True, "rescale": False}}),
        ("breadcrumbs/densities,gammas", {
            "merge_method": "breadcrumbs", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.5, "density": 0.8,
                                                      "gamma": 0.05}},
                       {"model": m[2], "parameters": {"weight": 0.3, "density": 0.6}},
                       {"model": m[3], "parameters": {"weight": 0.9, "density": 0.97,
                                                      "gamma": 0.1}}]}),
        ("breadcrumbs_ties/normalize,rescale,gamma gradient,lambda", {
            "merge_method": "breadcrumbs_ties", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.5, "gamma": [0.0, 0.2]}},
                       {"model": m[2], "parameters": {"weight": 0.7}},
                       {"model": m[3], "parameters": {"weight": -0.2, "density": 0.4}}],
            "parameters": {"normalize": True, "rescale": True, "density": 0.7,
                           "gamma": 0.02, "lambda": 0.6}}),
        ("task_arithmetic/one expert, weight gradient", {
            "merge_method": "task_arithmetic", "base_model": m[0],
            "models": [{"model": m[0]},
                       {"model": m[1], "parameters": {"weight": [0.4, 1.2]}}]}),
        ("ties/one expert, density, negative weight, normalize", {
            "merge_method": "ties", "base_model": m[0],
            "models": [{"model": m[2], "parameters": {"weight": -0.7, "density": 0.4}}]}),
        ("dare_ties/one expert", {
            "merge_method": "dare_ties", "base_model": m[0],
            "models": [{"model": m[3], "parameters": {"weight": 0.8, "density": 0.6}}]}),
        ("dare_linear/one expert, rescale off", {
            "merge_method": "dare_linear", "base_model": m[0],
            "models": [{"model": m[1], "parameters": {"weight": 0.9, "density": 0.5}}],
            "parameters": {"rescale": False}}),
        ("breadcrumbs_ties/one expert", {
            "merge_method": "breadcrumbs_ties", "base_model": m[0],
            "models": [{"model": m[2], "parameters": {"weight": 0.6, "density": 0.7,
                                                      "gamma": 0.05}}]}),
        ("linear/one model (the model itself)", {
            "merge_method": "linear",
            "models": [{"model": m[3], "parameters": {"weight": 0.3}}]}),
        ("linear/weights, no base", {
            "merge_method": "linear",
            "models": [{"model": m[1], "parameters": {"weight": 1.0}},
                       {"model": m[2], "parameters": {"weight": 0.3}},
                       {"model": m[3], "parameters": {"weight": 0.5}}]}),
        ("linear/normalize off,gradient,filter,base listed with a weight", {
            "merge_method": "linear", "base_model": m[0],
            "models": [{"model": m[0], "parameters": {"weight": 0.5}},
                       {"model": m[1], "parameters": {"weight": [0.1, 0.9]}},
                       {"model": m[2], "parameters": {"weight": [
                           {"filter": "mlp", "value": 0.2}, {"value": 0.4}]}}],
            "parameters": {"normalize": False}}),
    ]


def test_generated(d):
    for dtype in ("F32", "BF16"):
        sub = os.path.join(d, dtype)
        models = make_models(sub, ["base", "a", "b", "c"], dtype, seed=1)
        for label, cfg in cases():
            merge_and_compare(sub, f"{label} [{dtype}]", as_yaml(cfg), cfg, models, dtype)


def test_refusals_and_warnings(d):
    make_models(d, ["base", "a", "b"], "F32", seed=2)
    cfg = {"merge_method": "task_arithmetic", "base_model": "base",
           "models": [{"model": "a", "parameters": {"weight": 1.0, "wieght": 2}},
                      {"model": "b", "parameters": {"weight": 0.5}}],
           "parameters": {"foo": 3}}
    path = os.path.join(d, "warn.yaml")
    with open(path, "w") as f:
        f.write(as_yaml(cfg))
    r = run("merge", "-q", path, "-o", os.path.join(d, "w.safetensors"))
    w = [ln for ln in r.stderr.splitlines() if ln.startswith("acem: warning: ")]
    check("a parameter the method does not read is warned about, naming it (mergekit "
          "ignores it)", r.returncode == 0 and any('"wieght"' in x for x in w)
          and any('"foo"' in x for x in w), r.stderr)
    cfg["models"][1]["parameters"] = {"density": 0.5}
    del cfg["parameters"]
    with open(path, "w") as f:
        f.write(as_yaml(cfg))
    r = run("merge", "-q", path, "-o", os.path.join(d, "m.safetensors"))
    check("a model without a weight in a mergekit config is refused, naming it",
          one_error_line(r, "no weight", "/b"), r.stderr)
    cfg["models"][1]["parameters"] = {"weight": 2e9}
    with open(path, "w") as f:
        f.write(as_yaml(cfg))
    r = run("merge", "-q", path, "-o", os.path.join(d, "r.safetensors"))
    check("a weight out of range is a usage error", one_error_line(r, "weight") and
          r.returncode == 2, r.stderr)
    one = {"merge_method": "ace", "base_model": "base", "models": [{"model": "a"}]}
    with open(path, "w") as f:
        f.write(as_yaml(one))
    r = run("merge", "-q", path, "-o", os.path.join(d, "one.safetensors"))
    check("one expert for a method that needs two (ace) is a usage error naming the method",
          one_error_line(r, "method ace needs at least 2") and r.returncode == 2, r.stderr)
    cfg["models"][1]["parameters"] = {"weight": 1}
    with open(path, "w") as f:
        f.write(as_yaml(cfg))
    r = run("merge", "-q", path, "--model", os.path.join(d, "b"), "--model",
            os.path.join(d, "a"), "-o", os.path.join(d, "x.safetensors"))
    check("--model replacing a config's models with per-model parameters is refused",
          one_error_line(r, "--model"), r.stderr)


def cli_worst(r, out, cfg, models):
    """The max relative error of a command-line merge against the config's oracle (1 when
    it failed)."""
    got = ST.read_file(out)[0] if r.returncode == 0 else {}
    want = MK.merge(cfg, models, N_LAYERS)
    return max((np.max(np.abs(got[k].to_f64() - v)) / np.max(np.abs(v)) for k, v in
                want.items()), default=1.0) if got else 1.0


def test_cli_linear_without_base(d):
    """acem merge -M linear without --base: the weights' mean (the first model names the
    tensors); -p weight=2 changes nothing under normalize, and normalize=false sums."""
    models = make_models(d, ["a", "b", "c"], "F32", seed=4)
    for label, extra, norm in (("mean", [], True), ("normalize=false", ["-p", "normalize=false"],
                                                    False)):
        out = os.path.join(d, label + ".safetensors")
        r = run("merge", "-q", "-M", "linear", *[x for n in "abc" for x in
                                                  ("--model", os.path.join(d, n))],
                *extra, "-o", out)
        cfg = {"merge_method": "linear", "parameters": {"normalize": norm},
               "models": [{"model": x, "parameters": {"weight": 1}} for x in "abc"]}
        worst = cli_worst(r, out, cfg, models)
        check(f"-M linear without --base, {label} (max relative error {worst:.2e})",
              worst <= 1e-4, r.stderr)


def test_cli_param_for_every_expert(d):
    """-p density=0.3 is every expert's density: the same merge as a mergekit config giving
    each model density 0.3 and weight 1 (whose zero-sum rule is mergekit's: only where a
    weighted sum is exactly 0 do the two differ, which random data never has)."""
    models = make_models(d, ["base", "a", "b"], "F32", seed=3)
    out = os.path.join(d, "cli.safetensors")
    r = run("merge", "-q", "--base", os.path.join(d, "base"), "--model", os.path.join(d, "a"),
            "--model", os.path.join(d, "b"), "-M", "ties", "-p", "density=0.3", "-o", out)
    cfg = {"merge_method": "ties", "base_model": "base",
           "models": [{"model": x, "parameters": {"weight": 1, "density": 0.3}} for x in "ab"]}
    worst = cli_worst(r, out, cfg, models)
    check(f"-p density=0.3 gives every expert density 0.3 (max relative error {worst:.2e})",
          worst <= 1e-4, r.stderr)


# ------------------------------------------------------------------ slerp

T_LAYERS = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
            {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]


def slerp_cases():
    """(label, config, the models' delta scale): the far pair (cos ~ 0.7) is where slerp
    and lerp differ most; the near one (cos > 0.9995) takes mergekit's lerp fallback."""
    return [
        ("slerp/t 0.3, base listed first", {
            "merge_method": "slerp", "base_model": "base",
            "models": [{"model": "base"}, {"model": "a"}], "parameters": {"t": 0.3}}, 1.0),
        ("slerp/t filtered gradients over the layers, base listed second", {
            "merge_method": "slerp", "base_model": "base",
            "models": [{"model": "a"}, {"model": "base"}], "parameters": {"t": T_LAYERS}}, 1.0),
        ("slerp/base not listed under models, t 0.8", {
            "merge_method": "slerp", "base_model": "base", "models": [{"model": "a"}],
            "parameters": {"t": 0.8}}, 1.0),
        ("slerp/nearly colinear: lerp fallback, t 0.4", {
            "merge_method": "slerp", "base_model": "base",
            "models": [{"model": "base"}, {"model": "a"}], "parameters": {"t": 0.4}}, 1e-3),
    ]


def test_slerp(d):
    for dtype in ("F32", "BF16"):
        for k, (label, cfg, scale) in enumerate(slerp_cases()):
            sub = os.path.join(d, f"{dtype}-{k}")
            models = make_models(sub, ["base", "a"], dtype, seed=20 + k, scale=scale)
            branch = "lerp" if scale < 1 else "slerp"
            lerped = {MK.slerp_pair(0.5, b, models["a"][n])[1] for n, b in models["base"].items()}
            report = os.path.join(sub, "report.json")
            merge_and_compare(sub, f"{label} [{dtype}]", as_yaml(cfg), cfg, models, dtype,
                              ("--report", report))
            got = set()
            if os.path.exists(report):  # absent when the merge failed (checked above)
                with open(report) as f:
                    got = {t["branch"] for t in json.load(f)["tensors"]}
            check(f"{label} [{dtype}]: acem and the oracle take the {branch} branch for every "
                  "tensor (--report's branch)", lerped == {scale < 1} and got == {branch}, got)


def test_slerp_ends(d):
    """mergekit's t = 0 is the base_model, t = 1 the other (slerp.py): bit for bit."""
    models = make_models(d, ["base", "a"], "F32", seed=30, scale=1.0)
    for t, want in ((0, "base"), (1, "a")):
        cfg = {"merge_method": "slerp", "base_model": "base",
               "models": [{"model": "a"}, {"model": "base"}], "parameters": {"t": t}}
        path, out = os.path.join(d, f"t{t}.yaml"), os.path.join(d, f"t{t}.safetensors")
        with open(path, "w") as f:
            f.write(as_yaml(cfg))
        r = run("merge", "-q", path, "-o", out)
        got = ST.read_file(out)[0] if r.returncode == 0 else {}
        same = bool(got) and all(np.array_equal(got[k].to_f64(), v)
                                 for k, v in models[want].items())
        check(f"slerp t={t} is {want} exactly", same, r.stderr)


def test_cli_slerp(d):
    """-M slerp --model A --model B: A is t = 0; --base with one --model is refused."""
    models = make_models(d, ["base", "a"], "F32", seed=31, scale=1.0)
    out = os.path.join(d, "cli.safetensors")
    r = run("merge", "-q", "-M", "slerp", "--model", os.path.join(d, "base"), "--model",
            os.path.join(d, "a"), "-p", "t=0.25", "-o", out)
    cfg = {"merge_method": "slerp", "base_model": "base", "models": [{"model": "a"}],
           "parameters": {"t": 0.25}}
    worst = cli_worst(r, out, cfg, models)
    check(f"-M slerp -p t=0.25, the first --model at t = 0 (max relative error {worst:.2e})",
          worst <= 1e-4, r.stderr)
    r = run("merge", "-q", "-M", "slerp", "--base", os.path.join(d, "base"), "--model",
            os.path.join(d, "a"), "-o", os.path.join(d, "x.safetensors"))
    check("-M slerp with one --model is a usage error naming slerp and its 2 models",
          one_error_line(r, "method slerp merges exactly 2 models") and r.returncode == 2,
          r.stderr)


# ------------------------------------------------------------------ verbatim configs
# Each config as published (text unchanged), with its parse transcribed for the oracle
# (checked against PyYAML's where it is installed).

VERBATIM = [
    ("model card of a Llama-2-13B task_arithmetic merge (MedLLaMA), stored page id "
     "19226703100 in the search tool's corpus", "F16", """---
license: llama2
---
""", """merge_method: task_arithmetic
base_model: TheBloke/Llama-2-13B-fp16
models:
  - model: TheBloke/Llama-2-13B-fp16
  - model: KoboldAI/LLaMA2-13B-Tiefighter
    parameters:
      weight: 1.0
  - model: chaoyi-wu/MedLLaMA_13B
    parameters:
      weight: 0.01
  - model: Doctor-Shotgun/llama-2-13b-chat-limarp-v2-merged
    parameters:
      weight: 0.02
dtype: float16
""", {"merge_method": "task_arithmetic", "base_model": "TheBloke/Llama-2-13B-fp16",
      "models": [{"model": "TheBloke/Llama-2-13B-fp16"},
                 {"model": "KoboldAI/LLaMA2-13B-Tiefighter", "parameters": {"weight": 1.0}},
                 {"model": "chaoyi-wu/MedLLaMA_13B", "parameters": {"weight": 0.01}},
                 {"model": "Doctor-Shotgun/llama-2-13b-chat-limarp-v2-merged",
                  "parameters": {"weight": 0.02}}],
      "dtype": "float16"}),
    ("mergekit's examples/vlm-ties.yml (arcee-ai/mergekit, commit e9e19bf): one expert plus "
     "its base, the other entry commented out", "F16", "", """models:
  # - model: impactframes/Qwen2-VL-7B-Captioner
  - model: maxiw/Florence-2-ScreenQA-base
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  # - model: Qwen/Qwen2-VL-7B-Instruct
  - model: microsoft/Florence-2-base
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
merge_method: ties
# base_model: Qwen/Qwen2-VL-7B-Instruct
base_model: microsoft/Florence-2-base
parameters:
  normalize: true
  int8_mask: true
dtype: float16""", {"models": [{"model": "maxiw/Florence-2-ScreenQA-base",
                                "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
                               {"model": "microsoft/Florence-2-base",
                                "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}}],
                    "merge_method": "ties", "base_model": "microsoft/Florence-2-base",
                    "parameters": {"normalize": True, "int8_mask": True}, "dtype": "float16"}),
    ("a mergekit how-to's SLERP example (merge two checkpoints), stored file id 66941243425 "
     "in the search tool's code corpus (its repository unnamed there)", "BF16", "",
     """models:
  - model: ./checkpoint_epoch2
  - model: ./checkpoint_epoch3
merge_method: slerp
base_model: ./checkpoint_epoch2
parameters:
  t: 0.5
dtype: bfloat16
""", {"models": [{"model": "./checkpoint_epoch2"}, {"model": "./checkpoint_epoch3"}],
      "merge_method": "slerp", "base_model": "./checkpoint_epoch2", "parameters": {"t": 0.5},
      "dtype": "bfloat16"}),
    ("model card of a TAIDE + Llama-2-chat task_arithmetic merge, stored page id "
     "20395178690", "BF16", "", """merge_method: task_arithmetic
base_model: NousResearch/Llama-2-7b-hf
models:
   - model: taide/TAIDE-LX-7B
     parameters:
        weight: 1.0
   - model: NousResearch/Llama-2-7b-chat-hf
     parameters:
        weight: 1.0
dtype: bfloat16
""", {"merge_method": "task_arithmetic", "base_model": "NousResearch/Llama-2-7b-hf",
      "models": [{"model": "taide/TAIDE-LX-7B", "parameters": {"weight": 1.0}},
                 {"model": "NousResearch/Llama-2-7b-chat-hf", "parameters": {"weight": 1.0}}],
      "dtype": "bfloat16"}),
    ("M. Labonne, 'Merge Large Language Models with mergekit' (huggingface.co/blog/"
     "mlabonne/merge-models), TIES section, as quoted in stored page id 55833973205", "F16",
     "", """models:
  - model: mistralai/Mistral-7B-v0.1
  - model: OpenPipe/mistral-ft-optimized-1218
    parameters:
      density: 0.5
      weight: 0.5
  - model: mlabonne/NeuralHermes-2.5-Mistral-7B
    parameters:
      density: 0.5
      weight: 0.3
merge_method: ties
base_model: mistralai/Mistral-7B-v0.1
parameters:
  normalize: true
dtype: float16
""", {"models": [{"model": "mistralai/Mistral-7B-v0.1"},
                 {"model": "OpenPipe/mistral-ft-optimized-1218",
                  "parameters": {"density": 0.5, "weight": 0.5}},
                 {"model": "mlabonne/NeuralHermes-2.5-Mistral-7B",
                  "parameters": {"density": 0.5, "weight": 0.3}}],
      "merge_method": "ties", "base_model": "mistralai/Mistral-7B-v0.1",
      "parameters": {"normalize": True}, "dtype": "float16"}),
    ("mergekit's examples/linear.yml (arcee-ai/mergekit, commit bc62b54)", "F16", "",
     """models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      weight: 1.0
  - model: WizardLM/WizardLM-13B-V1.2
    parameters:
      weight: 0.3
  - model: garage-bAInd/Platypus2-13B
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
""", {"models": [{"model": "psmathur/orca_mini_v3_13b", "parameters": {"weight": 1.0}},
                 {"model": "WizardLM/WizardLM-13B-V1.2", "parameters": {"weight": 0.3}},
                 {"model": "garage-bAInd/Platypus2-13B", "parameters": {"weight": 0.5}}],
      "merge_method": "linear", "dtype": "float16"}),
    ("mlabonne/Daredevil-7B's config, as quoted in huggingface.co/mlabonne/Daredevil-7B/"
     "discussions/2 (stored page id 1534177479)", "BF16", "", """models:
  - model: mistralai/Mistral-7B-v0.1
    # No parameters necessary for base model
  - model: samir-fama/SamirGPT-v1
    parameters:
      density: 0.53
      weight: 0.4
  - model: abacusai/Slerp-CM-mist-dpo
    parameters:
      density: 0.53
      weight: 0.3
  - model: EmbeddedLLM/Mistral-7B-Merge-14-v0.2
    parameters:
      density: 0.53
      weight: 0.3
merge_method: dare_ties
base_model: mistralai/Mistral-7B-v0.1
parameters:
  int8_mask: true
dtype: bfloat16
""", {"models": [{"model": "mistralai/Mistral-7B-v0.1"},
                 {"model": "samir-fama/SamirGPT-v1",
                  "parameters": {"density": 0.53, "weight": 0.4}},
                 {"model": "abacusai/Slerp-CM-mist-dpo",
                  "parameters": {"density": 0.53, "weight": 0.3}},
                 {"model": "EmbeddedLLM/Mistral-7B-Merge-14-v0.2",
                  "parameters": {"density": 0.53, "weight": 0.3}}],
      "merge_method": "dare_ties", "base_model": "mistralai/Mistral-7B-v0.1",
      "parameters": {"int8_mask": True}, "dtype": "bfloat16"}),
    ("model card of dare_ties_1_0846 (Llama-3.1-8B-Instruct + Llama-Carvalho-PT), stored page "
     "id 40728339038", "BF16", "", """models:
  - model: "D:/Uni/Masterarbeit Code/jakob_finetuning/finetuned_models/meta_llama_full_colab_remerge_2"
    parameters:
      weight: 1.0
      density: 1.0
  - model: "Nos-PT/Llama-Carvalho-PT"
    parameters:
      weight: 0.846
      density: 1.0

base_model: "unsloth/Meta-Llama-3.1-8B-Instruct"

merge_method: dare_ties
dtype: bfloat16

parameters:
  lambda: 1.0
  rescale: false
""", {"models": [{"model": "D:/Uni/Masterarbeit Code/jakob_finetuning/finetuned_models/"
                           "meta_llama_full_colab_remerge_2",
                  "parameters": {"weight": 1.0, "density": 1.0}},
                 {"model": "Nos-PT/Llama-Carvalho-PT",
                  "parameters": {"weight": 0.846, "density": 1.0}}],
      "base_model": "unsloth/Meta-Llama-3.1-8B-Instruct", "merge_method": "dare_ties",
      "dtype": "bfloat16", "parameters": {"lambda": 1.0, "rescale": False}}),
    ("model card of med-law-dolphin-beagle-merge (breadcrumbs), stored page id 60358828473",
     "F16", "", """models:
  - model: Equall/Saul-Instruct-v1
    parameters:
      weight: 1.0
  - model: BioMistral/BioMistral-7B-SLERP
    parameters:
      weight: 1.0
  - model: cognitivecomputations/dolphin-2.6-mistral-7b
    parameters:
      weight: 0.5
merge_method: breadcrumbs
base_model: mlabonne/NeuralBeagle14-7B

parameters:
    density: 0.9
    gamma: 0.01    
dtype: float16
""", {"models": [{"model": "Equall/Saul-Instruct-v1", "parameters": {"weight": 1.0}},
                 {"model": "BioMistral/BioMistral-7B-SLERP", "parameters": {"weight": 1.0}},
                 {"model": "cognitivecomputations/dolphin-2.6-mistral-7b",
                  "parameters": {"weight": 0.5}}],
      "merge_method": "breadcrumbs", "base_model": "mlabonne/NeuralBeagle14-7B",
      "parameters": {"density": 0.9, "gamma": 0.01}, "dtype": "float16"}),
    ("R. Rastogi, 'Merging LLMs with mergekit' (Medium, 28 April 2025), the breadcrumbs_ties "
     "example, stored page id 59932803109", "F16", "", """models:
  - model: NousResearch/Hermes-3-Llama-3.1-8B
    parameters:
      weight: 0.3
  - model: deepseek-ai/DeepSeek-R1-Distill-Llama-8B
    parameters:
      weight: 0.7
merge_method: breadcrumbs_ties
base_model: meta-llama/Llama-3.1-8B-Instruct
parameters:
  lambda: 0.5
  density: 0.9
  gamma: 0.01

dtype: float16
""", {"models": [{"model": "NousResearch/Hermes-3-Llama-3.1-8B", "parameters": {"weight": 0.3}},
                 {"model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
                  "parameters": {"weight": 0.7}}],
      "merge_method": "breadcrumbs_ties", "base_model": "meta-llama/Llama-3.1-8B-Instruct",
      "parameters": {"lambda": 0.5, "density": 0.9, "gamma": 0.01}, "dtype": "float16"}),
]


def test_verbatim(d):
    try:
        import yaml
    except ImportError:
        yaml = None
    for i, (source, dtype, front, text, cfg) in enumerate(VERBATIM):
        sub = os.path.join(d, str(i))
        if yaml:
            check(f"verbatim {i}: the transcribed parse is PyYAML's", yaml.safe_load(text) == cfg)
        base = cfg.get("base_model")  # linear has none
        names = ([base] if base else []) + [m["model"] for m in cfg["models"]
                                            if m["model"] != base]
        models = make_models(sub, names, dtype, seed=10 + i)
        merge_and_compare(sub, f"verbatim {i} ({cfg['merge_method']}; {source})", front and text
                          or text, cfg, models, dtype)


if __name__ == "__main__":
    sys.exit(run_groups([test_generated, test_refusals_and_warnings,
                         test_cli_param_for_every_expert, test_cli_linear_without_base,
                         test_slerp, test_slerp_ends, test_cli_slerp,
                         test_verbatim],
                        "acem-mergekit-", sys.argv[2:]))
