#!/usr/bin/python3
"""mergekit's keys beyond the merge itself: keys mergekit ignores (its pydantic models drop
unknown keys silently; acem warns, naming the key and where, and goes on; --strict makes
the warning an error), the old `pattern:` condition key (dropped by mergekit, so the
condition matches every tensor), keys mergekit reads and acem does not (refused), a slice's
own `base_model` and `residual_weight`, mergekit-multi documents run in the order of what
they read (multimerge.py's task graph), and the summary line's account of what was merged.

Usage: /usr/bin/python3 tests/test_mergekit_keys.py PATH/TO/acem

Results are compared with the float64 transcription of mergekit (tests/oracle/mergekit_np.py)
or, where a key must change nothing, bit for bit with the same config without it."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import mergekit_np as MK  # noqa: E402
import safetensors_np as ST  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402
from test_mergekit_slices import BOUND, as_yaml, make_models, worst_error, write  # noqa: E402

SRC = lambda m, a, b, **kw: {"model": m, "layer_range": [a, b], **kw}  # noqa: E731


def tensors(out):
    """The output's tensors as stored bytes, name -> (dtype, shape, bytes)."""
    got = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    return {k: (t.dtype, tuple(t.shape), t.to_f64().tobytes()) for k, t in got.items()}


def merged(d, label, cfg_text, *flags):
    """Runs the config; returns (result, tensors or None)."""
    out = os.path.join(d, label + ".out")
    r = run("merge", write(d, label, cfg_text), "-o", out, *flags)
    return r, (tensors(out) if r.returncode == 0 else None)


def warnings_of(r):
    return [ln for ln in r.stderr.splitlines() if ln.startswith("acem: warning: ")]


# ------------------------------------------------------------------ unknown keys

TIES = {"merge_method": "ties", "base_model": "base", "dtype": "float32",
        "models": [{"model": "a", "parameters": {"weight": 0.7, "density": 0.5}},
                   {"model": "b", "parameters": {"weight": 0.4, "density": 0.8}}],
        "parameters": {"normalize": True}}


def test_unknown_keys(d):
    make_models(d, ["base", "a", "b"], "F32", seed=1)
    r0, clean = merged(d, "clean", as_yaml(TIES))
    noisy = {**TIES, "cabs_options": {"k": 3},
             "models": [{**TIES["models"][0], "revision": "main"}, TIES["models"][1]]}
    r, got = merged(d, "noisy", as_yaml(noisy), "--report", os.path.join(d, "r.json"))
    w = warnings_of(r)
    path = os.path.join(d, "noisy.yaml")
    want = [f'{path}: unknown key "revision" in models entry 1 (mergekit ignores it)',
            f'{path}: unknown key "cabs_options" at the top level (mergekit ignores it)']
    check("keys mergekit ignores are warned about in the file's order, each naming the file, "
          "the key and where",
          r.returncode == 0 and [ln[len("acem: warning: "):] for ln in w] == want, r.stderr)
    check("... and change nothing: the output equals the clean config's bit for bit",
          r0.returncode == 0 and got == clean, (r0.stderr, r.stderr))
    report = json.load(open(os.path.join(d, "r.json"))) if r.returncode == 0 else {}
    check("... and the report lists them under warnings",
          all(any(x in m for m in report.get("warnings", [])) for x in want), report)
    r = run("merge", path, "-o", os.path.join(d, "strict.out"), "--strict")
    check("--strict: the first unknown key is an error and nothing is written",
          one_error_line(r, '"revision" in models entry 1', "--strict")
          and not os.path.exists(os.path.join(d, "strict.out")), r.stderr)
    r, _ = merged(d, "strictfile", as_yaml({**noisy, "strict": True}))
    check("strict: true in the file: the same error",
          one_error_line(r, '"revision"') and not os.path.exists(
              os.path.join(d, "strictfile.out")), r.stderr)
    slices = {"merge_method": "passthrough", "dtype": "float32", "shard": 1,
              "slices": [{"sources": [SRC("a", 0, 4, note="x")], "comment": "y"}]}
    r, _ = merged(d, "sl", as_yaml(slices))
    where = [ln.split("(")[0] for ln in warnings_of(r)]
    check("in slices: at the top level, in a slice and in a slice's source, each named",
          r.returncode == 0 and len(where) == 3 and '"shard" at the top level ' in where[0]
          and '"note" in source 1 of slice 1 ' in where[1]
          and '"comment" in slice 1 ' in where[2], r.stderr)
    r, _ = merged(d, "refused", as_yaml({**TIES, "input_model_parameters": {}}))
    check("input_model_parameters: mergekit reads it and acem does not: refused, not ignored",
          one_error_line(r, '"input_model_parameters"', "read by mergekit", "models[]"), r.stderr)
    r, _ = merged(d, "refused", as_yaml({**TIES, "modules": {}}))
    check("modules beside models: refused as mergekit refuses it (exactly one)",
          one_error_line(r, "exactly one", '"modules"'), r.stderr)
    text = as_yaml(TIES).rstrip().rstrip("}") + ', "merge_method": "ties"\n}\n'
    r, _ = merged(d, "twice", text)
    check("a key given twice stays refused (mergekit's reader keeps the last silently)",
          one_error_line(r, '"method" is given twice'), r.stderr)


# mergekit's examples/gradient-slerp.yml at commit 4643a47, verbatim
# (tests/corpus/mergekit/04-mergekit-gradient-slerp.yml): `pattern:` where mergekit reads
# `filter:`.
GRADIENT_SLERP_OLD = """slices:
  - sources:
      - model: psmathur/orca_mini_v3_13b
        layer_range: [0, 40]
      - model: garage-bAInd/Platypus2-13B
        layer_range: [0, 40]
merge_method: slerp
base_model: psmathur/orca_mini_v3_13b
parameters:
  t:
    - pattern: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - pattern: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float16
"""


def test_pattern(d):
    """mergekit's ConditionalParameter has `value` and `filter`; pydantic drops `pattern`,
    so the first condition has no filter and gives every tensor its gradient."""
    with open(os.path.join(HERE, "corpus", "mergekit", "04-mergekit-gradient-slerp.yml")) as f:
        check("the text is the corpus's verbatim copy", f.read() == GRADIENT_SLERP_OLD)
    a, b = "psmathur/orca_mini_v3_13b", "garage-bAInd/Platypus2-13B"
    models = make_models(d, [a, b], "F16", n_layers=40, seed=7)
    grad = [0, 0.5, 0.3, 0.7, 1]
    cfg = {"slices": [{"sources": [SRC(a, 0, 40), SRC(b, 0, 40)]}], "merge_method": "slerp",
           "base_model": a, "dtype": "float16",
           "parameters": {"t": [{"pattern": "self_attn", "value": grad},
                                {"pattern": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                                {"value": 0.5}]}}
    out = os.path.join(d, "old.out")
    r = run("merge", write(d, "old", GRADIENT_SLERP_OLD), "-o", out)
    w = warnings_of(r)
    check("pattern: warned about, twice, saying the condition then matches every tensor",
          r.returncode == 0 and len(w) == 2 and all(
              '"pattern" in a condition of parameter "t"' in ln and "matches every tensor" in ln
              for ln in w), r.stderr)
    if r.returncode != 0:
        return
    got = ST.read_file(os.path.join(out, "model.safetensors"))[0]
    want, _ = MK.merge_slices(cfg, models)
    every = {**cfg, "parameters": {"t": grad}}
    want_every, _ = MK.merge_slices(every, models)
    mlp = "model.layers.5.mlp.up_proj.weight"
    check(f"... read as mergekit reads it: max relative error {worst_error(got, want):.2e} <= "
          f"{BOUND['F16']:.0e}, equal to t = {grad} on every tensor (an mlp tensor too)",
          worst_error(got, want) <= BOUND["F16"]
          and worst_error(got, want_every) <= BOUND["F16"]
          and abs(want[mlp] - want_every[mlp]).max() == 0)
    fixed = GRADIENT_SLERP_OLD.replace("pattern:", "filter:")
    r2, got2 = merged(d, "fixed", fixed)
    check("... which is not the merge that filter: gives (the mlp tensors differ)",
          r2.returncode == 0 and got2[mlp] != tensors(out)[mlp], r2.stderr)


# ------------------------------------------------------------------ slice keys

def test_slice_keys(d):
    make_models(d, ["base", "a", "b"], "F32", seed=2)
    cfg = {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
           "slices": [{"sources": [SRC("base", 0, 2), SRC("a", 0, 2, parameters={"weight": 0.6})]},
                      {"sources": [SRC("base", 2, 4),
                                   SRC("b", 2, 4, parameters={"weight": [0.2, 0.9]})]}]}
    r0, ref = merged(d, "ref", as_yaml(cfg))
    check("reference: a task_arithmetic over two slices runs", r0.returncode == 0, r0.stderr)
    own = {**cfg, "slices": [{**sl, "base_model": "base"} for sl in cfg["slices"]]}
    r, got = merged(d, "own", as_yaml(own))
    check("a slice's base_model equal to the config's changes nothing (bit for bit)",
          r.returncode == 0 and got == ref and not warnings_of(r), r.stderr)
    alone = {k: v for k, v in own.items() if k != "base_model"}
    r, got = merged(d, "alone", as_yaml(alone))
    check("slices' base_model without a top-level one (all the same): the base of every slice, "
          "as mergekit's ConfigReader.base_model reads it (bit for bit)",
          r.returncode == 0 and got == ref, r.stderr)
    other = {**cfg, "slices": [cfg["slices"][0], {**cfg["slices"][1], "base_model": "a"}]}
    r, _ = merged(d, "other", as_yaml(other))
    check("a slice whose base_model is another model is refused, naming the slice",
          one_error_line(r, "slice 2", "base_model", "one base"), r.stderr)
    mixed = {**alone, "slices": [alone["slices"][0], cfg["slices"][1]]}
    r, _ = merged(d, "mixed", as_yaml(mixed))
    check("a base_model in some slices only, none at the top: refused",
          one_error_line(r, "slice 1", "slice 2", "one base"), r.stderr)
    resid = {**cfg, "slices": [{**cfg["slices"][0], "residual_weight": 0.5}, cfg["slices"][1]]}
    r, got = merged(d, "resid", as_yaml(resid))
    check("residual_weight (declared by mergekit, read by none of its code): warned about, "
          "ignored (bit for bit)",
          r.returncode == 0 and got == ref and len(warnings_of(r)) == 1
          and '"residual_weight" in slice 1' in r.stderr, r.stderr)


# ------------------------------------------------------------------ mergekit-multi

def test_multi_order(d):
    """multimerge.py builds a task per document, each depending on the merges it reads; an
    unnamed document is the final merge wherever it is in the file."""
    models = make_models(d, ["base", "a", "b"], "F32", seed=3)
    first = {"name": "first", "merge_method": "task_arithmetic", "base_model": "base",
             "dtype": "float32", "models": [{"model": "a", "parameters": {"weight": 0.5}}]}
    second = {"name": "second", "merge_method": "linear", "dtype": "float32",
              "models": [{"model": "first", "parameters": {"weight": 1.0}},
                         {"model": "b", "parameters": {"weight": 3.0}}]}
    final = {"merge_method": "task_arithmetic", "base_model": "base", "dtype": "float32",
             "models": [{"model": "second", "parameters": {"weight": 0.8}},
                        {"model": "a", "parameters": {"weight": 0.1}}]}
    docs = lambda *ds: "---\n".join(as_yaml(x) for x in ds)  # noqa: E731
    r0, in_order = merged(d, "inorder", docs(first, second, final))
    r, got = merged(d, "reversed", docs(final, second, first))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("acem: stage")]
    m1 = MK.merge({k: v for k, v in first.items() if k != "name"}, models, 4)
    m2 = MK.merge({k: v for k, v in second.items() if k != "name"}, {**models, "first": m1}, 4)
    want = MK.merge(final, {**models, "second": m2}, 4)
    err = worst_error(ST.read_file(os.path.join(d, "reversed.out", "model.safetensors"))[0],
                      want) if got else 1.0
    check(f"documents in reverse order run as their references order them (stage 3, then 2, "
          f"the final document 1 last; max relative error {err:.2e} against mergekit)",
          r.returncode == 0 and len(lines) == 2 and '"first"' in lines[0]
          and '"second"' in lines[1] and err <= 1e-4, (r.stdout, r.stderr))
    check("... and the same bits as the file in order", r0.returncode == 0 and in_order == got,
          r0.stderr)
    named = {**final, "name": "last"}
    r, got = merged(d, "allnamed", docs(named, second, first))
    check("every document named: the final merge is the one no other reads",
          r.returncode == 0 and got == in_order, r.stderr)
    cyc1 = {**first, "models": [{"model": "second", "parameters": {"weight": 0.5}}]}
    r, _ = merged(d, "cycle", docs(cyc1, second, final))
    check("a cycle (first reads second, second reads first) is refused before any merge",
          one_error_line(r, "cycle") and not os.path.exists(os.path.join(d, "cycle.out.stages")),
          r.stderr)
    r, _ = merged(d, "self", docs({**first, "base_model": "first"}, final))
    check("a document reading its own merge is refused", one_error_line(r, "its own"), r.stderr)
    r, _ = merged(d, "two", docs({k: v for k, v in first.items() if k != "name"}, final))
    check("two unnamed documents are refused (mergekit-multi: one unnamed at most)",
          one_error_line(r, "documents 1 and 2", "no \"name\""), r.stderr)
    stage = os.path.join(d, "inorder.out.stages", "first", "model.safetensors")
    before = os.stat(stage).st_mtime_ns
    r = run("merge", "-q", os.path.join(d, "inorder.yaml"), "-o", os.path.join(d, "inorder.out"),
            "-f")
    check("a rerun merges every stage again (mergekit's --lazy reuse is not done)",
          r.returncode == 0 and os.stat(stage).st_mtime_ns != before, r.stderr)


# ------------------------------------------------------------------ summary

def test_summary(d):
    make_models(d, ["base", "a", "b"], "F32", seed=4)
    cases = [
        ("ta", {**TIES, "merge_method": "task_arithmetic"}, "merged 2 experts with task_arithmetic"),
        ("lin", {"merge_method": "linear", "models": [
            {"model": m, "parameters": {"weight": 1}} for m in ("base", "a", "b")]},
         "merged 3 models with linear"),
        ("pt", {"merge_method": "passthrough", "slices": [
            {"sources": [SRC("a", 0, 4)]}, {"sources": [SRC("base", 1, 3)]}]},
         "merged 2 slices of 2 models into 6 layers with passthrough"),
    ]
    for label, cfg, line in cases:
        r, _ = merged(d, label, as_yaml(cfg))
        check(f"summary: \"{line}\"", r.returncode == 0 and line in r.stdout, r.stdout + r.stderr)
    r = run("merge", write(d, "dry", as_yaml(cases[2][1])), "-o", os.path.join(d, "dry.out"),
            "--dry-run")
    check("dry run: \"on 2 slices of 2 models into 6 layers\"",
          r.returncode == 0 and "passthrough on 2 slices of 2 models into 6 layers" in r.stdout,
          r.stdout + r.stderr)


if __name__ == "__main__":
    sys.exit(run_groups([test_unknown_keys, test_pattern, test_slice_keys, test_multi_order,
                         test_summary], "acem-mkkeys-", sys.argv[2:]))
