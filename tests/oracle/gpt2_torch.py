"""An independent GPT-2 in PyTorch, written from the definition (no transformers): Hugging
Face's GPT2LMHeadModel / GPT2ForSequenceClassification forward on parameters by HF name
(Conv1D weights [in, out]), right-padded rows of lengths lens, pooled at the rightmost token
that is not pad_token_id. Used by tests/test_gpt2.py and tests/test_eval.py; compute in the
tensors' dtype (the tests use float64)."""

import math

import torch


def layer_names(l):
    h = f"transformer.h.{l}."
    return {k: h + v for k, v in dict(
        ln1w="ln_1.weight", ln1b="ln_1.bias", qkvw="attn.c_attn.weight", qkvb="attn.c_attn.bias",
        projw="attn.c_proj.weight", projb="attn.c_proj.bias", ln2w="ln_2.weight",
        ln2b="ln_2.bias", fcw="mlp.c_fc.weight", fcb="mlp.c_fc.bias",
        fcpw="mlp.c_proj.weight", fcpb="mlp.c_proj.bias").items()}


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def attention(h, P, n, cfg, allowed):
    B, T_, C = h.shape
    NH = cfg["n_head"]
    qkv = h @ P[n["qkvw"]] + P[n["qkvb"]]
    q, k, v = (t.reshape(B, T_, NH, C // NH).transpose(1, 2) for t in qkv.split(C, dim=-1))
    att = (q @ k.transpose(-1, -2)) / math.sqrt(C // NH)
    att = torch.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T_, C)
    return y @ P[n["projw"]] + P[n["projb"]]


def pooled_at(ids, pad):
    """transformers' GPT2ForSequenceClassification: the rightmost token that is not pad."""
    if pad is None:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long)
    non_pad = (ids != pad).long()
    return (torch.arange(ids.shape[1]) * non_pad).argmax(-1)


def reference(P, cfg, ids, lens):
    """logits: [B, T, V] (language model) or [B, K] (score.weight present)."""
    B, T_ = ids.shape
    eps = cfg["layer_norm_epsilon"]
    i = torch.arange(T_)
    allowed = (i[None, :] <= i[:, None])[None, None] & (i[None, None, None, :] <
                                                         torch.tensor(lens)[:, None, None, None])
    x = P["transformer.wte.weight"][ids] + P["transformer.wpe.weight"][:T_]
    for l in range(cfg["n_layer"]):
        n = layer_names(l)
        x = x + attention(layernorm(x, P[n["ln1w"]], P[n["ln1b"]], eps), P, n, cfg, allowed)
        h = layernorm(x, P[n["ln2w"]], P[n["ln2b"]], eps)
        x = x + gelu_new(h @ P[n["fcw"]] + P[n["fcb"]]) @ P[n["fcpw"]] + P[n["fcpb"]]
    x = layernorm(x, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], eps)
    if "score.weight" in P:
        return (x @ P["score.weight"].T)[torch.arange(B), pooled_at(ids, cfg.get("pad_token_id"))]
    return x @ P.get("lm_head.weight", P["transformer.wte.weight"]).T


def reference_loss(P, cfg, ids, lens, labels):
    logits = reference(P, cfg, ids, lens)
    if "score.weight" in P:
        return torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    target = ids.clone()
    for b, n in enumerate(lens):
        target[b, n:] = -100
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V),
                                             target[:, 1:].reshape(-1), ignore_index=-100)
