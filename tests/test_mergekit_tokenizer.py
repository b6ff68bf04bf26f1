#!/usr/bin/python3
"""mergekit's tokenizer keys (tokenizer_source, tokenizer:, chat_template) run by `acem merge`
on tiny Llama stand-ins whose tokenizer.json files hold different vocabularies (a few added
tokens, tokens only one model has, ids in another order). The embedding and head rows are
checked against a float64 numpy transcription of mergekit's tokenizer/build.py and
tokenizer/embed.py (written here from those files), then merged by tests/oracle/mergekit_np.py.

Usage: /usr/bin/python3 tests/test_mergekit_tokenizer.py PATH/TO/acem"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import mergekit_np as MK  # noqa: E402
import safetensors_np as ST  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402

H = 8
N_LAYERS = 2


def tokenizer_json(vocab, added):
    """A BPE tokenizer.json as the tokenizers library writes one: vocab {token: id} in
    model.vocab, added tokens [(id, content)] in added_tokens."""
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}
                             for i, c in added],
            "normalizer": None, "pre_tokenizer": {"type": "ByteLevel"}, "post_processor": None,
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "vocab": vocab,
                      "merges": []}}


def make_model(d, tokens, added, rng, rows=None, template=None, dtype="F32"):
    """A Llama stand-in: tokens (in id order) then added tokens; rows: embedding rows
    (config.json's vocab_size), by default the vocabulary's length."""
    os.makedirs(d)
    vocab = {t: i for i, t in enumerate(tokens)}
    add = [(len(tokens) + j, c) for j, c in enumerate(added)]
    v = rows or len(tokens) + len(added)
    tensors = {"model.embed_tokens.weight": (v, H), "lm_head.weight": (v, H),
               "model.norm.weight": (H,)}
    for i in range(N_LAYERS):
        tensors[f"model.layers.{i}.self_attn.q_proj.weight"] = (H, H)
    vals = {n: rng.standard_normal(s) for n, s in tensors.items()}
    ST.write_file(os.path.join(d, "model.safetensors"),
                  {n: ST.from_f64(x, dtype) for n, x in vals.items()})
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v,
               "hidden_size": H, "num_hidden_layers": N_LAYERS}, open(os.path.join(d, "config.json"), "w"))
    json.dump(tokenizer_json(vocab, add), open(os.path.join(d, "tokenizer.json"), "w"))
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128}
    if template:
        tc["chat_template"] = template
    json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w"))
    json.dump({"bos_token": "<s>"}, open(os.path.join(d, "special_tokens_map.json"), "w"))
    return {n: ST.from_f64(x, dtype).to_f64() for n, x in vals.items()}


def get_vocab(d):
    tj = json.load(open(os.path.join(d, "tokenizer.json")))
    v = dict(tj["model"]["vocab"])
    v.update({a["content"]: a["id"] for a in tj["added_tokens"]})
    return v


def union_vocab(order, sizes):
    """build.py's build_union_tokenizer: the base's vocabulary (order[0]), then the other
    models' tokens it lacks that no model has as an added token (models in order, each
    one's tokens by id), then the added tokens it lacks (the first model's entry wins)."""
    out = {t: i for t, i in get_vocab(order[0]).items() if i < sizes[order[0]]}
    added = {}
    for m in order:
        for e in json.load(open(os.path.join(m, "tokenizer.json")))["added_tokens"]:
            if e["id"] < sizes[m] and e["content"] not in added:
                added[e["content"]] = e
    new = []
    for m in order[1:]:
        for t, i in sorted(get_vocab(m).items(), key=lambda kv: kv[1]):
            if i < sizes[m] and t not in added and t not in out:
                out[t] = len(out)
                new.append(t)
    for t in added:
        if t not in out:
            out[t] = len(out)
            new.append(t)
    return out, new


def permuted(models, dirs, base, source, pad, tokens=None):
    """build.py (build_tokenizer) and embed.py (PermutedEmbeddings), float64: each model's
    embedding and head mapped onto the output vocabulary. models: path -> tensors; base: the
    base_model path or None; source: "base", "union" or a model path; tokens: the config's
    tokenizer.tokens."""
    tokens = tokens or {}
    ref = base or dirs[0]
    sizes = {m: json.load(open(os.path.join(m, "config.json")))["vocab_size"] for m in dirs}
    if source == "union":
        vocab = union_vocab([ref] + [m for m in dirs if m != ref], sizes)[0]
    else:
        vocab = {t: i for t, i in get_vocab(source if source != "base" else ref).items()
                 if source != "base" or i < sizes[ref]}
    for tok in tokens:  # add_tokens(tokens' keys)
        vocab.setdefault(tok, len(vocab))
    perm = {}
    for m in dirs:
        mv = get_vocab(m)
        perm[m] = {i: (mv[t] if t in mv and mv[t] < sizes[m] else -1) for t, i in vocab.items()}
    names = sorted(set(dirs) | ({base} if base else set()))
    V = len(vocab)
    Vp = V if not pad or V % pad == 0 else (V // pad + 1) * pad
    out = {m: dict(models[m]) for m in names}
    for tensor in ("model.embed_tokens.weight", "lm_head.weight"):
        cfgs, average = dict(tokens), set()
        for tok, i in vocab.items():  # assign_embedding_sources
            if tok in cfgs:
                continue
            has = [perm[m][i] >= 0 for m in names]
            if sum(has) == 1:
                cfgs[tok] = names[has.index(True)]
            elif sum(has) == 0:
                cfgs[tok] = "zero"
            elif base is not None and perm[base][i] >= 0:
                cfgs[tok] = base
            else:
                average.add(tok)
        default = {}
        for tok, i in vocab.items():
            if tok in average:
                rows = [models[m][tensor][perm[m][i]] for m in names if perm[m][i] >= 0]
                default[tok] = sum(rows) / len(rows)
            elif isinstance(cfgs[tok], dict):  # compute_default_embedding
                src = cfgs[tok]["source"]
                if isinstance(src, dict) and src["kind"] == "zero":
                    default[tok] = np.zeros(H)
                elif isinstance(src, dict):
                    row = src.get("token_id", get_vocab(src["model"]).get(src.get("token")))
                    default[tok] = models[src["model"]][tensor][row]
                else:
                    default[tok] = models[src][tensor][perm[src][i]]
            elif cfgs[tok] == "zero":
                default[tok] = np.zeros(H)
            else:
                default[tok] = models[cfgs[tok]][tensor][perm[cfgs[tok]][i]]
        for m in names:
            new = np.zeros((Vp, H))
            for tok, i in vocab.items():
                force = isinstance(cfgs.get(tok), dict) and cfgs[tok].get("force", False)
                own = perm[m][i] >= 0 and not force
                new[i] = models[m][tensor][perm[m][i]] if own else default[tok]
            if Vp > V:
                new[V:] = new[:V].mean(axis=0)
            out[m][tensor] = new
    return out, Vp


def setup(d, dtype="F32"):
    rng = np.random.default_rng(7)
    common = ["a", "b", "c", "d", "e", "f", "g", "h"]
    dirs = {"base": os.path.join(d, "base"), "x": os.path.join(d, "x"), "y": os.path.join(d, "y")}
    models = {
        dirs["base"]: make_model(dirs["base"], common + ["i", "j"], ["<s>", "</s>"], rng,
                                 template="{{ base-template }} 0123456789", dtype=dtype),
        # another order, lacks "j", has "k" of its own, an added token the base lacks
        dirs["x"]: make_model(dirs["x"], ["b", "a"] + common[2:] + ["i", "k"],
                              ["<s>", "</s>", "<tool>"], rng, template="{{ x-template }} 0123456789",
                              dtype=dtype),
        # lacks "i" and "j", padded embedding rows beyond its vocabulary
        dirs["y"]: make_model(dirs["y"], common + ["k"], ["</s>", "<s>"], rng, rows=14,
                              template="{{ x-template }} 0123456789", dtype=dtype),
    }
    return dirs, models


def config(d, name, text):
    p = os.path.join(d, name)
    open(p, "w").write(text)
    return p


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def compare(label, out, want, bound):
    got = ST.read_model(out)
    worst = max(rel_err(got[n].to_f64(), want[n]) for n in want)
    shapes = all(got[n].shape == want[n].shape for n in want)
    check(f"{label}: every tensor matches mergekit (max rel err {worst:.2e}), shapes "
          f"{got['model.embed_tokens.weight'].shape}", shapes and worst < bound, worst)


def case(d, dirs, models, label, source_yaml, source, method_yaml, base, pad=0, bound=1e-6):
    """One merge against the transcription; bound: the max relative error (1e-6 for f32:
    acem computes in f32; 2^-8 for bf16 storage, one rounding at the tensor's scale)."""
    out = os.path.join(d, "out_" + label)
    text = method_yaml + source_yaml
    cfg_path = config(d, label + ".yml", text)
    r = run("merge", cfg_path, "-o", out)
    check(f"{label}: runs", r.returncode == 0, r.stderr)
    if r.returncode:
        return None
    import yaml  # noqa: PLC0415 - only the oracle needs it
    cfg = yaml.safe_load(text)
    listed = [m["model"] for m in cfg["models"]]
    inputs = listed if base is None else [base] + [m for m in listed if m != base]
    tokens = (cfg.get("tokenizer") or {}).get("tokens")
    remapped, vp = permuted(models, inputs, base, source, pad, tokens)
    want = MK.merge(cfg, remapped, N_LAYERS)
    compare(label, out, want, bound)
    cj = json.load(open(os.path.join(out, "config.json")))
    check(f"{label}: config.json's vocab_size is {vp}", cj["vocab_size"] == vp, cj)
    src = (base or inputs[0]) if source in ("base", "union") else source
    got_tj = json.load(open(os.path.join(out, "tokenizer.json")))
    want_tj = json.load(open(os.path.join(src, "tokenizer.json")))
    if tokens:  # tokens the source lacks are appended, as plain added tokens
        n0 = len(want_tj["added_tokens"])
        extra = [e for e in got_tj["added_tokens"][n0:]]
        want = [t for t in tokens if t not in get_vocab(src)]
        check(f"{label}: the tokens the source lacks are appended ({want})",
              [e["content"] for e in extra] == want and all(
                  e["normalized"] and not e["special"] for e in extra), extra)
        got_tj["added_tokens"] = got_tj["added_tokens"][:n0]
    if source == "union":  # the base's, with the new tokens appended as added tokens
        ref = base or inputs[0]
        sizes = {m: json.load(open(os.path.join(m, "config.json")))["vocab_size"] for m in inputs}
        vocab, new = union_vocab([ref] + [m for m in inputs if m != ref], sizes)
        want_tj["added_tokens"] += [{"content": t, "id": vocab[t]} for t in new]
        got_new = got_tj["added_tokens"][len(want_tj["added_tokens"]) - len(new):]
        check(f"{label}: the union appends {new} at ids {[vocab[t] for t in new]}",
              [(e["content"], e["id"]) for e in got_new] == [(t, vocab[t]) for t in new],
              got_new)
        got_tj["added_tokens"] = [{"content": e["content"], "id": e["id"]} for e in
                                  got_tj["added_tokens"]]
        want_tj["added_tokens"] = [{"content": e["content"], "id": e["id"]} for e in
                                   want_tj["added_tokens"]]
    check(f"{label}: tokenizer.json is the source's", got_tj == want_tj, (got_tj, want_tj))
    # provenance: the resolved config names the tokenizer source and rebuilds the merge
    saved = yaml.safe_load(open(os.path.join(out, "acem_config.yaml")))["tokenizer"]
    src = dirs["base"] if source == "base" else source
    again = os.path.join(d, "again_" + label)
    r = run("merge", os.path.join(out, "acem_config.yaml"), "-o", again)
    first = ST.read_model(out)
    check(f"{label}: acem_config.yaml records the tokenizer source and rebuilds the merge",
          r.returncode == 0 and (saved["source"] in ("base", "union")
                                 or os.path.samefile(saved["source"], src))
          and saved.get("pad_to_multiple_of", 0) == pad
          and all(t.tobytes() == first[n].tobytes() and t.shape == first[n].shape
                  for n, t in ST.read_model(again).items()), (saved, r.stderr))
    return out


def group_sources(d):
    dirs, models = setup(d)
    b, x, y = dirs["base"], dirs["x"], dirs["y"]
    ta = (f"merge_method: task_arithmetic\nbase_model: {b}\nmodels:\n"
          f"  - model: {x}\n    parameters: {{weight: 0.7}}\n"
          f"  - model: {y}\n    parameters: {{weight: 0.4}}\n")
    case(d, dirs, models, "base", "tokenizer_source: base\n", "base", ta, b)
    case(d, dirs, models, "model_x", f"tokenizer_source: {x}\n", x, ta, b)
    case(d, dirs, models, "block_y_padded",
         f"tokenizer:\n  source: {y}\n  pad_to_multiple_of: 8\n", y, ta, b, pad=8)
    lin = (f"merge_method: linear\nmodels:\n  - model: {x}\n    parameters: {{weight: 0.3}}\n"
           f"  - model: {y}\n    parameters: {{weight: 0.7}}\n")
    case(d, dirs, models, "linear_no_base_source_x", f"tokenizer_source: {x}\n", x, lin, None)
    ties = (f"merge_method: ties\nbase_model: {b}\nparameters: {{density: 0.5}}\nmodels:\n"
            f"  - model: {x}\n    parameters: {{weight: 1.0}}\n"
            f"  - model: {y}\n    parameters: {{weight: 0.5}}\n")
    case(d, dirs, models, "ties_source_y", f"tokenizer_source: {y}\n", y, ties, b)
    case(d, dirs, models, "union", "tokenizer_source: union\n", "union", ta, b)
    case(d, dirs, models, "union_block_default_padded", "tokenizer: {pad_to_multiple_of: 5}\n",
         "union", ties, b, pad=5)
    case(d, dirs, models, "linear_union", "tokenizer_source: union\n", "union", lin, None)
    tokens = (f"tokenizer:\n  source: base\n  tokens:\n"
              f"    <tool>:\n      source: {{kind: model_token, model: {x}, token: </s>}}\n"
              f"    k:\n      source: {y}\n      force: true\n"
              f"    a:\n      source: {{kind: model_token, model: {y}, token_id: 3}}\n"
              f"      force: true\n"
              f"    <new>:\n      source: {{kind: zero}}\n")
    case(d, dirs, models, "tokens", tokens, "base", ta, b)


def group_bf16(d):
    dirs, models = setup(d, "BF16")
    b, x, y = dirs["base"], dirs["x"], dirs["y"]
    ta = (f"merge_method: task_arithmetic\nbase_model: {b}\nmodels:\n"
          f"  - model: {x}\n    parameters: {{weight: 0.7}}\n"
          f"  - model: {y}\n    parameters: {{weight: 0.4}}\n")
    case(d, dirs, models, "bf16_union", "tokenizer_source: union\n", "union", ta, b,
         bound=2.0 ** -8)
    case(d, dirs, models, "bf16_model_padded",
         f"tokenizer:\n  source: {x}\n  pad_to_multiple_of: 16\n", x, ta, b, pad=16,
         bound=2.0 ** -8)


def template_of(out):
    return json.load(open(os.path.join(out, "tokenizer_config.json"))).get("chat_template")


# One conversation for every format: system, user, assistant, user (contents with the
# surrounding spaces the llama3 and alpaca specifications trim).
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]


def render(template, gen):
    """transformers' apply_chat_template: a sandboxed Jinja environment with trim_blocks and
    lstrip_blocks (Debian's python3-jinja2)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=CONVERSATION, add_generation_prompt=gen,
                                            bos_token="<|begin_of_text|>")


def named_formats():
    """Each format's string from its specification: {name: {add_generation_prompt: text}}."""
    # ChatML (OpenAI's chatml.md): <|im_start|>ROLE\nCONTENT<|im_end|>\n per message
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CONVERSATION)
    # Llama 3 (Meta's prompt format page): begin_of_text, then header, blank line, content, eot
    llama3 = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in CONVERSATION)
    # Alpaca (Stanford Alpaca's prompt): preamble, then ### blocks separated by blank lines
    alpaca = "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello.\n\n### Instruction:\n2+2?"
    return {"chatml": {False: chatml, True: chatml + "<|im_start|>assistant\n"},
            "llama3": {False: llama3, True: llama3 + "<|start_header_id|>assistant<|end_header_id|>\n\n"},
            "alpaca": {False: alpaca, True: alpaca + "\n\n### Response:\n"}}


def group_chat_template(d):
    dirs, _ = setup(d)
    b, x, y = dirs["base"], dirs["x"], dirs["y"]
    ta = (f"merge_method: task_arithmetic\nbase_model: {b}\nmodels:\n"
          f"  - model: {x}\n    parameters: {{weight: 0.5}}\n"
          f"  - model: {y}\n    parameters: {{weight: 0.5}}\n")
    # vocabularies differ, so the merges take the base's tokenizer: the templates alone
    for label, value, want in [
            ("auto: the most common (x and y agree)", "auto", "{{ x-template }} 0123456789"),
            ("a Jinja string", "'{% for m in messages %}{{ m.content }}{% endfor %}'",
             "{% for m in messages %}{{ m.content }}{% endfor %}")]:
        out = os.path.join(d, label.split()[0].strip(":"))
        r = run("merge", config(d, "t.yml", ta + f"tokenizer_source: base\nchat_template: {value}\n"),
                "-o", out)
        check(f"chat_template {label}: runs", r.returncode == 0, r.stderr)
        check(f"chat_template {label}: written into tokenizer_config.json",
              r.returncode == 0 and template_of(out) == want, template_of(out) if not r.returncode else "")
        if r.returncode == 0:
            kept = json.load(open(os.path.join(out, "tokenizer_config.json")))
            check(f"chat_template {label}: the rest of tokenizer_config.json kept",
                  kept.get("model_max_length") == 128)
    # a format name: acem's own template, rendered as transformers renders it, against the
    # string each format's specification gives (built by hand in named_formats)
    for name, want in named_formats().items():
        out = os.path.join(d, "named-" + name)
        r = run("merge", config(d, "n.yml", ta + f"tokenizer_source: base\nchat_template: {name}\n"),
                "-o", out)
        check(f"chat_template {name}: runs", r.returncode == 0, r.stderr)
        for gen in (False, True):
            got = render(template_of(out), gen) if r.returncode == 0 else None
            check(f"chat_template {name}, add_generation_prompt {gen}: the format's own string",
                  got == want[gen], f"got {got!r}, want {want[gen]!r}")
    r = run("merge", config(d, "n.yml", ta + "tokenizer_source: base\nchat_template: exaone\n"),
            "-o", os.path.join(d, "named"))
    check("chat_template exaone (a name acem has no template for): refused in one line with the way out",
          one_error_line(r, "exaone", "Jinja text") and not os.path.exists(os.path.join(d, "named")), r.stderr)
    # without a tokenizer source: the base's files, the template set (merge.py's _copy_tokenizer)
    out = os.path.join(d, "plain")
    r = run("merge", config(d, "p.yml", f"merge_method: task_arithmetic\nbase_model: {b}\n"
                            f"models:\n  - model: {x}\n    parameters: {{weight: 0.5}}\n"
                            "chat_template: llama3\n"), "-o", out)
    check("chat_template without tokenizer_source: refused by the shapes, as mergekit would "
          "fail (vocabularies differ)", r.returncode != 0, r.stderr)


def group_refusals(d):
    dirs, _ = setup(d)
    b, x = dirs["base"], dirs["x"]
    ta = (f"merge_method: task_arithmetic\nbase_model: {b}\nmodels:\n"
          f"  - model: {x}\n    parameters: {{weight: 0.5}}\n")
    cases = [
        ("both keys", f"tokenizer_source: base\ntokenizer:\n  source: base\n", ("not both",)),
        ("a token source lacking the token",
         f"tokenizer:\n  source: base\n  tokens:\n    j:\n      source: {x}\n",
         ("token \"j\"", "has no token")),
        ("a token source outside the merge",
         f"tokenizer:\n  source: base\n  tokens:\n    j:\n      source: {d}\n",
         ("not a model of the merge",)),
        ("a token without a source", "tokenizer:\n  source: base\n  tokens:\n    j: {force: true}\n",
         ("needs a source",)),
        ("a token_id past the rows",
         f"tokenizer:\n  source: base\n  tokens:\n    j:\n      source: {{kind: model_token, "
         f"model: {x}, token_id: 99}}\n", ("rows", "99")),
        ("a bad chat template", "tokenizer_source: base\nchat_template: nosuch\n",
         ("chat_template", "nosuch")),
        ("a bad pad_to_multiple_of", "tokenizer:\n  source: base\n  pad_to_multiple_of: 0\n",
         ("pad_to_multiple_of",)),
        ("a source without tokenizer.json", f"tokenizer_source: {d}\n", ("tokenizer.json",)),
    ]
    for label, extra, phrases in cases:
        r = run("merge", config(d, "r.yml", ta + extra), "-o", os.path.join(d, "o"))
        check(f"refused: {label}, in one line", one_error_line(r, *phrases), r.stderr)
    sliced = (f"merge_method: passthrough\nslices:\n  - sources:\n      - model: {x}\n"
              f"        layer_range: [0, 2]\ntokenizer_source: base\n")
    r = run("merge", config(d, "s.yml", sliced), "-o", os.path.join(d, "o"))
    check("refused: tokenizer_source with slices (not built yet), in one line",
          one_error_line(r, "slices", "not supported"), r.stderr)
    bad = os.path.join(d, "bad")
    os.makedirs(bad)
    for f in ("model.safetensors", "config.json"):
        os.link(os.path.join(x, f), os.path.join(bad, f))
    open(os.path.join(bad, "tokenizer.json"), "w").write('{"model": {"vocab": {"a": "zero"}}}')
    r = run("merge", config(d, "r.yml", ta + f"tokenizer_source: {bad}\n"), "-o",
            os.path.join(d, "o"))
    check("refused: a tokenizer.json with a bad id, naming the file",
          one_error_line(r, "bad/tokenizer.json", "model.vocab"), r.stderr)
    r = run("merge", config(d, "r.yml", ta + "tokenizer_source: base\n"), "-o",
            os.path.join(d, "o.safetensors"))
    check("refused: a tokenizer source with a single-file output",
          one_error_line(r, "directory output"), r.stderr)
    r = run("merge", config(d, "r.yml", ta + "tokenizer_source: base\n"), "-o",
            os.path.join(d, "dry"), "--dry-run")
    check("dry run: passes, writes nothing", r.returncode == 0 and not os.path.exists(
        os.path.join(d, "dry")), r.stderr)


if __name__ == "__main__":
    sys.exit(run_groups([group_sources, group_bf16, group_chat_template, group_refusals], "acem-tok-",
                        sys.argv[2:]))
