#!/usr/bin/python3
"""Writes the fuzzers' seed corpora and the valid models the harnesses load.

usage: /usr/bin/python3 fuzz/make_seeds.py OUTDIR

OUTDIR/models/            base.safetensors, e1.safetensors, e2.safetensors (fuzz_merge's
                          valid inputs) and shards/ (fuzz_index's two valid shards)
OUTDIR/seeds/<harness>/   one small valid input per file
"""

import json
import os
import shutil
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import safetensors_np as st  # noqa: E402

# Every dtype acem merges, a GPT-2 Conv1D name, and an integer tensor that is copied.
SPEC = [("model.layers.0.mlp.up_proj.weight", "F32", (4, 3)),
        ("model.layers.0.attn.c_attn.weight", "F16", (3, 5)),
        ("model.norm.weight", "BF16", (3,)),
        ("model.ids", "I64", (2,))]


def model(seed):
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for name, dtype, shape in SPEC:
        v = rng.integers(0, 5, shape) if dtype == "I64" else rng.standard_normal(shape)
        out[name] = st.from_f64(v, dtype)
    return out


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_models(models):
    """base/e1/e2.safetensors and shards/ (two shards) under models; returns (shard names,
    the index's bytes). tests/test_hostile_inputs.py uses them for the fuzzers' findings."""
    os.makedirs(os.path.join(models, "shards"), exist_ok=True)
    for i, name in enumerate(("base", "e1", "e2")):
        st.write_file(os.path.join(models, name + ".safetensors"), model(i), {"format": "pt"})
    # Two shards (2 and 2 tensors, 80-byte limit) and their index.
    names = st.write_sharded(os.path.join(models, "shards"), model(0), 80)
    assert len(names) == 2, names
    index = file_bytes(os.path.join(models, "shards", st.INDEX_NAME))
    os.remove(os.path.join(models, "shards", st.INDEX_NAME))
    return names, index


def kquant_blocks(rng, g, gtype, shape):
    """(shape, raw blocks) for gguf_np.write: random code bytes, moderate f16 scales."""
    be, bb = g.BLOCK[gtype]
    raw = rng.integers(0, 256, size=(int(np.prod(shape)) // be, bb), dtype=np.uint8)
    d = rng.uniform(0.001, 0.01, size=(len(raw), 2)).astype("<f2").view(np.uint8)
    if gtype == g.GGML_Q6_K:
        raw[:, 208:210] = d[:, :2]
    else:
        raw[:, 0:4] = d
    return (shape, raw.tobytes())


def other_formats(outdir):
    """A GGUF file (key-values of several types, F32/F16 tensors, Q8_0, Q4_0 and K-quant blocks) and,
    when python3-torch is there, a torch.save archive (tied and transposed views, f16)."""
    import gguf_np as g
    rng = np.random.default_rng(5)
    path = os.path.join(outdir, "tmp.gguf")
    kvs = [("general.architecture", g.STRING, "llama"), ("general.alignment", g.U32, 32),
           ("x.list", g.ARRAY, (g.I32, [1, 2, 3])), ("x.names", g.ARRAY, (g.STRING, ["a", "b"]))]
    g.write(path, kvs, [("a.weight", g.GGML_F32, rng.standard_normal((4, 3))),
                        ("b.weight", g.GGML_F16, rng.standard_normal((3, 5))),
                        ("q8.weight", g.GGML_Q8_0, rng.standard_normal((2, 32))),
                        ("q4.weight", g.GGML_Q4_0, rng.standard_normal((1, 32))),
                        ("k4.weight", g.GGML_Q4_K, kquant_blocks(rng, g, g.GGML_Q4_K, (1, 256))),
                        ("k5.weight", g.GGML_Q5_K, kquant_blocks(rng, g, g.GGML_Q5_K, (1, 256))),
                        ("k6.weight", g.GGML_Q6_K, kquant_blocks(rng, g, g.GGML_Q6_K, (1, 256)))])
    out = [("gguf", file_bytes(path))]
    os.remove(path)
    try:
        import torch
    except ImportError:
        return out
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    path = os.path.join(outdir, "tmp.bin")
    torch.save({"w": w, "tied": w, "wt": w.t(), "h": w[:2].half()}, path)
    out.append(("torch", file_bytes(path)))
    os.remove(path)
    return out


def gguf_model(outdir, seed):
    """model(seed) as a GGUF file, in the same types (BF16 rounded as ggml does)."""
    import gguf_np as g
    types = {"F32": g.GGML_F32, "F16": g.GGML_F16, "BF16": g.GGML_BF16, "I64": g.GGML_I64}
    path = os.path.join(outdir, "tmp.gguf")
    g.write(path, [("general.architecture", g.STRING, "llama"), ("general.name", g.STRING, "m")],
            [(name, types[t.dtype], t.to_f64().reshape(t.shape)) for name, t in model(seed).items()])
    data = file_bytes(path)
    os.remove(path)
    return data


def main(outdir):
    models, seeds = os.path.join(outdir, "models"), os.path.join(outdir, "seeds")
    shutil.rmtree(seeds, ignore_errors=True)
    for sub in ("safetensors", "index", "config", "merge", "pickle", "tokenizer", "dataset"):
        os.makedirs(os.path.join(seeds, sub), exist_ok=True)
    names, index = write_models(models)

    def seed(harness, name, data):
        with open(os.path.join(seeds, harness, name), "wb") as f:
            f.write(data)

    # safetensors: the models, the shards, every dtype, no tensors, no metadata.
    for name in ("base", "e1"):
        seed("safetensors", name, file_bytes(os.path.join(models, name + ".safetensors")))
    for sn in names:
        seed("safetensors", sn, file_bytes(os.path.join(models, "shards", sn)))
    every = OrderedDict((dt.lower(), st.from_f64(np.arange(3), dt)) for dt in st.DTYPES)
    every["scalar"] = st.from_f64(np.float64(1.5), "F32")
    every["empty"] = st.from_f64(np.zeros((0, 4)), "F32")
    tmp = os.path.join(outdir, "tmp.safetensors")
    for name, tensors, meta in (("every-dtype", every, {"format": "pt", "k": "v"}),
                                ("no-tensors", OrderedDict(), {"format": "pt"}),
                                ("no-metadata", model(3), None)):
        st.write_file(tmp, tensors, meta)
        seed("safetensors", name, file_bytes(tmp))
    os.remove(tmp)
    # GGUF files and PyTorch zip archives reach their readers through the same harness:
    # acem_checkpoint_open picks the reader by a file's first bytes.
    for name, data in other_formats(outdir):
        seed("safetensors", name, data)
        if name == "torch":  # its data.pkl, for the unpickler alone
            import zipfile, io
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
                seed("pickle", "state-dict", z.read(pkl[0]))

    # index: as written, compact, and with extra metadata.
    seed("index", "index", index)
    seed("index", "compact", index.replace(b"\n", b"").replace(b"  ", b""))
    seed("index", "metadata", index.replace(b'"metadata": {', b'"metadata": {"format": "pt", '))

    # config: the documented keys in their forms.
    seed("config", "mergekit", b"merge_method: ties\nbase_model: ./base\nmodels:\n"
         b"  - model: ./a\n  - model: ./b\n  - ./c\nparameters:\n  density: 0.2\n  lambda: 1.0\n"
         b"dtype: bf16\npreset: gpt2\noutput: ./merged\n")
    seed("config", "all-keys", b"method: dare_ties\nbase: b.safetensors\nmodels: [x, y]\n"
         b"out: o.safetensors\nlambda: 0.5\nprecision: f64\nexclude: ['^ids$', bias]\n"
         b"seed: 7\nthreads: 2\nmax_shard_size: 5G\nreport: r.json\nallow_nonfinite: false\n"
         b"covariance_axis: input\nout_dtype: float16\n")
    seed("config", "grams", b"method: regmean\nbase: b\nmodels:\n  - {model: x, gram: gx}\n"
         b"  - model: y\n    gram: gy\nparameters: {alpha: 0.9}\n")
    seed("config", "anchors", b"base: &b base\nmodels: [*b, *b]\nmethod: average\n")

    # merge: selector byte (role, output kind, method) + a file.
    basef = file_bytes(os.path.join(models, "base.safetensors"))
    e2f = file_bytes(os.path.join(models, "e2.safetensors"))
    for sel in range(0, 6 * 13, 5):
        seed("merge", "sel-%02d" % sel, bytes([sel]) + (basef if sel % 3 == 0 else e2f))
    # the base and e2 as GGUF (same names and shapes): as the base, the output is GGUF too
    for sel in range(0, 6 * 13, 7):
        if (sel // 3) % 2 == 0:  # a single-file output
            seed("merge", "gguf-sel-%02d" % sel, bytes([sel]) + gguf_model(outdir, 0 if sel % 3 == 0 else 2))

    # tokenizer: tokenizer.json, or vocab.json --- merges.txt; NUL; text
    bu = {}
    n = 0
    for b in range(256):
        printable = 33 <= b <= 126 or 161 <= b <= 172 or b >= 174
        bu[b] = chr(b) if printable else chr(256 + n)
        n += not printable
    vocab = {c: i for i, c in enumerate(bu.values())}
    vocab.update({"Ġ" + "t": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259})
    merges = ["Ġ t", "h e", "Ġt he"]
    tj = {"model": {"type": "BPE", "vocab": vocab, "merges": merges},
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
          "added_tokens": [{"id": 259, "content": "<|endoftext|>", "special": True}]}
    text = "the cat, the hat<|endoftext|> 123 ‘héllo’  \n\tend".encode()
    seed("tokenizer", "json", json.dumps(tj, ensure_ascii=False).encode() + b"\0" + text)
    seed("tokenizer", "files", json.dumps(vocab).encode() + b"\n---\n#version: 0.2\n" +
         "\n".join(merges).encode() + b"\n\0" + text)

    # dataset: selector byte (format, columns, header, label names) + a file
    seed("dataset", "tsv", bytes([0]) + b"text\tlabel\nit 's \"fine\t1\nbad\t0\n")
    seed("dataset", "csv", bytes([1 + 8]) + b'text,pair,label\r\n"a, ""b""\nc",x,pos\r\nd,,neg\r\n')
    seed("dataset", "jsonl", bytes([2 + 64]) + b'{"text": "caf\\u00e9", "label": "pos"}\n'
         b'{"label": 0, "text": "x"}\n')
    seed("dataset", "cola", bytes([3 + 4]) + b"gj04\t1\t\tOur friends.\ngj04\t0\t*\tThey.\n")


if __name__ == "__main__":
    main(sys.argv[1])
