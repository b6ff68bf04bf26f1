#!/usr/bin/python3
"""Model references as users write them (issue 13, item 5): Hugging Face ids resolved in a
local cache laid out as huggingface_hub lays it out (blobs/, snapshots/<commit>/ of links
into ../../blobs/, refs/<revision>), the cache's environment variables in huggingface_hub's
precedence, a missing id's one error line; PEFT LoRA adapters as experts (MODEL+ADAPTER,
an adapter directory alone, in configs and on the command line) against merging the full
weights materialised in float64 numpy; refused adapter kinds; transformers' precedence of
weight files and consolidated.safetensors.

Usage: /usr/bin/python3 tests/test_model_refs.py PATH/TO/acem

LoRA bound: the merge of the adapted experts equals the merge of their materialised
weights (W0 + s B A rounded once to f32) to 1e-6 relative (max |diff| / max |value|)."""

import hashlib
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import safetensors_np as ST  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402

LORA_BOUND = 1e-6
ENV_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


def shapes():
    # 300 x 200 and 200 x 300 span several of the fused kernel's 2^14-element blocks, which
    # end mid-row
    return {"model.embed_tokens.weight": (32, 16), "model.norm.weight": (16,),
            "model.layers.0.self_attn.q_proj.weight": (16, 16),
            "model.layers.0.self_attn.q_proj.bias": (16,),
            "model.layers.0.mlp.up_proj.weight": (300, 200),
            "transformer.h.0.attn.c_attn.weight": (200, 300),  # a GPT-2 Conv1D: (in, out)
            "lm_head.weight": (32, 16)}


def write_model(path, values, dtype="F32"):
    os.makedirs(path, exist_ok=True)
    ST.write_file(os.path.join(path, "model.safetensors"),
                  {k: ST.from_f64(v, dtype) for k, v in values.items()})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "num_hidden_layers": 1}, f)


def random_model(rng):
    return {k: rng.standard_normal(v).astype(np.float32).astype(np.float64)
            for k, v in shapes().items()}


def env(**kw):
    e = {k: v for k, v in os.environ.items() if k not in ENV_VARS + ("HOME",)}
    e["HOME"] = kw.pop("HOME", "/nonexistent-home")
    e.update(kw)
    return e


# ------------------------------------------------------------------ the Hugging Face cache

def cache_repo(root, repo_id, src, revision="main", commit=None):
    """Adds src's files to the cache at root as huggingface_hub does: each file a blob under
    blobs/ named by its ETag (the sha256 of an LFS file such as safetensors, the git blob id
    of a small one), linked from snapshots/<commit>/ by a relative link, and
    refs/<revision> holding the commit (no newline). Returns the snapshot directory."""
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1((repo_id + revision + src).encode()).hexdigest()
    snap = os.path.join(repo, "snapshots", commit)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.join(repo, "refs", revision)), exist_ok=True)
    for name in sorted(os.listdir(src)):
        data = open(os.path.join(src, name), "rb").read()
        blob = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else \
            hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        with open(os.path.join(repo, "blobs", blob), "wb") as f:
            f.write(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snap, name))
    with open(os.path.join(repo, "refs", revision), "w") as f:
        f.write(commit)
    return snap


def tensors_of(path):
    return {k: t.to_f64() for k, t in ST.read_model(path).items()} if os.path.isdir(path) else \
        {k: t.to_f64() for k, t in ST.read_file(path)[0].items()}


def same_tensors(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_hub_ids(d):
    rng = np.random.default_rng(1)
    names = ["base", "e1", "e2"]
    vals = {n: random_model(rng) for n in names}
    for n in names:
        write_model(os.path.join(d, "src", n), vals[n])
    root = os.path.join(d, "hub")
    snaps = {n: cache_repo(root, f"org/{n}", os.path.join(d, "src", n)) for n in names}
    ref = os.path.join(d, "ref.safetensors")
    r0 = run("merge", "-q", "-b", os.path.join(d, "src/base"), "-m", os.path.join(d, "src/e1"),
             "-m", os.path.join(d, "src/e2"), "-M", "task_arithmetic", "-o", ref)
    out = os.path.join(d, "out")
    r = run("merge", "-q", "-b", "org/base", "-m", "org/e1", "-m", "org/e2", "-M", "task_arithmetic",
            "-o", out, env=env(HF_HUB_CACHE=root), cwd=d)
    check("hub ids on the command line resolve in the cache (links into blobs/) and merge as "
          "their local copies do", r0.returncode == 0 and r.returncode == 0 and
          same_tensors(tensors_of(out), tensors_of(ref)), r0.stderr + r.stderr)
    card = open(os.path.join(out, "README.md")).read() if r.returncode == 0 else ""
    kept = open(os.path.join(out, "acem_config.yaml")).read() if r.returncode == 0 else ""
    check("the card names the base's hub id; acem_config.yaml the snapshots merged",
          "base_model: org/base" in card and snaps["e1"] in kept, card[:300] + kept)
    r = run("stats", "-b", "org/base", "-m", "org/e1", "-m", "org/e2", "--csv",
            os.path.join(d, "stats.csv"), env=env(HF_HUB_CACHE=root), cwd=d)
    check("acem stats reads hub ids", r.returncode == 0 and os.path.exists(os.path.join(d, "stats.csv")),
          r.stderr)
    r = run("stats", "-b", "org/base", "-m", "org/e1", "-m", "org/e2", "--csv",
            os.path.join(snaps["e1"], "model.safetensors"), "--force", env=env(HF_HUB_CACHE=root), cwd=d)
    check("acem stats refuses to write over a file of a model named by its hub id",
          one_error_line(r, "model.safetensors"), r.stderr)
    cfg = os.path.join(d, "cfg", "merge.yaml")
    os.makedirs(os.path.dirname(cfg))
    with open(cfg, "w") as f:
        f.write("merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n"
                "  - model: org/e1\n    parameters: {weight: 1.0}\n"
                "  - model: org/e2@main\n    parameters: {weight: 1.0}\n"
                "parameters: {lambda: 0.3}\n")  # the command line's default
    out2 = os.path.join(d, "out2.safetensors")
    r = run("merge", "-q", cfg, "-o", out2, env=env(HF_HUB_CACHE=root))
    with open(cfg, "w") as f:
        f.write("merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n"
                "  - model: org/e1\n    parameters: {weight: 1.0}\n"
                "  - model: {model: {path: org/e2, revision: main}}\n    parameters: {weight: 1.0}\n"
                "parameters: {lambda: 0.3}\n")
    out3 = os.path.join(d, "out3.safetensors")
    r3 = run("merge", "-q", cfg, "-o", out3, env=env(HF_HUB_CACHE=root))
    check("mergekit's {model: {path, revision}} form resolves in the cache",
          r3.returncode == 0 and same_tensors(tensors_of(out3), tensors_of(ref)), r3.stderr)
    check("hub ids (and @main) in a mergekit config resolve in the cache",
          r.returncode == 0 and same_tensors(tensors_of(out2), tensors_of(ref)),
          r.stderr + str(r.returncode))
    # a revision: a tag in refs/, or the commit itself
    write_model(os.path.join(d, "src", "tagged"), {"tagged.weight": np.ones(4)})
    v1 = cache_repo(root, "org/e1", os.path.join(d, "src", "tagged"), revision="v1.0")
    r1 = run("inspect", "org/e1@v1.0", env=env(HF_HUB_CACHE=root))
    r2 = run("inspect", f"org/e1@{os.path.basename(v1)}", env=env(HF_HUB_CACHE=root))
    r3 = run("inspect", "org/e1", env=env(HF_HUB_CACHE=root))
    check("@revision reads refs/<revision>; @<commit> names the snapshot; main stays main",
          all(x.returncode == 0 for x in (r1, r2, r3)) and "tagged.weight" in r1.stdout
          and "tagged.weight" in r2.stdout and "tagged.weight" not in r3.stdout,
          r1.stdout[:300] + r1.stderr + r2.stderr + r3.stderr)
    # a missing id and a missing revision: one line, the folder searched, how to fetch
    r = run("merge", "-b", "org/base", "-m", "org/nothere", "-m", "org/e1", "-M", "task_arithmetic",
            "-o", os.path.join(d, "x"), env=env(HF_HUB_CACHE=root), cwd=d)
    check("a missing id: one error line naming it, the cache folder and variable, and "
          "huggingface-cli download", one_error_line(r, '"org/nothere"', root, "HF_HUB_CACHE",
                                                     "models--org--nothere",
                                                     "huggingface-cli download org/nothere"),
          r.stderr)
    r = run("inspect", "org/e1@v9", env=env(HF_HUB_CACHE=root))
    check("a missing revision: one error line naming refs/v9 and --revision v9",
          one_error_line(r, "refs/v9", "--revision v9"), r.stderr)
    r = run("inspect", "org/e1@../../x", env=env(HF_HUB_CACHE=root))
    check("a revision that climbs out of the cache repository is refused",
          one_error_line(r, "not a revision name"), r.stderr)
    # refs/main naming a snapshot that is not there (an interrupted download)
    shutil.rmtree(snaps["e2"])
    r = run("inspect", "org/e2", env=env(HF_HUB_CACHE=root))
    check("refs/main naming a missing snapshot is one error line saying so",
          one_error_line(r, "refs/main", "snapshots/", "missing"), r.stderr)
    # a local path always wins over an id
    write_model(os.path.join(d, "org", "e1"), {"local.weight": np.ones(4)})
    r = run("inspect", "org/e1", env=env(HF_HUB_CACHE=root), cwd=d)
    check("a local path wins over a cached id of the same name",
          r.returncode == 0 and "local.weight" in r.stdout, r.stdout[:300] + r.stderr)
    # a snapshot's link that leads out of its cache repository
    evil = os.path.join(root, "models--org--evil", "snapshots", "c0ffee")
    os.makedirs(evil)
    os.makedirs(os.path.join(root, "models--org--evil", "refs"))
    open(os.path.join(root, "models--org--evil", "refs", "main"), "w").write("c0ffee")
    os.symlink(os.path.join(d, "src", "e1", "model.safetensors"),
               os.path.join(evil, "model.safetensors"))
    r = run("inspect", "org/evil", env=env(HF_HUB_CACHE=root))
    check("a snapshot link out of its cache repository is refused",
          one_error_line(r, "link"), r.stderr)


def test_cache_precedence(d):
    """Each variable's cache holds org/m with a tensor named after it: the one that
    huggingface_hub would read answers."""
    places = {"HF_HUB_CACHE": "c1", "HUGGINGFACE_HUB_CACHE": "c2", "HF_HOME": "c3/hub",
              "XDG_CACHE_HOME": "c4/huggingface/hub", "HOME": "home/.cache/huggingface/hub"}
    for var, sub in places.items():
        src = os.path.join(d, "src", var)
        write_model(src, {f"from_{var.lower()}.weight": np.ones(4)})
        cache_repo(os.path.join(d, sub), "org/m", src)
    values = {"HF_HUB_CACHE": os.path.join(d, "c1"), "HUGGINGFACE_HUB_CACHE": os.path.join(d, "c2"),
              "HF_HOME": os.path.join(d, "c3"), "XDG_CACHE_HOME": os.path.join(d, "c4"),
              "HOME": os.path.join(d, "home")}
    order = list(places)
    for i, var in enumerate(order):
        e = env(**{v: values[v] for v in order[i:]})
        r = run("inspect", "org/m", env=e)
        check(f"cache precedence: {var} is read when no variable before it is set",
              r.returncode == 0 and f"from_{var.lower()}.weight" in r.stdout, r.stdout[:200] + r.stderr)
    r = run("inspect", "org/m", env=env(HF_HOME="~/x", HOME=os.path.join(d, "home")))
    check("~ in HF_HOME is the home directory (expanduser), named in the error",
          one_error_line(r, os.path.join(d, "home", "x", "hub"), "HF_HOME"), r.stderr)
    r = run("inspect", "org/m", env=env(HF_HUB_CACHE="$ROOTX/c1", ROOTX=d))
    check("$VAR in HF_HUB_CACHE is expanded (expandvars)",
          r.returncode == 0 and "from_hf_hub_cache.weight" in r.stdout, r.stderr)


# ------------------------------------------------------------------ LoRA adapters

PEFT = "base_model.model."


def write_adapter(path, config, tensors):
    os.makedirs(path, exist_ok=True)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "lora_dropout": 0.0,
           "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False,
           "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}}
    cfg.update(config)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)
    ST.write_file(os.path.join(path, "adapter_model.safetensors"),
                  {k: ST.from_f64(v, "F32") for k, v in tensors.items()})


def lora_factors(rng, modules, base, r, transposed=(), embedding=()):
    """A (r x in), B (out x r) per module, as PEFT names them; float32 values."""
    t = {}
    for m in modules:
        rows, cols = base[m + ".weight"].shape
        n_in, n_out = (rows, cols) if m in transposed or m in embedding else (cols, rows)
        a = rng.standard_normal((r, n_in)).astype(np.float32).astype(np.float64)
        b = rng.standard_normal((n_out, r)).astype(np.float32).astype(np.float64)
        tag = ("lora_embedding_A", "lora_embedding_B") if m in embedding else \
            ("lora_A.weight", "lora_B.weight")
        t[f"{PEFT}{m}.{tag[0]}"], t[f"{PEFT}{m}.{tag[1]}"] = a, b
    return t


def materialise(base, factors, scale, transposed=(), extra=None):
    """W0 + s B A (its transpose for Conv1D and embedding modules) in float64, stored f32."""
    out = dict(base)
    out.update(extra or {})
    for k in factors:
        if not (k.endswith("lora_A.weight") or k.endswith("lora_embedding_A")):
            continue
        stem = k[len(PEFT):].rsplit(".lora_", 1)[0]
        b = factors[k.replace("lora_A", "lora_B").replace("lora_embedding_A", "lora_embedding_B")]
        delta = scale * (b @ factors[k])
        out[stem + ".weight"] = out[stem + ".weight"] + (delta.T if stem in transposed else delta)
    return {k: v.astype(np.float32).astype(np.float64) for k, v in out.items()}


def max_rel(a, b):
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-30)) for k in b)


def lora_setup(d):
    rng = np.random.default_rng(7)
    base = random_model(rng)
    write_model(os.path.join(d, "base"), base)
    q, up, emb, conv = ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
                        "model.embed_tokens", "transformer.h.0.attn.c_attn")
    f1 = lora_factors(rng, [q, up], base, 4)
    write_adapter(os.path.join(d, "lora1"), {"r": 4, "lora_alpha": 8,
                                             "target_modules": ["q_proj", "up_proj"],
                                             "base_model_name_or_path": os.path.join(d, "base")}, f1)
    # rsLoRA, an embedding (saved whole as well), modules_to_save (lm_head), a trained bias
    f2 = lora_factors(rng, [q, emb], base, 2, embedding=(emb,))
    head = rng.standard_normal((32, 16)).astype(np.float32).astype(np.float64)
    bias = rng.standard_normal(16).astype(np.float32).astype(np.float64)
    embed = rng.standard_normal((32, 16)).astype(np.float32).astype(np.float64)
    f2[PEFT + "lm_head.weight"] = head
    f2[PEFT + q + ".bias"] = bias
    f2[PEFT + emb + ".base_layer.weight"] = embed  # save_embedding_layers: LoRA on top of it
    write_adapter(os.path.join(d, "lora2"), {"r": 2, "lora_alpha": 3, "use_rslora": True,
                                             "bias": "all", "modules_to_save": ["lm_head"],
                                             "target_modules": ["q_proj", "embed_tokens"],
                                             "base_model_name_or_path": os.path.join(d, "base")}, f2)
    # GPT-2's Conv1D: fan_in_fan_out, target_modules as a regex string (not checked)
    f3 = lora_factors(rng, [conv], base, 3, transposed=(conv,))
    write_adapter(os.path.join(d, "lora3"), {"r": 3, "lora_alpha": 6, "fan_in_fan_out": True,
                                             "target_modules": ".*c_attn",
                                             "base_model_name_or_path": "org/not-cached"}, f3)
    full = {"lora1": materialise(base, f1, 8 / 4),
            "lora2": materialise(base, f2, 3 / np.sqrt(2), transposed=(emb,),
                                 extra={"lm_head.weight": head, q + ".bias": bias,
                                        emb + ".weight": embed}),
            "lora3": materialise(base, f3, 6 / 3, transposed=(conv,))}
    for name, vals in full.items():
        write_model(os.path.join(d, "full_" + name), vals)
    return base, full


def lora_base(d):
    return tensors_of(os.path.join(d, "base"))


def lora_tensors(d, name):
    return tensors_of(os.path.join(d, name, "adapter_model.safetensors"))


def test_lora(d):
    _, full = lora_setup(d)
    b = os.path.join(d, "base")
    # the adapted tensors themselves, read back through a copy merge of one expert
    for name in ("lora1", "lora2", "lora3"):
        out = os.path.join(d, f"one_{name}.safetensors")
        r = run("merge", "-q", "-b", b, "-m", f"{b}+{os.path.join(d, name)}", "-M", "linear",
                "-o", out, "--threads", "2")
        err = max_rel(tensors_of(out), full[name]) if r.returncode == 0 else None
        check(f"{name}: MODEL+ADAPTER reads as W0 + s B A materialised in numpy "
              f"(max rel {err if err is None else f'{err:.1e}'} <= {LORA_BOUND:.0e})",
              err is not None and err <= LORA_BOUND, r.stderr)
    cfg_models = [f"{b}+lora1", "lora2", f"base+{os.path.join(d, 'lora3')}"]
    full_models = ["full_lora1", "full_lora2", "full_lora3"]
    for method, params in (("task_arithmetic", "weight: 0.6"),
                           ("dare_ties", "weight: 0.5, density: 0.6"),
                           ("ties", "weight: 0.7, density: 0.4")):
        outs = []
        for tag, models in (("lora", cfg_models), ("full", full_models)):
            cfg = os.path.join(d, f"{method}_{tag}.yaml")
            with open(cfg, "w") as f:
                f.write(f"merge_method: {method}\nbase_model: base\nmodels:\n" + "".join(
                    f"  - model: {m}\n    parameters: {{{params}}}\n" for m in models))
            outs.append(os.path.join(d, f"{method}_{tag}.safetensors"))
            r = run("merge", "-q", cfg, "-o", outs[-1], "--threads", "2")
            if r.returncode != 0:
                check(f"{method}: the {tag} config merges", False, r.stderr)
                break
        else:
            err = max_rel(tensors_of(outs[0]), tensors_of(outs[1]))
            check(f"{method} of LoRA experts (config: MODEL+ADAPTER, an adapter alone, relative "
                  f"paths) equals the merge of the materialised weights (max rel {err:.1e})",
                  err <= LORA_BOUND, err)
    # mergekit's mapping form: {model: PATH | {path, revision}, lora: PATH | {path}}
    outs = []
    for tag, models in (("mapping", ["{model: {path: base}, lora: lora1}",
                                     "{model: base, lora: {path: lora3}}"]),
                        ("full", ["full_lora1", "full_lora3"])):
        cfg = os.path.join(d, f"map_{tag}.yaml")
        with open(cfg, "w") as f:
            f.write("merge_method: task_arithmetic\nbase_model: {model: base}\nmodels:\n" + "".join(
                f"  - model: {m}\n    parameters: {{weight: 0.5}}\n" for m in models))
        outs.append(os.path.join(d, f"map_{tag}.safetensors"))
        r = run("merge", "-q", cfg, "-o", outs[-1])
        if r.returncode != 0:
            break
    err = max_rel(tensors_of(outs[0]), tensors_of(outs[1])) if r.returncode == 0 else None
    check("mergekit's mapping form of references ({model: {path}, lora: ...}) merges as the "
          "string form", err is not None and err <= LORA_BOUND, r.stderr)
    cfg = os.path.join(d, "map_bad.yaml")
    with open(cfg, "w") as f:
        f.write("merge_method: task_arithmetic\nbase_model: base\nmodels:\n"
                "  - model: {model: base, adapter: lora1}\n")
    r = run("merge", "-q", cfg, "-o", os.path.join(d, "bad"))
    check("a mapping reference with an unknown key is one error line naming it",
          one_error_line(r, '"adapter"', "model and lora"), r.stderr)
    # an adapter and its model both from the Hugging Face cache, by id
    root = os.path.join(d, "hub")
    cache_repo(root, "org/base", b)
    cache_repo(root, "someone/lora1", os.path.join(d, "lora1"))
    out = os.path.join(d, "hub_lora.safetensors")
    r = run("merge", "-q", "-b", "org/base", "-m", "org/base+someone/lora1", "-M", "linear",
            "-o", out, env=env(HF_HUB_CACHE=root))
    err = max_rel(tensors_of(out), full["lora1"]) if r.returncode == 0 else None
    check("org/base+someone/lora1: model and adapter read from the cache (links into blobs/)",
          err is not None and err <= LORA_BOUND, r.stderr)
    # a BF16 model: the adapted weight is rounded once to BF16 (PEFT rounds the delta first)
    bf16 = {k: ST.from_f64(v, "BF16").to_f64() for k, v in lora_base(d).items()}
    write_model(os.path.join(d, "base16"), bf16, "BF16")
    out = os.path.join(d, "bf16.safetensors")
    r = run("merge", "-q", "-b", os.path.join(d, "base16"), "-m",
            f"{os.path.join(d, 'base16')}+{os.path.join(d, 'lora1')}", "-M", "linear", "-o", out)
    got = tensors_of(out) if r.returncode == 0 else None
    want = materialise(bf16, lora_tensors(d, "lora1"), 8 / 4)
    want = {k: ST.from_f64(v, "BF16").to_f64() for k, v in want.items()}
    err = max_rel(got, want) if got else None
    check(f"a BF16 model's adapted tensors are W0 + s B A rounded once to BF16 "
          f"(max rel {err if err is None else f'{err:.1e}'} <= 2^-8, one unit)",
          err is not None and err <= 2.0 ** -8 and {t.dtype for t in ST.read_file(out)[0].values()} == {"BF16"},
          r.stderr)
    # the adapter's base from base_model_name_or_path: a hub id that is not cached
    r = run("inspect", os.path.join(d, "lora3"), env=env(HF_HUB_CACHE=os.path.join(d, "none")))
    check("an adapter alone whose base is not found: one error line naming the base, the cache "
          "and BASE+ADAPTER", one_error_line(r, "org/not-cached", "base_model_name_or_path",
                                             "BASE+"), r.stderr)
    r = run("merge", "-q", "-b", b, "-m", os.path.join(d, "lora1"), "-m",
            os.path.join(d, "lora2"), "-M", "task_arithmetic", "-o", os.path.join(d, "cli"))
    check("adapter directories alone as --model merge (their base_model_name_or_path); two "
          "adapters on one model are two experts", r.returncode == 0 and "twice" not in r.stderr,
          r.stderr)
    r = run("merge", "-q", "-b", "base", "-m", "base+lora1", "-m", "lora2", "-M",
            "task_arithmetic", "-o", "rel", cwd=d)
    r2 = run("merge", "-q", os.path.join(d, "rel", "acem_config.yaml"), "-o", os.path.join(d, "again"))
    kept = open(os.path.join(d, "rel", "acem_config.yaml")).read() if r.returncode == 0 else ""
    check("acem_config.yaml records MODEL+ADAPTER with both paths absolute, and rebuilds the merge",
          r.returncode == 0 and r2.returncode == 0 and f"{b}+{os.path.join(d, 'lora1')}" in kept
          and same_tensors(tensors_of(os.path.join(d, "rel")), tensors_of(os.path.join(d, "again"))),
          r.stderr + r2.stderr + kept)
    victim = os.path.join(d, "lora1", "adapter_model.safetensors")
    r = run("merge", "-q", "-b", b, "-m", f"{b}+{os.path.join(d, 'lora1')}", "-m", "lora2", "-M",
            "task_arithmetic", "-o", victim, "--force", cwd=d)
    check("an adapter's file is an input that no output may replace, even with --force",
          one_error_line(r, "adapter_model.safetensors", "input") and ST.read_file(victim),
          r.stderr)
    r = run("merge", "-q", "-b", b, "-m", os.path.join(d, "lora1"), "-m",
            f"{b}+{os.path.join(d, 'lora1')}", "-M", "task_arithmetic", "-o", os.path.join(d, "tw"))
    check("the same adapter on the same model twice is warned about", r.returncode == 0
          and "given twice" in r.stderr, r.stderr)


def refused(d, label, config, tensors, *phrases, base="base"):
    path = os.path.join(d, label.replace(" ", "_"))
    write_adapter(path, config, tensors)
    r = run("inspect", f"{os.path.join(d, base)}+{path}")
    check(f"refused: {label}, in one error line", one_error_line(r, *phrases), r.stderr)


def test_lora_refusals(d):
    rng = np.random.default_rng(3)
    base = random_model(rng)
    write_model(os.path.join(d, "base"), base)
    q = "model.layers.0.self_attn.q_proj"
    f = lora_factors(rng, [q], base, 2)
    ok = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    refused(d, "DoRA", {**ok, "use_dora": True}, f, "DoRA")
    refused(d, "peft_type IA3", {**ok, "peft_type": "IA3"}, f, "IA3", "LoRA")
    refused(d, "rank_pattern", {**ok, "rank_pattern": {"q_proj": 4}}, f, "rank_pattern")
    refused(d, "PiSSA not converted", {**ok, "init_lora_weights": "pissa_niter_4"}, f,
            "pissa_niter_4", "path_initial_model_for_weight_conversion")
    refused(d, "DoRA magnitudes", ok, {**f, f"{PEFT}{q}.lora_magnitude_vector": np.ones(16)},
            "lora_magnitude_vector")
    refused(d, "lora_A without lora_B", ok, {k: v for k, v in f.items() if "lora_A" in k},
            "lora_A", "lora_B")
    refused(d, "rank mismatch", {**ok, "r": 3}, f, "rank r = 3")
    refused(d, "not targeted", {**ok, "target_modules": ["v_proj"]}, f, "target_modules")
    refused(d, "modules_to_save without its tensor", {**ok, "modules_to_save": ["score"]}, f,
            "modules_to_save", "score")
    refused(d, "a module the model lacks", ok, {f"{PEFT}model.nope.lora_A.weight": f[f"{PEFT}{q}.lora_A.weight"],
                                                f"{PEFT}model.nope.lora_B.weight": f[f"{PEFT}{q}.lora_B.weight"]},
            "model.nope.weight", "lacks")
    refused(d, "not PEFT names", ok, {"q_proj.lora_A.weight": np.ones((2, 16))}, "base_model.model.")
    # PEFT before 0.7 saved adapter_model.bin (torch.save's zip): read as the safetensors one
    import torch
    full = os.path.join(d, "st_adapter")
    write_adapter(full, ok, f)
    path = os.path.join(d, "binonly")
    write_adapter(path, ok, f)
    os.unlink(os.path.join(path, "adapter_model.safetensors"))
    torch.save({k: torch.tensor(v, dtype=torch.float32) for k, v in f.items()},
               os.path.join(path, "adapter_model.bin"))
    outs = [os.path.join(d, f"bin_{i}.safetensors") for i in range(2)]
    rs = [run("merge", "-q", "-b", os.path.join(d, "base"), "-m", f"{os.path.join(d, 'base')}+{a}",
              "-M", "linear", "-o", o) for a, o in ((full, outs[0]), (path, outs[1]))]
    check("an adapter saved as adapter_model.bin (torch.save) reads as its safetensors twin",
          all(x.returncode == 0 for x in rs) and same_tensors(tensors_of(outs[0]), tensors_of(outs[1])),
          rs[0].stderr + rs[1].stderr)
    torch.save({k: torch.tensor(v, dtype=torch.float32) for k, v in f.items()},
               os.path.join(path, "adapter_model.bin"), _use_new_zipfile_serialization=False)
    r = run("inspect", f"{os.path.join(d, 'base')}+{path}")
    check("refused: an adapter_model.bin that is a legacy pickle, in one error line",
          one_error_line(r, "adapter_model.bin", "legacy"), r.stderr)
    r = run("inspect", f"{os.path.join(d, 'base')}+{os.path.join(d, 'base')}")
    check("refused: MODEL+X where X is not an adapter", one_error_line(r, "adapter_config.json"),
          r.stderr)
    r = run("inspect", f"{os.path.join(d, 'DoRA')}+{os.path.join(d, 'DoRA')}")
    check("refused: an adapter before '+'", one_error_line(r, "not a model"), r.stderr)
    r = run("inspect", "a+b+c")
    check("refused: more than one '+'", one_error_line(r, "more than one '+'"), r.stderr)


# ------------------------------------------------------------------ single-file layouts

def test_layouts(d):
    import torch
    rng = np.random.default_rng(5)
    both = os.path.join(d, "both")
    os.makedirs(both)
    shard = {"from_index.weight": ST.from_f64(rng.standard_normal(4), "F32")}
    ST.write_file(os.path.join(both, "model-00001-of-00001.safetensors"), shard)
    with open(os.path.join(both, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {"from_index.weight":
                                                  "model-00001-of-00001.safetensors"}}, f)
    torch.save({"from_bin.weight": torch.ones(4)}, os.path.join(both, "pytorch_model.bin"))
    r = run("inspect", both)
    check("transformers' precedence: model.safetensors.index.json before pytorch_model.bin",
          r.returncode == 0 and "from_index.weight" in r.stdout, r.stdout[:300] + r.stderr)
    mistral = os.path.join(d, "mistral")
    os.makedirs(mistral)
    ST.write_file(os.path.join(mistral, "consolidated.safetensors"),
                  {"layers.0.attention.wq.weight": ST.from_f64(rng.standard_normal((4, 4)), "F32")})
    r = run("inspect", mistral)
    check("a folder with only consolidated.safetensors (Mistral's layout) opens",
          r.returncode == 0 and "layers.0.attention.wq.weight" in r.stdout, r.stderr)
    ST.write_file(os.path.join(mistral, "model.safetensors"),
                  {"model.layers.0.self_attn.q_proj.weight": ST.from_f64(np.ones((4, 4)), "F32")})
    r = run("inspect", mistral)
    check("model.safetensors before consolidated.safetensors (the Hugging Face names)",
          r.returncode == 0 and "q_proj" in r.stdout and "wq" not in r.stdout, r.stderr)


if __name__ == "__main__":
    sys.exit(run_groups([test_hub_ids, test_cache_precedence, test_lora, test_lora_refusals,
                         test_layouts], "acem-refs-", sys.argv[2:]))
