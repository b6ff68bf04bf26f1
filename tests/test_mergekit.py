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


def make_models(d, names, dtype, seed=0):
    """names[0] is the base; each other model is the base plus its own random delta.
    Written as Hugging Face directories at d/<name> (names may hold a slash, as hub ids
    do). Returns name -> {tensor: float64 values as stored}."""
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(v) for k, v in shapes().items()}
    out = {}
    for i, name in enumerate(names):
        vals = {k: v + (0 if i == 0 else 0.1 * rng.standard_normal(v.shape)) for k, v in base.items()}
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
    want = MK.merge(cfg, models, N_LAYERS)
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
    cfg["models"][1]["parameters"] = {"weight": 1}
    with open(path, "w") as f:
        f.write(as_yaml(cfg))
    r = run("merge", "-q", path, "--model", os.path.join(d, "b"), "--model",
            os.path.join(d, "a"), "-o", os.path.join(d, "x.safetensors"))
    check("--model replacing a config's models with per-model parameters is refused",
          one_error_line(r, "--model"), r.stderr)


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
    want = MK.merge(cfg, models, N_LAYERS)
    got = ST.read_file(out)[0] if r.returncode == 0 else {}
    worst = max((np.max(np.abs(got[k].to_f64() - v)) / np.max(np.abs(v)) for k, v in
                 want.items()), default=1.0) if got else 1.0
    check(f"-p density=0.3 gives every expert density 0.3 (max relative error {worst:.2e})",
          worst <= 1e-4, r.stderr)


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
        names = [cfg["base_model"]] + [m["model"] for m in cfg["models"]
                                       if m["model"] != cfg["base_model"]]
        models = make_models(sub, names, dtype, seed=10 + i)
        merge_and_compare(sub, f"verbatim {i} ({cfg['merge_method']}; {source})", front and text
                          or text, cfg, models, dtype)


if __name__ == "__main__":
    sys.exit(run_groups([test_generated, test_refusals_and_warnings,
                         test_cli_param_for_every_expert, test_verbatim],
                        "acem-mergekit-", sys.argv[2:]))
