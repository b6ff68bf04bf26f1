#!/usr/bin/python3
"""mergekit's `slices:` (layer_range, frankenmerges that stack, repeat or drop layers, slice
and source parameters, gradients over each slice), `dtype` (compute) vs `out_dtype`
(storage), and the provenance a merged folder keeps (acem_config.yaml rebuilds the merge),
run by `acem merge` on tiny stand-in models with Llama's and GPT-2's tensor names, compared
with the float64 transcription of mergekit's plan.py and config.py
(tests/oracle/mergekit_np.py: slice_plan, slice_parameter, merge_slices); and real
mergekit configurations with slices, verbatim.

Usage: /usr/bin/python3 tests/test_mergekit_slices.py PATH/TO/acem

Error measure, per tensor: max |acem - oracle| / max |oracle|; the worst is printed per case.
Bounds: 1e-4 for f32, 2^-8 for bf16 and 2^-10 for f16 outputs (one rounding of the stored
type at the tensor's scale)."""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import mergekit_np as MK  # noqa: E402
import safetensors_np as ST  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402

BOUND = {"F32": 1e-4, "BF16": 2.0 ** -8, "F16": 2.0 ** -10}
LLAMA_LAYER = {"self_attn.q_proj.weight": (8, 8), "self_attn.o_proj.weight": (8, 8),
               "mlp.up_proj.weight": (12, 8), "mlp.down_proj.weight": (8, 12),
               "input_layernorm.weight": (8,)}


def llama_shapes(n_layers):
    s = {"model.embed_tokens.weight": (16, 8)}
    for i in range(n_layers):
        for k, v in LLAMA_LAYER.items():
            s[f"model.layers.{i}.{k}"] = v
    s["model.norm.weight"] = (8,)
    s["lm_head.weight"] = (16, 8)
    return s


def gpt2_shapes(n_layers):
    s = {"transformer.wte.weight": (16, 8), "transformer.wpe.weight": (8, 8)}
    for i in range(n_layers):
        s[f"transformer.h.{i}.attn.c_attn.weight"] = (8, 24)
        s[f"transformer.h.{i}.ln_1.weight"] = (8,)
    s["transformer.ln_f.weight"] = (8,)
    return s


def make_models(d, names, dtype, n_layers=4, seed=0, scale=0.1, gpt2=False):
    """names[0] is the base; each other model is the base plus its own random delta. Written
    as Hugging Face directories at d/<name> with a config.json naming the layer count.
    Returns name -> {tensor: float64 values as stored}."""
    rng = np.random.default_rng(seed)
    shapes = (gpt2_shapes if gpt2 else llama_shapes)(n_layers)
    base = {k: rng.standard_normal(v) for k, v in shapes.items()}
    out = {}
    for i, name in enumerate(names):
        vals = {k: v + (0 if i == 0 else scale * rng.standard_normal(v.shape))
                for k, v in base.items()}
        tensors = {k: ST.from_f64(v, dtype) for k, v in vals.items()}
        path = os.path.join(d, name)
        os.makedirs(path, exist_ok=True)
        ST.write_file(os.path.join(path, "model.safetensors"), tensors)
        cfg = ({"model_type": "gpt2", "n_layer": n_layers, "n_embd": 8} if gpt2 else
               {"model_type": "llama", "num_hidden_layers": n_layers, "hidden_size": 8})
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f)
        out[name] = {k: t.to_f64() for k, t in tensors.items()}
    return out


def write(d, label, text):
    path = os.path.join(d, label + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def as_yaml(cfg):
    """JSON is YAML: the generated configs are written so, each model a path."""
    return json.dumps(cfg, indent=1) + "\n"


def worst_error(got, want):
    worst = 0.0
    for name, w in want.items():
        scale = np.max(np.abs(w)) or 1.0
        worst = max(worst, np.max(np.abs(got[name].to_f64() - w)) / scale)
    return worst


def merge_and_compare(d, label, text, cfg, models, dtype):
    """Runs the config into a directory; checks the tensor names and order, config.json's
    layer count and the values against the oracle. Returns the output directory."""
    out = os.path.join(d, label.split(" ")[0].replace("/", "_") + ".out")
    r = run("merge", "-q", write(d, label.split(" ")[0].replace("/", "_"), text), "-o", out)
    if r.returncode != 0:
        check(f"{label}: merges", False, r.stderr)
        return None
    got = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    order = list(got)  # in data order
    want, n_layers = MK.merge_slices(cfg, models)
    with open(os.path.join(out, "config.json")) as f:
        layers = json.load(f).get("num_hidden_layers", None)
    worst, types = worst_error(got, want), {t.dtype for t in got.values()}
    check(f"{label}: {len(want)} tensors, {n_layers} layers, max relative error {worst:.2e} <= "
          f"{BOUND[dtype]:.0e} ({dtype} out)",
          list(order) == list(want) and layers == n_layers and worst <= BOUND[dtype]
          and types == {dtype}, (list(order)[:6], list(want)[:6], layers, n_layers, worst,
                                 types, r.stderr))
    return out


# ------------------------------------------------------------------ frankenmerges

def hf_directory_ok(out, n_layers, shapes):
    """What a Hugging Face loader needs of the folder: config.json's layer count, one
    safetensors file holding exactly the architecture's tensors for that many layers, each
    of its shape."""
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    key = "n_layer" if cfg.get("model_type") == "gpt2" else "num_hidden_layers"
    got = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    want = shapes(n_layers)
    return (cfg.get(key) == n_layers and set(got) == set(want)
            and all(tuple(got[k].shape) == v for k, v in want.items())), (cfg, sorted(got))


def test_frankenmerge(d):
    """Passthrough slices that overlap (layers 2 of a taken twice), repeat a model and drop
    layers, one source's o_proj and down_proj scaled to 0 (a filtered `scale`), and the
    final norm and head from the last slice's model."""
    models = make_models(d, ["a", "b"], "F32", n_layers=4, seed=1)
    cfg = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 3]}]},
        {"sources": [{"model": "a", "layer_range": [2, 4], "parameters": {"scale": [
            {"filter": "o_proj", "value": 0.0}, {"filter": "down_proj", "value": 0.0},
            {"value": 1.0}]}}]},
        {"sources": [{"model": "b", "layer_range": [1, 3]}]}]}
    out = merge_and_compare(d, "passthrough/overlapping slices", as_yaml(cfg), cfg, models, "F32")
    if not out:
        return
    ok, detail = hf_directory_ok(out, 7, llama_shapes)
    check("frankenmerge: a valid Hugging Face directory of 7 layers (config.json updated, "
          "tensors renumbered 0..6)", ok, detail)
    got = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    a, b = models["a"], models["b"]
    same = (np.array_equal(got["model.layers.4.mlp.up_proj.weight"].to_f64(),
                           a["model.layers.3.mlp.up_proj.weight"])
            and np.array_equal(got["model.layers.6.self_attn.q_proj.weight"].to_f64(),
                               b["model.layers.2.self_attn.q_proj.weight"])
            and not got["model.layers.3.self_attn.o_proj.weight"].to_f64().any()
            and np.array_equal(got["model.embed_tokens.weight"].to_f64(),
                               a["model.embed_tokens.weight"])
            and np.array_equal(got["lm_head.weight"].to_f64(), b["lm_head.weight"]))
    check("frankenmerge: values equal to the sources' bit for bit (output layer 4 is a's 3, 6 "
          "is b's 2; embeddings from the first slice's model, the head from the last's)", same)
    again = os.path.join(d, "again")
    r = run("merge", "-q", os.path.join(out, "acem_config.yaml"), "-o", again)
    with open(os.path.join(out, "model.safetensors"), "rb") as f1:
        first = f1.read()
    rebuilt = r.returncode == 0 and open(os.path.join(again, "model.safetensors"), "rb").read()
    check("frankenmerge: the folder's acem_config.yaml (slices, layer ranges, the source's "
          "scale conditions) rebuilds it byte for byte", rebuilt == first, r.stderr)


def test_gpt2_layers(d):
    """GPT-2's layer count is n_layer; its names hold the layer as transformer.h.N."""
    make_models(d, ["g"], "F32", n_layers=3, gpt2=True)
    cfg = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": "g", "layer_range": [0, 2]}]},
        {"sources": [{"model": "g", "layer_range": [1, 3]}]},
        {"sources": [{"model": "g", "layer_range": [1, 2]}]}]}
    out = os.path.join(d, "g.out")
    r = run("merge", "-q", write(d, "g", as_yaml(cfg)), "-o", out)
    ok, detail = (hf_directory_ok(out, 5, gpt2_shapes) if r.returncode == 0
                  else (False, r.stderr))
    check("GPT-2 frankenmerge: n_layer 5, transformer.h.0..4, wte/wpe before, ln_f after", ok,
          detail)


# ------------------------------------------------------------------ merges over slices

def slice_cases():
    """(label, config, dtype): slerp with layer_range and gradients, slices of other ranges,
    slice and source parameters in mergekit's lookup order."""
    grad_t = {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                    {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}
    two = [{"model": "base", "layer_range": [0, 4]}, {"model": "a", "layer_range": [0, 4]}]
    return [
        ("slerp/layer_range,gradients", {"merge_method": "slerp", "base_model": "base",
                                          "slices": [{"sources": two}],
                                          "parameters": grad_t}, "F32"),
        ("slerp/layer_range,gradients bf16", {"merge_method": "slerp", "base_model": "base",
                                               "slices": [{"sources": two}],
                                               "parameters": grad_t, "dtype": "bfloat16"},
         "BF16"),
        ("slerp/two slices, other ranges, slice-level t over each slice", {
            "merge_method": "slerp", "base_model": "base", "slices": [
                {"sources": [{"model": "base", "layer_range": [0, 2]},
                             {"model": "a", "layer_range": [2, 4]}],
                 "parameters": {"t": [0.1, 0.9]}},
                {"sources": [{"model": "a", "layer_range": [1, 4]},
                             {"model": "base", "layer_range": [0, 3]}]}],
            "parameters": {"t": 0.3}}, "F32"),
        ("task_arithmetic/source weights, slice weight, top-level fallback", {
            "merge_method": "task_arithmetic", "base_model": "base", "slices": [
                {"sources": [{"model": "base", "layer_range": [0, 2]},
                             {"model": "a", "layer_range": [0, 2],
                              "parameters": {"weight": [0.2, 1.0]}},
                             {"model": "b", "layer_range": [2, 4]}],
                 "parameters": {"weight": 0.5}},
                {"sources": [{"model": "base", "layer_range": [2, 4]},
                             {"model": "a", "layer_range": [2, 4]},
                             {"model": "b", "layer_range": [0, 2],
                              "parameters": {"weight": [{"filter": "mlp", "value": -0.4}]}}]}],
            "parameters": {"weight": 0.3, "lambda": 0.9}}, "F32"),
        ("ties/densities per source, normalize per slice", {
            "merge_method": "ties", "base_model": "base", "slices": [
                {"sources": [{"model": "a", "layer_range": [0, 4],
                              "parameters": {"weight": 0.7, "density": [0.9, 0.3]}},
                             {"model": "base", "layer_range": [0, 4]},
                             {"model": "b", "layer_range": [0, 4],
                              "parameters": {"weight": 0.4, "density": 0.5}}],
                 "parameters": {"normalize": False}}]}, "F32"),
        ("della_linear/modules: default (one module): its slices, gradients per source", {
            "merge_method": "della_linear", "base_model": "base", "modules": {"default": {
                "slices": [{"sources": [
                    {"model": "a", "layer_range": [0, 4],
                     "parameters": {"weight": [0.9, 0.2, 0.95], "density": 0.5, "epsilon": 0.4}},
                    {"model": "b", "layer_range": [0, 4],
                     "parameters": {"weight": [0.1, 0.9, 0.3], "density": 0.5, "epsilon": 0.4}},
                    {"model": "base", "layer_range": [0, 4]}]}]}},
            "parameters": {"lambda": 1.0, "normalize": 1.0}}, "F32"),
        ("linear/slices without a base", {
            "merge_method": "linear", "slices": [
                {"sources": [{"model": "a", "layer_range": [0, 3],
                              "parameters": {"weight": 0.75}},
                             {"model": "b", "layer_range": [1, 4],
                              "parameters": {"weight": 0.25}}]}]}, "F32"),
    ]


def test_slices(d):
    for i, (label, cfg, dtype) in enumerate(slice_cases()):
        sub = os.path.join(d, str(i))
        models = make_models(sub, ["base", "a", "b"], dtype, seed=20 + i)
        merge_and_compare(sub, label, as_yaml(cfg), cfg, models, dtype)


def test_refusals(d):
    make_models(d, ["base", "a", "b"], "F32", seed=3)

    def refused(label, cfg, *phrases):
        r = run("merge", "-q", write(d, "x", as_yaml(cfg)), "-o", os.path.join(d, "x.out"))
        check(label, one_error_line(r, *phrases) and not os.path.exists(os.path.join(d, "x.out")),
              r.stderr)

    src = lambda m, a, b: {"model": m, "layer_range": [a, b]}  # noqa: E731
    refused("sources of a slice spanning different layer counts are refused (mergekit too)",
            {"merge_method": "slerp", "base_model": "base",
             "slices": [{"sources": [src("base", 0, 4), src("a", 0, 3)]}],
             "parameters": {"t": 0.5}}, "slice 1", "different numbers of layers")
    refused("a layer_range past the model's layers is refused, naming the model",
            {"merge_method": "passthrough", "slices": [{"sources": [src("a", 2, 6)]}]},
            "/a", "[2, 6)", "has 4")
    refused("a slice without the base is refused for a method of deltas",
            {"merge_method": "ties", "base_model": "base",
             "slices": [{"sources": [src("a", 0, 4)]}]}, "slice 1", "base_model")
    refused("passthrough of two sources in one slice is refused (mergekit: exactly one)",
            {"merge_method": "passthrough",
             "slices": [{"sources": [src("a", 0, 4), src("b", 0, 4)]}]}, "passthrough")
    refused("slices merging different numbers of models are refused",
            {"merge_method": "task_arithmetic", "base_model": "base", "parameters": {"weight": 1},
             "slices": [{"sources": [src("base", 0, 2), src("a", 0, 2)]},
                        {"sources": [src("base", 2, 4), src("a", 2, 4), src("b", 2, 4)]}]},
            "slice 2", "same number")
    refused("models and slices together are refused (mergekit: exactly one)",
            {"merge_method": "passthrough", "models": [{"model": "a"}],
             "slices": [{"sources": [src("a", 0, 4)]}]}, "not both")
    module = {"slices": [{"sources": [src("a", 0, 4)]}]}
    refused("a module other than default is refused (acem's architectures have one)",
            {"merge_method": "passthrough", "modules": {"vision_tower": module}},
            "vision_tower", "default")
    refused("a module's own parameters are refused, not ignored",
            {"merge_method": "passthrough", "modules": {"default": {**module,
                                                                   "parameters": {"scale": 2}}}},
            "module", "parameters")
    refused("modules and slices together are refused (mergekit: exactly one)",
            {"merge_method": "passthrough", "modules": {"default": module}, **module},
            "exactly one", "modules")
    refused("a module without slices or models is refused",
            {"merge_method": "passthrough", "modules": {"default": {}}}, "default", "slices")
    refused("a layer_range that is not [start, end) with start < end is refused",
            {"merge_method": "passthrough", "slices": [{"sources": [src("a", 3, 3)]}]},
            "layer_range")


# ------------------------------------------------------------------ dtype, provenance

def test_dtype_out_dtype(d):
    """mergekit's dtype is the compute type and, without out_dtype, the stored one."""
    make_models(d, ["base", "a"], "F32", seed=4)
    cases = [({"dtype": "float32", "out_dtype": "bfloat16"}, "BF16", "f32"),
             ({"dtype": "bfloat16"}, "BF16", "f32"),
             ({"out_dtype": "float16"}, "F16", "f32"),
             ({"dtype": "float64", "out_dtype": "float32"}, "F32", "f64")]
    for extra, stored, precision in cases:
        cfg = {"merge_method": "task_arithmetic", "base_model": "base",
               "models": [{"model": "a", "parameters": {"weight": 0.5}}], **extra}
        out = os.path.join(d, "-".join(extra.values()))
        r = run("merge", "-q", write(d, "dt", as_yaml(cfg)), "-o", out)
        types = ({t.dtype for t in ST.read_file(os.path.join(out, "model.safetensors"))[0]
                  .values()} if r.returncode == 0 else set())
        card = open(os.path.join(out, "acem_config.yaml")).read() if r.returncode == 0 else ""
        check(f"{extra}: stored {stored}, computed in {precision}",
              types == {stored} and f"precision: {precision}\n" in card, (types, r.stderr, card))


def test_provenance(d):
    """acem_config.yaml holds every model's own parameters (gradients and conditions as
    given), so that a mergekit merge reruns from it; the top level's settings too."""
    try:
        import yaml
    except ImportError:
        yaml = None
    make_models(d, ["base", "a", "b"], "F32", seed=5)
    own = [{"weight": [0.2, 0.9], "density": [{"filter": "mlp", "value": 0.5}, {"value": 0.8}]},
           {"weight": 0.4}]
    cfg = {"merge_method": "ties", "base_model": "base",
           "models": [{"model": "a", "parameters": own[0]}, {"model": "b", "parameters": own[1]}],
           "parameters": {"density": [0.3, 0.6], "normalize": True}}
    out = os.path.join(d, "p.out")
    r = run("merge", "-q", write(d, "p", as_yaml(cfg)), "-o", out)
    check("a mergekit config merges", r.returncode == 0, r.stderr)
    if r.returncode != 0:
        return
    path = os.path.join(out, "acem_config.yaml")
    if yaml:
        card = yaml.safe_load(open(path))
        check("acem_config.yaml records each model's own parameters as given",
              [m.get("parameters") for m in card["models"]] == own, card)
        check("acem_config.yaml records the top level's gradient, not its first value",
              card["parameters"]["density"] == [0.3, 0.6], card["parameters"])
    again = os.path.join(d, "again")
    r = run("merge", "-q", path, "-o", again)
    same = r.returncode == 0 and (open(os.path.join(out, "model.safetensors"), "rb").read() ==
                                  open(os.path.join(again, "model.safetensors"), "rb").read())
    check("the merge reruns from acem_config.yaml byte for byte", same, r.stderr)


# ------------------------------------------------------------------ mergekit-multi

def test_multi_document(d):
    """Documents separated by ---, each a merge; a later one reads an earlier one's output by
    its name (mergekit-multi); the named ones land in the stage directory acem makes."""
    models = make_models(d, ["base", "a", "b"], "F32", seed=6)
    first = {"name": "blend", "merge_method": "slerp", "base_model": "base", "dtype": "float32",
             "slices": [{"sources": [{"model": "base", "layer_range": [0, 4]},
                                     {"model": "a", "layer_range": [0, 4]}]}],
             "parameters": {"t": [0.2, 0.8]}}
    last = {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
            "models": [{"model": "blend", "parameters": {"weight": 0.7}},
                       {"model": "b", "parameters": {"weight": [0.1, 0.4]}}]}
    path = write(d, "multi", as_yaml(first) + "---\n" + as_yaml(last))
    out = os.path.join(d, "final")
    r = run("merge", path, "-o", out)
    stage = os.path.join(d, "final.stages", "blend")
    if r.returncode != 0 or not os.path.isdir(stage):
        check("a two-document config runs", False, r.stderr)
        return
    got1 = ST.read_file(os.path.join(stage, "model.safetensors"))[0]
    cfg1 = {k: v for k, v in first.items() if k != "name"}
    err1 = worst_error(got1, MK.merge_slices(cfg1, models)[0])
    models["blend"] = {k: t.to_f64() for k, t in got1.items()}
    got2 = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    err2 = worst_error(got2, MK.merge(last, models, 4))
    check(f"mergekit-multi: stage \"blend\" in OUT.stages/blend (max relative error {err1:.2e}), "
          f"the last document reads it by name (max relative error {err2:.2e}), and the stage "
          "is reported", err1 <= 1e-4 and err2 <= 1e-4 and stage in r.stdout, r.stdout)
    r = run("merge", "-q", path, "-o", out, "-f")
    check("mergekit-multi: a rerun replaces its own stages", r.returncode == 0, r.stderr)
    in_order = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    for label, text in (("forward", as_yaml(last) + "---\n" + as_yaml(first)),
                        ("forward2", as_yaml({**last, "name": "x"}) + "---\n" + as_yaml(first))):
        r = run("merge", "-q", write(d, label, text), "-o", os.path.join(d, label + ".out"))
        got = (ST.read_file(os.path.join(d, label + ".out", "model.safetensors"))[0]
               if r.returncode == 0 else {})
        check(f"mergekit-multi ({label}): a document reading a later one's merge runs after it "
              "(tests/test_mergekit_keys.py has the order's rules), the same bits",
              got.keys() == in_order.keys() and all(
                  got[k].to_f64().tobytes() == in_order[k].to_f64().tobytes() for k in got),
              r.stderr)
    mega = {**{k: v for k, v in first.items() if k != "name"}, "out_path": "./models/blend"}
    later = {**last, "models": [{"model": "./models/blend", "parameters": {"weight": 0.7}},
                                last["models"][1]]}
    r = run("merge", "-q", write(d, "mega", as_yaml(mega) + "---\n" + as_yaml(later)), "-o",
            os.path.join(d, "mega.out"))
    stage = os.path.join(d, "models", "blend", "model.safetensors")
    same = (r.returncode == 0 and os.path.exists(stage) and
            worst_error(ST.read_file(os.path.join(d, "mega.out", "model.safetensors"))[0],
                        MK.merge(later, {**models, "./models/blend": models["blend"]}, 4)) <= 1e-4)
    check("mergekit-mega: a document's out_path (beside the config) is where it is written and "
          "where a later document reads it", same, r.stderr)
    mine = os.path.join(d, "mine")
    os.mkdir(mine)
    open(os.path.join(mine, "notes.txt"), "w").close()
    r = run("merge", "-q", write(d, "multi", as_yaml(first) + "---\n" + as_yaml(last)), "-o",
            os.path.join(d, "other"), "--intermediate-dir", mine)
    check("mergekit-multi: a directory of the user's is never the stage directory",
          one_error_line(r, "mine", "not empty") and os.listdir(mine) == ["notes.txt"], r.stderr)


# ------------------------------------------------------------------ verbatim configs

# (source, stored dtype, layers of the stand-ins, text, PyYAML's parse of it)
VERBATIM = [
    ("mergekit's examples/gradient-slerp.yml (arcee-ai/mergekit, commit bc62b54)", "F16", 40,
     """slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 40]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 40]
# or, the equivalent models: syntax:
# models:
#   - model: psmathur/orca_mini_v3_13b
#   - model: garage-bAInd/Platypus2-13B
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5 # fallback for rest of tensors
dtype: float16
""", {"slices": [{"sources": [
        {"model": "psmathur/orca_mini_v3_13b", "layer_range": [0, 40]},
        {"model": "garage-bAInd/Platypus2-13B", "layer_range": [0, 40]}]}],
      "merge_method": "slerp", "base_model": "psmathur/orca_mini_v3_13b",
      "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                           {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                           {"value": 0.5}]},
      "dtype": "float16"}),
    ("mergekit's examples/orcamini-platy-44layer.yml (arcee-ai/mergekit, commit 4643a47)",
     "F16", 40, """slices:
  - sources:
    - model: psmathur/orca_mini_v3_13b
      layer_range: [0, 24]
  - sources:
    - model: garage-bAInd/Platypus2-13B
      layer_range: [20, 40]
merge_method: passthrough
dtype: float16
""", {"slices": [{"sources": [{"model": "psmathur/orca_mini_v3_13b", "layer_range": [0, 24]}]},
                {"sources": [{"model": "garage-bAInd/Platypus2-13B",
                              "layer_range": [20, 40]}]}],
      "merge_method": "passthrough", "dtype": "float16"}),
    ("model card of MohammadOthman/Mistral-NeuralHermes-Merge-7B-slerp (huggingface.co/"
     "MohammadOthman/Mistral-NeuralHermes-Merge-7B-slerp/resolve/main/README.md, stored in the "
     "search tool's pages corpus with its indentation collapsed; restored as YAML requires)",
     "BF16", 32, """slices:
  - sources:
      - model: OpenPipe/mistral-ft-optimized-1218
        layer_range: [0, 32]
      - model: mlabonne/NeuralHermes-2.5-Mistral-7B
        layer_range: [0, 32]
merge_method: slerp
base_model: OpenPipe/mistral-ft-optimized-1218
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
""", {"slices": [{"sources": [
        {"model": "OpenPipe/mistral-ft-optimized-1218", "layer_range": [0, 32]},
        {"model": "mlabonne/NeuralHermes-2.5-Mistral-7B", "layer_range": [0, 32]}]}],
      "merge_method": "slerp", "base_model": "OpenPipe/mistral-ft-optimized-1218",
      "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                           {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                           {"value": 0.5}]},
      "dtype": "bfloat16"}),
    ("model card of Edens-Gate/Holland-Magnum-Merge-R2 (a mergekit-written task_arithmetic "
     "config with per-source weights; stored in the search tool's pages corpus as a table, "
     "its indentation restored as mergekit writes it)", "BF16", 32,
     """base_model: Delta-Vector/Holland-4B-V1
dtype: bfloat16
merge_method: task_arithmetic
parameters:
  normalize: false
slices:
- sources:
  - layer_range: [0, 32]
    model: Delta-Vector/Holland-4B-V1
  - layer_range: [0, 32]
    model: NewEden/Holland-V2
    parameters:
      weight: 0.50
  - layer_range: [0, 32]
    model: anthracite-org/magnum-v2-4b
    parameters:
      weight: 0.50
""", {"base_model": "Delta-Vector/Holland-4B-V1", "dtype": "bfloat16",
      "merge_method": "task_arithmetic", "parameters": {"normalize": False},
      "slices": [{"sources": [
          {"layer_range": [0, 32], "model": "Delta-Vector/Holland-4B-V1"},
          {"layer_range": [0, 32], "model": "NewEden/Holland-V2",
           "parameters": {"weight": 0.5}},
          {"layer_range": [0, 32], "model": "anthracite-org/magnum-v2-4b",
           "parameters": {"weight": 0.5}}]}]}),
]


def test_verbatim(d):
    try:
        import yaml
    except ImportError:
        yaml = None
    for i, (source, dtype, n_layers, text, cfg) in enumerate(VERBATIM):
        sub = os.path.join(d, str(i))
        if yaml:
            check(f"verbatim {i}: the transcribed parse is PyYAML's", yaml.safe_load(text) == cfg)
        base = cfg.get("base_model")
        names = ([base] if base else []) + sorted({s["model"] for sl in cfg["slices"]
                                                  for s in sl["sources"]} - {base})
        models = make_models(sub, names, dtype, n_layers=n_layers, seed=40 + i)
        merge_and_compare(sub, f"verbatim{i} ({cfg['merge_method']}; {source})", text, cfg,
                          models, dtype)


if __name__ == "__main__":
    sys.exit(run_groups([test_frankenmerge, test_gpt2_layers, test_slices, test_refusals,
                         test_dtype_out_dtype, test_provenance, test_multi_document,
                         test_verbatim],
                        "acem-mkslices-", sys.argv[2:]))
