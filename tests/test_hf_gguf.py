#!/usr/bin/python3
"""Hugging Face checkpoints merged straight to llama.cpp's GGUF (issue 14, item 3), run by the
real llama.cpp (node-llama-cpp, as tests/test_llamacpp.py; without it the llama.cpp checks
print a SKIP line and the file checks still run).

A tiny Llama (with a rotary inv_freq buffer that the converter drops; Llama 3's pre-tokenizer),
a tiny Qwen2 (q/k/v biases; Qwen2's pre-tokenizer) and a tiny GPT-2 (Conv1D weights,
causal-mask buffers, tied lm_head; GPT-2's pre-tokenizer) in Hugging Face layout: config.json,
tokenizer.json (a byte-level BPE vocabulary and merges trained here on a small text),
tokenizer_config.json and safetensors, a base and two experts, merged by task_arithmetic
into GGUF as F32, F16 (the Llama) and llama-quantize's Q4_K_M (Llama and GPT-2).

- F32: llama.cpp's logits equal an independent float64 numpy forward pass of the Hugging Face
  model (HF layouts: rotate_half rotary embeddings on the unpermuted q/k, Conv1D x @ W),
  with GPT-2's GELU rounded through F16 as ggml's CPU table does (GGML_GELU_FP16).
- Q4_K_M: llama.cpp's logits equal a numpy forward of the weights the file stores, the
  activations rounded as ggml rounds them (tests/oracle/llama_np.py); the tensor types equal
  llama-quantize's choice on llama.cpp's names (attn_v / ffn_down Q6_K where use_more_bits,
  output Q6_K).
- The tokenizer keys: llama.cpp's tokenisation of a text sample equals an independent Python
  byte-level BPE (GPT-2's encoder.py algorithm, python3-regex for the pre-tokeniser), and the
  special ids, add_bos_token and chat template are those of the files.
- SentencePiece: the Llama with a tokenizer.model (BPE and unigram, trained here by
  python3-sentencepiece on Debian's Apache-2.0 text, byte fallback), F32 and Q4_K_M: the keys
  equal sentencepiece's accessors mapped as the converter maps them, llama.cpp's tokenisation
  equals SentencePieceProcessor.encode; malformed tokenizer.model files refused in one line.
- Refusals: another model_type, no tokenizer file, one line each.
- Peak RSS of a larger HF-to-GGUF merge (Q4_K_M, permuted q/k) against its inputs.

usage: /usr/bin/python3 tests/test_hf_gguf.py PATH_TO_acem
"""

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import regex

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import gguf_np as G  # noqa: E402
import llama_np as LL  # noqa: E402
import safetensors_np as S  # noqa: E402
from harness import ACEM, check, one_error_line, run, run_groups  # noqa: E402

NLC = os.environ.get("NODE_LLAMA_CPP", os.path.join(HERE, "..", ".deps", "node-llama-cpp"))
HAVE_LLAMACPP = bool(shutil.which("node")) and os.path.exists(
    os.path.join(NLC, "node_modules", "node-llama-cpp", "package.json"))
GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama 3's and Qwen2's tokenizer.json Split patterns (a ByteLevel without its own regex after)
LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}"""
             r"""\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"""
            r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
CORPUS = ("the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs! "
          "merging models is the art of adding task vectors: theta = theta0 + lambda * tau. "
          "llama.cpp runs the merged model, and the tokenizer must agree with the model's own. "
          "Numbers 12, 345 and 6789 appear too, as does café and naïve text. 42 is 42.") * 3
SAMPLE = "The quick fox's merged model runs: 42 tests, don't   stop!\n  café naïve llama.cpp"
N_MERGES = 120
TOKENS = [5, 70, 300, 12, 33, 260, 101, 7]
E, FF, HEADS, KV_HEADS, LAYERS = 256, 512, 4, 2, 2
TOL = 1e-4  # float32 arithmetic in another order, relative to the largest logit
TOL_Q = 1e-3  # and an odd activation code rounded the other way near a boundary
TOL_F16 = 3e-3  # F16 activations: many codes near a boundary (test_llamacpp's envelope)


# ---- tokenizer: a byte-level BPE trained here, and an independent encoder --------------------

def bytes_to_unicode():
    """GPT-2's encoder.py: printable bytes map to themselves, the others to 256 + n."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()


def words(text, pattern=GPT2_RE):
    return ["".join(B2U[b] for b in w.encode()) for w in regex.findall(pattern, text)]


def train_bpe():
    """(vocab {token: id}, merges [(a, b)]): the 256 byte symbols, then N_MERGES merges of the
    most frequent adjacent pair (ties: the smallest pair)."""
    seqs = [list(w) for w in words(CORPUS)]
    vocab = {B2U[b]: i for i, b in enumerate(sorted(B2U))}
    merges = []
    for _ in range(N_MERGES):
        counts = collections.Counter(p for s in seqs for p in zip(s, s[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        vocab[pair[0] + pair[1]] = len(vocab)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == pair:
                    s[i:i + 2] = [pair[0] + pair[1]]
                i += 1
    return vocab, merges


def encode(text, vocab, merges, pattern=GPT2_RE, ignore_merges=False):
    """GPT-2's encoder.py bpe(): merge the lowest-ranked pair until none is ranked; with
    ignore_merges (Llama 3's tokenizer.json) a word the vocabulary holds is its token."""
    ranks = {p: i for i, p in enumerate(merges)}
    ids = []
    for w in words(text, pattern):
        if ignore_merges and w in vocab:
            ids.append(vocab[w])
            continue
        s = list(w)
        while len(s) > 1:
            pair = min(zip(s, s[1:]), key=lambda p: ranks.get(p, 1 << 30))
            if pair not in ranks:
                break
            out, i = [], 0
            while i < len(s):
                if i < len(s) - 1 and (s[i], s[i + 1]) == pair:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            s = out
        ids += [vocab[t] for t in s]
    return ids


VOCAB, MERGES = train_bpe()
EOT = len(VOCAB)  # <|endoftext|>, an added special token
V = EOT + 1


def write_tokenizer(d, pair_merges, config, split=None):
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": EOT, "content": "<|endoftext|>", "single_word": False,
                             "lstrip": False, "rstrip": False, "normalized": True,
                             "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                             "trim_offsets": True, "use_regex": True} if split is None else
           {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated",
                "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                "use_regex": False}]},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "dropout": None, "unk_token": None,
                     "continuing_subword_prefix": "", "end_of_word_suffix": "",
                     "fuse_unk": False, "byte_fallback": False,
                     "ignore_merges": split == LLAMA3_RE,
                     "vocab": dict(VOCAB, **{"<|endoftext|>": EOT}),
                     "merges": [list(p) for p in MERGES] if pair_merges
                     else [" ".join(p) for p in MERGES]}}
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)


# ---- the models in Hugging Face layout --------------------------------------------------------

def llama_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": E,
            "intermediate_size": FF, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "num_hidden_layers": LAYERS, "vocab_size": V,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
            "tie_word_embeddings": False, "bos_token_id": EOT, "eos_token_id": EOT}


def llama_shapes(e=E, ff=FF, layers=LAYERS, v=V, qkv_bias=False):
    kv = KV_HEADS * e // HEADS
    s = [("model.embed_tokens.weight", (v, e))]
    for i in range(layers):
        p = "model.layers.%d." % i
        s += [(p + "input_layernorm.weight", (e,)), (p + "self_attn.q_proj.weight", (e, e)),
              (p + "self_attn.k_proj.weight", (kv, e)), (p + "self_attn.v_proj.weight", (kv, e)),
              (p + "self_attn.o_proj.weight", (e, e)),
              (p + "self_attn.rotary_emb.inv_freq", (e // HEADS // 2,)),
              (p + "post_attention_layernorm.weight", (e,)),
              (p + "mlp.gate_proj.weight", (ff, e)), (p + "mlp.up_proj.weight", (ff, e)),
              (p + "mlp.down_proj.weight", (e, ff))]
        if qkv_bias:
            s += [(p + "self_attn.q_proj.bias", (e,)), (p + "self_attn.k_proj.bias", (kv,)),
                  (p + "self_attn.v_proj.bias", (kv,))]
    return s + [("model.norm.weight", (e,)), ("lm_head.weight", (v, e))]


def gpt2_config():
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": E,
            "n_head": HEADS, "n_layer": LAYERS, "n_ctx": 64, "n_positions": 64,
            "vocab_size": V, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
            "bos_token_id": EOT, "eos_token_id": EOT}


def gpt2_shapes():
    s = [("wte.weight", (V, E)), ("wpe.weight", (64, E))]
    for i in range(LAYERS):
        p = "h.%d." % i
        s += [(p + "ln_1.weight", (E,)), (p + "ln_1.bias", (E,)), (p + "attn.bias", (1, 1, 64, 64)),
              (p + "attn.c_attn.weight", (E, 3 * E)), (p + "attn.c_attn.bias", (3 * E,)),
              (p + "attn.c_proj.weight", (E, E)), (p + "attn.c_proj.bias", (E,)),
              (p + "ln_2.weight", (E,)), (p + "ln_2.bias", (E,)),
              (p + "mlp.c_fc.weight", (E, 4 * E)), (p + "mlp.c_fc.bias", (4 * E,)),
              (p + "mlp.c_proj.weight", (4 * E, E)), (p + "mlp.c_proj.bias", (E,))]
    return s + [("ln_f.weight", (E,)), ("ln_f.bias", (E,))]


def is_buffer(name):
    return name.endswith((".attn.bias", "inv_freq")) and "c_attn" not in name


def random_model(rng, shapes):
    w = {}
    for n, s in shapes:
        if is_buffer(n):  # the causal mask, the rotary frequencies
            w[n] = np.tril(np.ones(s)) if n.endswith("attn.bias") else \
                10000.0 ** (-np.arange(0, 2 * s[0], 2) / (2 * s[0]))
        elif len(s) == 1:
            w[n] = (1 if "norm" in n or "ln_" in n else 0) + 0.1 * rng.standard_normal(s)
        else:
            w[n] = rng.standard_normal(s) / np.sqrt(s[-1] if "c_" not in n else s[0])
    return w


def write_models(d, config, shapes, tokenizer_config, pair_merges, seed=3, split=None):
    """Base and two experts in d/base, d/e1, d/e2 -> (paths, the merged weights as float32:
    task_arithmetic with lambda 0.5, in float64, rounded once)."""
    rng = np.random.default_rng(seed)
    w0 = random_model(rng, shapes)
    ws = [w0] + [{n: v if is_buffer(n) else
                  v + 0.05 * rng.standard_normal(v.shape) * np.abs(v).mean()
                  for n, v in w0.items()} for _ in (1, 2)]
    paths = []
    for name, w in zip(("base", "e1", "e2"), ws):
        p = os.path.join(d, name)
        os.mkdir(p)
        S.write_file(os.path.join(p, "model.safetensors"), collections.OrderedDict(
            (n, S.from_f64(w[n], "F32")) for n, _ in shapes))
        with open(os.path.join(p, "config.json"), "w") as f:
            json.dump(config, f)
        write_tokenizer(p, pair_merges, tokenizer_config, split)
        paths.append(p)
    f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    w = [{n: f32(v) for n, v in m.items()} for m in ws]
    merged = {n: f32(w[0][n] + 0.5 * ((w[1][n] - w[0][n]) + (w[2][n] - w[0][n]))) for n in w[0]}
    return paths, merged


# ---- float64 forward passes of the Hugging Face models ---------------------------------------

def rms(x, g, eps=1e-5):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * g


def attention(q, k, v):
    """q [n, heads, dim], k/v [n, kv_heads, dim]: causal softmax attention."""
    n, heads, dim = q.shape
    k, v = np.repeat(k, heads // k.shape[1], 1), np.repeat(v, heads // v.shape[1], 1)
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(dim) + np.triu(np.full((n, n), -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", s, v).reshape(n, -1)


def hf_llama_forward(w, tokens, inv=None):
    """transformers' LlamaForCausalLM (and Qwen2ForCausalLM: q/k/v biases): rotate_half
    rotary embeddings (halves, not pairs), of frequencies inv (default: theta 10000)."""
    n, dim = len(tokens), E // HEADS
    if inv is None:
        inv = 10000.0 ** (-np.arange(0, dim, 2) / dim)
    ang = np.concatenate([np.arange(n)[:, None] * inv] * 2, -1)[:, None, :]

    def rope(x):
        half = np.concatenate([-x[..., dim // 2:], x[..., :dim // 2]], -1)
        return x * np.cos(ang) + half * np.sin(ang)

    x = w["model.embed_tokens.weight"][tokens]
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        h = rms(x, w[p + "input_layernorm.weight"])
        def proj(m):
            return h @ w[p + m + ".weight"].T + w.get(p + m + ".bias", 0)
        q = rope(proj("self_attn.q_proj").reshape(n, HEADS, dim))
        k = rope(proj("self_attn.k_proj").reshape(n, KV_HEADS, dim))
        v = proj("self_attn.v_proj").reshape(n, KV_HEADS, dim)
        x = x + attention(q, k, v) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ \
            w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def llama3_inv_freq(rs, theta=10000.0, dim=E // HEADS):
    """transformers' _compute_llama3_parameters (modeling_rope_utils.py) in float64: each
    wavelength 2 pi / inv_freq against original_max_position_embeddings / {low,high}_freq_factor:
    long ones divided by factor, short ones kept, those between smoothed."""
    inv = theta ** (-np.arange(0, dim, 2) / dim)
    old, low, high = rs["original_max_position_embeddings"], rs["low_freq_factor"], \
        rs["high_freq_factor"]
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > old / low, inv / rs["factor"], inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / rs["factor"] + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled)


def gelu_ggml(x):
    """gelu_new (tanh form), as ggml's CPU backend evaluates it: a table over F16 inputs with
    F16 results for |x| < 10 (GGML_GELU_FP16, ggml-cpu/vec.h)."""
    def gelu(t):
        return 0.5 * t * (1 + np.tanh(np.sqrt(2 / np.pi) * (t + 0.044715 * t ** 3)))
    h = x.astype(np.float16).astype(np.float32).astype(np.float64)
    table = gelu(h).astype(np.float16).astype(np.float64)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, table))


def gpt2_forward(w, tokens, mm):
    """transformers' GPT2LMHeadModel over weights named as llama.cpp names them, each
    [out, in]: mm(x, name) is x @ w[name].T (with the activations rounded when emulating)."""
    n, dim = len(tokens), E // HEADS

    def ln(x, p):
        x = x - x.mean(-1, keepdims=True)
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-5) * w[p + ".weight"] + \
            w[p + ".bias"]

    def lin(x, p):
        return mm(x, p + ".weight") + w[p + ".bias"]

    x = w["token_embd.weight"][tokens] + w["position_embd.weight"][:n]
    for i in range(LAYERS):
        p = "blk.%d." % i
        qkv = lin(ln(x, p + "attn_norm"), p + "attn_qkv")
        q, k, v = (qkv[:, j * E:(j + 1) * E].reshape(n, HEADS, dim) for j in range(3))
        x = x + lin(attention(q, k, v), p + "attn_output")
        x = x + lin(gelu_ggml(lin(ln(x, p + "ffn_norm"), p + "ffn_up")), p + "ffn_down")
    return mm(ln(x, "output_norm"), "token_embd.weight")


def gpt2_hf_as_gguf(w):
    """The test's own map of HF GPT-2 names to llama.cpp's (Conv1D weights transposed)."""
    out = {"token_embd.weight": w["wte.weight"], "position_embd.weight": w["wpe.weight"],
           "output_norm.weight": w["ln_f.weight"], "output_norm.bias": w["ln_f.bias"]}
    parts = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
             "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(LAYERS):
        for hf, gg in parts.items():
            for s in ("weight", "bias"):
                v = w["h.%d.%s.%s" % (i, hf, s)]
                out["blk.%d.%s.%s" % (i, gg, s)] = v.T if v.ndim == 2 else v
    return out


def stored_gpt2_forward(path, tokens):
    """The GPT-2 forward of the weights a GGUF stores, activations rounded as ggml does."""
    _, _, ts, _ = G.read(path)
    w = {n: G.values(t).reshape(t.shape) for n, t in ts.items()}

    def mm(x, name):
        t = ts[name]
        if isinstance(t, G.Quant) and t.gtype in LL._PARTNER:
            x = LL._PARTNER[t.gtype](x)
        return x @ w[name].T
    return gpt2_forward(w, tokens, mm)


# ---- llama.cpp ----------------------------------------------------------------------------------

def llamacpp(path, text=None, v=V):
    """(returncode, stderr, {"file_type", "logits", "tokens"}) of llama.cpp on path."""
    env = dict(os.environ, NODE_LLAMA_CPP=NLC, GGML_NO_BACKTRACE="1")
    if text is not None:
        env["ACEM_LLAMACPP_TEXT"] = text
    try:
        r = subprocess.run(["node", os.path.join(HERE, "llamacpp_logits.mjs"), path]
                           + [str(t) for t in TOKENS], capture_output=True, text=True,
                           timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return 124, "timed out after 120 s", None
    if r.returncode:
        return r.returncode, r.stderr, None
    got = json.loads(r.stdout)
    logits = np.full((len(TOKENS), v), np.nan)
    for i, pairs in enumerate(got["logits"]):
        for tok, v in pairs:
            logits[i, tok] = v
    return 0, "", {"file_type": got["file_type"], "logits": logits, "tokens": got.get("tokens")}


def merge(paths, out, dtype):
    args = ["merge", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "-M",
            "task_arithmetic", "-l", "0.5", "-o", out]
    return run(*args, *(["--dtype", dtype] if dtype else []))


def compare(label, path, want, tol, pattern=GPT2_RE, expect=None):
    """llama.cpp's logits on path against want (relative to the largest logit), and its
    tokenisation of SAMPLE against expect (by default the BPE's under pattern)."""
    if not HAVE_LLAMACPP:
        return
    rc, err, got = llamacpp(path, SAMPLE, want.shape[1])
    check("%s: llama.cpp loads it" % label, rc == 0, err[-600:])
    if rc:
        return
    diff = np.abs(got["logits"] - want).max()
    rel = diff / np.abs(want).max()
    top1 = np.mean(got["logits"].argmax(-1) == want.argmax(-1))
    check("%s: logits vs numpy: max |diff| %.2e (relative %.1e), top-1 agreement %.0f%%"
          % (label, diff, rel, 100 * top1), rel <= tol)
    if expect is None:
        expect = encode(SAMPLE, VOCAB, MERGES, pattern, ignore_merges=pattern == LLAMA3_RE)
    check("%s: llama.cpp's tokenisation of the sample equals the oracle's %d ids"
          % (label, len(expect)),
          got["tokens"] == expect, "%s vs %s" % (got["tokens"], expect))


def key_mismatches(kv, want):
    """{key: what the file holds} for each key-value of want the file does not hold as want."""
    return {k: kv.get(k, (None, None))[1] for k, v in want.items()
            if kv.get(k, (None, None))[1] != v}


def q4_k_m(name, tied=False):
    """llama-quantize's Q4_K_M type for a 2-D tensor of a model of LAYERS layers (one attn_v-
    like and one ffn_down per layer; src/llama-quant.cpp): Q6_K for the output (a tied
    token_embd), for attn_v / attn_qkv and ffn_down of the layers use_more_bits picks, else
    Q4_K."""
    def more_bits(i, n):
        return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return G.GGML_Q6_K
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if any(p in name for p in ("attn_v", "attn_qkv", "ffn_down")) and more_bits(layer, LAYERS):
        return G.GGML_Q6_K
    return G.GGML_Q4_K


# ---- the checks ---------------------------------------------------------------------------------

def test_llama(d):
    tc = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": True,
          "add_eos_token": False,
          "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}
    paths, merged = write_models(d, llama_config(), llama_shapes(), tc, pair_merges=True,
                                 split=LLAMA3_RE)
    want = hf_llama_forward(merged, TOKENS)
    out = os.path.join(d, "f32.gguf")
    r = merge(paths, out, "f32")
    check("llama: HF directories merged to GGUF", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    _, kv, ts, _ = G.read(out)
    names = set(ts)
    check("llama: llama.cpp's tensor names, inv_freq dropped",
          names == {n for n, _ in LL.shapes((E, FF))},
          sorted(names ^ {n for n, _ in LL.shapes((E, FF))}))
    q = G.values(ts["blk.0.attn_q.weight"]).reshape(E, E)
    hd = E // HEADS
    perm = merged["model.layers.0.self_attn.q_proj.weight"].reshape(
        HEADS, 2, hd // 2, E).swapaxes(1, 2).reshape(E, E)
    q_hf = merged["model.layers.0.self_attn.q_proj.weight"]
    check("llama: attn_q holds q_proj with LlamaModel.permute's row order",
          np.allclose(q, perm, rtol=1e-6, atol=1e-7) and not np.allclose(q, q_hf, rtol=1e-2))
    want_kv = {"general.architecture": "llama", "general.type": "model", "general.name": "f32",
               "llama.block_count": LAYERS,
               "llama.context_length": 64, "llama.embedding_length": E,
               "llama.feed_forward_length": FF, "llama.attention.head_count": HEADS,
               "llama.attention.head_count_kv": KV_HEADS, "llama.vocab_size": V,
               "llama.rope.dimension_count": E // HEADS, "tokenizer.ggml.model": "gpt2",
               "tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.bos_token_id": EOT,
               "tokenizer.ggml.eos_token_id": EOT, "tokenizer.ggml.add_bos_token": True,
               "tokenizer.ggml.add_eos_token": False,
               "tokenizer.chat_template": tc["chat_template"]}
    bad = key_mismatches(kv, want_kv)
    check("llama: hyperparameter and tokenizer keys as convert_hf_to_gguf.py writes them",
          not bad, bad)
    toks = kv["tokenizer.ggml.tokens"][1][1]
    types = kv["tokenizer.ggml.token_type"][1][1]
    merges = kv["tokenizer.ggml.merges"][1][1]
    check("llama: tokens, token types (special: CONTROL) and merges",
          len(toks) == V and toks[EOT] == "<|endoftext|>" and list(types[:EOT]) == [1] * EOT
          and types[EOT] == 3 and merges == [" ".join(p) for p in MERGES],
          (len(toks), toks[-3:], list(types[-3:]), merges[:3], MERGES[:3]))
    for k in ("rope.freq_base", "attention.layer_norm_rms_epsilon"):
        check("llama: llama.%s" % k,
              np.isclose(kv["llama." + k][1], {"rope.freq_base": 1e4}.get(k, 1e-5)))
    compare("llama F32", out, want, TOL, LLAMA3_RE)
    out = os.path.join(d, "f16.gguf")
    r = merge(paths, out, "f16")
    ts = G.read(out)[2] if r.returncode == 0 else {}
    check("llama: merged straight to F16, norms F32",
          r.returncode == 0 and all((t.dtype.str == "<f4") == (len(t.shape) == 1)
                                    for t in ts.values()), r.stderr)
    if r.returncode == 0:
        compare("llama F16", out, LL.forward(out, TOKENS), TOL_F16, LLAMA3_RE)
    out = os.path.join(d, "q4km.gguf")
    r = merge(paths, out, "Q4_K_M")
    check("llama: merged straight to Q4_K_M", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    _, kv, ts, _ = G.read(out)
    got = {n: t.gtype for n, t in ts.items() if isinstance(t, G.Quant)}
    want_t = {n: q4_k_m(n) for n, s in LL.shapes((E, FF)) if len(s) == 2}
    check("llama Q4_K_M: llama-quantize's types on llama.cpp's names (file type %s)"
          % kv["general.file_type"][1], got == want_t and kv["general.file_type"][1] == 15,
          {n: (got.get(n), t) for n, t in want_t.items() if got.get(n) != t})
    compare("llama Q4_K_M", out, LL.forward(out, TOKENS), TOL_Q, LLAMA3_RE)


def test_gpt2(d):
    tc = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
          "unk_token": "<|endoftext|>", "model_max_length": 64}
    paths, merged = write_models(d, gpt2_config(), gpt2_shapes(), tc, pair_merges=False)
    jinja = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with open(os.path.join(paths[0], "chat_template.jinja"), "w") as f:
        f.write(jinja)
    gw = gpt2_hf_as_gguf(merged)
    want = gpt2_forward(gw, TOKENS, lambda x, n: x @ gw[n].T)
    out = os.path.join(d, "f32.gguf")
    r = merge(paths, out, "f32")
    check("gpt2: HF directories merged to GGUF", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    _, kv, ts, _ = G.read(out)
    check("gpt2: llama.cpp's names, Conv1D weights transposed, mask buffers dropped",
          set(ts) == set(gw) and all(np.allclose(G.values(t).reshape(t.shape), gw[n], rtol=1e-6,
                                                 atol=1e-7) for n, t in ts.items()),
          sorted(set(ts) ^ set(gw)))
    want_kv = {"general.architecture": "gpt2", "gpt2.block_count": LAYERS,
               "gpt2.context_length": 64, "gpt2.embedding_length": E,
               "gpt2.feed_forward_length": 4 * E, "gpt2.attention.head_count": HEADS,
               "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
               "tokenizer.ggml.bos_token_id": EOT, "tokenizer.ggml.eos_token_id": EOT,
               "tokenizer.ggml.unknown_token_id": EOT, "tokenizer.chat_template": jinja}
    bad = key_mismatches(kv, want_kv)
    check("gpt2: hyperparameter and tokenizer keys (no add_bos_token: not in the files; the "
          "chat template from chat_template.jinja)",
          not bad and "tokenizer.ggml.add_bos_token" not in kv, bad)
    compare("gpt2 F32", out, want, TOL)
    out = os.path.join(d, "q4km.gguf")
    r = merge(paths, out, "Q4_K_M")
    check("gpt2: merged straight to Q4_K_M", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    _, kv, ts, _ = G.read(out)
    got = {n: t.gtype for n, t in ts.items() if isinstance(t, G.Quant)}
    # attn_qkv is attn_v's category; token_embd is the (tied) output; position_embd is kept
    want_t = {n: q4_k_m(n, tied=True) for n, v in gw.items()
              if v.ndim == 2 and n != "position_embd.weight"}
    check("gpt2 Q4_K_M: llama-quantize's types (tied token_embd Q6_K, position_embd F32)",
          got == want_t, {n: (got.get(n), t) for n, t in want_t.items() if got.get(n) != t})
    compare("gpt2 Q4_K_M", out, stored_gpt2_forward(out, TOKENS), TOL_Q)


def test_qwen2(d):
    """Qwen2: llama.cpp's qwen2 architecture (NEOX rotary: q/k not permuted), q/k/v biases,
    and the Qwen2 Split pre-tokenizer ("qwen2")."""
    cfg = dict(llama_config(), model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    paths, merged = write_models(d, cfg, llama_shapes(qkv_bias=True), {}, True, seed=5,
                                 split=QWEN2_RE)
    out = os.path.join(d, "f32.gguf")
    r = merge(paths, out, "f32")
    check("qwen2: HF directories merged to GGUF", r.returncode == 0, r.stderr)
    if r.returncode:
        return
    _, kv, ts, _ = G.read(out)
    q = G.values(ts["blk.1.attn_q.weight"]).reshape(E, E)
    check("qwen2: architecture qwen2, pre-tokenizer qwen2, q not permuted, biases kept",
          kv["general.architecture"][1] == "qwen2" and kv["tokenizer.ggml.pre"][1] == "qwen2"
          and np.allclose(q, merged["model.layers.1.self_attn.q_proj.weight"], rtol=1e-6)
          and "blk.0.attn_k.bias" in ts and "qwen2.vocab_size" not in kv)
    check("qwen2: the sample's ids under Qwen2's pre-tokenizer differ from GPT-2's (digits "
          "one by one)", encode(SAMPLE, VOCAB, MERGES, QWEN2_RE) != encode(SAMPLE, VOCAB, MERGES))
    compare("qwen2 F32", out, hf_llama_forward(merged, TOKENS), TOL, QWEN2_RE)

# Llama 3.1's rope_scaling with a context of 32 (not 8192) against the tiny model's 64: at
# head dimension 64 and theta 1e4 the 32 frequencies fall in all three bands (1 kept, 5
# smoothed, 26 divided by 8), and at 8 positions the angles differ from unscaled rope's.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def test_llama3(d):
    """Llama 3.1 / 3.2 rope scaling: the rope_freqs.weight tensor convert_hf_to_gguf.py adds
    (LlamaModel.generate_extra_tensors), F32 under every --dtype, run by llama.cpp against
    transformers' scaled frequencies."""
    cfg = dict(llama_config(), rope_scaling=LLAMA3_ROPE)
    paths, merged = write_models(d, cfg, llama_shapes(), {}, True, seed=7, split=LLAMA3_RE)
    inv = llama3_inv_freq(LLAMA3_ROPE)
    plain = 10000.0 ** (-np.arange(0, E // HEADS, 2) / (E // HEADS))
    bands = (np.sum(inv == plain), np.sum(np.isclose(inv, plain / 8, rtol=1e-12)))
    check("llama3: the tiny config puts frequencies in every band (kept %d, divided %d, "
          "smoothed %d)" % (bands[0], bands[1], len(inv) - sum(bands)),
          min(bands[0], bands[1], len(inv) - sum(bands)) > 0)
    out = os.path.join(d, "f32.gguf")
    r = merge(paths, out, "f32")
    check("llama3: HF directories with llama3 rope scaling merged to GGUF", r.returncode == 0,
          r.stderr)
    if r.returncode:
        return
    _, kv, ts, _ = G.read(out)
    want_names = {n for n, _ in LL.shapes((E, FF))} | {"rope_freqs.weight"}
    check("llama3: llama.cpp's tensors and rope_freqs.weight", set(ts) == want_names,
          sorted(set(ts) ^ want_names))
    f = ts.get("rope_freqs.weight")
    got = G.values(f) if f is not None else np.zeros(0)
    check("llama3: rope_freqs.weight F32 [%d], inv_freq / transformers' llama3 inv_freq "
          "(max relative error %.1e)" % (len(got), np.abs(got / (plain / inv) - 1).max()
                                         if len(got) == len(inv) else np.nan),
          f is not None and f.dtype.str == "<f4" and f.shape == (E // HEADS // 2,)
          and np.allclose(got, plain / inv, rtol=2e-7, atol=0))
    check("llama3: no rope.scaling key-values (the converter writes none for llama3)",
          not [k for k in kv if "rope.scaling" in k], [k for k in kv if "rope.scaling" in k])
    want = hf_llama_forward(merged, TOKENS, inv)
    unscaled = hf_llama_forward(merged, TOKENS)
    check("llama3: the scaling moves the oracle's logits (relative %.1e)"
          % (np.abs(want - unscaled).max() / np.abs(want).max()),
          np.abs(want - unscaled).max() > 100 * TOL * np.abs(want).max())
    compare("llama3 F32", out, want, TOL, LLAMA3_RE)
    out = os.path.join(d, "q4km.gguf")
    r = merge(paths, out, "Q4_K_M")
    ts = G.read(out)[2] if r.returncode == 0 else {}
    f = ts.get("rope_freqs.weight")
    check("llama3: merged to Q4_K_M, rope_freqs.weight left F32 as llama-quantize leaves 1-D "
          "tensors", f is not None and not isinstance(f, G.Quant) and f.dtype.str == "<f4"
          and np.array_equal(G.values(f), got), r.stderr)
    if f is not None:
        compare("llama3 Q4_K_M", out, LL.forward(out, TOKENS, inv_freq=inv), TOL_Q, LLAMA3_RE)
    r = run("merge", "--dry-run", "-b", paths[0], "-m", paths[1], "-m", paths[2], "-M",
            "task_arithmetic", "-o", os.path.join(d, "dry.gguf"))
    check("llama3: --dry-run lists rope_freqs.weight as generated",
          r.returncode == 0 and any("rope_freqs.weight" in ln and "generated" in ln
                                    for ln in r.stdout.splitlines()), r.stdout[-600:])


def test_llama3_refusals(d):
    paths, _ = write_models(d, llama_config(), llama_shapes(), {}, True)
    without = {k: v for k, v in LLAMA3_ROPE.items() if k != "low_freq_factor"}
    rope = lambda **kw: {"rope_scaling": dict(LLAMA3_ROPE, **kw)}  # noqa: E731
    cases = [("without low_freq_factor", {"rope_scaling": without},
              ['"low_freq_factor" is missing']),
             ("with a factor below 1", rope(factor=0.5), ["a factor below 1"]),
             ("with high_freq_factor not above low_freq_factor", rope(high_freq_factor=1.0),
              ["high_freq_factor"]),
             ("with a context of 32.5", rope(original_max_position_embeddings=32.5),
              ['"original_max_position_embeddings" is not a positive integer']),
             ("with a string factor", rope(factor="8"), ['"factor" is not a positive number']),
             ("on qwen2 (the converter makes rope_freqs for Llama only)",
              dict(rope(), model_type="qwen2"), ["rope_scaling llama3 is not one acem converts"]),
             ("with an odd head dimension", dict(rope(), head_dim=63),
              ["even head dimension, not 63"])]
    for label, change, phrases in cases:
        with open(os.path.join(paths[0], "config.json"), "w") as f:
            json.dump(dict(llama_config(), **change), f)
        r = merge(paths, os.path.join(d, "x.gguf"), None)
        check("llama3 rope_scaling %s: one error line" % label,
              one_error_line(r, "config.json", *phrases) and not os.path.exists(
                  os.path.join(d, "x.gguf")), r.stderr)

# ---- SentencePiece (tokenizer.model) ------------------------------------------------------------

def train_spm(model_type):
    """A SentencePiece model of about 400 pieces trained on Debian's Apache-2.0 text with byte
    fallback, normalised as Llama 2's (identity, spaces kept, a dummy prefix) -> its bytes."""
    import io

    import sentencepiece as spm
    with open("/usr/share/common-licenses/Apache-2.0", encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=400, model_type=model_type,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    return out.getvalue()


def write_spm_models(d, blob, n_pad):
    """The tiny Llama of test_llama with tokenizer.model (no tokenizer.json), vocab_size n_pad
    past the pieces, one added token in added_tokens.json -> (paths, merged, processor)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_proto=blob)
    v = sp.vocab_size() + n_pad
    cfg = dict(llama_config(), vocab_size=v, bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id())
    tc = {"add_bos_token": True, "add_eos_token": False}
    paths, merged = write_models(d, cfg, llama_shapes(v=v), tc, True)
    for p in paths:
        os.remove(os.path.join(p, "tokenizer.json"))
        with open(os.path.join(p, "tokenizer.model"), "wb") as f:
            f.write(blob)
        with open(os.path.join(p, "added_tokens.json"), "w") as f:
            json.dump({"<extra>": sp.vocab_size()}, f)
    return paths, merged, sp


def spm_key_checks(label, kv, sp, v):
    """The converter's _create_vocab_sentencepiece keys, from sentencepiece's own accessors."""
    n = sp.vocab_size()
    types = [2 if sp.IsUnknown(i) else 3 if sp.IsControl(i) else 5 if sp.IsUnused(i) else
             6 if sp.IsByte(i) else 1 for i in range(n)] + [4] + [5] * (v - n - 1)
    toks = [sp.IdToPiece(i) for i in range(n)] + ["<extra>"] + \
        ["[PAD%d]" % i for i in range(n + 1, v)]
    scores = [sp.GetScore(i) for i in range(n)] + [-1000.0] + [-10000.0] * (v - n - 1)
    bad = key_mismatches(kv, {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
                              "tokenizer.ggml.bos_token_id": sp.bos_id(),
                              "tokenizer.ggml.eos_token_id": sp.eos_id(),
                              "tokenizer.ggml.add_bos_token": True})
    got_t, got_s = kv["tokenizer.ggml.token_type"][1][1], kv["tokenizer.ggml.scores"][1][1]
    check("%s: tokens, scores and types as _create_vocab_sentencepiece (%d pieces, %d byte, "
          "1 added, %d [PAD])" % (label, n, types.count(6), v - n - 1),
          not bad and kv["tokenizer.ggml.tokens"][1][1] == toks and list(got_t) == types
          and np.array_equal(np.float32(got_s), np.float32(scores)),
          (bad, [(i, a, b) for i, (a, b) in enumerate(zip(got_t, types)) if a != b][:5]))


def test_spm(d):
    for model_type, dtypes in (("bpe", ("f32", "Q4_K_M")), ("unigram", ("f32",))):
        sub = os.path.join(d, model_type)
        os.mkdir(sub)
        paths, merged, sp = write_spm_models(sub, train_spm(model_type), 3)
        v = sp.vocab_size() + 3
        # llama.cpp's tokenize() here adds no BOS; sentencepiece's encode adds none either
        expect = sp.encode(SAMPLE)
        for dtype in dtypes:
            out = os.path.join(sub, dtype + ".gguf")
            r = merge(paths, out, dtype)
            label = "llama spm %s %s" % (model_type, dtype)
            check("%s: merged straight to GGUF" % label, r.returncode == 0, r.stderr)
            if r.returncode:
                continue
            spm_key_checks(label, G.read(out)[1], sp, v)
            want = hf_llama_forward(merged, TOKENS) if dtype == "f32" else LL.forward(out, TOKENS)
            compare(label, out, want, TOL if dtype == "f32" else TOL_Q, expect=expect)


def write_varint(n):
    b = bytearray()
    while True:
        b.append((n & 0x7f) | (0x80 if n > 0x7f else 0))
        n >>= 7
        if not n:
            return bytes(b)


def spm_piece(text, score_bits=b"\x00\x00\x80\xbf", typ=1):
    """One ModelProto.pieces entry on the wire: piece 1, score 2 (float), type 3 (varint)."""
    body = b"\x0a" + write_varint(len(text)) + text + b"\x15" + score_bits + b"\x18" + \
        write_varint(typ)
    return b"\x0a" + write_varint(len(body)) + body


def test_spm_refusals(d):
    paths, _, _ = write_spm_models(d, train_spm("bpe"), 0)
    good = spm_piece(b"<unk>", typ=2) + spm_piece(b"a")
    hostile = [("an empty file", b"", "without pieces"),
               ("a truncated varint", good + b"\x0a\xff", "not a SentencePiece model"),
               ("a wrong wire type for pieces", good + b"\x08\x01", "not a SentencePiece model"),
               ("a piece length past the end", good + b"\x0a\x40\x0a\x02ab",
                "not a SentencePiece model"),
               ("a piece type out of range", good + spm_piece(b"b", typ=9), "type 9"),
               ("a piece not UTF-8", good + spm_piece(b"\xff\xfe"), "not UTF-8"),
               ("a word model", good + b"\x12\x02\x18\x03", "model type 3")]
    for label, blob, what in hostile:
        with open(os.path.join(paths[0], "tokenizer.model"), "wb") as f:
            f.write(blob)
        r = merge(paths, os.path.join(d, "x.gguf"), None)
        check("tokenizer.model with %s: one error line" % label,
              one_error_line(r, "tokenizer.model", what), r.stderr)


def test_refusals(d):
    paths, _ = write_models(d, dict(llama_config(), model_type="phi3"), llama_shapes(), {}, True)
    r = merge(paths, os.path.join(d, "x.gguf"), None)
    check("another model_type: one error line naming it",
          one_error_line(r, "config.json", 'model_type "phi3"'), r.stderr)
    with open(os.path.join(paths[0], "config.json"), "w") as f:
        json.dump(llama_config(), f)
    os.remove(os.path.join(paths[0], "tokenizer.json"))
    r = merge(paths, os.path.join(d, "x.gguf"), None)
    check("neither tokenizer.json nor tokenizer.model: one error line",
          one_error_line(r, "no tokenizer.json", "tokenizer.model"), r.stderr)
    r = merge(paths, os.path.join(d, "x.safetensors"), None)
    check("  the same directories merge to safetensors (no conversion)", r.returncode == 0,
          r.stderr)
    write_tokenizer(paths[0], True, {})
    with open(os.path.join(paths[0], "tokenizer.json")) as f:
        tok = json.load(f)
    tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581"}
    with open(os.path.join(paths[0], "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    r = merge(paths, os.path.join(d, "x.gguf"), None)
    check("a pre-tokenizer acem cannot name: one error line",
          one_error_line(r, "tokenizer.json", "pre-tokenizer"), r.stderr)
    hostile = [("an id outside the vocabulary", lambda t: t["model"]["vocab"].update(x=V + 5),
                ["tokenizer.json", "outside the vocabulary"]),
               ("two tokens with one id", lambda t: t["model"]["vocab"].update(x=3),
                ["tokenizer.json", "id 3 is given to two tokens"]),
               ("a malformed merge", lambda t: t["model"]["merges"].append([1, 2]),
                ["tokenizer.json", "merge"]),
               ("not JSON", None, ["tokenizer.json", "not a valid JSON object"])]
    for label, spoil, phrases in hostile:
        write_tokenizer(paths[0], True, {})
        path = os.path.join(paths[0], "tokenizer.json")
        with open(path) as f:
            tok = json.load(f)
        if spoil:
            spoil(tok)
        with open(path, "w") as f:
            f.write(json.dumps(tok) if spoil else "{\"model\": ")
        r = merge(paths, os.path.join(d, "x.gguf"), None)
        check("tokenizer.json with %s: one error line" % label, one_error_line(r, *phrases),
              r.stderr)
    write_tokenizer(paths[0], True, {})
    cfg = llama_config()
    del cfg["num_hidden_layers"]
    for label, c, phrases in [("without num_hidden_layers", cfg,
                               ['"num_hidden_layers" is missing']),
                              ("with 2.5 layers", dict(cfg, num_hidden_layers=2.5),
                               ['"num_hidden_layers" is not a positive integer'])]:
        with open(os.path.join(paths[0], "config.json"), "w") as f:
            json.dump(c, f)
        r = merge(paths, os.path.join(d, "x.gguf"), None)
        check("config.json %s: one error line" % label,
              one_error_line(r, "config.json", *phrases), r.stderr)
    with open(os.path.join(paths[0], "config.json"), "w") as f:
        json.dump(dict(llama_config(), num_attention_heads=3), f)
    r = merge(paths, os.path.join(d, "x.gguf"), None)
    check("q_proj rows that do not split into the heads: one error line",
          one_error_line(r, "q_proj", "heads"), r.stderr)
    with open(os.path.join(paths[0], "config.json"), "w") as f:
        json.dump(llama_config(), f)
    src = "".join("      - model: %s\n        layer_range: [0, %d]\n%s" % (
        p, LAYERS, "" if i == 0 else "        parameters:\n          weight: 1.0\n")
        for i, p in enumerate(paths))
    cfg = os.path.join(d, "slices.yml")
    with open(cfg, "w") as f:
        f.write("slices:\n  - sources:\n%smerge_method: task_arithmetic\nbase_model: %s\n"
                % (src, paths[0]))
    r = run("merge", "-q", cfg, "-o", os.path.join(d, "x.gguf"))
    check("mergekit slices of a Hugging Face model to GGUF: one error line (not yet)",
          one_error_line(r, "slices of a Hugging Face model"), r.stderr)
    with open(cfg, "w") as f:
        f.write("models:\n%smerge_method: task_arithmetic\nbase_model: %s\n"
                "tokenizer_source: base\n" % ("".join(
                    "  - model: %s\n    parameters:\n      weight: 1.0\n" % p
                    for p in paths[1:]), paths[0]))
    r = run("merge", "-q", cfg, "-o", os.path.join(d, "x.gguf"))
    check("a tokenizer_source with a GGUF output: one error line (not yet)",
          one_error_line(r, "a tokenizer_source of a Hugging Face model"), r.stderr)


def test_peak_rss(d):
    """A Llama of 4 layers, embedding 1024 (q 4 MiB, embeddings 16 MiB in F32), merged to
    Q4_K_M: the peak RSS against README's streaming bound, (T + 2) x the largest tensor +
    64 MiB (T = 2 experts), and the inputs' size."""
    if not os.path.exists("/usr/bin/time"):
        print("SKIP peak RSS: needs /usr/bin/time")
        return
    global E, FF
    saved = E, FF
    E, FF = 1024, 1024
    try:
        shapes = llama_shapes(E, FF, 4, 4096)
        cfg = dict(llama_config(), hidden_size=E, intermediate_size=FF, num_hidden_layers=4,
                   vocab_size=4096)
        paths, _ = write_models(d, cfg, shapes, {}, True)
    finally:
        E, FF = saved
    out = os.path.join(d, "big.gguf")
    t = subprocess.run(["/usr/bin/time", "-v", ACEM, "merge", "-q", "-b", paths[0], "-m", paths[1],
                        "-m", paths[2], "-M", "task_arithmetic", "-l", "0.5", "--dtype", "Q4_K_M",
                        "-o", out], capture_output=True, text=True)
    rss = [int(ln.split(":")[1]) for ln in t.stderr.splitlines() if "Maximum resident" in ln]
    inputs = sum(os.path.getsize(os.path.join(p, "model.safetensors")) for p in paths)
    largest = max(int(np.prod(s)) * 4 for _, s in shapes)
    mib = rss[0] / 1024 if rss else float("nan")
    print("  HF-to-GGUF Q4_K_M merge: inputs %.0f MiB, largest tensor %.0f MiB, peak RSS %.1f MiB"
          % (inputs / 2 ** 20, largest / 2 ** 20, mib))
    check("peak RSS %.1f MiB within the streaming bound %.0f MiB (inputs %.0f MiB)"
          % (mib, (4 * largest + 64 * 2 ** 20) / 2 ** 20, inputs / 2 ** 20),
          t.returncode == 0 and rss and rss[0] * 1024 <= 4 * largest + 64 * 2 ** 20,
          t.stderr[-600:])


def main():
    if not HAVE_LLAMACPP:
        print("SKIP llama.cpp checks: node-llama-cpp is not installed under %s" % NLC)
    return run_groups([test_llama, test_llama3, test_llama3_refusals, test_gpt2, test_qwen2,
                       test_spm, test_spm_refusals,
                       test_refusals, test_peak_rss],
                      "acem-hfgguf-", sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
