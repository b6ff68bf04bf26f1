"""A tiny Llama in llama.cpp's GGUF layout and an independent float64 forward pass of the
weights a GGUF file stores, written from the architecture's description (RMSNorm, rotary
embeddings on adjacent pairs as llama.cpp's LLAMA_ROPE_TYPE_NORM, grouped-query causal
attention, SwiGLU), for tests/test_llamacpp.py.

ggml's CPU backend multiplies a weight with activations first rounded to that type's
dot-product partner (ggml-cpu.c, type_traits_cpu[].vec_dot_type): F16 for F16, BF16 for
BF16, Q8_0 blocks of 32 for Q8_0, Q4_0 and Q5_0, Q8_1 blocks of 32 for Q5_1 (Q8_0's codes and
scale, plus s = f16(d * sum of the codes), which multiplies the weight block's min), Q8_K
blocks of 256 for Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (quantize_row_q8_K_ref: iscale = -127 / max with max
the value of largest magnitude, codes nearest_int(iscale * x) capped at 127, d = 1 / iscale
in float32; the K-quant dot products use the codes' exact block sums, so they multiply the
dequantised weight by codes * d). forward(emulate=True) rounds the activations the same way,
so that what remains between it and llama.cpp is float32 arithmetic.
"""

import numpy as np

import gguf_np as G
import kquant_np as KQ

E, HEADS, KV_HEADS, FF, LAYERS, VOCAB = 64, 4, 2, 128, 2, 288
# rows of 256 and 512, so that every K-quant applies: (embedding, feed-forward)
WIDE = (256, 512)


def _vocab():
    """A SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256 byte tokens, words."""
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % i for i in range(256)]
    toks += ["\u2581w%d" % i for i in range(VOCAB - len(toks))]
    types = [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)  # unknown, control, byte, normal
    scores = [0.0] * 259 + [-float(i) for i in range(VOCAB - 259)]
    return [("tokenizer.ggml.model", G.STRING, "llama"),
            ("tokenizer.ggml.tokens", G.ARRAY, (G.STRING, toks)),
            ("tokenizer.ggml.scores", G.ARRAY, (G.F32, scores)),
            ("tokenizer.ggml.token_type", G.ARRAY, (G.I32, types)),
            ("tokenizer.ggml.bos_token_id", G.U32, 1), ("tokenizer.ggml.eos_token_id", G.U32, 2),
            ("tokenizer.ggml.unknown_token_id", G.U32, 0)]


def key_values(dims=(E, FF), file_type=0):
    e, ff = dims
    hp = [("context_length", 64), ("embedding_length", e), ("block_count", LAYERS),
          ("feed_forward_length", ff), ("attention.head_count", HEADS),
          ("attention.head_count_kv", KV_HEADS), ("rope.dimension_count", e // HEADS)]
    return ([("general.architecture", G.STRING, "llama"), ("general.name", G.STRING, "tiny"),
             ("general.file_type", G.U32, file_type)]
            + [("llama." + k, G.U32, v) for k, v in hp]
            + [("llama.rope.freq_base", G.F32, 10000.0),
               ("llama.attention.layer_norm_rms_epsilon", G.F32, 1e-5)] + _vocab())


def shapes(dims=(E, FF)):
    E, FF = dims
    kv = KV_HEADS * E // HEADS
    s = [("token_embd.weight", (VOCAB, E))]
    for layer in range(LAYERS):
        p = "blk.%d." % layer
        s += [(p + "attn_norm.weight", (E,)), (p + "attn_q.weight", (E, E)),
              (p + "attn_k.weight", (kv, E)), (p + "attn_v.weight", (kv, E)),
              (p + "attn_output.weight", (E, E)), (p + "ffn_norm.weight", (E,)),
              (p + "ffn_gate.weight", (FF, E)), (p + "ffn_up.weight", (FF, E)),
              (p + "ffn_down.weight", (E, FF))]
    return s + [("output_norm.weight", (E,)), ("output.weight", (VOCAB, E))]


def random_weights(rng, dims=(E, FF)):
    return {n: 1 + 0.1 * rng.standard_normal(s) if len(s) == 1
            else rng.standard_normal(s) / np.sqrt(s[1]) for n, s in shapes(dims)}


# base types: (ggml type of 2-D tensors, of 1-D norms, llama_ftype)
BASES = {"F32": (G.GGML_F32, G.GGML_F32, 0), "F16": (G.GGML_F16, G.GGML_F16, 1),
         "BF16": (G.GGML_BF16, G.GGML_BF16, 32), "Q8_0": (G.GGML_Q8_0, G.GGML_F32, 7),
         "Q4_K": (G.GGML_Q4_K, G.GGML_F32, 15)}


def write(path, weights, base="F32"):
    """A GGUF of `weights` (shapes() of their width) with 2-D tensors in the base type (Q4_K
    by kquant_np's transcription of ggml's quantiser; Q8_0 by gguf_np's) and 1-D norms as
    BASES says (F16 and BF16 bases: every tensor in that type, norms included)."""
    mat, vec, ftype = BASES[base]
    dims = (weights["token_embd.weight"].shape[1], weights["blk.0.ffn_gate.weight"].shape[0])
    ts = []
    for n, shape in shapes(dims):
        a = weights[n].astype(np.float32)
        gt = vec if len(shape) == 1 else mat
        if gt == G.GGML_Q4_K:
            a = (shape, KQ.quantize_q4_k(a.ravel()))
        ts.append((n, gt, a))
    G.write(path, key_values(dims, ftype), ts)


def _bf16(x):
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32).astype(np.float64)


def _q8_0(x):
    """ggml's x86 quantize_row_q8_0: per 32 values d = amax / 127 (stored as f16), codes
    rint(x * (127 / amax)) in float32."""
    b = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(b).max(1, keepdims=True)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(b * inv)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float64)
    return (q * d).reshape(x.shape)


def _q8_1(x):
    """ggml's x86 quantize_row_q8_1 -> (values codes * f16(d) as _q8_0, the per-block error
    of s, f16(d32 * sum(codes)) - f16(d) * sum(codes), with d32 = amax / 127 in float32)."""
    b = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(b).max(1, keepdims=True)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(b * inv)
    d32 = (amax / np.float32(127)).astype(np.float32)
    d = d32.astype(np.float16).astype(np.float64)
    sq = q.sum(1, keepdims=True)
    s = (d32 * sq.astype(np.float32)).astype(np.float16).astype(np.float64)
    return (q * d).reshape(x.shape), (s - d * sq).reshape(x.shape[:-1] + (-1,))


def _q8_k(x):
    """ggml's quantize_row_q8_K_ref (the x86 build calls it): per 256 values, max the value of
    largest magnitude (the first), iscale = -127 / max, codes min(127, nearest_int(iscale *
    x)), d = 1 / iscale, all float32."""
    b = x.astype(np.float32).reshape(-1, 256)
    mx = b[np.arange(len(b)), np.abs(b).argmax(1)][:, None]
    zero = mx == 0
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127) / np.where(zero, 1, mx)).astype(np.float32)
        d = np.where(zero, np.float32(0), np.float32(1) / np.where(zero, 1, iscale)).astype(np.float32)
    q = np.minimum(127, np.rint((iscale * b).astype(np.float32)))
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(x.shape)


_PARTNER = {G.GGML_F16: lambda x: x.astype(np.float16).astype(np.float64), G.GGML_BF16: _bf16,
            G.GGML_Q8_0: _q8_0, G.GGML_Q4_0: _q8_0, G.GGML_Q5_0: _q8_0,
            G.GGML_Q4_K: _q8_k, G.GGML_Q5_K: _q8_k, G.GGML_Q6_K: _q8_k, G.GGML_Q2_K: _q8_k,
            G.GGML_Q3_K: _q8_k}


def _q5_1_mins(t):
    """A Q5_1 tensor's block mins m (f16 at byte 2 of each 24-byte block) [rows, blocks]."""
    b = np.frombuffer(t.blocks, np.uint8).reshape(-1, 24)
    return b[:, 2:4].copy().view("<f2").astype(np.float64).reshape(t.shape[0], -1)


def forward(path, tokens, emulate=True, jitter=None, inv_freq=None):
    """Logits [len(tokens), VOCAB] in float64 of the weights `path` stores. jitter=(eps,
    seed): each product's input is first multiplied by 1 + eps * N(0, 1) (float32-size noise,
    to measure how much the rounding of activations that lie near a rounding boundary, which
    float32 and float64 arithmetic may round apart, can move the logits). inv_freq: the
    rotary frequencies (dim / 2) to use instead of freq_base's (a scaled rope, computed by
    the caller and not read from the file)."""
    rng = np.random.default_rng(jitter[1]) if jitter else None
    _, kv, ts, _ = G.read(path)
    w = {n: G.values(t).reshape(t.shape) for n, t in ts.items()}
    typ = {n: t.gtype if isinstance(t, G.Quant) else
           {"<f4": G.GGML_F32, "<f2": G.GGML_F16, "<u2": G.GGML_BF16}[t.dtype.str]
           for n, t in ts.items()}
    hp = lambda k: kv["llama." + k][1]  # noqa: E731
    heads, kv_heads, eps = hp("attention.head_count"), hp("attention.head_count_kv"), \
        hp("attention.layer_norm_rms_epsilon")
    dim = hp("embedding_length") // heads
    n = len(tokens)

    def mm(x, name):
        if jitter:
            x = x * (1 + jitter[0] * rng.standard_normal(x.shape))
        if emulate and typ[name] == G.GGML_Q5_1:  # x . (d q + m) = d dy q . qy + m s
            x, ds = _q8_1(x)
            return x @ w[name].T + ds @ _q5_1_mins(ts[name]).T
        if emulate and typ[name] in _PARTNER:
            x = _PARTNER[typ[name]](x)
        return x @ w[name].T

    def rms(x, name):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w[name]

    if inv_freq is None:
        inv_freq = hp("rope.freq_base") ** (-np.arange(0, dim, 2) / dim)
    ang = np.arange(n)[:, None] * inv_freq
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # [n, heads, dim], pairs (2i, 2i + 1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    x = w["token_embd.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for layer in range(hp("block_count")):
        p = "blk.%d." % layer
        h = rms(x, p + "attn_norm.weight")
        q = rope(mm(h, p + "attn_q.weight").reshape(n, heads, dim))
        k = rope(mm(h, p + "attn_k.weight").reshape(n, kv_heads, dim))
        v = mm(h, p + "attn_v.weight").reshape(n, kv_heads, dim)
        k, v = np.repeat(k, heads // kv_heads, 1), np.repeat(v, heads // kv_heads, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(dim) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + mm(np.einsum("hts,shd->thd", s, v).reshape(n, -1), p + "attn_output.weight")
        h = rms(x, p + "ffn_norm.weight")
        g = mm(h, p + "ffn_gate.weight")
        x = x + mm(g / (1 + np.exp(-g)) * mm(h, p + "ffn_up.weight"), p + "ffn_down.weight")
    return mm(rms(x, "output_norm.weight"), "output.weight")
