#!/usr/bin/python3
"""Synthetic checkpoint sets with named shapes: a base and T experts as Hugging Face
directories, for acem stats, the golden demos and the benchmarks.

usage: make_synthetic.py OUT_DIR [--shape gpt2-small|gpt2-2blocks|llama7b-block] [--experts T]
                         [--dtype F32|F16|BF16] [--hetero MAX] [--seed N]

Each expert's delta in a tensor is a low-rank update (rank 16) plus small dense noise,
scaled by s_t = 1e-3 * 10^(h * z_t) where z_t spreads the tasks evenly over [-1, 1] and h
grows linearly with layer depth from 0 to MAX (default 1.5). So the task strengths are
alike in the first layers and differ by up to 10^(2 MAX) in the last ones: ACE's
heterogeneity gamma rises with depth. The design is fixed; it is not tuned to any method.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import safetensors_np as st  # noqa: E402


def gpt2_block(i):
    p = f"transformer.h.{i}."
    return [(p + "ln_1.weight", (768,)), (p + "ln_1.bias", (768,)),
            (p + "attn.c_attn.weight", (768, 2304)), (p + "attn.c_attn.bias", (2304,)),
            (p + "attn.c_proj.weight", (768, 768)), (p + "attn.c_proj.bias", (768,)),
            (p + "ln_2.weight", (768,)), (p + "ln_2.bias", (768,)),
            (p + "mlp.c_fc.weight", (768, 3072)), (p + "mlp.c_fc.bias", (3072,)),
            (p + "mlp.c_proj.weight", (3072, 768)), (p + "mlp.c_proj.bias", (768,))]


def llama_block(i):
    p = f"model.layers.{i}."
    return [(p + "self_attn.q_proj.weight", (4096, 4096)), (p + "self_attn.k_proj.weight", (4096, 4096)),
            (p + "self_attn.v_proj.weight", (4096, 4096)), (p + "self_attn.o_proj.weight", (4096, 4096)),
            (p + "mlp.gate_proj.weight", (11008, 4096)), (p + "mlp.up_proj.weight", (11008, 4096)),
            (p + "mlp.down_proj.weight", (4096, 11008)), (p + "input_layernorm.weight", (4096,))]


SHAPES = {
    "gpt2-small": ([("transformer.wpe.weight", (1024, 768))]
                   + [t for i in range(12) for t in gpt2_block(i)]
                   + [("transformer.ln_f.weight", (768,)), ("transformer.ln_f.bias", (768,))], 12, "gpt2"),
    "gpt2-2blocks": ([t for i in range(2) for t in gpt2_block(i)], 2, "gpt2"),
    "llama7b-block": (llama_block(0), 1, "llama"),
}


def depth(name):
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shape", default="gpt2-small", choices=sorted(SHAPES))
    ap.add_argument("--experts", type=int, default=7)
    ap.add_argument("--dtype", default="F16", choices=["F32", "F16", "BF16"])
    ap.add_argument("--hetero", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flat", action="store_true", help="the same heterogeneity MAX in every layer")
    a = ap.parse_args()
    tensors, layers, model_type = SHAPES[a.shape]
    rng = np.random.default_rng(a.seed)
    z = np.linspace(-1, 1, a.experts)
    base = {name: (0.02 * rng.standard_normal(shape, dtype=np.float32)) for name, shape in tensors}
    models = {"base": base}
    for t in range(a.experts):
        w = {}
        for name, shape in tensors:
            h = a.hetero if a.flat else a.hetero * depth(name) / max(1, layers - 1)
            s = 1e-3 * 10 ** (h * z[t])
            if len(shape) == 2:
                m, n = shape
                u = rng.standard_normal((m, 16), dtype=np.float32)
                v = rng.standard_normal((16, n), dtype=np.float32) / np.float32(np.sqrt(16 * n))
                d = u @ v + np.float32(0.1 / np.sqrt(n)) * rng.standard_normal(shape, dtype=np.float32)
            else:
                d = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
            w[name] = base[name] + np.float32(s) * d
        models[f"expert-{t + 1}"] = w
    for label, w in models.items():
        d = os.path.join(a.out, label)
        os.makedirs(d, exist_ok=True)
        st.write_file(os.path.join(d, "model.safetensors"), {k: st.from_f64(v, a.dtype) for k, v in w.items()},
                      metadata={"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": model_type, "n_layer": layers}, f)
    print(f"wrote base + {a.experts} experts ({a.shape}, {a.dtype}) to {a.out}")


if __name__ == "__main__":
    main()
