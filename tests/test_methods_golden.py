#!/usr/bin/python3
"""Golden end-to-end tests: `acem merge` vs the float64 numpy oracle.

Usage:  /usr/bin/python3 tests/test_methods_golden.py PATH/TO/acem [-v] [-k SUBSTR] [--keep] [--data-seed N]
        -v: print each acem command line; -k: only cases whose name contains
        SUBSTR; --keep: keep the temp dir (inputs/outputs) for debugging;
        --data-seed: seed of the random test data (default fixed).

Needs only the Python stdlib + numpy.  Generates random base + expert
models in temp dirs, runs `acem merge` for each case, reads the output with
an independent safetensors reader and compares with tests/oracle/methods.py.

Tolerances
  f32 output : relative Frobenius error per tensor <= 1e-6 (plus the same
               f32-intermediate allowance, for tensors whose merged value
               nearly cancels, e.g. a 1x1 tensor near 0)
  f16/bf16   : every element within 1 ulp (of the output dtype, taken at the
               oracle value's magnitude) of the oracle value, plus a tiny
               allowance 2^-22*(|W0|+|lambda*Delta|) for the f32 intermediate
               (only matters under heavy cancellation; counted and reported).
Integer/bool tensors and excluded tensors must be bit-identical to base.
The last line printed is always "N passed, M failed".
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import methods as M  # noqa: E402
import safetensors_np as st  # noqa: E402

DT_CLI = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
# (precision bits incl. implicit, minimum normal exponent)
FMT = {"F16": (11, -14), "BF16": (8, -126), "F32": (24, -126)}
F32_REL_TOL = 1e-6
SLACK = 2.0 ** -22

# float tensors of the standard test model: name -> shape
FLOAT_SHAPES = OrderedDict([
    ("model.embed_tokens.weight", (64, 96)),          # m < n
    ("model.layers.0.self_attn.q_proj.weight", (96, 64)),  # m > n
    ("model.layers.0.self_attn.q_proj.bias", (96,)),  # 1-D bias
    ("model.layers.0.mlp.up_proj.weight", (48, 48)),  # m == n
    ("model.layers.0.mlp.up_proj.bias", (48,)),
    ("model.layers.0.conv.weight", (8, 4, 3)),        # 3-D
    ("model.layers.0.ln.scale", (1, 1)),              # 1x1
    ("model.layers.0.opp.weight", (16, 24)),          # opposing deltas on a grid
    ("lm_head.weight", (40, 64)),
])
INT_NAME = "model.position_ids"   # I64, (1, 64)
BOOL_NAME = "model.attn_mask"     # BOOL, (4, 8)


def ulp(x, dtype):
    p, emin = FMT[dtype]
    x = np.abs(np.asarray(x, dtype=np.float64))
    _, e = np.frexp(x)           # x = m * 2^e, m in [0.5, 1)
    E = np.where(x == 0, emin, np.maximum(e - 1, emin))
    return np.ldexp(1.0, (E - (p - 1)).astype(np.int64))


# --------------------------------------------------------------- data --

def make_models(rng, T, dtype, float_shapes=FLOAT_SHAPES, with_int=True, scalar=False):
    """-> (base OrderedDict name->Tensor, [expert OrderedDicts])."""
    base_f, exps_f = OrderedDict(), [OrderedDict() for _ in range(T)]
    for name, shape in float_shapes.items():
        if name.endswith("opp.weight"):
            # grid 2^-6, |values| < 2: exact in f16/bf16/f32. Expert 0 and 1
            # have exactly opposite deltas (tie -> elected sign 0), some zero.
            g = 2.0 ** -6
            w0 = rng.integers(-100, 101, size=shape) * g
            d = rng.integers(-4, 5, size=shape) * g
            base_f[name] = w0
            exps_f[0][name] = w0 + d
            if T > 1:
                exps_f[1][name] = w0 - d
            for t in range(2, T):
                exps_f[t][name] = w0 + rng.integers(-4, 5, size=shape) * g * (t % 2)
            continue
        w0 = rng.normal(0.0, 0.5, size=shape)
        if name.endswith("ln.scale"):
            w0 = w0 + 1.0
        base_f[name] = w0
        for t in range(T):
            scale = 0.02 * (1 + t)
            exps_f[t][name] = w0 + rng.normal(0.0, scale, size=shape) * rng.uniform(0.2, 2.0)
    if scalar:
        base_f["model.scalar"] = np.array(0.75)
        for t in range(T):
            exps_f[t]["model.scalar"] = np.array(0.75 + 0.125 * (t + 1))
    base = OrderedDict()
    exps = [OrderedDict() for _ in range(T)]
    names = list(base_f)
    # put int / bool tensors in the middle so order matters
    mid = len(names) // 2
    for i, name in enumerate(names):
        if with_int and i == mid:
            base[INT_NAME] = st.Tensor("I64", (1, 64), np.arange(64, dtype=np.int64)[None] * 3 - 7)
            base[BOOL_NAME] = st.Tensor("BOOL", (4, 8), rng.random((4, 8)) < 0.5)
            for t in range(T):
                exps[t][INT_NAME] = st.Tensor("I64", (1, 64), rng.integers(-1000, 1000, (1, 64)))
                exps[t][BOOL_NAME] = st.Tensor("BOOL", (4, 8), rng.random((4, 8)) < 0.5)
        base[name] = st.from_f64(base_f[name], dtype)
        for t in range(T):
            exps[t][name] = st.from_f64(exps_f[t][name], dtype)
    return base, exps


def shuffled(od, rng):
    keys = list(od)
    rng.shuffle(keys)
    return OrderedDict((k, od[k]) for k in keys)


# ------------------------------------------------------------ running --

class Case:
    def __init__(self, name, method, dtype, T, lam=None, params=None, seed=0,
                 pass_seed=True, out_dtype=None, excludes=(), layout="file",
                 scalar=False, extra_args=(), table=None):
        self.name, self.method, self.dtype, self.T = name, method, dtype, T
        self.lam, self.params, self.seed = lam, dict(params or {}), seed
        self.pass_seed, self.out_dtype, self.excludes = pass_seed, out_dtype, list(excludes)
        self.layout, self.scalar, self.extra_args = layout, scalar, list(extra_args)
        self.table = table  # (row, col) of the error table, or None


def run_acem(acem, args, timeout=60):
    p = subprocess.run([acem] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def build_args(case, base_path, exp_paths, out):
    a = ["merge", "--base", base_path]
    for e in exp_paths:
        a += ["--model", e]
    a += ["--method", case.method, "-o", out]
    if case.lam is not None:
        a += ["--lambda", repr(float(case.lam))]
    for k, v in case.params.items():
        a += ["--param", "%s=%s" % (k, v)]
    if case.pass_seed:
        a += ["--seed", str(case.seed)]
    if case.out_dtype:
        a += ["--dtype", DT_CLI[case.out_dtype]]
    for x in case.excludes:
        a += ["--exclude", x]
    a += ["--quiet"] + case.extra_args
    return a


def compare(case, base, exps, out, out_dtype, stats):
    """Compare acem output model `out` against the oracle. -> list of failures."""
    fails = []
    bnames = list(base)
    if list(out) != bnames:
        if set(out) != set(bnames):
            fails.append("tensor names differ: missing %r extra %r"
                         % (sorted(set(bnames) - set(out)), sorted(set(out) - set(bnames))))
        else:
            fails.append("tensor order differs from base")
    ex_re = [re.compile(x) for x in case.excludes]
    fbase, fexps, excluded = OrderedDict(), [OrderedDict() for _ in exps], []
    for name, t in base.items():
        if not t.is_float:
            continue
        if any(r.search(name) for r in ex_re):
            excluded.append(name)
            continue
        fbase[name] = t.to_f64()
        for i, e in enumerate(exps):
            fexps[i][name] = e[name].to_f64()
    lam = case.lam if case.lam is not None else M.DEFAULT_LAMBDA[case.method]
    for name, bt in base.items():
        if name not in out:
            continue
        ot = out[name]
        if ot.shape != bt.shape:
            fails.append("%s: shape %r != base %r" % (name, ot.shape, bt.shape))
            continue
        if not bt.is_float or name in excluded:
            if ot.dtype != bt.dtype or ot.tobytes() != bt.tobytes():
                fails.append("%s: %s tensor not copied from base unchanged (dtype %s)"
                             % (name, "excluded" if bt.is_float else "non-float", ot.dtype))
            continue
        if ot.dtype != out_dtype:
            fails.append("%s: dtype %s, expected %s" % (name, ot.dtype, out_dtype))
            continue
        w0 = fbase[name]
        delta = M.merge_delta(case.method, name, w0, [e[name] for e in fexps],
                              case.params, case.seed)
        exp = w0 + lam * delta
        got = ot.to_f64()
        if not np.all(np.isfinite(got)):
            fails.append("%s: non-finite values in output" % name)
            continue
        if out_dtype == "F32":
            nrm = np.linalg.norm(exp)
            aerr = np.linalg.norm(got - exp)
            err = aerr / (nrm if nrm > 0 else 1.0)
            stats["f32"] = max(stats.get("f32", 0.0), err)
            allow = SLACK * np.linalg.norm(np.abs(w0) + np.abs(lam * delta))
            if err > F32_REL_TOL and aerr <= F32_REL_TOL * nrm + allow:
                stats["slack_used"] = stats.get("slack_used", 0) + 1
                stats.setdefault("slack_notes", []).append(
                    "%s: rel Frobenius %.3g (|exp| %.3g, |W0| %.3g): cancellation, within "
                    "allowance" % (name, err, nrm, np.linalg.norm(w0)))
            elif err > F32_REL_TOL:
                i = int(np.argmax(np.abs(got - exp)))
                fails.append("%s: rel Frobenius err %.3g > %g (worst flat idx %d: got %r exp %r)"
                             % (name, err, F32_REL_TOL, i, got.ravel()[i], exp.ravel()[i]))
        else:
            u = ulp(exp, out_dtype)
            ad = np.abs(got - exp)
            tol = u + SLACK * (np.abs(w0) + np.abs(lam * delta))
            bad = ad > tol
            sl = (ad > u) & ~bad
            # table metric: ulps over the elements not covered by the allowance
            e_ulp = float(np.max(np.where(sl, 0.0, ad / u))) if ad.size else 0.0
            stats["ulp"] = max(stats.get("ulp", 0.0), e_ulp)
            stats["slack_used"] = stats.get("slack_used", 0) + int(np.sum(sl))
            if np.any(sl):
                i = int(np.argmax(np.where(sl, ad / u, 0).ravel()))
                stats.setdefault("slack_notes", []).append(
                    "%s idx %d: got %r exp %r (W0 %r, lambda*Delta %r): %.1f ulp, allowance %.1f ulp"
                    % (name, i, got.ravel()[i], exp.ravel()[i], w0.ravel()[i],
                       lam * delta.ravel()[i], ad.ravel()[i] / u.ravel()[i],
                       tol.ravel()[i] / u.ravel()[i]))
            if np.any(bad):
                idx = np.flatnonzero(bad.ravel())
                i = int(idx[0])
                fails.append("%s: %d/%d elements beyond 1 ulp; first flat idx %d: got %r exp %r "
                             "(W0 %r, Delta %r, err %.3g ulp)"
                             % (name, idx.size, bad.size, i, got.ravel()[i], exp.ravel()[i],
                                w0.ravel()[i], delta.ravel()[i], ad.ravel()[i] / u.ravel()[i]))
    return fails


def check_single_file(path):
    fails = st.validate_file(path)
    try:
        _, meta = st.read_file(path)
        if not meta or meta.get("format") != "pt":
            fails.append("%s: __metadata__ lacks \"format\":\"pt\" (%r)" % (path, meta))
    except st.FormatError as e:
        fails.append(str(e))
    return fails


def run_case(acem, case, tmp, rng, verbose):
    """-> (failures, stats)"""
    stats = {}
    d = tempfile.mkdtemp(prefix="case_", dir=tmp)
    base, exps = make_models(rng, case.T, case.dtype, scalar=case.scalar)
    if case.layout == "file":
        bp = os.path.join(d, "base.safetensors")
        st.write_file(bp, base, {"format": "pt"})
        eps = []
        for i, e in enumerate(exps):
            p = os.path.join(d, "expert%d.safetensors" % i)
            st.write_file(p, shuffled(e, rng), {"format": "pt"})
            eps.append(p)
        out = os.path.join(d, "out.safetensors")
    elif case.layout == "dir":  # HF dirs with a single model.safetensors, file output
        bp = os.path.join(d, "base")
        st.write_single_dir(bp, base)
        eps = []
        for i, e in enumerate(exps):
            p = os.path.join(d, "expert%d" % i)
            st.write_single_dir(p, shuffled(e, rng))
            eps.append(p)
        out = os.path.join(d, "out.safetensors")
    else:
        raise ValueError(case.layout)
    args = build_args(case, bp, eps, out)
    t0 = time.time()
    rc, so, se = run_acem(acem, args)
    stats["time"] = time.time() - t0
    if verbose:
        print("  $ acem " + " ".join(args))
    if rc != 0:
        return ["acem exit %d: %s" % (rc, (se or so).strip()[-800:])], stats
    if not os.path.isfile(out):
        return ["acem exited 0 but %s does not exist" % out], stats
    fails = check_single_file(out)
    try:
        outm = st.read_model(out)
    except st.FormatError as e:
        return fails + [str(e)], stats
    fails += compare(case, base, exps, outm, case.out_dtype or case.dtype, stats)
    if not fails:
        shutil.rmtree(d, ignore_errors=True)
    return fails, stats


# ---------------------------------------------------- sharded bf16 test --

SHARD_SHAPES = OrderedDict()
for _l in range(3):
    SHARD_SHAPES["model.layers.%d.self_attn.q_proj.weight" % _l] = (64, 96)
    SHARD_SHAPES["model.layers.%d.self_attn.q_proj.bias" % _l] = (64,)
    SHARD_SHAPES["model.layers.%d.mlp.down_proj.weight" % _l] = (96, 64)
    SHARD_SHAPES["model.layers.%d.mlp.gate.weight" % _l] = (48, 48)
    SHARD_SHAPES["model.layers.%d.conv.weight" % _l] = (8, 4, 3)
    SHARD_SHAPES["model.layers.%d.opp.weight" % _l] = (16, 24)
SHARD_SHAPES["model.norm.scale"] = (1, 1)
SHARD_SHAPES["lm_head.weight"] = (32, 96)
MAX_SHARD = 64 * 1024
NON_WEIGHT_FILES = {
    "config.json": json.dumps({"architectures": ["TestForCausalLM"], "hidden_size": 64,
                               "torch_dtype": "bfloat16", "note": "byte-identical \u00e9"},
                              indent=2, ensure_ascii=False).encode("utf-8") + b"\n",
    "tokenizer_config.json": b'{"model_max_length": 128}\n',
}


class ShardedEnv:
    def __init__(self, tmp, rng):
        self.d = tempfile.mkdtemp(prefix="sharded_", dir=tmp)
        self.base, self.exps = make_models(rng, 3, "BF16", float_shapes=SHARD_SHAPES)
        self.bp = os.path.join(self.d, "base")
        nb = st.write_sharded(self.bp, self.base, 40 * 1024)
        for fn, data in NON_WEIGHT_FILES.items():
            with open(os.path.join(self.bp, fn), "wb") as f:
                f.write(data)
        self.eps = []
        self.layout_note = ["base: %d shards" % len(nb)]
        for i, e in enumerate(self.exps):
            p = os.path.join(self.d, "expert%d" % i)
            # different shard boundaries and tensor order than base
            ns = st.write_sharded(p, shuffled(e, rng), (25 + 20 * i) * 1024)
            with open(os.path.join(p, "config.json"), "wb") as f:
                f.write(b'{"expert": %d}\n' % i)
            self.eps.append(p)
            self.layout_note.append("expert%d: %d shards" % (i, len(ns)))


def run_sharded_case(acem, env, method, params, verbose):
    stats = {}
    case = Case("sharded-bf16/" + method, method, "BF16", 3, params=params, seed=1234)
    out = os.path.join(env.d, "out_" + method)
    args = build_args(case, env.bp, env.eps, out) + ["--max-shard-size", "64K"]
    t0 = time.time()
    rc, so, se = run_acem(acem, args)
    stats["time"] = time.time() - t0
    if verbose:
        print("  $ acem " + " ".join(args))
    if rc != 0:
        return ["acem exit %d: %s" % (rc, (se or so).strip()[-800:])], stats
    if not os.path.isdir(out):
        return ["output directory %s not created" % out], stats
    fails = []
    probs, shards, index = st.validate_hf_dir(out)
    fails += probs
    if index is None:
        fails.append("no model.safetensors.index.json in output dir")
    if len(shards) < 2:
        fails.append("expected several shards with --max-shard-size 64K, got %r" % shards)
    for s in shards:
        p = os.path.join(out, s)
        ts, meta = st.read_file(p)
        if not meta or meta.get("format") != "pt":
            fails.append("%s: __metadata__ lacks format=pt" % s)
        data = sum(t.nbytes for t in ts.values())
        if data > MAX_SHARD and len(ts) > 1:
            fails.append("%s: %d data bytes > max shard size %d" % (s, data, MAX_SHARD))
    for fn, data in NON_WEIGHT_FILES.items():
        p = os.path.join(out, fn)
        if not os.path.isfile(p):
            fails.append("%s not copied to output dir" % fn)
        else:
            with open(p, "rb") as f:
                if f.read() != data:
                    fails.append("%s not byte-identical to base's" % fn)
    if probs:
        return fails, stats
    try:
        outm = st.read_model(out)
    except st.FormatError as e:
        return fails + [str(e)], stats
    fails += compare(case, env.base, env.exps, outm, "BF16", stats)
    return fails, stats


# --------------------------------------------------------------- main --

def standard_cases():
    cases = []
    Ts = [2, 3, 4, 5]
    k = 0
    for method in M.METHODS:
        for dtype in ("F32", "F16", "BF16"):
            cases.append(Case("%s/%s/T%d" % (method, dtype.lower(), Ts[k % 4]), method, dtype,
                              Ts[k % 4], seed=17 + k, table=(method, dtype.lower())))
            k += 1
    cases += [
        Case("ties/f32/density=0.5,lambda=0.7", "ties", "F32", 3, lam=0.7,
             params={"density": 0.5}, table=("ties", "f32")),
        Case("ties/bf16/density=1.0", "ties", "BF16", 4, params={"density": 1.0},
             table=("ties", "bf16")),
        Case("ties/f16/density=0.01 (k=max(1,..))", "ties", "F16", 2, params={"density": 0.01},
             table=("ties", "f16")),
        Case("dare_linear/bf16/p=0.5,rescale=l1,seed=7", "dare_linear", "BF16", 4,
             params={"p": 0.5, "rescale": "l1"}, seed=7, table=("dare_linear", "bf16")),
        Case("dare_linear/f32/p=0.3,lambda=1", "dare_linear", "F32", 5, lam=1.0,
             params={"p": 0.3}, seed=99, table=("dare_linear", "f32")),
        Case("dare_linear/f32/no --seed (default 0)", "dare_linear", "F32", 3, seed=0,
             pass_seed=False, table=("dare_linear", "f32")),
        Case("dare_ties/f16/p=0.7,rescale=l1,seed=123", "dare_ties", "F16", 3,
             params={"p": 0.7, "rescale": "l1"}, seed=123, table=("dare_ties", "f16")),
        Case("dare_ties/f32/p=0.5,rescale=inverse,lambda=0.8", "dare_ties", "F32", 5, lam=0.8,
             params={"p": 0.5, "rescale": "inverse"}, seed=2**40 + 3, table=("dare_ties", "f32")),
        Case("task_arithmetic/f32/lambda=-1 (negation)", "task_arithmetic", "F32", 2, lam=-1.0,
             table=("task_arithmetic", "f32")),
        Case("task_arithmetic/f32/--exclude", "task_arithmetic", "F32", 3,
             excludes=[r"bias$", r"^model\.embed"], table=("task_arithmetic", "f32")),
        Case("average/bf16->--dtype f32", "average", "BF16", 3, out_dtype="F32",
             table=("average", "f32")),
        Case("ties/f32->--dtype bf16", "ties", "F32", 2, out_dtype="BF16", table=("ties", "bf16")),
        Case("dare_linear/bf16->--dtype f16", "dare_linear", "BF16", 3, out_dtype="F16",
             seed=5, table=("dare_linear", "f16")),
        Case("average/f16/HF single-file dirs", "average", "F16", 2, layout="dir",
             table=("average", "f16")),
        Case("dare_ties/f32/HF single-file dirs", "dare_ties", "F32", 4, layout="dir",
             seed=3, table=("dare_ties", "f32")),
        Case("task_arithmetic/f32/0-d scalar tensor", "task_arithmetic", "F32", 2, scalar=True,
             table=None),
    ]
    return cases


SHARDED_PARAMS = {
    "average": {}, "task_arithmetic": {}, "ties": {"density": 0.3},
    "dare_linear": {"p": 0.6}, "dare_ties": {"p": 0.6, "rescale": "l1"},
}


def main(argv):
    verbose = "-v" in argv
    keep = "--keep" in argv
    argv = [a for a in argv if a not in ("-v", "--keep")]
    filt = None
    data_seed = 20240601
    if "--data-seed" in argv:
        i = argv.index("--data-seed")
        data_seed = int(argv[i + 1])
        del argv[i:i + 2]
    if "-k" in argv:
        i = argv.index("-k")
        filt = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) != 2:
        print("usage: %s PATH/TO/acem [-v] [-k SUBSTR] [--keep] [--data-seed N]" % argv[0])
        print("0 passed, 1 failed")
        return 2
    acem = os.path.abspath(argv[1])
    if not os.access(acem, os.X_OK):
        print("acem binary not executable: %s" % acem)
        print("0 passed, 1 failed")
        return 2
    t_start = time.time()
    rng = np.random.default_rng(data_seed)
    tmp = tempfile.mkdtemp(prefix="acem_golden_")
    passed = failed = 0
    table = {}
    slack_total = 0

    def record(name, fails, stats, cell):
        nonlocal passed, failed, slack_total
        slack_total += stats.get("slack_used", 0)
        if cell is not None:
            cur = table.setdefault(cell, [None, True, False])
            cur[2] = cur[2] or bool(stats.get("slack_used"))
            v = stats.get("f32", stats.get("ulp"))
            if v is not None:
                cur[0] = v if cur[0] is None else max(cur[0], v)
            cur[1] = cur[1] and not fails
        status = "ok  " if not fails else "FAIL"
        print("%s %-50s %6.2fs" % (status, name, stats.get("time", 0.0)))
        if verbose:
            for n in stats.get("slack_notes", []):
                print("       (allowance used) " + n)
        for f in fails[:12]:
            print("       - " + f)
        if len(fails) > 12:
            print("       - ... %d more" % (len(fails) - 12))
        if fails:
            failed += 1
        else:
            passed += 1

    try:
        for case in standard_cases():
            if filt and filt not in case.name:
                continue
            try:
                fails, stats = run_case(acem, case, tmp, rng, verbose)
            except Exception:  # noqa: BLE001 - report, keep going
                fails, stats = ["exception:\n" + traceback.format_exc()], {}
            record(case.name, fails, stats, case.table)
        if not filt or "sharded" in filt:
            env = ShardedEnv(tmp, rng)
            print("sharded inputs: " + ", ".join(env.layout_note))
            for method in M.METHODS:
                name = "sharded-bf16/" + method
                try:
                    fails, stats = run_sharded_case(acem, env, method, SHARDED_PARAMS[method],
                                                    verbose)
                except Exception:  # noqa: BLE001
                    fails, stats = ["exception:\n" + traceback.format_exc()], {}
                record(name, fails, stats, (method, "sharded-bf16"))
    finally:
        if keep:
            print("kept temp dir: " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    cols = ["f32", "f16", "bf16", "sharded-bf16"]
    print()
    print("max error per method x output dtype (f32: rel. Frobenius; f16/bf16: ulps; "
          "'!' = a case failed, '*' = f32-intermediate allowance used)")
    print("%-16s" % "method" + "".join("%16s" % c for c in cols))
    for method in M.METHODS:
        row = "%-16s" % method
        for c in cols:
            cell = table.get((method, c))
            if cell is None:
                row += "%16s" % "-"
            elif cell[0] is None:
                row += "%16s" % ("n/a" + ("!" if not cell[1] else ""))
            else:
                fmt = "%.2e" if c == "f32" else "%.3f"
                row += "%16s" % ((fmt % cell[0]) + ("*" if cell[2] else "")
                                 + ("!" if not cell[1] else ""))
        print(row)
    if slack_total:
        print("note: %d element(s)/tensor(s) were beyond the plain tolerance but within the "
              "f32-intermediate allowance (-v shows them)" % slack_total)
    print("total time %.1fs" % (time.time() - t_start))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
