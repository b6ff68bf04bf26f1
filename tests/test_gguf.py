#!/usr/bin/python3
"""GGUF in and out, end to end, against the independent numpy reader/writer
(tests/oracle/gguf_np.py) and the float64 oracle.

usage: /usr/bin/python3 tests/test_gguf.py PATH_TO_acem [-v]

  * every method merges F32 GGUF inputs exactly (bit for bit) as the same tensors in
    safetensors; F16 and BF16 too (one method each);
  * a GGUF base's key-values (every value type, nested arrays, general.alignment 64) are
    carried into a GGUF output unchanged, acem.* keys added;
  * llama.cpp's conventions (issue 14 item 1): 1-D tensors and norms stay F32 under a half or
    block --dtype, general.file_type names what the file holds, general.quantization_version;
  * acem's GGUF output read back by acem and by the numpy reader;
  * Q8_0 / Q4_0 / Q4_K / Q5_K / Q6_K inputs dequantise exactly as the numpy oracle does;
    tensors copied from the base keep their blocks byte for byte;
  * --dtype q8_0 / q4_0 quantise bit-identically to ggml's reference quantisers, with
    round-trip errors within the formats' bounds (Q8_0 |err| <= d/2, Q4_0 <= |d|/2
    except the clamped top code, <= |d|); --dtype q4_k / q5_k / q6_k bit-identically to a float32
    numpy transcription of ggml's reference K-quant quantisers (tests/oracle/kquant_np.py);
  * ace over three experts whose tensors are F16 and Q8_0, written as GGUF, compared
    with the float64 oracle (the measured errors are printed);
  * inspect and stats on GGUF; usage errors for impossible output types.
The last line printed is always "N passed, M failed".
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import ace_family as AF  # noqa: E402
import gguf_np as G  # noqa: E402
import kquant_np as KQ  # noqa: E402
import llama_quant_rules as LQ  # noqa: E402
import safetensors_np as st  # noqa: E402

ACEM = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
VERBOSE = "-v" in sys.argv
results = []

METHODS = ["average", "task_arithmetic", "ties", "dare_linear", "dare_ties", "ace", "wudi",
           "actmat", "tsv", "iso_c", "iso_cts", "cart"]
SHAPES = [("blk.0.attn_q.weight", (64, 96)), ("blk.0.ffn_up.weight", (96, 64)),
          ("blk.0.attn_norm.weight", (96,)), ("blk.0.conv.weight", (4, 8, 32))]


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + str(detail)[:600]))
    sys.stdout.flush()


def acem(*args):
    if VERBOSE:
        print("  $ acem " + " ".join(args))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=600, env=env)


def merge(base, models, method, out, *extra):
    argv = ["merge", "-q", "-b", base]
    for m in models:
        argv += ["-m", m]
    return acem(*argv, "-M", method, "-o", out, *extra)


def models(rng, T=3, shapes=SHAPES, scales=None):
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes}
    exps = []
    for t in range(T):
        s = 0.05 * (1 + t) if scales is None else scales[t]
        exps.append({n: (v + s * rng.standard_normal(v.shape)).astype(np.float32)
                     for n, v in base.items()})
    return base, exps


def write_pair(d, tag, ws, st_dtype="F32", gtype=G.GGML_F32, extra_int=True):
    """The same tensors as <tag>.safetensors and <tag>.gguf (plus an I32 tensor)."""
    names = [n for n, _ in SHAPES if n in ws]
    sd = {n: st.from_f64(ws[n], st_dtype) for n in names}
    gt = [(n, gtype, ws[n]) for n in names]
    if extra_int:
        ids = np.arange(12, dtype=np.int32).reshape(3, 4)
        sd["blk.0.ids"] = st.Tensor("I32", (3, 4), ids)
        gt.append(("blk.0.ids", G.GGML_I32, ids))
    ps, pg = os.path.join(d, tag + ".safetensors"), os.path.join(d, tag + ".gguf")
    st.write_file(ps, sd)
    G.write(pg, [("general.architecture", G.STRING, "test")], gt)
    return ps, pg


def st_values(path):
    return {n: t.raw for n, t in st.read_file(path)[0].items()}


def same_bits(a, b):
    if set(a) != set(b):
        return "tensor sets differ: %s vs %s" % (sorted(a), sorted(b))
    for n in a:
        x, y = np.asarray(a[n]), np.asarray(b[n])
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            return "%s differs (max |diff| %g)" % (
                n, np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
                if x.shape == y.shape else -1)
    return None


# --------------------------------------------------------------------------------------

def test_equivalence(d):
    rng = np.random.default_rng(1)
    base, exps = models(rng)
    b = write_pair(d, "base", base)
    es = [write_pair(d, "e%d" % t, e) for t, e in enumerate(exps)]
    for m in METHODS:
        rs = merge(b[0], [e[0] for e in es], m, os.path.join(d, m + "-st.safetensors"))
        rg = merge(b[1], [e[1] for e in es], m, os.path.join(d, m + "-gg.safetensors"))
        if rs.returncode or rg.returncode:
            check("%s: F32 GGUF inputs merge like safetensors" % m, False, rs.stderr + rg.stderr)
            continue
        diff = same_bits(st_values(os.path.join(d, m + "-st.safetensors")),
                         st_values(os.path.join(d, m + "-gg.safetensors")))
        check("%s: F32 GGUF inputs merge bit for bit like safetensors" % m, diff is None, diff)
    # GGUF output of the same merge holds the same bits
    out = os.path.join(d, "ties.gguf")
    r = merge(b[1], [e[1] for e in es], "ties", out)
    ok = r.returncode == 0
    if ok:
        _, kv, ts, _ = G.read(out)
        want = st_values(os.path.join(d, "ties-st.safetensors"))
        diff = same_bits(want, {n: np.asarray(t) for n, t in ts.items()})
        ok = diff is None and kv["acem.method"][1] == "ties"
    check("ties: GGUF output read by the numpy reader equals the safetensors output", ok,
          r.stderr if r.returncode else diff)
    # mixed: GGUF base, safetensors experts
    r = merge(b[1], [e[0] for e in es], "task_arithmetic", os.path.join(d, "mixed.safetensors"))
    diff = r.stderr if r.returncode else same_bits(
        st_values(os.path.join(d, "task_arithmetic-st.safetensors")),
        st_values(os.path.join(d, "mixed.safetensors")))
    check("GGUF base with safetensors experts merges like safetensors alone", diff is None, diff)
    for dt, gt, m in (("F16", G.GGML_F16, "ties"), ("BF16", G.GGML_BF16, "ace")):
        b2 = write_pair(d, "b" + dt, base, dt, gt)
        e2 = [write_pair(d, "e%d%s" % (t, dt), e, dt, gt) for t, e in enumerate(exps)]
        o1, o2 = os.path.join(d, dt + "1.safetensors"), os.path.join(d, dt + "2.safetensors")
        r1, r2 = merge(b2[0], [e[0] for e in e2], m, o1), merge(b2[1], [e[1] for e in e2], m, o2)
        diff = (r1.stderr + r2.stderr) if r1.returncode or r2.returncode else same_bits(
            st_values(o1), st_values(o2))
        check("%s: %s GGUF inputs merge bit for bit like safetensors" % (m, dt), diff is None, diff)


def all_kv_types():
    return [
        ("general.architecture", G.STRING, "llama"),
        ("general.alignment", G.U32, 64),
        ("t.u8", G.U8, 200), ("t.i8", G.I8, -100), ("t.u16", G.U16, 60000),
        ("t.i16", G.I16, -30000), ("t.u32", G.U32, 4000000000), ("t.i32", G.I32, -2000000000),
        ("t.f32", G.F32, 1.5), ("t.bool", G.BOOL, True), ("t.u64", G.U64, 2 ** 63 + 5),
        ("t.i64", G.I64, -2 ** 62), ("t.f64", G.F64, -0.1),
        ("t.unicode", G.STRING, "héllo ✓ " * 40),
        ("t.tokens", G.ARRAY, (G.STRING, ["<s>", "</s>", "▁the", ""] * 50)),
        ("t.scores", G.ARRAY, (G.F32, [0.5 * i for i in range(300)])),
        ("t.nested", G.ARRAY, (G.ARRAY, [(G.I32, [1, 2, 3]), (G.STRING, ["a", "b"]),
                                         (G.ARRAY, [(G.BOOL, [True, False])])])),
        ("t.empty", G.ARRAY, (G.U64, [])),
        ("acem.method", G.STRING, "from an earlier merge"),
    ]


def test_metadata_and_roundtrip(d):
    rng = np.random.default_rng(2)
    base, exps = models(rng)
    kvs = all_kv_types()
    pb = os.path.join(d, "kv-base.gguf")
    G.write(pb, kvs, [(n, G.GGML_F32, base[n]) for n, _ in SHAPES], align=64)
    pe = []
    for t, e in enumerate(exps):
        pe.append(os.path.join(d, "kv-e%d.gguf" % t))
        G.write(pe[-1], [("general.architecture", G.STRING, "llama")],
                [(n, G.GGML_F32, e[n]) for n, _ in SHAPES])
    out = os.path.join(d, "kv-out.gguf")
    r = merge(pb, pe, "average", out)
    check("merge of GGUF inputs with every key-value type into a GGUF output", r.returncode == 0,
          r.stderr)
    if r.returncode:
        return
    version, kv, ts, align = G.read(out)
    kept = [(k, t, v) for k, t, v in kvs if not k.startswith("acem.")]
    got = [(k, t, v) for k, (t, v) in kv.items() if not k.startswith("acem.") and k not in FILE_KEYS]

    def norm(items):  # float32 values compare after the same rounding
        return [(k, t, np.float32(v).item() if t == G.F32 else v) for k, t, v in items]
    check("the base's key-values are carried over in order and unchanged", norm(kept) == norm(got),
          "%r\n%r" % (kept[:4], got[:4]))
    check("acem.version/method/params are written once (the base's acem.method replaced)",
          kv.get("acem.method") == (G.STRING, "average") and "acem.params" in kv
          and "acem.version" in kv and version == 3 and align == 64)
    # acem reads its own output: merging it with itself changes nothing
    out2 = os.path.join(d, "kv-again.safetensors")
    r = merge(out, [out, out], "task_arithmetic", out2)
    diff = r.stderr if r.returncode else same_bits(
        {n: np.asarray(t) for n, t in ts.items()}, st_values(out2))
    check("acem reads its own GGUF output back (self-merge is the identity)", diff is None, diff)
    oracle = {n: np.mean([e[n].astype(np.float64) for e in exps], axis=0) for n, _ in SHAPES}
    err = max(np.max(np.abs(np.asarray(ts[n], np.float64) - oracle[n])) for n in oracle)
    check("average of GGUF inputs matches the float64 oracle (max |err| %.2e)" % err, err < 1e-6)
    r = acem("inspect", out)
    check("acem inspect lists a GGUF file's key-values and tensors",
          r.returncode == 0 and "t.nested: [[1, 2, 3], [\"a\", \"b\"], [[true, false]]]" in r.stdout
          and "blk.0.conv.weight" in r.stdout and "[4, 8, 32]" in r.stdout, r.stdout + r.stderr)
    r = acem("stats", "-b", pb, "-m", pe[0], "-m", pe[1])
    check("acem stats runs on GGUF inputs", r.returncode == 0 and "blk.0.attn_q.weight" in r.stdout,
          r.stdout[-300:] + r.stderr)


FILE_KEYS = ("general.file_type", "general.quantization_version")
# llama.h's llama_ftype of each --dtype's output, as llama.cpp's loader names a file by its
# most common type (K-quants as their _M mixes); none for F64
FTYPE = {"default": 0, "f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2, "q4_k": 15,
         "q5_k": 17, "q6_k": 18, "f64": None}
GTYPE = {"f32": G.GGML_F32, "f16": G.GGML_F16, "bf16": G.GGML_BF16, "f64": G.GGML_F64,
         "q8_0": G.GGML_Q8_0, "q4_0": G.GGML_Q4_0, "q4_k": G.GGML_Q4_K, "q5_k": G.GGML_Q5_K,
         "q6_k": G.GGML_Q6_K}
# a weight, and the tensors llama.cpp keeps in F32: 1-D, a 2-D norm, one row (1-D to ggml)
LLAMA_SHAPES = [("blk.0.attn_q.weight", (64, 256)), ("blk.0.attn_norm.weight", (256,)),
                ("blk.0.attn_q_norm.weight", (4, 64)), ("blk.0.row.weight", (1, 256))]


def gtype_of(t):
    return t.gtype if isinstance(t, G.Quant) else {
        "<f4": G.GGML_F32, "<f2": G.GGML_F16, "<u2": G.GGML_BF16, "<f8": G.GGML_F64}[t.dtype.str]


def test_llamacpp_conventions(d):
    """Issue 14 item 1. On main before it, 1-D tensors and norms were converted by a half or
    block --dtype (those checks failed) and general.file_type was the base's (all failed)."""
    rng = np.random.default_rng(14)
    paths = []
    for tag, gt in (("b", G.GGML_F32), ("e1", G.GGML_F32), ("e2", G.GGML_F32), ("h", G.GGML_F16)):
        paths.append(os.path.join(d, "llama-%s.gguf" % tag))
        G.write(paths[-1], [("general.file_type", G.U32, 0), ("general.architecture", G.STRING, "llama")],
                [(n, gt, rng.standard_normal(s)) for n, s in LLAMA_SHAPES])
    for dtype, ftype in FTYPE.items():
        out = os.path.join(d, "llama-out-%s.gguf" % dtype)
        r = merge(paths[0], paths[1:3], "average", out, *([] if dtype == "default" else ["--dtype", dtype]))
        if r.returncode:
            check("--dtype %s to GGUF" % dtype, False, r.stderr)
            continue
        _, kv, ts, _ = G.read(out)
        weight = GTYPE.get(dtype, G.GGML_F32)
        others = G.GGML_F64 if dtype == "f64" else G.GGML_F32
        types = {n: G.NAMES[gtype_of(t)] for n, t in ts.items()}
        want = {n: G.NAMES[weight if i == 0 else others] for i, (n, _) in enumerate(LLAMA_SHAPES)}
        check("--dtype %s: the weight in %s, 1-D tensors and norms in %s, as llama.cpp writes "
              "them" % (dtype, want[LLAMA_SHAPES[0][0]], G.NAMES[others]), types == want, types)
        got = (kv.get("general.file_type"), kv.get("general.quantization_version"))
        check("--dtype %s: general.file_type %s, general.quantization_version 2 (uint32, once)"
              % (dtype, ftype), got == (None if ftype is None else (G.U32, ftype), (G.U32, 2)), got)
    out = os.path.join(d, "llama-f16-q8.gguf")
    r = merge(paths[3], paths[1:3], "average", out, "--dtype", "q8_0")
    types = {n: G.NAMES[gtype_of(t)] for n, t in G.read(out)[2].items()} if r.returncode == 0 else r.stderr
    check("an F16 base --dtype q8_0: its F16 norms are written F32", types == {
        "blk.0.attn_q.weight": "Q8_0", "blk.0.attn_norm.weight": "F32",
        "blk.0.attn_q_norm.weight": "F32", "blk.0.row.weight": "F32"}, types)
    out = os.path.join(d, "llama-f16.gguf")
    r = merge(paths[3], paths[1:3], "average", out)
    kv, ts = G.read(out)[1:3] if r.returncode == 0 else ({}, {})
    check("an F16 base by default: every tensor keeps its type, general.file_type 1 (MOSTLY_F16)",
          kv.get("general.file_type") == (G.U32, 1)
          and all(gtype_of(t) == G.GGML_F16 for t in ts.values()), r.stderr)
    out = os.path.join(d, "llama-f16.safetensors")
    r = merge(paths[0], paths[1:3], "average", out, "--dtype", "f16")
    dts = {n: t.dtype for n, t in st.read_model(out).items()} if r.returncode == 0 else r.stderr
    check("safetensors outputs are not llama.cpp's: --dtype f16 converts every tensor",
          dts == {n: "F16" for n, _ in LLAMA_SHAPES}, dts)


def random_kquant(rng, gtype, shape):
    """Random blocks with moderate f16 scales (the codes are any bytes)."""
    be, bb = G.BLOCK[gtype]
    n = int(np.prod(shape)) // be
    raw = rng.integers(0, 256, size=(n, bb), dtype=np.uint8)
    d = rng.uniform(0.001, 0.01, size=(n, 2)).astype("<f2").view(np.uint8)
    if gtype in (G.GGML_Q4_K, G.GGML_Q5_K):
        raw[:, 0:4] = d
    elif gtype == G.GGML_Q2_K:
        raw[:, 80:84] = d
    elif gtype == G.GGML_Q3_K:
        raw[:, 108:110] = d[:, :2]
    elif gtype == G.GGML_Q8_K:  # a float32 d
        raw[:, 0:4] = rng.uniform(0.001, 0.01, size=n).astype("<f4").view(np.uint8).reshape(n, 4)
    else:
        raw[:, 208:210] = d[:, :2]
    return (shape, raw.tobytes())


def test_quantised_inputs(d):
    rng = np.random.default_rng(3)
    qshapes = [("q8", (8, 64), G.GGML_Q8_0), ("q4", (8, 64), G.GGML_Q4_0),
               ("q4k", (4, 256), G.GGML_Q4_K), ("q6k", (2, 512), G.GGML_Q6_K),
               ("q5k", (3, 256), G.GGML_Q5_K), ("q50", (8, 64), G.GGML_Q5_0),
               ("q51", (8, 64), G.GGML_Q5_1), ("q2k", (2, 256), G.GGML_Q2_K),
               ("q3k", (2, 512), G.GGML_Q3_K), ("q8k", (1, 256), G.GGML_Q8_K),
               ("norm", (64,), G.GGML_F32)]
    paths, inputs = [], []
    for t in range(3):
        ts = []
        for n, s, gt in qshapes:
            v = rng.standard_normal(s).astype(np.float32)
            ts.append((n, gt, random_kquant(rng, gt, s) if G.BLOCK.get(gt, (0,))[0] == 256 else v))
        paths.append(os.path.join(d, "q%d.gguf" % t))
        G.write(paths[-1], [("general.architecture", G.STRING, "q")], ts)
        inputs.append(G.read(paths[-1])[2])
    out = os.path.join(d, "q-identity.safetensors")
    r = merge(paths[0], paths[1:], "task_arithmetic", out, "-x", ".")  # all copied as F32
    ok = r.returncode == 0
    detail = r.stderr
    if ok:
        got = st_values(out)
        for n, _, gt in qshapes:
            want = G.values(inputs[0][n]).astype(np.float32)
            if got[n].tobytes() != want.tobytes():
                ok, detail = False, "%s: max |diff| %g" % (n, np.max(np.abs(got[n] - want)))
    check("Q8_0, Q4_0, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K tensors dequantise bit for "
          "bit as the numpy "
          "oracle", ok,
          detail)
    r = acem("inspect", paths[0])
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.split()[:1] in
            (["q8"], ["q4"], ["q4k"], ["q6k"], ["q5k"])}
    sizes = {n: int(rows[n][-1]) for n in rows}
    check("inspect shows block tensors' stored bytes (Q8_0 8x64: 544, Q6_K 2x512: 840, "
          "Q5_K 3x256: 528)", sizes == {"q8": 544, "q4": 288, "q4k": 576, "q6k": 840, "q5k": 528},
          r.stdout)
    # average of three quantised experts vs the oracle on dequantised values
    out = os.path.join(d, "q-avg.safetensors")
    r = merge(paths[0], paths, "average", out)
    ok = r.returncode == 0
    if ok:
        got = st_values(out)
        for n, _, _ in qshapes:
            want = np.mean([G.values(x[n]) for x in inputs], axis=0)
            ok = ok and np.max(np.abs(got[n] - want)) <= 1e-6 * (1 + np.max(np.abs(want)))
    check("average of quantised GGUF inputs matches the oracle on dequantised values", ok, r.stderr)
    # copied tensors keep their blocks; merged ones keep their block types
    out = os.path.join(d, "q-copy.gguf")
    r = merge(paths[0], paths[1:], "average", out, "-x", "q4k|q8")
    ok = r.returncode == 0
    if ok:
        _, _, ts, _ = G.read(out)
        ok = (ts["q4k"].blocks == inputs[0]["q4k"].blocks and ts["q8"].blocks == inputs[0]["q8"].blocks
              and ts["q4"].gtype == G.GGML_Q4_0 and ts["q6k"].gtype == G.GGML_Q6_K
              and ts["q5k"].gtype == G.GGML_Q5_K
              and ts["norm"].dtype == np.float32)
    check("GGUF output: copied tensors keep their blocks byte for byte, merged ones keep "
          "their types (Q4_0, Q5_K, Q6_K re-quantised)", ok, r.stderr)


def bound_ratios(gtype, blocks, x):
    """|deq - x| over its bound, max over all values and over the values not clamped (Q4_0).

    With d the block's float32 scale (Q8_0: amax/127, Q4_0: max/-8), rounding to the
    nearest code is within |d|/2 and the clamped top code of Q4_0 within |d|; the stored
    scale is d rounded to f16, which adds |code| * |d - d_f16|."""
    x = np.asarray(x, np.float32).reshape(-1, 32)
    deq = G.dequantize(gtype, blocks).astype(np.float64).reshape(-1, 32)
    d16 = G.block_scales(gtype, blocks)[:, None]
    if gtype == G.GGML_Q8_0:
        d32 = (np.abs(x).max(axis=1) / np.float32(127)).astype(np.float64)[:, None]
        code = np.frombuffer(blocks, np.uint8).reshape(-1, 34)[:, 2:].view(np.int8)
        clamped = np.zeros(code.shape, bool)
    else:
        d32 = (x[np.arange(len(x)), np.argmax(np.abs(x), axis=1)] / np.float32(-8))
        d32 = d32.astype(np.float64)[:, None]
        raw = np.frombuffer(blocks, np.uint8).reshape(-1, 18)[:, 2:]
        nib = np.concatenate([raw & 15, raw >> 4], axis=1).astype(np.int64)
        code, clamped = nib - 8, nib == 15
    bound = np.abs(d32) * np.where(clamped, 1.0, 0.5) + np.abs(code) * np.abs(d32 - d16)
    ratio = np.abs(deq - x) / np.where(bound > 0, bound * (1 + 1e-6), 1)
    return ratio.max(), ratio[~clamped].max()


def test_quantised_outputs(d):
    rng = np.random.default_rng(4)
    base, exps = models(rng)
    b = write_pair(d, "qo-base", base, extra_int=False)
    es = [write_pair(d, "qo-e%d" % t, e, extra_int=False) for t, e in enumerate(exps)]
    ref = os.path.join(d, "qo-ref.safetensors")
    r = merge(b[1], [e[1] for e in es], "ties", ref)
    check("ties F32 reference merge", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    want = st_values(ref)
    for q, gt in (("q8_0", G.GGML_Q8_0), ("q4_0", G.GGML_Q4_0)):
        out = os.path.join(d, "qo-%s.gguf" % q)
        r = merge(b[1], [e[1] for e in es], "ties", out, "--dtype", q)
        if r.returncode:
            check("--dtype %s GGUF output" % q, False, r.stderr)
            continue
        _, _, ts, _ = G.read(out)
        same, worst, worst_free = True, 0.0, 0.0
        for n, t in ts.items():
            if len(want[n].shape) < 2:
                same = same and isinstance(t, np.ndarray) and t.tobytes() == want[n].tobytes()
                continue
            same = same and t.gtype == gt and t.blocks == G.quantize(gt, want[n].ravel())
            a, b2 = bound_ratios(gt, t.blocks, want[n])
            worst, worst_free = max(worst, a), max(worst_free, b2)
        check("--dtype %s: blocks identical to ggml's reference quantiser, 1-D tensors stay F32"
              % q, same)
        check("%s round trip within |d|/2 (|d| at Q4_0's clamped top code) + |code| x "
              "|d - d_f16|: max |err| / bound = %.4f" % (q.upper(), worst), worst <= 1)
    r = merge(b[1], [e[1] for e in es], "ties", os.path.join(d, "x.safetensors"), "--dtype", "q8_0")
    check("--dtype q8_0 with a safetensors output is refused", r.returncode != 0
          and "gguf" in r.stderr and not os.path.exists(os.path.join(d, "x.safetensors")), r.stderr)
    r = merge(b[1], [e[1] for e in es], "ties", os.path.join(d, "x.gguf"), "--dtype", "q4_1")
    check("--dtype q4_1 (not a type acem writes) is refused", r.returncode != 0
          and not os.path.exists(os.path.join(d, "x.gguf")), r.stderr)
    test_kquant_outputs(d)


def test_kquant_outputs(d):
    """--dtype q2_k / q3_k / q4_k / q5_k / q6_k / q8_k against tests/oracle/kquant_np.py (ggml's reference quantisers in
    float32 numpy): identical blocks, on rows of 256 and 512 values with outliers, a block of
    zeros and a block with one non-zero sub-block; 1-D tensors and rows that do not split
    into 256 stay F32."""
    rng = np.random.default_rng(7)
    shapes = [("w.a", (24, 512)), ("w.b", (6, 256)), ("w.z", (2, 256)), ("w.odd", (4, 96)),
              ("n", (256,))]
    models_ = []
    for t in range(4):
        m = {n: (0.02 * rng.standard_normal(sh) + 0.5 * (rng.standard_normal(sh) > 2.5)).astype(np.float32)
             for n, sh in shapes}
        m["w.z"][:] = 0
        m["w.z"][1, :16] = 0.01 * (t + 1)
        models_.append(m)
    paths = []
    for t, m in enumerate(models_):
        paths.append(os.path.join(d, "kq%d.safetensors" % t))
        st.write_file(paths[-1], {n: st.from_f64(v, "F32") for n, v in m.items()})
    ref = os.path.join(d, "kq-ref.safetensors")
    r = merge(paths[0], paths[1:], "ties", ref)
    if r.returncode:
        check("K-quant reference merge", False, r.stderr)
        return
    want = {n: t.to_f64().astype(np.float32).reshape(t.shape) for n, t in st.read_file(ref)[0].items()}
    for q, gt, oracle, loose in (("q4_k", G.GGML_Q4_K, KQ.quantize_q4_k, 1 / 12),
                                 ("q5_k", G.GGML_Q5_K, KQ.quantize_q5_k, 1 / 24),
                                 ("q6_k", G.GGML_Q6_K, KQ.quantize_q6_k, 1 / 48),
                                 ("q2_k", G.GGML_Q2_K, KQ.quantize_q2_k, 1 / 2),
                                 ("q3_k", G.GGML_Q3_K, KQ.quantize_q3_k, 1 / 5),
                                 ("q8_k", G.GGML_Q8_K, KQ.quantize_q8_k, 1 / 250)):
        out = os.path.join(d, "kq-%s.gguf" % q)
        r = merge(paths[0], paths[1:], "ties", out, "--dtype", q)
        if r.returncode:
            check("--dtype %s GGUF output" % q, False, r.stderr)
            continue
        _, _, ts, _ = G.read(out)
        same, worst = True, 0.0
        for n, t in ts.items():
            if n in ("n", "w.odd"):
                same = same and isinstance(t, np.ndarray) and t.tobytes() == want[n].tobytes()
                continue
            same = same and t.gtype == gt and t.blocks == oracle(want[n].ravel())
            back = G.dequantize(gt, t.blocks).reshape(want[n].shape)
            worst = max(worst, float(np.abs(back - want[n]).max() / np.abs(want[n]).max()))
        check("--dtype %s: blocks identical to the float32 oracle of ggml's reference quantiser; "
              "1-D tensors and rows not in 256s stay F32" % q, same)
        check("%s round trip: max |err| / max |x| = %.4f (below %.4f)" % (q.upper(), worst, loose),
              worst < loose)


MIX_LAYERS = 8
MIX_KV = [("general.architecture", G.STRING, "llama"), ("llama.block_count", G.U32, MIX_LAYERS),
          ("llama.attention.head_count", G.U32, 4), ("llama.attention.head_count_kv", G.U32, 2)]


def mix_shapes(tied=False):
    """A tiny Llama in llama.cpp's names, 8 layers (use_more_bits varies over them), GQA; rows
    of 256, of 64 and 96 (fallbacks to 32-value types) and of 48 (to F16)."""
    shapes = [("token_embd.weight", (64, 256)), ("output_norm.weight", (256,)),
              ("rope_freqs.weight", (16,))] + ([] if tied else [("output.weight", (64, 256))])
    for i in range(MIX_LAYERS):
        shapes += [("blk.%d.%s" % (i, n), s) for n, s in (
            ("attn_norm.weight", (256,)), ("attn_q.weight", (64, 256)), ("attn_k.weight", (32, 256)),
            ("attn_v.weight", (32, 256)), ("attn_output.weight", (256, 64)),
            ("ffn_norm.weight", (256,)), ("ffn_gate.weight", (96, 256)),
            ("ffn_up.weight", (96, 256)), ("ffn_down.weight", (256, 96)))]
    return shapes + [("blk.0.extra.weight", (8, 48))]


def oracle_blocks(name, x):
    """The numpy oracle's bytes of x as type `name`."""
    kq = {"Q4_K": KQ.quantize_q4_k, "Q5_K": KQ.quantize_q5_k, "Q6_K": KQ.quantize_q6_k,
          "Q2_K": KQ.quantize_q2_k, "Q3_K": KQ.quantize_q3_k}
    if name in kq:
        return kq[name](x.ravel())
    if name in ("F16", "F32"):
        return x.astype("<f2" if name == "F16" else "<f4").tobytes()
    return G.quantize({"Q8_0": G.GGML_Q8_0, "Q4_0": G.GGML_Q4_0, "Q5_0": G.GGML_Q5_0,
                       "Q5_1": G.GGML_Q5_1}[name], x.ravel())


def test_llama_mixes(d):
    """Issue 14 item 2: --dtype Q4_K_M ... as llama-quantize picks each tensor's type, against
    tests/oracle/llama_quant_rules.py, and blocks identical to the numpy quantisers. On main
    before it the mixes were unknown --dtype values (every check failed)."""
    rng = np.random.default_rng(15)
    for tied in (False, True):
        shapes, tag = mix_shapes(tied), "tied" if tied else "untied"
        paths = []
        # tied: 4 heads over 1 KV head, n_gqa 4 (Q2_K's attn_v rule)
        mix_kv = MIX_KV[:3] + [("llama.attention.head_count_kv", G.U32, 1 if tied else 2)]
        for t in range(3):
            paths.append(os.path.join(d, "mix-%s-%d.gguf" % (tag, t)))
            G.write(paths[-1], mix_kv, [(n, G.GGML_F32, 0.1 * rng.standard_normal(s))
                                         for n, s in shapes])
        ref = os.path.join(d, "mix-%s-f32.gguf" % tag)
        r = merge(paths[0], paths[1:], "task_arithmetic", ref, "--dtype", "f32")
        if r.returncode:
            check("%s F32 reference merge" % tag, False, r.stderr)
            continue
        want = {n: G.values(t).astype(np.float32) for n, t in G.read(ref)[2].items()}
        kv = {k: v for k, _, v in mix_kv}
        for mix in (["Q4_K_M", "Q2_K"] if tied else list(LQ.FTYPES)):
            out = os.path.join(d, "mix-%s-%s.gguf" % (tag, mix))
            spelled = mix.lower() if mix in ("Q4_K_M", "Q8_0", "Q3_K") else mix
            r = merge(paths[0], paths[1:], "task_arithmetic", out, "--dtype", spelled)
            if r.returncode:
                check("--dtype %s (%s embeddings)" % (spelled, tag), False, r.stderr)
                continue
            _, got_kv, ts, _ = G.read(out)
            rules = LQ.types(shapes, kv, mix)
            types = {n: G.NAMES[gtype_of(t)] for n, t in ts.items()}
            expect = {n: rules[n] or "F32" for n, _ in shapes}
            check("--dtype %s, %s embeddings: every tensor's type as llama_tensor_get_type picks it "
                  "(%s)" % (spelled, tag, ", ".join(sorted(set(expect.values())))),
                  types == expect, {n: (types.get(n), expect[n]) for n in expect
                                    if types.get(n) != expect[n]})
            check("--dtype %s: general.file_type %d (LLAMA_FTYPE_MOSTLY_%s)" % (
                spelled, LQ.FTYPES[mix], LQ.ALIAS.get(mix, mix)), got_kv.get("general.file_type") == (G.U32, LQ.FTYPES[mix]),
                got_kv.get("general.file_type"))
            if types != expect:
                continue
            bad = [n for n, t in ts.items() if (t.blocks if isinstance(t, G.Quant) else t.tobytes())
                   != oracle_blocks(types[n], want[n])]
            check("--dtype %s: %d tensors' bytes identical to the numpy quantisers" % (
                spelled, len(ts)), not bad, bad[:5])
            if mix != "Q4_K_M":
                continue
            # one value for the mix: a YAML config says it as --dtype does, and the output's
            # acem_config rebuilds the same file
            cfg = os.path.join(d, "mix-%s.yaml" % tag)
            with open(cfg, "w") as f:
                f.write("merge_method: task_arithmetic\nbase_model: %s\nmodels:\n  - %s\n  - %s\n"
                        "dtype: q4_k_m\noutput: %s\n" % (paths[0], paths[1], paths[2],
                                                          out + ".yaml.gguf"))
            r = acem("merge", "-q", cfg)
            same = r.returncode == 0 and open(out + ".yaml.gguf", "rb").read() == open(out, "rb").read()
            check("dtype: q4_k_m in a YAML config gives the file --dtype Q4_K_M gives (%s)" % tag,
                  same, r.stderr)
    st.write_file(os.path.join(d, "mix.safetensors"), {"w": st.from_f64(np.ones((2, 256)), "F32")})
    r = merge(os.path.join(d, "mix.safetensors"), [os.path.join(d, "mix.safetensors")] * 2, "average",
              os.path.join(d, "mix-st.gguf"), "--dtype", "q4_k_m")
    check("--dtype Q4_K_M on a base without llama.cpp's architecture keys is refused",
          r.returncode != 0 and "architecture" in r.stderr, r.stderr)
    r = merge(paths[0], paths[1:], "task_arithmetic", os.path.join(d, "mix-q2ks.gguf"), "--dtype",
              "Q2_K_S")
    check("--dtype Q2_K_S (llama-quantize refuses it without an importance matrix) is refused "
          "with one line", r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
          and "importance matrix" in r.stderr, r.stderr)


def ulp16(x):
    x = np.abs(np.asarray(x, np.float64))
    _, e = np.frexp(x)
    return np.ldexp(1.0, (np.maximum(e - 1, -14) - 10).astype(np.int64))


def test_ace_f16_q8(d):
    rng = np.random.default_rng(5)
    shapes = [("blk.0.attn_q.weight", (64, 96), G.GGML_F16),
              ("blk.0.ffn_up.weight", (96, 64), G.GGML_Q8_0),
              ("blk.0.ffn_down.weight", (64, 128), G.GGML_Q8_0),
              ("blk.0.attn_norm.weight", (96,), G.GGML_F32)]
    # heterogeneous task strengths so that ACE's refinement branch runs too
    base = {n: (0.5 * rng.standard_normal(s)).astype(np.float32) for n, s, _ in shapes}
    paths, read = [], []
    for t, scale in enumerate([0, 0.02, 0.05, 0.2]):
        ts = [(n, gt, base[n] + scale * rng.standard_normal(s).astype(np.float32))
              for n, s, gt in shapes]
        paths.append(os.path.join(d, "ace-%d.gguf" % t))
        G.write(paths[-1], [("general.architecture", G.STRING, "llama")], ts)
        read.append(G.read(paths[-1])[2])
    out = os.path.join(d, "ace-out.gguf")
    r = merge(paths[0], paths[1:], "ace", out)
    check("ace over three GGUF experts with F16 and Q8_0 tensors", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    _, _, got, _ = G.read(out)
    w0 = {n: G.values(read[0][n]) for n, _, _ in shapes}
    ws = [{n: G.values(x[n]) for n, _, _ in shapes} for x in read[1:]]
    oracle = AF.merge("ace", w0, ws)
    # the same merge written as F32: the computation's own error, before output rounding
    f32 = os.path.join(d, "ace-out.safetensors")
    r = merge(paths[0], paths[1:], "ace", f32, "--dtype", "f32")
    if r.returncode == 0:
        for n, v in st_values(f32).items():
            do = oracle[n] - w0[n]
            rel = np.linalg.norm((v.astype(np.float64) - w0[n]) - do) / np.linalg.norm(do)
            check("  %s as F32: delta rel. Frobenius error vs the oracle %.2e (<= 1e-4)"
                  % (n, rel), rel <= 1e-4)
    print("  measured: ace GGUF merge vs the float64 oracle (inputs dequantised)")
    for n, s, gt in shapes:
        g = got[n]
        v = G.values(g)
        delta_o = oracle[n] - w0[n]
        err = np.abs(v - oracle[n])
        tol = 1e-4 * np.max(np.abs(delta_o))  # f32 computation
        rel = np.linalg.norm((v - w0[n]) - delta_o) / np.linalg.norm(delta_o)
        if gt == G.GGML_Q8_0:
            # acem quantises its float32 result: |d|/2 plus the f16 rounding of d
            # (<= 2^-11 |d|) times the code, plus the float32 computation's allowance
            d16 = np.abs(G.block_scales(gt, g.blocks))
            code = np.abs(np.frombuffer(g.blocks, np.uint8).reshape(-1, 34)[:, 2:].view(np.int8))
            bound = (d16[:, None] * (1 + 2.0 ** -11) * (0.5 + code * 2.0 ** -11)).reshape(v.shape)
            ok = g.gtype == gt and np.all(err <= bound + tol)
            msg = "Q8_0, max |err| %.3e, max |err| / bound %.3f" % (err.max(),
                                                                    np.max(err / (bound + tol)))
        elif gt == G.GGML_F16:
            bound = ulp16(oracle[n]) / 2
            ok = g.dtype == np.float16 and np.all(err <= bound + tol)
            msg = "F16, max |err| %.3e, max |err| / (ulp/2 + tol) %.3f" % (
                err.max(), np.max(err / (bound + tol)))
        else:
            ok = g.dtype == np.float32 and np.all(err <= tol)
            msg = "F32, max |err| %.3e" % err.max()
        check("  %s: %s, delta rel. Frobenius error %.2e" % (n, msg, rel), ok)


def main():
    if not ACEM:
        print(__doc__)
        return 2
    d = tempfile.mkdtemp(prefix="acem-gguf-")
    try:
        for test in (test_equivalence, test_metadata_and_roundtrip, test_llamacpp_conventions,
                     test_quantised_inputs, test_quantised_outputs, test_llama_mixes,
                     test_ace_f16_q8):
            try:
                test(d)
            except Exception as e:  # a crash of the harness is a failure, not an abort
                import traceback
                traceback.print_exc()
                check(test.__name__ + " raised", False, repr(e))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("%d passed, %d failed" % (sum(results), len(results) - sum(results)))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
