#!/usr/bin/env python3
"""eval/gpt2.c against an independent GPT-2 written here in PyTorch from the model's
definition (Radford et al. 2019; Hugging Face's layout: Conv1D weights stored in x out,
lm_head tied to wte when absent, score pooled at the last non-pad token) in float64, on
tiny random checkpoints in Hugging Face layout: logits of language models and classifiers
(f32 and bf16 stored, `transformer.` prefix or not, tied or untied lm_head, a right-padded
batch), the gradients of both losses against torch autograd for every parameter, one AdamW
step against torch.optim.AdamW, the saved folder read back, same bytes on a rerun, and the
refusals.

usage: test_gpt2.py ACEM [GPT2_DRIVER]   (the driver defaults to ACEM's build dir/tests)"""

import json
import math
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import safetensors_np as st  # noqa: E402
from gpt2_torch import layer_names, reference, reference_loss  # noqa: E402
from harness import ACEM, check, run_groups  # noqa: E402

DRIVER = (sys.argv[2] if len(sys.argv) > 2 else
          os.path.join(os.path.dirname(ACEM or "."), "tests", "gpt2_driver"))
torch.set_default_dtype(torch.float64)

CFG = dict(n_layer=2, n_head=4, n_embd=32, n_positions=16, vocab_size=61, layer_norm_epsilon=1e-5,
           activation_function="gelu_new", model_type="gpt2")
PAD = 60  # pad_token_id of the classifiers (and of the LM batches' padding)
LENS = [12, 7, 3]
T = 12
LOGIT_TOL = 1e-4   # f32 compute against float64, relative to the largest logit
GRAD_TOL = 1e-3    # f32 gradients against float64 autograd, relative to each tensor's largest
ADAM_ULP = 1       # AdamW in f32 on the same gradients, in ATen's order of operations


# ---- checkpoints and the driver --------------------------------------------------------------

def random_params(seed, tied=True, labels=0):
    """HF names -> float32 arrays; weights large enough that every layer matters."""
    rng = np.random.default_rng(seed)
    C, V, Pn, L = CFG["n_embd"], CFG["vocab_size"], CFG["n_positions"], CFG["n_layer"]
    P = OrderedDict()
    P["transformer.wte.weight"] = rng.normal(0, 0.3, (V, C))
    P["transformer.wpe.weight"] = rng.normal(0, 0.1, (Pn, C))
    shapes = dict(ln1w=(C,), ln1b=(C,), qkvw=(C, 3 * C), qkvb=(3 * C,), projw=(C, C),
                  projb=(C,), ln2w=(C,), ln2b=(C,), fcw=(C, 4 * C), fcb=(4 * C,),
                  fcpw=(4 * C, C), fcpb=(C,))
    for l in range(L):
        for k, name in layer_names(l).items():
            std = 0.3 if k.endswith("w") and not k.startswith("ln") else 0.1
            P[name] = (1 + rng.normal(0, 0.1, shapes[k]) if k in ("ln1w", "ln2w")
                       else rng.normal(0, std, shapes[k]))
    P["transformer.ln_f.weight"] = 1 + rng.normal(0, 0.1, (C,))
    P["transformer.ln_f.bias"] = rng.normal(0, 0.1, (C,))
    if labels:
        P["score.weight"] = rng.normal(0, 0.5, (labels, C))
    elif not tied:
        P["lm_head.weight"] = rng.normal(0, 0.3, (V, C))
    return OrderedDict((k, v.astype(np.float32)) for k, v in P.items())


def write_model(d, P, dtype="F32", prefix=True, pad=PAD, extra=None):
    """A Hugging Face folder; returns the parameters as stored, in float64 torch tensors."""
    os.makedirs(d, exist_ok=True)
    cfg = dict(CFG, pad_token_id=pad, **(extra or {}))
    if "score.weight" in P:
        cfg["id2label"] = {str(i): f"class{i}" for i in range(P["score.weight"].shape[0])}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    out, stored = OrderedDict(), {}
    for k, v in P.items():
        name = k if prefix else k.removeprefix("transformer.")
        if dtype == "BF16":
            bits = st.f32_to_bf16_bits(v)
            out[name] = st.Tensor("BF16", v.shape, bits)
            stored[k] = torch.from_numpy(st.bf16_bits_to_f32(bits).astype(np.float64))
        else:
            out[name] = st.Tensor("F32", v.shape, v)
            stored[k] = torch.from_numpy(v.astype(np.float64))
    st.write_file(os.path.join(d, "model.safetensors"), out)
    return stored, cfg


def batch(seed, labels=0, lens=LENS, pad=PAD):
    """Right-padded ids (real tokens avoid the pad id) and the batch file for the driver."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lens), T), pad if pad is not None else 0, dtype=np.int32)
    for b, n in enumerate(lens):
        ids[b, :n] = rng.integers(0, CFG["vocab_size"] - 1, n)
    lab = rng.integers(0, labels, len(lens)).astype(np.int32) if labels else \
        np.full(len(lens), -1, np.int32)
    return ids, lab


def write_batch(path, ids, lens, lab):
    hdr = np.array([ids.shape[0], ids.shape[1]], np.int32)
    with open(path, "wb") as f:
        f.write(b"".join(a.astype("<i4").tobytes() for a in (hdr, ids, np.array(lens), lab)))


def drive(d, model, ids, lens, lab, *extra, env=None):
    bp, out = os.path.join(d, "batch.bin"), os.path.join(d, "out.safetensors")
    write_batch(bp, ids, lens, lab)
    r = subprocess.run([DRIVER, model, bp, out, *extra], capture_output=True, text=True,
                       timeout=120, env=env)
    if r.returncode:
        raise RuntimeError(r.stderr.strip())
    tensors, _ = st.read_file(out)
    return {k: torch.from_numpy(v.to_f64()) for k, v in tensors.items()}, out


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ---- groups ---------------------------------------------------------------------------------

def forward_cases(d):
    cases = [("LM f32 prefixed tied", dict(), "F32", True, 0),
             ("LM bf16 unprefixed untied", dict(tied=False), "BF16", False, 0),
             ("LM f32 unprefixed untied", dict(tied=False), "F32", False, 0),
             ("classifier f32 prefixed", dict(labels=3), "F32", True, 3),
             ("classifier bf16 unprefixed", dict(labels=3), "BF16", False, 3)]
    for i, (name, kw, dtype, prefix, K) in enumerate(cases):
        md = os.path.join(d, f"m{i}")
        P, cfg = write_model(md, random_params(10 + i, **kw), dtype, prefix)
        ids, lab = batch(20 + i, K)
        got, _ = drive(d, md, ids, LENS, lab)
        want = reference(P, cfg, torch.from_numpy(ids).long(), LENS)
        err = rel(got["logits"], want)
        check(f"forward {name}: max relative logit difference {err:.2e} < {LOGIT_TOL:g}",
              err < LOGIT_TOL, err)


def pooling_rules(d):
    """No pad_token_id: the last position of a batch of one; a batch of more is refused.
    A pad id inside a row: pooled at the rightmost token that is not pad."""
    md = os.path.join(d, "nopad")
    P, cfg = write_model(md, random_params(30, labels=2), pad=None)
    ids, lab = batch(31, 2, lens=[9], pad=None)
    got, _ = drive(d, md, ids, [9], lab)
    err = rel(got["logits"], reference(P, cfg, torch.from_numpy(ids).long(), [9]))
    check(f"classifier without pad_token_id, one row, pooled at T-1: {err:.2e}", err < LOGIT_TOL)
    ids, lab = batch(32, 2, pad=None)
    try:
        drive(d, md, ids, LENS, lab)
        check("a batch of three without pad_token_id is refused", False)
    except RuntimeError as e:
        check("a batch of three without pad_token_id is refused in one line",
              "pad_token_id" in str(e) and "\n" not in str(e), e)
    md = os.path.join(d, "inner")
    P, cfg = write_model(md, random_params(33, labels=2))
    ids, lab = batch(34, 2)
    ids[0, 4] = ids[1, 2] = PAD
    got, _ = drive(d, md, ids, LENS, lab)
    err = rel(got["logits"], reference(P, cfg, torch.from_numpy(ids).long(), LENS))
    check(f"classifier with pad ids inside rows (transformers' rightmost rule): {err:.2e}",
          err < LOGIT_TOL)


def gradients(d, name, kw, K, dtype="F32", prefix=True):
    md = os.path.join(d, name.replace(" ", "_"))
    P, cfg = write_model(md, random_params(40 + K, **kw), dtype, prefix)
    ids, lab = batch(50 + K, K)
    got, out = drive(d, md, ids, LENS, lab, "train")
    leaves = {k: v.clone().requires_grad_(True) for k, v in P.items()}
    loss = reference_loss(leaves, cfg, torch.from_numpy(ids).long(), LENS, lab.tolist())
    loss.backward()
    lerr = abs(float(got["loss"][0]) - float(loss)) / abs(float(loss))
    check(f"{name}: loss {float(loss):.6f}, relative difference {lerr:.1e}", lerr < 1e-5, lerr)
    worst, worst_name, n = 0.0, "", 0
    for k, v in leaves.items():
        g = got.get("grad." + k)
        if g is None:
            check(f"{name}: gradient of {k} present", False)
            continue
        e, n = rel(g, v.grad), n + 1
        if e > worst:
            worst, worst_name = e, k
    check(f"{name}: {n} parameter gradients vs autograd, worst relative error {worst:.2e} "
          f"({worst_name}) < {GRAD_TOL:g}", worst < GRAD_TOL and n == len(leaves), worst)
    with open(out, "rb") as f:
        first = f.read()
    # OpenBLAS on one thread both times: acem's own loops on 1 and 3 threads
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    reruns = []
    for threads in ("1", "3"):
        _, out2 = drive(d, md, ids, LENS, lab, "train", env=dict(env, OMP_NUM_THREADS=threads))
        with open(out2, "rb") as f:
            reruns.append(f.read())
    check(f"{name}: reruns give the same bytes (logits, loss, gradients), acem's loops on 1 "
          f"and 3 threads", reruns[0] == reruns[1] == first)
    return md, P, cfg, ids, lab, got


def grads_lm(d):
    gradients(d, "LM tied gradients", dict(), 0)
    gradients(d, "LM untied bf16 gradients", dict(tied=False), 0, "BF16", False)


def grads_cls(d):
    gradients(d, "classifier gradients", dict(labels=3), 3)


def adamw(d):
    """One AdamW step on the driver's own gradients (both sides f32), torch.optim.AdamW with
    weight decay on the 2-D tensors only; then the saved folder read back."""
    for name, kw, K in (("LM untied", dict(tied=False), 0), ("classifier", dict(labels=3), 3)):
        md, P, cfg, ids, lab, got = gradients(d, f"AdamW {name}", kw, K)
        hp = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        params = {k: v.float().clone().requires_grad_(True) for k, v in P.items()}
        for k, v in params.items():
            v.grad = got["grad." + k].float()
        opt = torch.optim.AdamW([{"params": [v for v in params.values() if v.dim() == 2]},
                                 {"params": [v for v in params.values() if v.dim() < 2],
                                  "weight_decay": 0.0}], foreach=False, **hp)
        opt.step()
        sd = os.path.join(d, f"saved_{K}")
        drive(d, md, ids, LENS, lab, "train", sd, "0.01", "0.9", "0.95", "1e-8", "0.1")
        saved, _ = st.read_file(os.path.join(sd, "model.safetensors"))
        worst = 0.0  # in units of float32's spacing where the step rounds (old or new value)
        for k, v in params.items():
            t = v.detach().numpy()
            mag = np.maximum(np.abs(t), np.abs(P[k].numpy())).astype(np.float32)
            ulp = np.spacing(mag).astype(np.float64)
            worst = max(worst, float(np.max(np.abs(saved[k].to_f64() - t) / ulp)))
        check(f"AdamW {name}: one step vs torch.optim.AdamW, worst difference {worst:.0f} "
              f"float32 ulp <= {ADAM_ULP}", worst <= ADAM_ULP, worst)
        check(f"AdamW {name}: saved with Hugging Face names ({len(saved)} tensors)",
              set(saved) == set(P), sorted(set(saved) ^ set(P)))
        with open(os.path.join(sd, "config.json")) as f:
            sc = json.load(f)
        want_arch = "GPT2ForSequenceClassification" if K else "GPT2LMHeadModel"
        check(f"AdamW {name}: config.json names {want_arch}, keeps the hyperparameters",
              sc["architectures"] == [want_arch] and all(sc[k] == CFG[k] for k in CFG) and
              sc["pad_token_id"] == PAD and (not K or sc["id2label"]["2"] == "class2"), sc)
        back, _ = drive(d, sd, ids, LENS, lab)
        P2 = {k: torch.from_numpy(saved[k].to_f64()) for k in saved}
        err = rel(back["logits"], reference(P2, cfg, torch.from_numpy(ids).long(), LENS))
        check(f"AdamW {name}: the saved folder loads back, logits {err:.2e}", err < LOGIT_TOL)


def fresh(d):
    """gpt2_new: transformers' _init_weights (N(0, 0.02), residual projections
    N(0, 0.02 / sqrt(2 n_layer)), zero biases, unit gains), seeded; gpt2_new_head: the
    backbone kept, a N(0, 0.02) score head, an untied lm_head dropped."""
    md = os.path.join(d, "lm")
    P, _ = write_model(md, random_params(70, tied=False))
    outs = []
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        r = subprocess.run([DRIVER, "init", md, os.path.join(d, name), str(seed)],
                           capture_output=True, text=True, timeout=60)
        check(f"init seed {seed} runs", r.returncode == 0, r.stderr)
        with open(os.path.join(d, name, "model.safetensors"), "rb") as f:
            outs.append(f.read())
    check("init: same seed same bytes, another seed other bytes",
          outs[0] == outs[1] and outs[0] != outs[2])
    new, _ = st.read_file(os.path.join(d, "a", "model.safetensors"))
    L = CFG["n_layer"]
    want = {"c_proj.weight": 0.02 / math.sqrt(2 * L), "c_attn.weight": 0.02, "c_fc.weight": 0.02,
            "wte.weight": 0.02, "wpe.weight": 0.02}
    ok, detail = "lm_head.weight" not in new, []
    for k, t in new.items():
        x = t.to_f64()
        std = next((s for suf, s in want.items() if k.endswith(suf)), None)
        if std is not None:
            good = abs(x.mean()) < 4 * std / math.sqrt(x.size) and abs(x.std() / std - 1) < 0.1
        else:
            good = np.all(x == (1.0 if k.endswith("weight") else 0.0))
        ok = ok and good
        if not good:
            detail.append(k)
    check("init: the normal stds, zero biases and unit gains of _init_weights, tied", ok, detail)
    hd = os.path.join(d, "head")
    r = subprocess.run([DRIVER, "head", md, hd, "5", "4"], capture_output=True, text=True,
                       timeout=60)
    check("new_head runs", r.returncode == 0, r.stderr)
    head, _ = st.read_file(os.path.join(hd, "model.safetensors"))
    s = head["score.weight"].to_f64()
    kept = all(np.array_equal(head[k].to_f64(), P[k].numpy()) for k in P if k != "lm_head.weight")
    check(f"new_head: backbone kept bit for bit, lm_head dropped, score [4, 32] std {s.std():.4f}",
          kept and "lm_head.weight" not in head and s.shape == (4, 32) and
          abs(s.std() / 0.02 - 1) < 0.2, (kept, s.shape))
    with open(os.path.join(hd, "config.json")) as f:
        hc = json.load(f)
    check("new_head: config.json is a GPT2ForSequenceClassification of LABEL_0..3",
          hc["architectures"] == ["GPT2ForSequenceClassification"] and
          hc["id2label"] == {str(i): f"LABEL_{i}" for i in range(4)}, hc)


def refusals(d):
    def refused(what, phrase, mutate_cfg=None, mutate_p=None):
        md = os.path.join(d, what.replace(" ", "_"))
        P = random_params(60)
        if mutate_p:
            mutate_p(P)
        write_model(md, P, extra=mutate_cfg)
        ids, lab = batch(61)
        try:
            drive(d, md, ids, LENS, lab)
            check(f"refused: {what}", False, "accepted")
        except RuntimeError as e:
            check(f"refused in one line naming the problem: {what}",
                  phrase in str(e) and "\n" not in str(e), e)
    refused("activation relu", "activation_function", {"activation_function": "relu"})
    refused("n_embd not a multiple of n_head", "n_head", {"n_head": 5})
    refused("a missing tensor", "transformer.h.1.mlp.c_fc.bias",
            mutate_p=lambda P: P.pop("transformer.h.1.mlp.c_fc.bias"))
    refused("a tensor of the wrong shape", "transformer.wpe.weight",
            mutate_p=lambda P: P.__setitem__("transformer.wpe.weight", np.zeros((5, 32), np.float32)))
    refused("an unknown tensor", "not a GPT-2",
            mutate_p=lambda P: P.__setitem__("transformer.h.0.crossattention.q_attn.weight",
                                             np.zeros((32, 32), np.float32)))
    refused("scale_attn_by_inverse_layer_idx", "scale_attn_by_inverse_layer_idx",
            {"scale_attn_by_inverse_layer_idx": True})
    md = os.path.join(d, "bad_json")
    write_model(md, random_params(62))
    with open(os.path.join(md, "config.json"), "w") as f:
        f.write("{\"n_layer\": 2,")
    ids, lab = batch(63)
    for what, model, ids_, phrase in (("config.json that is not JSON", md, ids, "config.json"),
                                      ("a token id past the vocabulary", None, ids.copy(),
                                       "vocabulary")):
        if model is None:
            model = os.path.join(d, "ok")
            write_model(model, random_params(64))
            ids_[1, 2] = CFG["vocab_size"]
        try:
            drive(d, model, ids_, LENS, lab)
            check(f"refused: {what}", False, "accepted")
        except RuntimeError as e:
            check(f"refused in one line naming the problem: {what}",
                  phrase in str(e) and "\n" not in str(e), e)


if __name__ == "__main__":
    sys.exit(run_groups([forward_cases, pooling_rules, grads_lm, grads_cls, adamw, fresh, refusals],
                        "acem-gpt2-", sys.argv[3:]))
