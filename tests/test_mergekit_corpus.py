#!/usr/bin/python3
"""Real mergekit configurations, unchanged, on tiny stand-in models: where acem stands.

Every tests/corpus/mergekit/NN-*.yml (verbatim from mergekit's examples, model cards and
tutorials; SOURCES.md names each one's source and architecture) is run as a user would run
it: `acem merge CONFIG -o OUT` in a working directory holding the config, with every model it
names laid out as that user would have it:

- a Hugging Face id (huggingface_hub's repo id form: at most one "/", characters [\\w.-]) in a
  fake hub cache laid out exactly as huggingface_hub does (HF_HUB_CACHE=<dir>/hub):
  models--org--name/blobs/<etag> (sha256 of a safetensors file, git blob id of the others),
  snapshots/<commit>/<file> as relative symlinks to ../../blobs/<etag>, refs/main (and
  refs/<revision> for a source's `revision:`) holding <commit>;
- any other relative path (./models/x, D:/Uni/...) as a directory under the working
  directory; an absolute path is not laid out (it is the author's machine);
- `model+adapter` as the model plus a PEFT LoRA adapter (adapter_config.json,
  adapter_model.safetensors) under the adapter's id;
- names and out_paths that a document of the same file produces (mergekit-multi / mega
  stages) are not laid out: an earlier stage makes them.

Stand-ins: the architecture's tensor names (Llama/Mistral, Qwen2 with q/k/v biases,
Qwen2-VL, Phi-2, Phi-3, Gemma-2, GPT-2, Florence-2), enough layers for every layer_range (6
without slices), widths 16 / 24, stored in the config's `dtype` (F32 when absent or not a float
type); each model is one shared base plus its own noise (standard deviation 0.1), so task
vectors mean something.

Each config is then one of:
- ran: every output tensor is compared with the float64 transcription of mergekit
  (tests/oracle/mergekit_np.py, `merge(cfg, models, n_layers)`; DARE's mask with acem's
  default --seed 0) when it transcribes the config, else "ran, no oracle";
- refused: acem's one error line is recorded (the measurement, not a failure).
The test fails when a config that runs differs from the oracle (error above 1e-4 for F32,
2^-8 for BF16, 2^-10 for F16 outputs, per tensor max |acem - oracle| / max |oracle|, or
other tensors, or another output type than mergekit's), or when acem crashes, prints more
than one error line, or exits 0 without an output.

Usage: /usr/bin/python3 tests/test_mergekit_corpus.py PATH/TO/acem [NN ...]
ACEM_CORPUS_TABLE=FILE also writes the table (Markdown) to FILE; ACEM_CORPUS_IDS_AS_DIRS=1
lays the Hugging Face ids out as directories under the working directory instead of the
cache (the configs' other obstacles, with id resolution out of the way)."""

import hashlib
import json
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import mergekit_np as MK  # noqa: E402
import safetensors_np as ST  # noqa: E402
from harness import ACEM, check, one_error_line, run_groups  # noqa: E402

CORPUS = os.path.join(HERE, "corpus", "mergekit")
BOUND = {"F32": 1e-4, "BF16": 2.0 ** -8, "F16": 2.0 ** -10}
DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
# hidden width, MLP width, vocabulary: int(0.1 * W) > 0, as mergekit's magnitude trim asserts
W, I, V = 16, 24, 32
DEFAULT_LAYERS = 6
# every stand-in's tokenizer: one vocabulary of V tokens, so that tokenizer_source (base,
# union or a model) maps every embedding onto itself and the oracle needs no remapping
TOKENIZER = json.dumps({"version": "1.0", "added_tokens": [], "model": {
    "type": "BPE", "vocab": {f"t{i}": i for i in range(V)}, "merges": []}}).encode()
# huggingface_hub's validate_repo_id: [\w.-], at most one "/", no leading "." or "-",
# no ".." or "--"
HUB_ID = re.compile(r"^(?![.-])(?!.*(\.\.|--))[\w.-]+(/(?![.-])[\w.-]+)?$")
ONLY = tuple(sys.argv[2:])  # config numbers to run (all when empty)
# ids laid out as directories instead: what resolving ids from the cache adds, measured
IDS_AS_DIRS = os.environ.get("ACEM_CORPUS_IDS_AS_DIRS") == "1"
rows = []  # one per config, for the table


# ------------------------------------------------------------------ the corpus

def sources():
    """SOURCES.md's table: file -> (source, architecture)."""
    out = {}
    with open(os.path.join(CORPUS, "SOURCES.md")) as f:
        for line in f:
            cols = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cols) == 5 and cols[0].endswith(".yml"):
                out[cols[0]] = (cols[1], cols[2])
    return out


def sources_of_slices(doc):
    """Every slice source of a document: under `slices:` and under each of `modules:`."""
    slices = list(doc.get("slices") or [])
    for module in (doc.get("modules") or {}).values():
        slices += module.get("slices") or []
    return [src for s in slices for src in s.get("sources") or []]


def refs_of(doc):
    """(model reference, revision) of every model a document names."""
    refs = [(str(doc["base_model"]), None)] if doc.get("base_model") else []
    refs += [(str(m["model"]), None) for m in doc.get("models") or []]
    tok = doc.get("tokenizer_source") or (doc.get("tokenizer") or {}).get("source")
    refs += [(str(tok), None)] if tok and tok not in ("base", "union") else []
    return refs + [(str(src["model"]), src.get("revision")) for src in sources_of_slices(doc)]


def layer_count(docs):
    """Enough layers for every layer_range of the file."""
    return max((src["layer_range"][1] for d in docs for src in sources_of_slices(d)
                if "layer_range" in src), default=DEFAULT_LAYERS)


def walk(x):
    """Every (key, value) pair of a parsed document, at any depth."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield k, v
            yield from walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from walk(v)


def features(docs):
    """Short tags of what a config uses, for the table."""
    d0, tags = docs[0], []
    pairs = [kv for d in docs for kv in walk(d)]
    keys = {k for k, _ in pairs}
    if len(docs) > 1:
        tags.append(f"{len(docs)} documents")
    for key, tag in (("slices", "slices"), ("modules", "modules"), ("out_dtype", "out_dtype"),
                     ("tokenizer_source", "tokenizer"), ("tokenizer", "tokenizer"),
                     ("chat_template", "chat_template"), ("name", "name"),
                     ("int8_mask", "int8_mask"), ("normalize", "normalize"),
                     ("rescale", "rescale"), ("revision", "revision")):
        if key in keys and tag not in tags:
            tags.append(tag)
    if any(k != "layer_range" and isinstance(v, list) and len(v) > 1
           and all(isinstance(e, (int, float)) for e in v) for k, v in pairs):
        tags.append("gradient")
    if keys & {"filter", "pattern"}:
        tags.append("filter")
    refs = [r for d in docs for r, _ in refs_of(d)]
    if any("+" in r for r in refs):
        tags.append("lora")
    if any(os.path.isabs(r) for r in refs):
        tags.append("abs path")
    if "base_model" not in d0 and d0.get("merge_method") != "passthrough":
        tags.append("no base")
    return ", ".join(tags)


# ------------------------------------------------------------------ stand-in models

def shapes(arch, n):
    """Tensor name -> shape of a tiny model of `arch` with n layers, named as its
    Hugging Face checkpoints are."""
    s = {}
    if arch == "gpt2":
        s.update({"wte.weight": (V, W), "wpe.weight": (V, W), "ln_f.weight": (W,),
                  "ln_f.bias": (W,)})
        for i in range(n):
            p = f"h.{i}."
            s.update({p + "ln_1.weight": (W,), p + "ln_1.bias": (W,),
                      p + "attn.c_attn.weight": (W, 3 * W), p + "attn.c_attn.bias": (3 * W,),
                      p + "attn.c_proj.weight": (W, W), p + "attn.c_proj.bias": (W,),
                      p + "ln_2.weight": (W,), p + "ln_2.bias": (W,),
                      p + "mlp.c_fc.weight": (W, I), p + "mlp.c_fc.bias": (I,),
                      p + "mlp.c_proj.weight": (I, W), p + "mlp.c_proj.bias": (W,)})
        return s
    if arch == "florence2":
        s.update({"language_model.model.shared.weight": (V, W),
                  "language_model.lm_head.weight": (V, W),
                  "image_projection": (W, W)})
        for stack in ("encoder", "decoder"):
            for i in range(n):
                p = f"language_model.model.{stack}.layers.{i}."
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    s[p + f"self_attn.{proj}.weight"] = (W, W)
                    s[p + f"self_attn.{proj}.bias"] = (W,)
                s.update({p + "fc1.weight": (I, W), p + "fc2.weight": (W, I),
                          p + "self_attn_layer_norm.weight": (W,),
                          p + "final_layer_norm.weight": (W,)})
        return s
    if arch == "phi":
        s.update({"model.embed_tokens.weight": (V, W), "model.final_layernorm.weight": (W,),
                  "model.final_layernorm.bias": (W,), "lm_head.weight": (V, W),
                  "lm_head.bias": (V,)})
        for i in range(n):
            p = f"model.layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "dense"):
                s[p + f"self_attn.{proj}.weight"] = (W, W)
                s[p + f"self_attn.{proj}.bias"] = (W,)
            s.update({p + "mlp.fc1.weight": (I, W), p + "mlp.fc1.bias": (I,),
                      p + "mlp.fc2.weight": (W, I), p + "mlp.fc2.bias": (W,),
                      p + "input_layernorm.weight": (W,), p + "input_layernorm.bias": (W,)})
        return s
    # Llama, Mistral, Qwen2(-VL), Phi-3, Gemma-2: one layout, Phi-3 with fused projections,
    # Gemma-2 with its head tied to the embeddings and norms around the MLP
    s.update({"model.embed_tokens.weight": (V, W), "model.norm.weight": (W,)})
    if arch != "gemma2":
        s["lm_head.weight"] = (V, W)
    for i in range(n):
        p = f"model.layers.{i}."
        if arch == "phi3":
            s.update({p + "self_attn.qkv_proj.weight": (3 * W, W),
                      p + "mlp.gate_up_proj.weight": (2 * I, W)})
        else:
            for proj in ("q_proj", "k_proj", "v_proj"):
                s[p + f"self_attn.{proj}.weight"] = (W, W)
                if arch.startswith("qwen2"):
                    s[p + f"self_attn.{proj}.bias"] = (W,)
            s.update({p + "mlp.gate_proj.weight": (I, W), p + "mlp.up_proj.weight": (I, W)})
        s.update({p + "self_attn.o_proj.weight": (W, W), p + "mlp.down_proj.weight": (W, I),
                  p + "input_layernorm.weight": (W,), p + "post_attention_layernorm.weight": (W,)})
        if arch == "gemma2":
            s.update({p + "pre_feedforward_layernorm.weight": (W,),
                      p + "post_feedforward_layernorm.weight": (W,)})
    if arch == "qwen2_vl":
        s.update({"visual.blocks.0.attn.qkv.weight": (3 * W, W),
                  "visual.merger.mlp.0.weight": (W, W)})
    return s


def config_json(arch, n, dtype):
    """The stand-in's config.json, with the keys each architecture's loader reads."""
    torch_dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    if arch == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": n,
                "n_embd": W, "n_head": 2, "n_positions": V, "vocab_size": V,
                "torch_dtype": torch_dtype}
    if arch == "florence2":
        return {"model_type": "florence2", "architectures": ["Florence2ForConditionalGeneration"],
                "text_config": {"model_type": "florence2_language", "encoder_layers": n,
                                "decoder_layers": n, "num_hidden_layers": n, "d_model": W,
                                "vocab_size": V}, "torch_dtype": torch_dtype}
    names = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
             "qwen2": "Qwen2ForCausalLM", "qwen2_vl": "Qwen2VLForConditionalGeneration",
             "phi": "PhiForCausalLM", "phi3": "Phi3ForCausalLM", "gemma2": "Gemma2ForCausalLM"}
    return {"model_type": arch, "architectures": [names[arch]], "num_hidden_layers": n,
            "hidden_size": W, "intermediate_size": I, "vocab_size": V,
            "num_attention_heads": 2, "num_key_value_heads": 2, "torch_dtype": torch_dtype}


def blob_name(name, data):
    """A cached file's blob name: its ETag, the sha256 of an LFS file (the Hub's
    .gitattributes sends *.safetensors to LFS), else its git blob id (huggingface_hub's
    file_download.py: blobs are "identified by their git-sha or sha256")."""
    if name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class World:
    """The models of one config: weights drawn from one base, written where the config
    looks for them. values[ref] holds what a reference means to mergekit (a LoRA
    reference: the adapted weights), in float64 as stored."""

    def __init__(self, root, arch, n, dtype, seed):
        self.root, self.arch, self.n, self.dtype = root, arch, n, dtype
        self.hub = os.path.join(root, "hub")
        self.rng = np.random.default_rng(seed)
        self.base = {k: self.rng.standard_normal(v) for k, v in shapes(arch, n).items()}
        self.values = {}

    def weights(self):
        return {k: ST.from_f64(v + 0.1 * self.rng.standard_normal(v.shape), self.dtype)
                for k, v in self.base.items()}

    def safetensors(self, tensors):
        """A safetensors file's bytes (the hub stores blobs by content)."""
        path = os.path.join(self.root, ".tmp.safetensors")
        ST.write_file(path, tensors)
        with open(path, "rb") as f:
            blob = f.read()
        os.unlink(path)
        return blob

    def place(self, ref, revision, files):
        """Writes files where `ref` resolves: the hub cache or a local directory."""
        if HUB_ID.match(ref) and not IDS_AS_DIRS:
            repo = os.path.join(self.hub, "models--" + ref.replace("/", "--"))
            commit = hashlib.sha1(f"{ref}@{revision or 'main'}".encode()).hexdigest()
            snap = os.path.join(repo, "snapshots", commit)
            os.makedirs(snap, exist_ok=True)
            os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
            os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
            for name, data in files.items():
                sha = blob_name(name, data)
                with open(os.path.join(repo, "blobs", sha), "wb") as f:
                    f.write(data)
                link = os.path.join(snap, name)
                if not os.path.lexists(link):
                    os.symlink(os.path.join("..", "..", "blobs", sha), link)
            with open(os.path.join(repo, "refs", revision or "main"), "w") as f:
                f.write(commit)
        else:
            d = os.path.join(self.root, "work", ref)
            os.makedirs(d, exist_ok=True)
            for name, data in files.items():
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)

    def model(self, ref, revision=None):
        """A full model at ref (once per reference and revision)."""
        key = (ref, revision)
        if key in self.values:
            return self.values[key]
        tensors = self.weights()
        cfg = json.dumps(config_json(self.arch, self.n, self.dtype), indent=1).encode()
        self.place(ref, revision, {"config.json": cfg, "tokenizer.json": TOKENIZER,
                                   "model.safetensors": self.safetensors(tensors)})
        self.values[key] = {k: t.to_f64() for k, t in tensors.items()}
        return self.values[key]

    def lora(self, ref):
        """model+adapter: the model, and a rank-2 PEFT adapter on q_proj / v_proj (or the
        fused qkv_proj); the reference means W + (alpha / r) B A (peft's LoraLayer)."""
        if (ref, None) in self.values:
            return
        base_ref, adapter = ref.split("+", 1)
        w = dict(self.model(base_ref))
        r, alpha, tensors = 2, 4, {}
        for name in w:
            if not re.search(r"self_attn\.(q_proj|v_proj|qkv_proj)\.weight$", name):
                continue
            out_f, in_f = w[name].shape
            a = ST.from_f64(0.1 * self.rng.standard_normal((r, in_f)), self.dtype)
            b = ST.from_f64(0.1 * self.rng.standard_normal((out_f, r)), self.dtype)
            stem = "base_model.model." + name[:-len(".weight")]
            tensors[stem + ".lora_A.weight"], tensors[stem + ".lora_B.weight"] = a, b
            # rounded to the model's type once, as peft's merge_and_unload stores it (and
            # acem's checkpoint.c reads it): a variance or magnitude selection (sce's
            # select_topk) is not stable under a change of the base at 2^-9
            w[name] = ST.from_f64(w[name] + (alpha / r) * b.to_f64() @ a.to_f64(),
                                  self.dtype).to_f64()
        cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "fan_in_fan_out": False,
               "target_modules": ["qkv_proj"] if self.arch == "phi3" else ["q_proj", "v_proj"],
               "base_model_name_or_path": base_ref, "task_type": "CAUSAL_LM"}
        self.place(adapter, None, {"adapter_config.json": json.dumps(cfg, indent=1).encode(),
                                   "adapter_model.safetensors": self.safetensors(tensors)})
        self.values[(ref, None)] = w


def lay_out(world, docs):
    """Every model the file names, except the outputs of its own stages."""
    made = {str(d["name"]) for d in docs if d.get("name")}
    made |= {os.path.normpath(str(d["out_path"])) for d in docs if d.get("out_path")}
    for d in docs:
        for ref, rev in refs_of(d):
            if ref in made or os.path.normpath(ref) in made or os.path.isabs(ref):
                continue
            if "+" in ref:
                world.lora(ref)
            else:
                world.model(ref, rev)


# ------------------------------------------------------------------ one config

def compare(doc, world, got):
    """(outcome, worst relative error, passes) of an output against the oracle."""
    models = {ref: v for (ref, rev), v in world.values.items() if rev is None}
    try:
        want = MK.merge(doc, models, world.n)  # acem's default --seed 0 draws DARE's masks
    except NotImplementedError:
        return "ran, no oracle", None, True
    except (RuntimeError, AssertionError) as e:  # mergekit itself stops (a missing weight, k = 0)
        return f"ran; mergekit refuses ({e})", None, False
    if set(want) != set(got):
        return (f"ran, other tensors (missing {sorted(set(want) - set(got))[:3]}, extra "
                f"{sorted(set(got) - set(want))[:3]})"), None, False
    stored = DTYPES.get(str(doc.get("out_dtype") or doc.get("dtype")), world.dtype)
    types = {t.dtype for t in got.values()}
    worst = max(float(np.max(np.abs(got[k].to_f64() - w)) / max(np.max(np.abs(w)), 1e-30))
                for k, w in want.items())
    if types != {stored}:
        return f"ran, stored as {sorted(types)} (mergekit: {stored})", worst, False
    ok = worst <= BOUND[stored]
    return ("ran, matches the oracle" if ok else "ran, differs from the oracle"), worst, ok


def run_config(d, name, arch):
    path = os.path.join(CORPUS, name)
    with open(path, newline="") as f:
        text = f.read()
    docs = [x for x in yaml.safe_load_all(text) if x is not None]
    methods = ", ".join(dict.fromkeys(str(x.get("merge_method")) for x in docs))
    dtype = DTYPES.get(str(docs[0].get("dtype")), "F32")
    world = World(d, arch, layer_count(docs), dtype, zlib.crc32(name.encode()))
    os.makedirs(os.path.join(d, "work"), exist_ok=True)
    lay_out(world, docs)
    with open(os.path.join(d, "work", name), "w", newline="") as f:
        f.write(text)  # the config unchanged, in the directory it is run from
    env = dict(os.environ, HF_HUB_CACHE=world.hub, HF_HOME=os.path.join(d, "hf-home"),
               HF_HUB_OFFLINE="1")
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    r = subprocess.run([ACEM, "merge", "-q", name, "-o", "out"], cwd=os.path.join(d, "work"),
                       env=env, capture_output=True, text=True, timeout=120)
    row = {"file": name, "method": methods, "arch": arch, "features": features(docs),
           "error": None}
    if r.returncode == 0:
        out = os.path.join(d, "work", "out")
        got = ST.read_model(out) if os.path.exists(out) else None
        if got is None:
            row["outcome"], ok = "exit 0 without an output", False
        elif len(docs) > 1:
            row["outcome"], ok = "ran, no oracle (several documents)", True
        else:
            row["outcome"], row["error"], ok = compare(docs[0], world, got)
    elif one_error_line(r):
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("acem: error: ")][0]
        row["outcome"], ok = "refused: " + err[len("acem: error: "):], True
    else:
        errors = sum(ln.startswith("acem: error: ") for ln in r.stderr.splitlines())
        row["outcome"] = f"crash or unclear failure (exit {r.returncode}, {errors} error lines)"
        ok = False
    rows.append(row)
    check(f"{name}: {row['outcome'][:160]}", ok, f"max rel error {row['error']}; {r.stderr}")


# ------------------------------------------------------------------ the table

def table():
    lines = ["| config | method | architecture | features | outcome | max rel error |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        err = "" if r["error"] is None else f"{r['error']:.2e}"
        outcome = r["outcome"].replace("|", "\\|")
        lines.append(f"| {r['file']} | {r['method']} | {r['arch']} | {r['features']} | "
                     f"{outcome} | {err} |")
    ran = [r for r in rows if r["outcome"].startswith("ran")]
    match = [r for r in rows if r["outcome"] == "ran, matches the oracle"]
    lines.append("")
    lines.append(f"{len(ran)} of {len(rows)} run; {len(match)} match the oracle within 1e-4 "
                 "(f32) / 2^-8 (bf16) / 2^-10 (f16 storage)")
    return "\n".join(lines)


def test_corpus(d):
    src = sources()
    names = sorted(n for n in os.listdir(CORPUS) if n.endswith(".yml"))
    check(f"the corpus holds {len(names)} configurations (at least 30), each with its source "
          "in SOURCES.md", len(names) >= 30 and set(names) == set(src), set(names) ^ set(src))
    for name in names:
        if ONLY and not any(name.startswith(o) for o in ONLY):
            continue
        sub = os.path.join(d, name[:-4])
        os.mkdir(sub)
        run_config(sub, name, src[name][1])
    text = table()
    print(text)
    if os.environ.get("ACEM_CORPUS_TABLE"):
        with open(os.environ["ACEM_CORPUS_TABLE"], "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(run_groups([test_corpus], "acem-mk-corpus-"))
