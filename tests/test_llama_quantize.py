#!/usr/bin/python3
"""acem's llama-quantize mixes byte for byte against the real llama-quantize (issue 14, item 2).

llama-quantize is built from the llama.cpp source that node-llama-cpp bundles
(scripts/check_llama_quantize.sh builds it and runs this test); without
ACEM_LLAMA_QUANTIZE=PATH (the built binary) this script prints a SKIP line and passes.

For tiny 8-layer Llamas (8 heads over 2 KV heads, embedding 256; feed-forward 96, so that
ffn_down's rows fall back to 32-value types, and 512, so that every K-quant applies), three
models are merged by task_arithmetic to F32 GGUF; llama-quantize (`F32.gguf OUT.gguf MIX 1`,
no importance matrix) quantises that file, and acem writes the same merge with `--dtype
MIX`. Every tensor must have the same type and the same bytes, and general.file_type must
be the same. Q2_K_S, which llama-quantize refuses to run without an importance matrix, must be
refused by both. ACEM_LLAMA_QUANTIZE_TABLE=FILE writes the table (docs/formats.md).

usage: ACEM_LLAMA_QUANTIZE=PATH /usr/bin/python3 tests/test_llama_quantize.py PATH_TO_acem
"""

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import gguf_np as G  # noqa: E402
import llama_np as LL  # noqa: E402
from harness import check, run, run_groups  # noqa: E402

LQ = os.environ.get("ACEM_LLAMA_QUANTIZE")
MIXES = ["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q4_0", "Q2_K", "Q3_K_S",
         "Q3_K_M", "Q3_K_L", "Q3_K"]
LAYERS, HEADS, KV_HEADS, E = 8, 8, 2, 256


def tiny_llama(ff):
    """(key-values, [(name, shape)]) of an 8-layer GQA Llama in llama.cpp's names."""
    hp = {"block_count": LAYERS, "attention.head_count": HEADS,
          "attention.head_count_kv": KV_HEADS, "feed_forward_length": ff,
          "rope.dimension_count": E // HEADS}
    kv = [(k, t, hp.get(k[len("llama."):], v) if k.startswith("llama.") else v)
          for k, t, v in LL.key_values((E, ff))]
    kvd = KV_HEADS * E // HEADS
    shapes = [("token_embd.weight", (LL.VOCAB, E))]
    for i in range(LAYERS):
        p = "blk.%d." % i
        shapes += [(p + "attn_norm.weight", (E,)), (p + "attn_q.weight", (E, E)),
                   (p + "attn_k.weight", (kvd, E)), (p + "attn_v.weight", (kvd, E)),
                   (p + "attn_output.weight", (E, E)), (p + "ffn_norm.weight", (E,)),
                   (p + "ffn_gate.weight", (ff, E)), (p + "ffn_up.weight", (ff, E)),
                   (p + "ffn_down.weight", (E, ff))]
    return kv, shapes + [("output_norm.weight", (E,)), ("output.weight", (LL.VOCAB, E))]


def stored(t):
    """(type name, bytes) of a tensor read by gguf_np."""
    if isinstance(t, G.Quant):
        return G.NAMES[t.gtype], t.blocks
    return {"<f4": "F32", "<f2": "F16"}[t.dtype.str], t.tobytes()


def compare(d, f32, mix, tag):
    """-> a table row: identical tensors of all, file types, and the first differences."""
    theirs, ours = (os.path.join(d, "%s-%s-%s.gguf" % (tag, who, mix)) for who in ("lq", "acem"))
    r = subprocess.run([LQ, f32, theirs, mix, "1"], capture_output=True, text=True, timeout=600)
    if r.returncode:
        return {"mix": mix, "error": "llama-quantize: " + (r.stderr.strip().splitlines() or ["?"])[-1]}
    a = run("merge", "-q", "-b", d + "/%s-0.gguf" % tag, "-m", d + "/%s-1.gguf" % tag,
            "-m", d + "/%s-2.gguf" % tag, "-M", "task_arithmetic", "-l", "0.5", "--dtype", mix,
            "-o", ours)
    if a.returncode:
        return {"mix": mix, "error": "acem: " + a.stderr.strip()}
    _, lkv, lts, _ = G.read(theirs)
    _, akv, ats, _ = G.read(ours)
    same = [n for n in lts if n in ats and stored(lts[n]) == stored(ats[n])]
    differ = [(n, stored(lts[n])[0], stored(ats[n])[0] if n in ats else None)
              for n in lts if n not in same]
    types = {}
    for n in lts:
        types[stored(lts[n])[0]] = types.get(stored(lts[n])[0], 0) + 1
    return {"mix": mix, "same": len(same), "of": len(lts), "differ": differ[:4],
            "ftype": (lkv.get("general.file_type", (0, None))[1],
                      akv.get("general.file_type", (0, None))[1]),
            "types": ", ".join("%s %d" % kv for kv in sorted(types.items(), key=lambda kv: -kv[1]))}


def test_mixes(d):
    rows = []
    for ff in (96, 512):
        tag = "ff%d" % ff
        kv, shapes = tiny_llama(ff)
        rng = np.random.default_rng(ff)
        for t in range(3):
            G.write(os.path.join(d, "%s-%d.gguf" % (tag, t)), kv,
                    [(n, G.GGML_F32, (1 + 0.1 * rng.standard_normal(s) if len(s) == 1
                                      else rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32))
                     for n, s in shapes])
        f32 = os.path.join(d, "%s-f32.gguf" % tag)
        r = run("merge", "-q", "-b", d + "/%s-0.gguf" % tag, "-m", d + "/%s-1.gguf" % tag,
                "-m", d + "/%s-2.gguf" % tag, "-M", "task_arithmetic", "-l", "0.5",
                "--dtype", "f32", "-o", f32)
        if r.returncode:
            check("F32 merge (%s)" % tag, False, r.stderr)
            continue
        for mix in MIXES:
            row = dict(compare(d, f32, mix, tag), ff=ff)
            rows.append(row)
            if "error" in row:
                check("feed-forward %d, %s: both quantise" % (ff, mix), False, row["error"])
                continue
            check("feed-forward %d, %s: %d of %d tensors byte-identical to llama-quantize "
                  "(%s); general.file_type %s (llama-quantize %s)"
                  % (ff, mix, row["same"], row["of"], row["types"], row["ftype"][1],
                     row["ftype"][0]),
                  row["same"] == row["of"] and row["ftype"][0] == row["ftype"][1], row["differ"])
        bad = os.path.join(d, "%s-lq-Q2_K_S.gguf" % tag)
        r = subprocess.run([LQ, f32, bad, "Q2_K_S", "1"], capture_output=True, text=True,
                           timeout=600)
        a = run("merge", "-q", "-b", d + "/%s-0.gguf" % tag, "-m", d + "/%s-1.gguf" % tag,
                "-m", d + "/%s-2.gguf" % tag, "-M", "task_arithmetic", "--dtype", "Q2_K_S",
                "-o", bad + ".acem.gguf")
        check("feed-forward %d: Q2_K_S without an importance matrix is refused by llama-quantize "
              "and by acem" % ff, r.returncode != 0 and a.returncode != 0
              and "importance matrix" in a.stderr, (r.stderr[-300:], a.stderr))
    if os.environ.get("ACEM_LLAMA_QUANTIZE_TABLE"):
        with open(os.environ["ACEM_LLAMA_QUANTIZE_TABLE"], "w") as f:
            f.write("| feed-forward | mix | identical tensors | `general.file_type` (acem, "
                    "llama-quantize) | tensor types |\n|---|---|---|---|---|\n")
            for r in rows:
                if "error" in r:
                    f.write("| %d | %s | %s | - | - |\n" % (r["ff"], r["mix"], r["error"]))
                else:
                    f.write("| %d | %s | %d of %d | %s, %s | %s |\n" % (
                        r["ff"], r["mix"], r["same"], r["of"], r["ftype"][1], r["ftype"][0],
                        r["types"]))


def main():
    if not LQ or not os.access(LQ, os.X_OK):
        print("SKIP test_llama_quantize: ACEM_LLAMA_QUANTIZE does not name a built llama-quantize "
              "(scripts/check_llama_quantize.sh builds one and runs this test)")
        print("0 passed, 0 failed")
        return 0
    return run_groups([test_mixes], "acem-llama-quantize-")


if __name__ == "__main__":
    sys.exit(main())
