#!/usr/bin/python3
"""Everyday inputs (issue 16, items 8-11 and 15): what acem accepts, refuses and says.

  8  mixed dtypes: every float or block type of an input is read as stored and converted
     to the compute precision; only names and shapes must agree; the output keeps the
     base's type per tensor; bytes read are counted per input as stored; refusals name
     types as each file stores them (Q8_0, not the F32 it dequantises to).
  9  tensors an expert has and the base lacks: a warning names them, the report lists
     them, --strict (or `strict: true`) makes it an error.
 10  non-float tensors the base has and an expert lacks are copied from the base; a name
     that differs by a prefix gets a hint.
 11  F8_E4M3 / F8_E5M2 tensors are refused with one line naming file and tensor, unless
     excluded, and then kept from the base with their scales.
 15  warnings for an --exclude matching nothing, a --covariance-axis input that changes
     nothing, regmean tensors without Gram matrices (counted in the metadata), a Gram
     matrix of the other axis (an error naming --covariance-axis), square Conv1D weights
     whose axis cannot be checked, the same expert given twice; the covariance axis is
     recorded in the summary, the report and the output's metadata.

Merged values are compared with a float64 numpy computation over the inputs as stored
(tests/oracle/safetensors_np.py, tests/oracle/gguf_np.py).

usage: /usr/bin/python3 tests/test_inputs.py PATH_TO_acem
"""

import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import gguf_np as G  # noqa: E402
import safetensors_np as st  # noqa: E402
from harness import check, run_groups  # noqa: E402

ACEM = os.path.abspath(sys.argv[1])




def run(args, cwd=None):
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def merge(base, models, method, out, *extra, quiet=True):
    argv = ["merge", "-b", base] + (["-q"] if quiet else [])
    for m in models:
        argv += ["-m", m]
    return run(argv + ["-M", method, "-o", out, *extra])


def warnings(r):
    return [ln for ln in r.stderr.splitlines() if ln.startswith("acem: warning: ")]


def warned(r, *phrases):
    """Succeeded, and one warning line holds every phrase."""
    return r.returncode == 0 and any(all(p in w for p in phrases) for w in warnings(r))


def one_error_line(r, *phrases):
    lines = r.stderr.rstrip("\n").split("\n")
    return (r.returncode == 1 and len(lines) == 1 and lines[0].startswith("acem: error: ")
            and all(p in lines[0] for p in phrases))


def write(path, tensors, metadata=None):
    """tensors: name -> (dtype, float64 values or a Tensor)."""
    st.write_file(path, {n: v if isinstance(v, st.Tensor) else st.from_f64(v[1], v[0])
                         for n, v in tensors.items()}, metadata)
    return path


def f64(path):
    return {n: t.to_f64() for n, t in st.read_file(path)[0].items()}


def task_arithmetic(w0, ws, lam):
    return w0 + lam * sum(w - w0 for w in ws)


def close(got, want, rel):
    """|got - want| within rel of |want| plus 1e-6 of the largest |want|."""
    err = np.abs(got - want)
    return bool(np.all(err <= rel * np.abs(want) + 1e-6 * np.max(np.abs(want)))), float(err.max())


# The big tensor spans two chunks of 2^20 elements (the streamed paths); the small ones go
# through the whole-tensor path of the matrix methods.
SHAPES = {"big.weight": (1030, 1024), "h.0.w": (64, 48), "h.0.b": (48,)}


def values(seed, base=None, scale=0.05):
    rng = np.random.default_rng(seed)
    if base is None:
        return {n: rng.standard_normal(s) for n, s in SHAPES.items()}
    return {n: v + scale * rng.standard_normal(v.shape) for n, v in base.items()}


def as_stored(vals, dtype):
    """The values an input of this dtype holds (rounded as acem's readers see them)."""
    return {n: st.from_f64(v, dtype).to_f64() for n, v in vals.items()}


# --------------------------------------------------------------------------- item 8

def merged_as(out, r, dtype, want, tol):
    """(ok, detail): out is stored as dtype throughout and within tol of want[name]."""
    ok, detail = r.returncode == 0, r.stderr
    if ok:
        got = st.read_file(out)[0]
        ok = all(got[n].dtype == dtype for n in got)
        for n in SHAPES:
            good, err = close(got[n].to_f64(), want[n], tol)
            ok, detail = ok and good, "%s max |err| %g, dtypes %s" % (n, err, [t.dtype for t in got.values()])
    return ok, detail


def test_mixed_dtypes(d):
    w0 = as_stored(values(1), "F32")
    e1, e2 = as_stored(values(2, w0), "F16"), as_stored(values(3, w0), "F32")
    base = write(os.path.join(d, "base.safetensors"), {n: ("F32", v) for n, v in w0.items()})
    p1 = write(os.path.join(d, "e1-f16.safetensors"), {n: ("F16", v) for n, v in e1.items()})
    p2 = write(os.path.join(d, "e2.safetensors"), {n: ("F32", v) for n, v in e2.items()})
    out = os.path.join(d, "ta.safetensors")
    r = merge(base, [p1, p2], "task_arithmetic", out, "-l", "0.5")
    want = {n: task_arithmetic(w0[n], [e1[n], e2[n]], 0.5) for n in SHAPES}
    ok, detail = merged_as(out, r, "F32", want, 1e-6)
    check("item8 f16 expert with f32 base (task_arithmetic, fused kernel, 2 chunks)", ok, detail)

    # the streamed chunks, the whole-tensor path and the matrix methods: mixed inputs merge
    # bit for bit as the same values stored as F32 do
    p1_32 = write(os.path.join(d, "e1-as-f32.safetensors"), {n: ("F32", v) for n, v in e1.items()})
    for method, extra in (("dare_linear", ["-p", "rescale=inverse", "-p", "p=0.5"]),
                          ("ties", ["-p", "density=0.3"]), ("ace", ["-x", "big"]),
                          ("ties", ["-p", "density=0.3", "--precision", "f64"]),
                          ("task_arithmetic", ["--precision", "f64"])):
        tag = method + "-".join(extra[-1:])
        o_mixed, o_f32 = os.path.join(d, tag + "-mixed.safetensors"), os.path.join(d, tag + "-f32.safetensors")
        r1 = merge(base, [p1, p2], method, o_mixed, *extra)
        r2 = merge(base, [p1_32, p2], method, o_f32, *extra)
        ok = r1.returncode == 0 and r2.returncode == 0
        if ok:
            a, b = st.read_file(o_mixed)[0], st.read_file(o_f32)[0]
            ok = all(a[n].tobytes() == b[n].tobytes() for n in b)
        check("item8 %s%s: an F16 expert merges bit for bit as its values stored as F32"
              % (method, " (f64)" if "f64" in extra else ""), ok, r1.stderr + r2.stderr)

    # BF16 base, F32 experts: the output stays BF16 ("as the base"), per tensor
    b16 = as_stored(w0, "BF16")
    base16 = write(os.path.join(d, "base-bf16.safetensors"), {n: ("BF16", v) for n, v in b16.items()})
    out = os.path.join(d, "bf16.safetensors")
    r = merge(base16, [p2, p1_32], "task_arithmetic", out, "-l", "0.5")
    want = {n: task_arithmetic(b16[n], [e2[n], e1[n]], 0.5) for n in SHAPES}
    ok, detail = merged_as(out, r, "BF16", want, 2.0 ** -8)
    check("item8 bf16 base with f32 experts: merged, written as BF16 like the base", ok, detail)

    # bytes read are each input's stored bytes: 4 + 2 + 4 bytes per element here
    r = merge(base, [p1, p2], "task_arithmetic", os.path.join(d, "ta2.safetensors"), quiet=False)
    n = sum(int(np.prod(s)) for s in SHAPES.values())
    want = "%.1f MiB" % (n * 10 / 1048576.0)
    line = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("read")]
    check("item8 bytes read counted per input in its stored type (%s)" % want,
          r.returncode == 0 and line and line[0].split()[1] + " " + line[0].split()[2] == want,
          r.stdout + r.stderr)

    # a type that does not convert is still refused, named as stored
    ids = os.path.join(d, "e-int.safetensors")
    write(ids, {"big.weight": ("F32", e2["big.weight"]), "h.0.w": ("I32", np.zeros((64, 48))),
                "h.0.b": ("F32", e2["h.0.b"])})
    r = merge(base, [p2, ids], "average", os.path.join(d, "int.safetensors"))
    check("item8 an I32 expert tensor against an F32 base is refused, both types named",
          one_error_line(r, "e-int.safetensors", "h.0.w", "I32", "F32", "not a float type"), r.stderr)


def test_gguf_mixed(d):
    rng = np.random.default_rng(7)
    shapes = {"blk.0.attn_q.weight": (64, 96), "blk.0.ffn.weight": (32, 128), "blk.0.norm": (96,)}
    w0 = {n: rng.standard_normal(s).astype(np.float16).astype(np.float64) for n, s in shapes.items()}
    ws = [{n: v + 0.05 * rng.standard_normal(v.shape) for n, v in w0.items()} for _ in range(2)]
    kv = [("general.architecture", G.STRING, "test")]
    base = os.path.join(d, "base-f16.gguf")
    G.write(base, kv, [(n, G.GGML_F16, v) for n, v in w0.items()])
    pq = os.path.join(d, "e-q8.gguf")  # 2-D tensors as Q8_0, the 1-D one F32 (as llama.cpp)
    G.write(pq, kv, [(n, G.GGML_Q8_0 if v.ndim == 2 else G.GGML_F32, v) for n, v in ws[0].items()])
    pf = os.path.join(d, "e-f16.gguf")
    G.write(pf, kv, [(n, G.GGML_F16, v) for n, v in ws[1].items()])
    stored = [{n: G.values(t) for n, t in G.read(p)[2].items()} for p in (base, pq, pf)]
    out = os.path.join(d, "out.gguf")
    r = merge(base, [pq, pf], "task_arithmetic", out, "-l", "0.7")
    ok, detail = r.returncode == 0, r.stderr
    if ok:
        ts = G.read(out)[2]
        for n in shapes:
            want = task_arithmetic(stored[0][n], [stored[1][n], stored[2][n]], 0.7)
            good, err = close(G.values(ts[n]), want, 2.0 ** -10)
            ok = ok and good and not isinstance(ts[n], G.Quant) and ts[n].dtype == np.float16
            detail = "%s max |err| %g, type %r" % (n, err, getattr(ts[n], "dtype", ts[n]))
    check("item8 f16 gguf base with a q8_0 gguf expert: merged, written F16 like the base", ok, detail)

    # a Q8_0 tensor is named Q8_0 in a refusal, not the F32 it reads as
    bad = os.path.join(d, "e-int.gguf")
    G.write(bad, kv, [(n, G.GGML_I32 if v.ndim == 2 else G.GGML_F16, np.zeros(v.shape) if v.ndim == 2 else v)
                      for n, v in ws[1].items()])
    r = merge(pq, [pf, bad], "average", os.path.join(d, "x.gguf"))
    check("item8 a refusal names a block type as the file stores it (Q8_0, not F32)",
          one_error_line(r, "e-int.gguf", "I32", "Q8_0") and "F32" not in r.stderr, r.stderr)


# --------------------------------------------------------------------------- item 9

def test_extra_tensors(d):
    w0 = values(11)
    base = write(os.path.join(d, "base.safetensors"), {n: ("F32", v) for n, v in w0.items() if n != "big.weight"})
    extra = {"score.weight": ("F32", np.ones((2, 48))), "score.bias": ("F32", np.ones(2))}
    extra.update({"adapter.%d" % i: ("F32", np.ones(4)) for i in range(3)})
    e1 = write(os.path.join(d, "e1.safetensors"),
               {**{n: ("F32", v) for n, v in values(12, w0).items() if n != "big.weight"}, **extra})
    e2 = write(os.path.join(d, "e2.safetensors"),
               {n: ("F32", v) for n, v in values(13, w0).items() if n != "big.weight"})
    out, rep = os.path.join(d, "out.safetensors"), os.path.join(d, "report.json")
    r = merge(base, [e1, e2], "average", out, "--report", rep)
    check("item9 tensors an expert has and the base lacks: a warning names the file, the first "
          "ones and the count", warned(r, "e1.safetensors", "5 tensors", "score.weight", "2 more"),
          r.stderr)
    ok = r.returncode == 0 and os.path.exists(rep)
    if ok:
        listed = {(x["model"], x["tensor"]) for x in json.load(open(rep)).get("not_in_base", [])}
        ok = listed == {(e1, n) for n in extra}
    check("item9 the report lists every tensor the base lacks, with its model", ok, r.stderr)
    r = merge(base, [e1, e2], "average", os.path.join(d, "strict.safetensors"), "--strict")
    check("item9 --strict makes it an error, nothing written",
          one_error_line(r, "e1.safetensors", "score.weight", "--strict")
          and not os.path.exists(os.path.join(d, "strict.safetensors")), r.stderr)
    cfg = os.path.join(d, "strict.yaml")
    with open(cfg, "w") as f:
        f.write("method: average\nbase: %s\nmodels: [%s, %s]\nstrict: true\n" % (base, e1, e2))
    r = run(["merge", "-q", cfg, "-o", os.path.join(d, "strict2.safetensors")])
    check("item9 `strict: true` in a YAML config does the same",
          one_error_line(r, "score.weight", "--strict"), r.stderr)


# --------------------------------------------------------------------------- item 10

def test_base_only_and_prefix(d):
    w0 = values(21)
    del w0["big.weight"]
    pos = st.Tensor("I64", (1, 8), np.arange(8, dtype=np.int64).reshape(1, 8))
    base = write(os.path.join(d, "base.safetensors"),
                 {**{n: ("F32", v) for n, v in w0.items()}, "embeddings.position_ids": pos})
    e1 = write(os.path.join(d, "e1.safetensors"), {n: ("F32", v) for n, v in values(22, w0).items()})
    e2 = write(os.path.join(d, "e2.safetensors"),
               {**{n: ("F32", v) for n, v in values(23, w0).items()}, "embeddings.position_ids": pos})
    out = os.path.join(d, "out.safetensors")
    r = merge(base, [e1, e2], "average", out)
    ok = r.returncode == 0
    if ok:
        got = st.read_file(out)[0]
        ok = got["embeddings.position_ids"].tobytes() == pos.tobytes()
    check("item10 a non-float tensor the base has and an expert lacks is copied from the base",
          ok, r.stderr)
    r = merge(base, [e1, write(os.path.join(d, "e3.safetensors"), {"h.0.w": ("F32", w0["h.0.w"])})],
              "average", os.path.join(d, "x.safetensors"), "-x", "h.0.b")
    check("item10 ... and so is a float tensor --exclude keeps from the base", r.returncode == 0, r.stderr)
    pre = write(os.path.join(d, "prefixed.safetensors"),
                {"transformer." + n: ("F32", v) for n, v in values(24, w0).items()})
    r = merge(base, [e1, pre], "average", os.path.join(d, "x.safetensors"))
    ok1 = one_error_line(r, "prefixed.safetensors", '"h.0.w"', '"transformer.h.0.w"', "prefix")
    r2 = merge(pre, [e1, e2], "average", os.path.join(d, "y.safetensors"))
    ok2 = one_error_line(r2, "e1.safetensors", '"transformer.h.0', '"h.0.', "prefix")
    check("item10 a missing tensor whose name differs by a prefix gets a hint (either way round)",
          ok1 and ok2, r.stderr + r2.stderr)


# --------------------------------------------------------------------------- item 11

def test_f8(d):
    rng = np.random.default_rng(31)
    w = rng.standard_normal((16, 32))
    mk = lambda seed: st.Tensor("F8_E4M3", (16, 32), np.random.default_rng(seed).integers(0, 0x7e, (16, 32), dtype=np.uint8))
    paths = []
    for t in range(3):
        p = os.path.join(d, "m%d.safetensors" % t)
        write(p, {"layer.weight": mk(t), "layer.weight_scale_inv": ("F32", np.full((1, 1), 0.5 + t)),
                  "norm.weight": ("F32", w[0] + 0.1 * t)})
        paths.append(p)
    out = os.path.join(d, "out.safetensors")
    r = merge(paths[0], paths[1:], "average", out)
    check("item11 an F8_E4M3 tensor is refused with one line naming the file and the tensor",
          one_error_line(r, "m0.safetensors", "layer.weight", "F8_E4M3", "--exclude")
          and not os.path.exists(out), r.stderr)
    p5 = os.path.join(d, "e5m2.safetensors")
    for t in range(3):
        write(p5 + str(t), {"x": st.Tensor("F8_E5M2", (4,), np.arange(4, dtype=np.uint8)), "y": ("F32", w[t])})
    r = merge(p5 + "0", [p5 + "1", p5 + "2"], "average", out)
    check("item11 an F8_E5M2 tensor is refused too", one_error_line(r, "e5m2.safetensors", '"x"', "F8_E5M2"),
          r.stderr)
    r = merge(paths[0], paths[1:], "average", out, "-x", r"^layer\.weight$")
    ok = r.returncode == 0
    if ok:
        got, b = st.read_file(out)[0], st.read_file(paths[0])[0]
        ok = (got["layer.weight"].dtype == "F8_E4M3" and got["layer.weight"].tobytes() == b["layer.weight"].tobytes()
              and got["layer.weight_scale_inv"].tobytes() == b["layer.weight_scale_inv"].tobytes()
              and np.allclose(got["norm.weight"].to_f64(), w[0] + 0.15, atol=1e-6))
    check("item11 an excluded F8 tensor is kept from the base with its weight_scale_inv", ok, r.stderr)
    pf = os.path.join(d, "f8-expert.safetensors")
    write(pf, {"layer.weight": ("F32", w[:16]), "layer.weight_scale_inv": ("F32", np.ones((1, 1))),
               "norm.weight": ("F32", w[0])})
    pf2 = write(os.path.join(d, "f32-expert.safetensors"),
                {"layer.weight": ("F32", w[:16]), "layer.weight_scale_inv": ("F32", np.ones((1, 1))),
                 "norm.weight": ("F32", w[0])})
    r = merge(pf, [pf2, paths[1]], "average", out)
    check("item11 an F8 expert tensor against a float base is refused as F8, not as a type mismatch",
          one_error_line(r, "m1.safetensors", "layer.weight", "F8_E4M3", "does not merge F8"), r.stderr)


# --------------------------------------------------------------------------- item 15

def gpt2_models(d, n_layer=1, seed=41):
    """A GPT-2 shaped model: Conv1D weights stored (in, out), c_proj square."""
    rng = np.random.default_rng(seed)
    shapes = {"h.0.attn.c_attn.weight": (16, 48), "h.0.attn.c_proj.weight": (16, 16),
              "h.0.mlp.c_fc.weight": (16, 32), "h.0.ln_1.weight": (16,)}
    w0 = {n: rng.standard_normal(s) for n, s in shapes.items()}
    paths = [write(os.path.join(d, "g-base.safetensors"), {n: ("F32", v) for n, v in w0.items()})]
    for t in range(2):
        paths.append(write(os.path.join(d, "g-e%d.safetensors" % t),
                           {n: ("F32", v + 0.1 * rng.standard_normal(v.shape)) for n, v in w0.items()}))
    return paths, shapes


def test_no_silent_noops(d):
    paths, shapes = gpt2_models(d)
    out = os.path.join(d, "out.safetensors")
    r = merge(paths[0], paths[1:], "average", out, "-x", "c_atn", "-x", "ln_1")
    check("item15 an --exclude that matches nothing warns (naming it), one that matches does not",
          warned(r, '--exclude "c_atn"', "matches no tensor") and "ln_1" not in r.stderr, r.stderr)
    r = merge(paths[0], paths[1:], "average", out, "-x", "c_atn", "--strict", "--force")
    check("item15 --strict: an --exclude matching nothing is an error",
          one_error_line(r, '"c_atn"', "--strict"), r.stderr)
    r = merge(paths[0], paths[1:], "ties", out, "--covariance-axis", "input", "--preset", "gpt2", "--force")
    check("item15 --covariance-axis input with a method without covariances warns",
          warned(r, "--covariance-axis input changes nothing", "ties"), r.stderr)
    r = merge(paths[0], paths[1:], "ace", out, "--covariance-axis", "input", "--force")
    check("item15 --covariance-axis input without a GPT-2 model warns (naming --preset gpt2)",
          warned(r, "--covariance-axis input changes nothing", "--preset gpt2"), r.stderr)
    rep = os.path.join(d, "r.json")
    r = merge(paths[0], paths[1:], "ace", out, "--covariance-axis", "input", "--preset", "gpt2",
              "--force", "--report", rep, quiet=False)
    ok = r.returncode == 0 and not warnings(r) and "covariance over the input axis" in r.stdout
    if ok:
        meta = st.read_file(out)[1]
        ok = meta.get("acem_covariance_axis") == "input" and json.load(open(rep)).get("covariance_axis") == "input"
    check("item15 the covariance axis used is in the summary, the report and the metadata", ok,
          r.stdout + r.stderr)
    r = merge(paths[0], paths[1:], "ace", out, "--force", "--report", rep)
    ok = r.returncode == 0
    if ok:
        ok = (st.read_file(out)[1].get("acem_covariance_axis") == "stored"
              and json.load(open(rep)).get("covariance_axis") == "stored")
    check("item15 ... and the stored axis when it is the one used", ok, r.stderr)


def grams_for(d, tag, shapes, axis_of, names):
    p = os.path.join(d, "grams-%s.safetensors" % tag)
    rng = np.random.default_rng(len(tag))
    gs = {}
    for n in names:
        k = shapes[n][axis_of]
        x = rng.standard_normal((3 * k, k))
        gs[n] = ("F32", x.T @ x)
    write(p, gs)
    return p


def test_regmean(d):
    paths, shapes = gpt2_models(d)
    out = os.path.join(d, "out.safetensors")
    names = ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight"]  # c_fc has none
    gin = [grams_for(d, "in%d" % t, shapes, 0, names) for t in range(2)]
    gram_args = ["--gram", "%s=%s" % (paths[1], gin[0]), "--gram", "%s=%s" % (paths[2], gin[1])]
    r = merge(paths[0], paths[1:], "regmean", out, "--preset", "gpt2", "--covariance-axis", "input",
              *gram_args)
    ok = warned(r, "regmean: 1 of 3 2-D tensors", "h.0.mlp.c_fc.weight", "average")
    if ok:
        ok = st.read_file(out)[1].get("acem_gram_fallbacks", "").startswith("1 of 3")
    check("item15 regmean without Gram matrices for some tensors warns, and the metadata counts "
          "the tensors merged as the average", ok, r.stderr)
    # Gram matrices over the inputs (16 x 16 for c_attn [16, 48]) with the stored axis
    r = merge(paths[0], paths[1:], "regmean", out, "--force", *gram_args)
    check("item15 a Gram matrix of the other axis' size is refused naming --covariance-axis",
          one_error_line(r, "c_attn", "16 x 16", "48 x 48", "--covariance-axis input"), r.stderr)
    gsq = [grams_for(d, "sq%d" % t, shapes, 0, ["h.0.attn.c_proj.weight"]) for t in range(2)]
    r = merge(paths[0], paths[1:], "regmean", out, "--force",
              "--gram", "%s=%s" % (paths[1], gsq[0]), "--gram", "%s=%s" % (paths[2], gsq[1]))
    check("item15 a square Conv1D weight whose Gram axis cannot be checked warns",
          warned(r, "square GPT-2 Conv1D", "h.0.attn.c_proj.weight", "--covariance-axis input"), r.stderr)


def test_same_expert_twice(d):
    paths, _ = gpt2_models(d)
    out = os.path.join(d, "out.safetensors")
    r = merge(paths[0], [paths[1], paths[1]], "average", out)
    r2 = merge(paths[0], [paths[1], paths[2]], "average", out, "--force")
    check("item15 the same expert path given twice warns (distinct experts do not)",
          warned(r, "g-e0.safetensors", "given twice") and r2.returncode == 0 and not r2.stderr,
          r.stderr + r2.stderr)
    os.mkdir(os.path.join(d, "sub"))
    other = os.path.join(d, "sub", "..", "g-e0.safetensors")
    r = merge(paths[0], [paths[1], paths[2], other], "average", out, "--force")
    check("item15 the same expert file under another spelling warns (device and inode)",
          warned(r, "given twice", "experts 1 and 3"), r.stderr)


def main():
    return run_groups([test_mixed_dtypes, test_gguf_mixed, test_extra_tensors,
                       test_base_only_and_prefix, test_f8, test_no_silent_noops, test_regmean,
                       test_same_expert_twice], "acem-inputs-")


if __name__ == "__main__":
    sys.exit(main())
