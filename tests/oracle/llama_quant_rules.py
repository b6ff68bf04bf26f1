"""llama-quantize's choice of tensor type for its mixes Q2_K, Q3_K_S, Q3_K_M (alias Q3_K),
Q3_K_L, Q4_0, Q8_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K without an importance matrix (test oracle), transcribed from llama.cpp's
src/llama-quant.cpp (llama_model_quantize_impl's visit order, tensor_allows_quantization,
tensor_get_category, llama_tensor_get_type_impl, tensor_type_fallback); it shares no code
with acem.

types(tensors, kv, ftype) -> {name: type name}; tensors are (name, row-major shape); a tensor
llama-quantize does not convert maps to None (it keeps its input type).
"""
import re

FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17,
          "Q6_K": 18, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q3_K": 12}
ALIAS = {"Q3_K": "Q3_K_M"}  # tools/quantize/quantize.cpp: "alias for Q3_K_M"
DEFAULT = {"Q4_0": "Q4_0", "Q8_0": "Q8_0", "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K",
           "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "Q2_K": "Q2_K", "Q3_K_S": "Q3_K",
           "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K"}
BLOCK = {"Q4_0": 32, "Q8_0": 32, "Q5_0": 32, "Q5_1": 32, "Q2_K": 256, "Q3_K": 256, "Q4_K": 256,
         "Q5_K": 256, "Q6_K": 256, "F16": 1}
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
NOT_QUANTISED = ["_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup",
                 "laurel", "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
                 "indexer.k_proj.weight", "indexer.q_proj.weight", "attn_rel_b.weight",
                 ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
                 ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"] + [
                 "time_mix_%s.weight" % s for s in (
                     "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2",
                     "decay_w1", "decay_w2", "lerp_fused")]


def category(name):
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                      ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                      ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def n_dims(shape):
    shape = list(shape)
    while len(shape) > 1 and shape[0] == 1:  # ggml_n_dims: trailing ne of 1 do not count
        shape.pop(0)
    return len(shape)


def quantised(name, shape):
    return (n_dims(shape) >= 2 and name.endswith("weight")
            and name not in ("position_embd.weight", "token_types.weight")
            and not any(p in name for p in NOT_QUANTISED))


def layer(name):
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def kv_int(kv, key, default=0):
    v = kv.get(key, default)
    return v[0] if isinstance(v, (list, tuple)) else v


def types(tensors, kv, ftype):
    ftype = ALIAS.get(ftype, ftype)
    arch = kv["general.architecture"]
    n_layer = kv_int(kv, arch + ".block_count")
    n_expert = kv_int(kv, arch + ".expert_count")
    n_head = kv_int(kv, arch + ".attention.head_count")
    n_head_kv = kv_int(kv, arch + ".attention.head_count_kv", n_head)
    falcon = arch == "falcon"
    n_gqa = n_head // n_head_kv if n_head_kv else 0  # hparams.n_gqa(0)
    big = {"llama": n_layer == 80 and n_head != n_head_kv, "qwen2": n_layer == 80,
           "deci": n_layer == 80, "olmo": n_layer == 80, "jais2": n_layer == 68}.get(arch, False)
    tied = not any(category(n) == "output" for n, _ in tensors)
    n_wv = sum(category(n) == "attn_v" for n, _ in tensors)
    base = DEFAULT[ftype]
    i_wv = i_down = 0
    out = {}
    for name, shape in sorted(tensors, key=lambda t: (layer(t[0]), t[0])):
        if not quantised(name, shape):
            out[name] = None
            continue
        cat, nx, new = category(name), shape[-1], base
        if cat == "output" or (tied and cat == "token_embd"):
            if falcon or nx % BLOCK[base]:
                new = "Q8_0"
            elif new != "Q8_0":
                new = "Q6_K"
        elif cat == "attn_v":
            if ftype == "Q2_K":
                new = "Q4_K" if n_gqa >= 4 else "Q3_K"
            elif ftype == "Q3_K_M":
                new = "Q5_K" if i_wv < 2 else "Q4_K"
            elif ftype == "Q3_K_L":
                new = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and more_bits(i_wv, n_wv):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and i_wv < 4:
                new = "Q5_K"
            if big and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"
            if n_expert == 8:
                new = "Q8_0"
            i_wv += 1
        elif cat == "attn_k":
            if n_expert == 8:
                new = "Q8_0"
        elif cat == "ffn_down":
            i, n = (layer(name) if n_expert > 1 else i_down), n_layer
            if ftype == "Q2_K":
                new = "Q3_K"
            elif ftype == "Q3_K_M":
                new = ("Q5_K" if i < n // 16 else "Q4_K" if not falcon or more_bits(i, n)
                       else "Q3_K")
            elif ftype == "Q3_K_L":
                new = "Q4_K" if falcon else "Q5_K"
            elif ftype == "Q4_K_M":
                if falcon:
                    new = "Q6_K" if i < n // 16 else "Q5_K" if more_bits(i, n) else "Q4_K"
                elif more_bits(i, n):
                    new = "Q6_K"
            elif ftype == "Q5_K_M" and more_bits(i, n):
                new = "Q6_K"
            elif ftype == "Q4_K_S" and not falcon and i < n // 8:
                new = "Q5_K"
            i_down += 1
        elif cat == "attn_output":
            if falcon:
                if ftype == "Q3_K_L":
                    new = "Q4_K"
            elif n_expert == 8:
                if ftype in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"):
                    new = "Q5_K"
            else:
                new = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ftype, new)
        if nx % BLOCK[new]:
            new = FALLBACK.get(new, new)
            if nx % BLOCK[new]:
                new = "F16"
        out[name] = new
    return out
