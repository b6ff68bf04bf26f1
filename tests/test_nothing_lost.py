#!/usr/bin/python3
"""Regression tests of issue 16, "Nothing lost": every check here failed on c6a6d69 (the
commit the issue was reproduced on) and must pass now. Each check names its item.

  item 1   a block --dtype over an F16/BF16 base wrote a truncated GGUF with exit 0: the
           whole (base format x base dtype x --dtype x output format) grid, every output
           read back by the independent numpy readers in tests/oracle and compared with a
           float64 evaluation of the merge
  item 2   --force on a directory deleted what acem did not write
  item 3   side outputs (--report, stats --svg/--json/--csv) overwrote inputs
  item 4   a side output on a full disk: double free, and the finished merge lost
  item 5   concurrent runs to one output; stale temporaries judged by pid
  item 6   links and permissions of copied auxiliary files; weights through links
  item 12  pre-flight: output paths, side outputs and auxiliary files checked before the
           merge; missing parents created; an empty base refused
  item 13  the output describes itself: config.json's dtype, a model card of the merge, the
           resolved configuration (rebuilds it), the base's sharding kept, bytes on disk
  item 14  output suffixes in any case; suffixes acem cannot write are refused
  item 16  --dry-run: the plan (every tensor, every file, the memory bound), reading no
           tensor data and writing nothing

usage: /usr/bin/python3 tests/test_nothing_lost.py PATH_TO_acem
"""

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import gguf_np as gg  # noqa: E402
import kquant_np as kq  # noqa: E402
import safetensors_np as st  # noqa: E402
from harness import ACEM, check, one_error_line, run, run_groups, tmpfs  # noqa: E402



def listing(d):
    return sorted(os.listdir(d))


# ------------------------------------------------------------------ models

SHAPES = {"blk.0.w": (8, 256),   # rows split into 32 and 256
          "blk.0.v": (4, 96),    # rows split into 32 only: K-quants keep the stored type
          "blk.0.norm": (256,)}  # 1-D: F32 under a half or block --dtype to GGUF
GGML_OF = {"F32": gg.GGML_F32, "F16": gg.GGML_F16, "BF16": gg.GGML_BF16, "F64": gg.GGML_F64,
           "Q8_0": gg.GGML_Q8_0, "Q4_K": gg.GGML_Q4_K}
BLOCK_ELEMS = {"Q8_0": 32, "Q4_0": 32, "Q4_K": 256, "Q5_K": 256, "Q6_K": 256}


def stored_type(name, dtype):
    """How write_model stores tensor `name` in dtype: a block type only where rows split into
    its blocks (and never for 1-D tensors, as llama.cpp stores them), else F32."""
    if dtype not in BLOCK_ELEMS:
        return dtype
    shape = SHAPES[name]
    return dtype if len(shape) >= 2 and shape[-1] % BLOCK_ELEMS[dtype] == 0 else "F32"


def model_values(n_experts=2, seed=0):
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    experts = [{k: v + 0.05 * (t + 1) * rng.standard_normal(v.shape) for k, v in base.items()}
               for t in range(n_experts)]
    return base, experts


def write_model(path, values, dtype, fmt):
    """values -> a model in dtype; returns the values as stored (float64)."""
    if fmt == "safetensors":
        tensors = {k: st.from_f64(v, dtype) for k, v in values.items()}
        tensors["pos_ids"] = st.from_f64(np.arange(4), "I64")
        st.write_file(path, tensors)
        return {k: t.to_f64() for k, t in tensors.items() if k != "pos_ids"}
    tensors = []
    for k, v in values.items():
        typ = stored_type(k, dtype)
        if typ == "Q4_K":
            tensors.append((k, gg.GGML_Q4_K, (v.shape, kq.quantize_q4_k(v.astype(np.float32).ravel()))))
        else:
            tensors.append((k, GGML_OF[typ], v))
    tensors.append(("pos_ids", gg.GGML_I32, np.arange(4, dtype=np.int32)))
    gg.write(path, [("general.architecture", gg.STRING, "test")], tensors)
    _, _, back, _ = gg.read(path)
    return {k: gg.values(t).reshape(SHAPES[k]) for k, t in back.items() if k != "pos_ids"}


def read_any(path):
    """name -> (type name, float64 values) by the numpy oracles, whatever the format."""
    if path.endswith(".gguf"):
        _, _, tensors, _ = gg.read(path)
        out = {}
        for k, t in tensors.items():
            kind = gg.NAMES[t.gtype] if isinstance(t, gg.Quant) else {
                "<f4": "F32", "<f2": "F16", "<u2": "BF16", "<i4": "I32", "<i8": "I64",
                "<f8": "F64"}[t.dtype.str]
            out[k] = (kind, gg.values(t))
        return out
    if os.path.isdir(path):
        st.validate_hf_dir(path)
    else:
        st.validate_file(path)
    return {k: (t.dtype, t.to_f64()) for k, t in st.read_model(path).items()}


# Largest error of a round trip through each block type, relative to the tensor's largest
# magnitude (ggml's formats: 8-bit codes, 4-bit codes with f16 scales, K-quants).
BLOCK_TOL = {"Q8_0": 0.01, "Q4_0": 0.15, "Q4_K": 0.08, "Q5_K": 0.04, "Q6_K": 0.03}
FLOAT_TOL = {"F32": 1e-5, "F64": 1e-5, "F16": 2 ** -10, "BF16": 2 ** -7}


def expected_type(name, base_dtype, dtype, out_fmt):
    """The type each tensor must be stored as (docs/formats.md): F32 for a 1-D tensor in a GGUF
    output under a half or block --dtype, as llama.cpp keeps them; --dtype's, where a block
    type fits the tensor's rows; else the base's stored type, as F32 where safetensors cannot
    hold blocks."""
    stored = stored_type(name, base_dtype)
    if out_fmt == ".gguf" and len(SHAPES[name]) < 2 and dtype.upper() in ("F16", "BF16", *BLOCK_ELEMS):
        return "F32"
    if dtype.upper() in BLOCK_ELEMS and stored_type(name, dtype.upper()) == dtype.upper():
        return dtype.upper()
    if dtype != "default" and dtype.upper() not in BLOCK_ELEMS:
        return dtype.upper()
    return "F32" if stored in BLOCK_ELEMS and out_fmt != ".gguf" else stored


def test_item1_grid(d):
    base_v, exp_v = model_values()
    dtypes_out = ["default", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"]
    failures, ran, refused = [], 0, 0
    table = {}  # (input, base dtype) -> {--dtype: [cell per output format]}
    for in_fmt in ("safetensors", "gguf"):
        for base_dtype in ("F32", "F16", "BF16", "F64") + (("Q8_0", "Q4_K") if in_fmt == "gguf" else ()):
            sub = os.path.join(d, f"grid-{in_fmt}-{base_dtype}")
            os.mkdir(sub)
            ext = ".safetensors" if in_fmt == "safetensors" else ".gguf"
            paths = [os.path.join(sub, "base" + ext)] + [os.path.join(sub, f"e{t}{ext}") for t in range(2)]
            w0 = write_model(paths[0], base_v, base_dtype, in_fmt)
            ws = [write_model(p, v, base_dtype, in_fmt) for p, v in zip(paths[1:], exp_v)]
            # average, lambda 1: W0 + mean_t (Wt - W0), in float64 from the stored values
            want = {k: w0[k] + sum(w[k] - w0[k] for w in ws) / len(ws) for k in SHAPES}
            for dtype in dtypes_out:
                for out_fmt in (".gguf", ".safetensors", "dir"):
                    out = os.path.join(sub, f"out-{dtype}{'' if out_fmt == 'dir' else out_fmt}")
                    args = ["merge", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2],
                            "-M", "average", "-o", out] + ([] if dtype == "default" else ["--dtype", dtype])
                    r = run(*args)
                    case = f"{in_fmt} {base_dtype} --dtype {dtype} -> {out_fmt}"
                    n_fail = len(failures)
                    cells = table.setdefault((in_fmt, base_dtype), {}).setdefault(dtype, [])
                    if dtype.upper() in BLOCK_ELEMS and out_fmt != ".gguf":
                        refused += 1
                        if not (one_error_line(r, ".gguf") and not os.path.exists(out)):
                            failures.append(f"{case}: not refused cleanly: {r.stderr!r}")
                        cells.append("refused" if len(failures) == n_fail else "FAIL")
                        continue
                    ran += 1
                    if r.returncode != 0:
                        failures.append(f"{case}: rc {r.returncode}: {r.stderr.strip()}")
                        cells.append("FAIL")
                        continue
                    try:
                        got = read_any(out)
                    except Exception as e:  # noqa: BLE001 - any reader failure is the finding
                        failures.append(f"{case}: the numpy reader refuses the output: {e}")
                        cells.append("FAIL")
                        continue
                    for k in SHAPES:
                        kind, vals = got[k]
                        typ = expected_type(k, base_dtype, dtype, out_fmt)
                        if kind != typ:
                            failures.append(f"{case}: {k} stored as {kind}, expected {typ}")
                            continue
                        tol = BLOCK_TOL.get(kind, FLOAT_TOL.get(kind))
                        scale = np.abs(want[k]).max()
                        err = np.max(np.abs(vals.reshape(want[k].shape) - want[k]) / scale)
                        if not err <= tol:
                            failures.append(f"{case}: {k} ({kind}) off by {err:.3g} > {tol}")
                    if "pos_ids" not in got or not np.array_equal(got["pos_ids"][1], np.arange(4)):
                        failures.append(f"{case}: the integer tensor is not copied")
                    cells.append("ok" if len(failures) == n_fail else "FAIL")
    if os.environ.get("ACEM_GRID_TABLE"):  # the table of docs/safety.md
        with open(os.environ["ACEM_GRID_TABLE"], "w") as f:
            f.write("| base | " + " | ".join(f"`{t}`" for t in dtypes_out) + " |\n")
            f.write("|---" * (len(dtypes_out) + 1) + "|\n")
            for (in_fmt, bd), row in table.items():
                f.write(f"| {in_fmt} {bd} | " + " | ".join(" / ".join(row[t]) for t in dtypes_out) + " |\n")
    check(f"item1 every (base format x dtype x --dtype x output format) pair: {ran} outputs "
          f"read back by the numpy readers with the declared types and the merged values, "
          f"{refused} block types without .gguf refused", not failures, "; ".join(failures[:6]))


# ------------------------------------------------------------------ item 2

def small(d, name="m", n_experts=2):
    """A base directory (config, tokenizer) and experts as files, all F32."""
    base_v, exp_v = model_values(n_experts)
    base = os.path.join(d, name + "-base")
    os.mkdir(base)
    write_model(os.path.join(base, "model.safetensors"), base_v, "F32", "safetensors")
    with open(os.path.join(base, "config.json"), "w") as f:
        json.dump({"model_type": "test", "torch_dtype": "float32"}, f)
    experts = []
    for t, v in enumerate(exp_v):
        experts.append(os.path.join(d, f"{name}-e{t}.safetensors"))
        write_model(experts[-1], v, "F32", "safetensors")
    return [base] + experts


def margs(paths, out, *extra):
    args = ["merge", "-q", "-b", paths[0]]
    for p in paths[1:]:
        args += ["-m", p]
    return args + ["-M", "average", "-o", out, *extra]


def test_item2_force_dir(d):
    models = os.path.join(d, "models")
    os.mkdir(models)
    paths = small(models)
    open(os.path.join(models, "notes.txt"), "w").write("mine")
    os.mkdir(os.path.join(models, "other-model"))
    before = listing(models)
    r = run(*margs(paths, models, "--force"))
    check("item2 --force onto a directory holding the inputs is refused, nothing deleted or moved",
          one_error_line(r, "holds an input") and listing(models) == before
          and not [f for f in os.listdir(d) if ".acem-old" in f], r.stderr)

    paths = small(d, "fresh")  # those above are gone on c6a6d69
    mine = os.path.join(d, "mine")
    os.mkdir(mine)
    open(os.path.join(mine, "notes.txt"), "w").write("mine")
    r = run(*margs(paths, mine, "--force"))
    check("item2 --force onto a directory acem did not write is refused, its files kept",
          one_error_line(r, "not written by acem") and listing(mine) == ["notes.txt"], r.stderr)

    out = os.path.join(d, "merged")
    r1 = run(*margs(paths, out))
    r2 = run(*margs(paths, out, "--force"))
    left = [f for f in os.listdir(d) if ".acem-" in f]
    check("item2 --force replaces a directory acem wrote, leaving no .acem-old-* or temporary",
          r1.returncode == 0 and r2.returncode == 0 and "model.safetensors" in listing(out)
          and not left, r1.stderr + r2.stderr + str(left))

    open(os.path.join(out, "eval-results.txt"), "w").write("mine")
    r = run(*margs(paths, out, "--force"))
    check("item2 --force refuses an acem output to which the user added a file, keeping it",
          one_error_line(r, "eval-results.txt") and os.path.exists(os.path.join(out, "eval-results.txt")),
          r.stderr)

    os.remove(os.path.join(out, "eval-results.txt"))
    # A run that replaced `out` where the filesystem cannot exchange two directories had moved
    # the old one aside as out.acem-old-PID, and died before the new one was in place.
    before = open(os.path.join(out, "model.safetensors"), "rb").read()
    aside = out + ".acem-old-4242"
    os.rename(out, aside)
    r = run(*margs(paths, out))
    check("item2 an output left aside by a run that died mid-replacement is put back by the next "
          "run (which then refuses to replace it without --force)",
          one_error_line(r, "already exists") and not os.path.exists(aside)
          and open(os.path.join(out, "model.safetensors"), "rb").read() == before, r.stderr)
    shutil.copytree(out, aside)
    open(os.path.join(aside, "notes.txt"), "w").write("mine")
    r = run(*margs(paths, out, "--force"))
    check("item2 a superseded output left aside loses only the files acem listed in it",
          r.returncode == 0 and listing(aside) == ["notes.txt"], (r.stderr, listing(aside)))

    empty = os.path.join(d, "empty")
    os.mkdir(empty)
    r = run(*margs(paths, empty, "--force"))
    check("item2 --force onto an empty directory writes the merge there",
          r.returncode == 0 and "model.safetensors" in listing(empty), r.stderr)


# ------------------------------------------------------------------ item 3

def test_item3_side_outputs(d):
    """Each check on fresh models: on c6a6d69 every one of them destroyed an input."""
    fresh = iter(range(100))

    def models():
        paths = small(d, f"s{next(fresh)}")
        return paths, {p: open(p, "rb").read() for p in paths[1:]}

    out = os.path.join(d, "o.safetensors")
    paths, keep = models()
    r = run(*margs(paths, out, "--report", paths[1]))
    check("item3 --report naming an expert is refused and the expert is unchanged",
          one_error_line(r, "input") and open(paths[1], "rb").read() == keep[paths[1]]
          and not os.path.exists(out), r.stderr)
    paths, keep = models()
    inner = os.path.join(paths[0], "config.json")
    cfg = open(inner, "rb").read()
    r = run(*margs(paths, out, "--report", inner))
    check("item3 --report naming a file of the base directory is refused",
          one_error_line(r, "input") and open(inner, "rb").read() == cfg, r.stderr)
    paths, keep = models()
    r = run(*margs(paths, out, "--report", out))
    check("item3 --report equal to -o is refused before the merge",
          one_error_line(r, "two outputs") and not os.path.exists(out), r.stderr)
    paths, keep = models()
    r = run("stats", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "--svg", paths[2])
    check("item3 stats --svg naming an expert is refused and the expert is unchanged",
          one_error_line(r, "input") and open(paths[2], "rb").read() == keep[paths[2]], r.stderr)
    for flag in ("--json", "--csv"):
        paths, keep = models()
        weights = os.path.join(paths[0], "model.safetensors")
        w0 = open(weights, "rb").read()
        r = run("stats", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], flag, weights)
        check(f"item3 stats {flag} naming the base's weights is refused",
              one_error_line(r, "input") and open(weights, "rb").read() == w0, r.stderr)
    paths, keep = models()
    rep = os.path.join(d, "r.json")
    open(rep, "w").write("my notes")
    r = run(*margs(paths, out, "--report", rep))
    check("item3 an existing --report file is kept without --force",
          one_error_line(r, "already exists") and open(rep).read() == "my notes"
          and not os.path.exists(out), r.stderr)
    tab = os.path.join(d, "t.csv")
    open(tab, "w").write("mine")
    r = run("stats", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "--csv", tab)
    check("item3 an existing stats table is kept without --force",
          one_error_line(r, "already exists") and open(tab).read() == "mine", r.stderr)
    # a Gram file is an input of regmean
    paths, keep = models()
    grams = os.path.join(d, "grams.safetensors")
    st.write_file(grams, {"blk.0.w": st.from_f64(np.eye(256), "F32")})
    g0 = open(grams, "rb").read()
    r = run("merge", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "-M", "regmean",
            "--gram", f"{paths[1]}={grams}", "--gram", f"{paths[2]}={grams}", "-o", grams, "--force")
    check("item3 -o naming a --gram input is refused even with --force",
          one_error_line(r, "input") and open(grams, "rb").read() == g0, r.stderr)
    paths, keep = models()
    cfg_path = os.path.join(d, "merge.yaml")
    with open(cfg_path, "w") as f:
        f.write(f"base_model: {paths[0]}\nmodels:\n  - model: {paths[1]}\n  - model: {paths[2]}\n"
                f"merge_method: average\n")
    y0 = open(cfg_path).read()
    r = run("merge", "-q", cfg_path, "-o", os.path.join(d, "y.safetensors"), "--report", cfg_path,
            "--force")
    check("item3 --report naming the YAML config is refused",
          one_error_line(r, "input") and open(cfg_path).read() == y0, r.stderr)


# ------------------------------------------------------------------ item 4

def test_item4_full_side_output(d):
    paths = small(d, "f")
    out = os.path.join(d, "kept.safetensors")
    with tmpfs(os.path.join(d, "full"), "64k", fill=True) as mnt:
        if mnt is None:
            print("SKIP item4: mounting a tmpfs needs root")
            return
        r = run(*margs(paths, out, "--report", os.path.join(mnt, "r.json")))
        left = [f for f in os.listdir(mnt) if f != "fill"]
        ok_model = os.path.exists(out) and "blk.0.w" in read_any(out)
        check("item4 a report on a full disk: one error line naming it, exit 1, no crash, the "
              "merged model kept, no temporary left",
              one_error_line(r, "r.json") and r.returncode == 1 and ok_model and not left
              and not [f for f in os.listdir(d) if ".acem-tmp" in f], (r.returncode, r.stderr, left))
        r = run("stats", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "--json",
                os.path.join(mnt, "s.json"))
        check("item4 stats --json on a full disk: one error line, exit 1, no crash",
              one_error_line(r, "s.json") and r.returncode == 1, (r.returncode, r.stderr))


# ------------------------------------------------------------------ item 5

def big_models(d):
    rng = np.random.default_rng(1)
    t = {f"layer.{i}.weight": rng.standard_normal((1024, 1024)) for i in range(12)}
    paths = [os.path.join(d, "big-base.safetensors"), os.path.join(d, "big-e.safetensors")]
    st.write_file(paths[0], {k: st.from_f64(v, "F32") for k, v in t.items()})
    st.write_file(paths[1], {k: st.from_f64(v + 1, "F32") for k, v in t.items()})
    return [paths[0], paths[1], paths[1]]


def test_item5_concurrency(d):
    paths = big_models(d)
    out = os.path.join(d, "same.safetensors")
    first = subprocess.Popen([ACEM, *margs(paths, out)[:-2], "-M", "ties", "-t", "1", "-o", out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(out + ".acem-lock"):
        time.sleep(0.002)
    second = run(*margs(paths, out))
    first.communicate(timeout=600)
    check("item5 a second run to the same output refuses while the first holds the lock; the "
          "first completes", one_error_line(second, "another acem run") and first.returncode == 0
          and os.path.exists(out), second.stderr)
    # A live run in another PID namespace or host: its pid means nothing here, its lock does.
    out2 = os.path.join(d, "shared.safetensors")
    dead = subprocess.Popen(["true"])
    dead.wait()
    theirs = f"{out2}.acem-tmp-{dead.pid}"
    open(theirs, "w").write("another host's run, still writing")
    with open(out2 + ".acem-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = run(*margs(paths[:1] + [paths[1]] * 2, out2))
    check("item5 a temporary whose lock is held is never removed, whatever its pid",
          one_error_line(r, "another acem run") and os.path.exists(theirs), r.stderr)


# ------------------------------------------------------------------ item 6

def test_item6_links(d):
    paths = small(d, "l")
    base = paths[0]
    secret = os.path.join(d, "id_ed25519")
    open(secret, "w").write("PRIVATE KEY")
    os.chmod(secret, 0o600)
    os.symlink(secret, os.path.join(base, "tokenizer.json"))
    os.symlink("config.json", os.path.join(base, "alias.json"))  # inside: followed
    open(os.path.join(base, "private.txt"), "w").write("x")
    os.chmod(os.path.join(base, "private.txt"), 0o600)
    out = os.path.join(d, "lo")
    r = run(*margs(paths, out))
    mode = stat.S_IMODE(os.stat(os.path.join(out, "private.txt")).st_mode) if r.returncode == 0 else None
    check("item6 a link out of the base directory is not copied; a link inside it is",
          r.returncode == 0 and not os.path.exists(os.path.join(out, "tokenizer.json"))
          and os.path.exists(os.path.join(out, "alias.json")), r.stderr + str(listing(out) if os.path.isdir(out) else ""))
    check("item6 copies never widen permissions (0600 stays 0600)", mode == 0o600, oct(mode or 0))
    # the Hugging Face cache: snapshot files are links to ../../blobs/
    repo = os.path.join(d, "hub", "models--org--tiny")
    snap = os.path.join(repo, "snapshots", "0123abc")
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(snap)
    for name in ("model.safetensors", "config.json"):
        blob = os.path.join(repo, "blobs", "h-" + name)
        shutil.copy(os.path.join(base, name), blob)
        os.symlink(os.path.join("..", "..", "blobs", "h-" + name), os.path.join(snap, name))
    out = os.path.join(d, "ho")
    r = run(*margs([snap] + paths[1:], out))
    check("item6 (guard) a Hugging Face cache snapshot (links into ../../blobs) merges and its "
          "config is copied", r.returncode == 0 and os.path.exists(os.path.join(out, "config.json")), r.stderr)
    # weights reached through a link that leaves the model directory
    evil = os.path.join(d, "evil")
    os.mkdir(evil)
    os.symlink(os.path.join(base, "model.safetensors"), os.path.join(evil, "model.safetensors"))
    r = run(*margs([evil] + paths[1:], os.path.join(d, "eo")))
    check("item6 weights behind a link out of the model directory are refused, naming it",
          one_error_line(r, "model.safetensors", "link"), r.stderr)


# ------------------------------------------------------------------ item 12, 14

def test_item12_preflight(d):
    paths = small(d, "p")
    # a NaN in the expert's last tensor fails the merge late; the bad report path fails first
    late = os.path.join(d, "late.safetensors")
    base_v, _ = model_values()
    base_v["blk.0.norm"] = np.full(SHAPES["blk.0.norm"], np.nan)
    write_model(late, base_v, "F32", "safetensors")
    a_file = os.path.join(d, "a-file")
    open(a_file, "w").write("not a directory")
    r = run(*margs([paths[0], late, paths[2]], os.path.join(d, "x.safetensors"),
                   "--report", os.path.join(a_file, "r.json")))
    check("item12 a report that cannot be created fails before any tensor is read",
          r.returncode != 0 and "NaN" not in r.stderr and "r.json" in r.stderr, r.stderr)
    deep = os.path.join(d, "new", "parents", "out.safetensors")
    r = run(*margs(paths, deep))
    check("item12 missing parent directories of the output are created (as mergekit does)",
          r.returncode == 0 and os.path.exists(deep), r.stderr)
    r = run(*margs(paths, os.path.join(d, "n" * 230 + ".safetensors")))
    check("item12 an output name too long for its temporary is refused in one line, saying "
          "the limit", one_error_line(r, "too long", "at most"), r.stderr)
    r = run(*margs(paths, ""))
    check("item12 an empty output path is refused", r.returncode in (1, 2) and "empty" in r.stderr,
          r.stderr)
    slash = os.path.join(d, "slashed") + "/"
    r = run(*margs(paths, slash))
    check("item12 a trailing slash names a directory output",
          r.returncode == 0 and os.path.isfile(os.path.join(slash, "model.safetensors")), r.stderr)
    # an unreadable auxiliary file fails the run before the merge (the NaN of `late` would
    # fail it after the first tensors); root reads through modes, so run as nobody
    for up in (os.path.dirname(d), d, paths[0]):
        os.chmod(up, 0o755)
    unreadable = os.path.join(paths[0], "tokenizer_config.json")
    open(unreadable, "w").write("{}")
    os.chmod(unreadable, 0)
    writable = os.path.join(d, "nobody-out")
    os.mkdir(writable)
    os.chmod(writable, 0o777)
    drop = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
    r = run(*margs([paths[0], late, paths[2]], os.path.join(writable, "aux-out")), preexec_fn=drop)
    check("item12 an unreadable auxiliary file fails before the merge, naming it",
          one_error_line(r, "tokenizer_config.json", "Permission denied") and "NaN" not in r.stderr
          and os.listdir(writable) == [], r.stderr)
    os.chmod(unreadable, 0o644)
    empties = [os.path.join(d, f"empty{i}.safetensors") for i in range(3)]
    for p in empties:
        st.write_file(p, {})
    r = run(*margs(empties, os.path.join(d, "none.safetensors")))
    check("item12 a base with no tensors is refused: nothing to merge",
          one_error_line(r, "nothing to merge") and not os.path.exists(os.path.join(d, "none.safetensors")),
          r.stderr)


def format_bytes(n):
    """acem's summary spelling of a size (acem_format_bytes)."""
    v, u = float(n), 0
    while v >= 1024 and u < 4:
        v, u = v / 1024, u + 1
    return f"{n} B" if u == 0 else f"{v:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][u]}"


def test_item13_self_description(d):
    paths = small(d, "c")
    with open(os.path.join(paths[0], "config.json"), "w") as f:
        json.dump({"model_type": "test", "torch_dtype": "bfloat16"}, f)
    open(os.path.join(paths[0], "README.md"), "w").write("# The base model's own card\n")
    out = os.path.join(d, "c-out")
    r = run(*margs(paths, out, "--dtype", "f16"))
    cfg = json.load(open(os.path.join(out, "config.json"))) if r.returncode == 0 else {}
    check("item13 config.json's torch_dtype says what --dtype wrote (float16, not bfloat16)",
          cfg.get("torch_dtype") == "float16" and cfg.get("model_type") == "test", (r.stderr, cfg))
    card = open(os.path.join(out, "README.md")).read() if os.path.exists(os.path.join(out, "README.md")) else ""
    check("item13 the model card is the merge's (method, base, experts, acem version), not the "
          "base's", "base model's own card" not in card and "average" in card
          and paths[1] in card and "acem " in card, card[:300])
    rebuilt = os.path.join(d, "c-rebuilt")
    cfg_path = os.path.join(out, "acem_config.yaml")
    r2 = run("merge", "-q", cfg_path, "-o", rebuilt) if os.path.exists(cfg_path) else None
    check("item13 acem_config.yaml in the output rebuilds the same merge byte for byte",
          r2 is not None and r2.returncode == 0
          and open(os.path.join(out, "model.safetensors"), "rb").read()
          == open(os.path.join(rebuilt, "model.safetensors"), "rb").read(), r2 and r2.stderr)
    one = os.path.join(d, "c.safetensors")
    r = run(*margs(paths, one, "-p", "lambda=0.123456789"))
    _, meta = st.read_file(one) if r.returncode == 0 else (None, {})
    check("item13 a single-file output carries the resolved configuration in its metadata, "
          "with exact parameters", "acem_config" in (meta or {})
          and "lambda: 0.123456789" in meta["acem_config"], (r.stderr, meta))
    # a sharded base keeps its sharding by default
    sharded = os.path.join(d, "c-sharded")
    base_v, exp_v = model_values()
    st.write_sharded(sharded, {k: st.from_f64(v, "F32") for k, v in base_v.items()}, 9000)
    n_base = len([f for f in os.listdir(sharded) if f.endswith(".safetensors")])
    out = os.path.join(d, "c-sharded-out")
    r = run(*margs([sharded] + paths[1:], out))
    got = [f for f in os.listdir(out) if f.endswith(".safetensors")] if r.returncode == 0 else []
    check(f"item13 a sharded base ({n_base} shards) gives a sharded output by default",
          n_base > 1 and len(got) == n_base and os.path.exists(os.path.join(out, "model.safetensors.index.json")),
          (r.stderr, got))
    # sizes in the summary are bytes on disk (a block GGUF is not its dequantised size)
    g = [os.path.join(d, f"c{i}.gguf") for i in range(3)]
    for p, v in zip(g, [base_v] + exp_v):
        write_model(p, v, "F32", "gguf")
    out = os.path.join(d, "c-q8.gguf")
    r = run("merge", "-b", g[0], "-m", g[1], "-m", g[2], "-M", "average", "--dtype", "q8_0", "-o", out)
    want = format_bytes(os.path.getsize(out)) if r.returncode == 0 else "?"
    check("item13 the summary reports the output's bytes on disk", f"1 weight file, {want} on disk)" in r.stdout,
          (want, r.stdout))


def test_item16_dry_run(d):
    paths = small(d, "dr")
    out = os.path.join(d, "not", "yet", "merged")
    rep = os.path.join(d, "not-yet-report.json")
    before = sorted(os.listdir(d))
    r = run("merge", "--dry-run", "-b", paths[0], "-m", paths[1], "-m", paths[2], "-M", "ties",
            "-x", "blk.0.v", "-o", out, "--report", rep)
    lines = r.stdout.splitlines()
    tensor_lines = {ln.split()[0]: ln for ln in lines if ln.startswith("  blk.") or ln.startswith("  pos_ids")}
    check("item16 --dry-run lists every tensor with its stored type and what happens to it, and why",
          r.returncode == 0 and set(tensor_lines) == {"blk.0.w", "blk.0.v", "blk.0.norm", "pos_ids"}
          and "merged by ties" in tensor_lines.get("blk.0.w", "")
          and 'exclusion "blk.0.v"' in tensor_lines.get("blk.0.v", "")
          and "not a floating-point tensor" in tensor_lines.get("pos_ids", "")
          and " I64 " in tensor_lines.get("pos_ids", ""), r.stdout + r.stderr)
    check("item16 --dry-run lists the files it would write and the memory bound",
          all(os.path.join(out, f) in r.stdout for f in ("model.safetensors", "config.json", "README.md"))
          and rep in r.stdout and "memory" in r.stdout and "of buffers" in r.stdout, r.stdout)
    check("item16 --dry-run writes nothing: no output, no report, no temporary, no lock, no parent "
          "directory", r.returncode == 0 and sorted(os.listdir(d)) == before, sorted(set(os.listdir(d)) ^ set(before)))
    # the tensor data is not read: a NaN in an expert fails the merge, not the dry run
    nan = os.path.join(d, "dr-nan.safetensors")
    base_v, _ = model_values()
    base_v["blk.0.w"] = np.full(SHAPES["blk.0.w"], np.nan)
    write_model(nan, base_v, "F32", "safetensors")
    real = run(*margs([paths[0], nan, paths[2]], os.path.join(d, "dr-real")))
    dry = run(*margs([paths[0], nan, paths[2]], os.path.join(d, "dr-real"), "--dry-run"))
    check("item16 --dry-run reads no tensor data (a NaN that fails the merge does not fail it)",
          real.returncode == 1 and "NaN" in real.stderr and dry.returncode == 0, dry.stderr)
    # the shards it announces are the ones the merge writes
    sharded = os.path.join(d, "dr-sharded")
    st.write_sharded(sharded, {k: st.from_f64(v, "F32") for k, v in model_values()[0].items()}, 9000)
    out2 = os.path.join(d, "dr-out")
    dry = run(*margs([sharded] + paths[1:], out2, "--dry-run"))
    real = run(*margs([sharded] + paths[1:], out2))
    said = sorted(os.path.basename(ln.split()[0]) for ln in dry.stdout.splitlines()
                  if ln.strip().endswith(")") and " weights (" in ln)
    wrote = sorted(f for f in os.listdir(out2) if f.endswith(".safetensors")) if real.returncode == 0 else []
    check("item16 the shards --dry-run announces are the ones the merge writes",
          dry.returncode == 0 and said == wrote and len(wrote) > 1, (said, wrote, dry.stderr))
    dry = run(*margs([sharded] + paths[1:], out2, "--dry-run"))
    check("item16 --dry-run refuses what the merge would refuse (an existing output without "
          "--force)", one_error_line(dry, "already exists"), dry.stderr)


def test_item14_suffixes(d):
    paths = small(d, "x")
    out = os.path.join(d, "OUT.SafeTensors")
    r = run(*margs(paths, out))
    check("item14 an output suffix in any case (.SafeTensors) writes a file",
          r.returncode == 0 and os.path.isfile(out), r.stderr)
    for suffix in (".bin", ".pt"):
        out = os.path.join(d, "model" + suffix)
        r = run(*margs(paths, out))
        check(f"item14 an output ending in {suffix} is refused, not made a directory",
              one_error_line(r, suffix) and not os.path.exists(out), r.stderr)


def main():
    return run_groups([test_item1_grid, test_item2_force_dir, test_item3_side_outputs,
                       test_item4_full_side_output, test_item5_concurrency, test_item6_links,
                       test_item12_preflight, test_item13_self_description, test_item14_suffixes,
                       test_item16_dry_run], "acem-lost-", sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
