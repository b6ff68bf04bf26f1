#!/usr/bin/python3
"""`acem eval` (cli/cmd_eval.c) against an independent evaluation in PyTorch: the GPT-2 of
tests/oracle/gpt2_torch.py (float64, no transformers), the tokenizer transcription of
tests/oracle/gpt2_encoder.py, the pair rule written here from transformers' documented
longest_first truncation, argmax, counts.

Data: GLUE-format files made from real text Debian ships on this machine: sentences of the
licenses in /usr/share/common-licenses (GPL-3, Apache-2.0) and lines of Debian changelogs
(/usr/share/doc/*/changelog.Debian.gz, names with non-ASCII letters). Task "source" (SST-2's
dev.tsv layout: header `sentence<TAB>label`, integer labels): which of the three a sentence
comes from. Task "next" (MRPC's layout: a UTF-8 byte order mark, CRLF, header `Quality #1 ID
#2 ID #1 String #2 String`): whether the second sentence follows the first in its text.
Task "kind" (JSONL, string labels by name through id2label). Models: tiny random GPT-2
classifiers and a language model over a BPE vocabulary trained on the same text.

Usage: /usr/bin/python3 tests/test_eval.py PATH/TO/acem"""

import fcntl
import glob
import gzip
import json
import math
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import gpt2_encoder as G  # noqa: E402
import safetensors_np as st  # noqa: E402
from gpt2_torch import layer_names, reference  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402

torch.set_default_dtype(torch.float64)
EOT = "<|endoftext|>"
CFG = dict(n_layer=2, n_head=4, n_embd=32, n_positions=48, layer_norm_epsilon=1e-5,
           activation_function="gelu_new", model_type="gpt2")
PPL_TOL = 1e-4


# ---- real text and the tokenizer ----------------------------------------------------------

def sentences(text):
    text = re.sub(r"\s+", " ", text)
    return [s.strip() for s in re.split(r"(?<=[.;:])\s+", text) if 20 <= len(s.strip()) <= 400]


def changelog_lines(limit):
    out = []
    for f in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        try:
            text = gzip.open(f).read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out += [ln.strip(" *") for ln in text.split("\n")
                if 20 <= len(ln.strip(" *")) <= 300 and "\t" not in ln]
        if len(out) >= limit:
            break
    return out[:limit]


def license_sentences(name):
    with open(f"/usr/share/common-licenses/{name}", encoding="utf-8") as f:
        return sentences(f.read())


SOURCES = OrderedDict([("gpl", license_sentences("GPL-3")),
                       ("apache", license_sentences("Apache-2.0")),
                       ("changelog", changelog_lines(400))])
CORPUS = "\n".join(s for v in SOURCES.values() for s in v)
MERGES = G.train(CORPUS[:60_000], 300)
TOKENS = list(dict.fromkeys([G.BYTE_ENCODER[b] for b in range(256)] +
                            [a + b for a, b in MERGES] + [EOT]))
VOCAB = {t: i for i, t in enumerate(TOKENS)}
ENC = G.Encoder(VOCAB, MERGES, added=(EOT,))
PAD = VOCAB[EOT]  # pad_token_id, as FusionBench sets GPT-2's pad token to its eos


def write_tokenizer(d):
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(VOCAB, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))


# ---- models -------------------------------------------------------------------------------

def random_params(seed, labels):
    rng = np.random.default_rng(seed)
    C, V, Pn = CFG["n_embd"], len(VOCAB), CFG["n_positions"]
    P = OrderedDict()
    P["transformer.wte.weight"] = rng.normal(0, 0.3, (V, C))
    P["transformer.wpe.weight"] = rng.normal(0, 0.1, (Pn, C))
    shapes = dict(ln1w=(C,), ln1b=(C,), qkvw=(C, 3 * C), qkvb=(3 * C,), projw=(C, C),
                  projb=(C,), ln2w=(C,), ln2b=(C,), fcw=(C, 4 * C), fcb=(4 * C,),
                  fcpw=(4 * C, C), fcpb=(C,))
    for l in range(CFG["n_layer"]):
        for k, name in layer_names(l).items():
            P[name] = (1 + rng.normal(0, 0.1, shapes[k]) if k in ("ln1w", "ln2w")
                       else rng.normal(0, 0.3 if k.endswith("w") else 0.1, shapes[k]))
    P["transformer.ln_f.weight"] = 1 + rng.normal(0, 0.1, (C,))
    P["transformer.ln_f.bias"] = rng.normal(0, 0.1, (C,))
    if labels:
        P["score.weight"] = rng.normal(0, 1.0, (labels, C))
    return OrderedDict((k, v.astype(np.float32)) for k, v in P.items())


def write_model(d, seed, labels=0, names=None, pad=PAD):
    """A Hugging Face folder with the tokenizer; returns (torch parameters, config)."""
    os.makedirs(d, exist_ok=True)
    P = random_params(seed, labels)
    cfg = dict(CFG, vocab_size=len(VOCAB), pad_token_id=pad)
    if labels:
        names = names or [f"LABEL_{i}" for i in range(labels)]  # transformers' default
        cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
        cfg["label2id"] = {n: i for i, n in enumerate(names)}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    st.write_file(os.path.join(d, "model.safetensors"),
                  OrderedDict((k, st.Tensor("F32", v.shape, v)) for k, v in P.items()))
    write_tokenizer(d)
    return OrderedDict((k, torch.from_numpy(v.astype(np.float64))) for k, v in P.items()), cfg


# ---- the independent evaluation ---------------------------------------------------------

def longest_first(a, b, max_len):
    """transformers' truncate_sequences(strategy="longest_first"), truncation_side right."""
    remove = len(a) + len(b) - max_len
    if remove <= 0:
        return a, b
    first = min(abs(len(a) - len(b)), remove)
    second = remove - first
    if len(a) > len(b):
        cut_a, cut_b = first + second // 2, second - second // 2
    else:
        cut_a, cut_b = second // 2, first + second - second // 2
    return a[:len(a) - cut_a], b[:len(b) - cut_b]


def example_ids(text, pair, max_len):
    a = ENC.encode(text)
    if pair is None:
        return a[:max_len]
    a, b = longest_first(a, ENC.encode(pair), max_len)
    return a + b


def oracle_eval(P, cfg, examples, max_len):
    """examples: (text, pair or None, label id). Each alone, unpadded: argmax of the pooled
    logits. Returns confusion [K][K] and the smallest top-two gap relative to the logits."""
    K = P["score.weight"].shape[0]
    conf = [[0] * K for _ in range(K)]
    gap = math.inf
    for text, pair, y in examples:
        ids = torch.tensor([example_ids(text, pair, max_len)])
        logits = reference(P, cfg, ids, [ids.shape[1]])[0]
        top = torch.topk(logits, 2).values
        gap = min(gap, float((top[0] - top[1]) / logits.abs().max()))
        conf[y][int(torch.argmax(logits))] += 1
    return conf, gap


def oracle_perplexity(P, cfg, ids, stride):
    """Hugging Face's perplexity guide, summed over tokens: windows of n_positions moved by
    stride, targets before the previous window's end masked (-100)."""
    L = cfg["n_positions"]
    nll, n, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + L, len(ids))
        trg_len = end - prev_end
        x = torch.tensor([ids[begin:end]])
        target = x.clone()
        target[:, :-trg_len] = -100
        logp = torch.log_softmax(reference(P, cfg, x, [end - begin])[0, :-1], -1)
        t = target[0, 1:]
        keep = t != -100
        nll -= float(logp[keep.nonzero()[:, 0], t[keep]].sum())
        n += int(keep.sum())
        prev_end = end
        if end == len(ids):
            break
    return nll, n


# ---- data files ---------------------------------------------------------------------------

def source_examples(seed, n):
    rng = random.Random(seed)
    rows = [(s, None, k) for k, v in enumerate(SOURCES.values()) for s in v]
    rng.shuffle(rows)
    return rows[:n]


def next_examples(seed, n):
    """Consecutive sentences of one license (1) or two drawn at random (0)."""
    rng = random.Random(seed)
    pool = SOURCES["gpl"] + SOURCES["apache"]
    rows = []
    for _ in range(n):
        v = SOURCES[rng.choice(["gpl", "apache"])]
        i = rng.randrange(len(v) - 1)
        rows.append((v[i], v[i + 1], 1) if rng.random() < 0.5 else
                    (v[i], rng.choice(pool), 0))
    return rows


def write_sst2(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, _, y in rows))


def write_mrpc(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n")
        f.write("".join(f"{y}\t{100 + i}\t{200 + i}\t{a}\t{b}\r\n"
                        for i, (a, b, y) in enumerate(rows)))


def write_jsonl(path, rows, names):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": t, "kind": names[y]}, ensure_ascii=False) + "\n"
                        for t, _, y in rows))


def acem_json(path):
    with open(path) as f:
        return json.load(f)


def same_eval(name, r, out, conf, gap):
    ok = r.returncode == 0 and os.path.exists(out)
    j = acem_json(out) if ok else {}
    n = sum(map(sum, conf))
    correct = sum(conf[k][k] for k in range(len(conf)))
    check(f"{name}: accuracy and per-class counts identical to PyTorch "
          f"({correct}/{n} = {100 * correct / n:.2f}%, smallest top-two gap {gap:.1e})",
          ok and j["confusion"] == conf and j["correct"] == correct and j["examples"] == n
          and abs(j["accuracy"] - correct / n) < 1e-12,
          (r.stderr, j.get("confusion"), conf))
    check(f"{name}: printed accuracy", ok and f"accuracy {100 * correct / n:.2f}% ({correct} of {n})"
          in r.stdout, r.stdout)
    return j


# ---- groups -------------------------------------------------------------------------------

def group_single(d):
    P, cfg = write_model(f"{d}/model", 1, labels=3)
    rows = source_examples(2, 300)
    write_sst2(f"{d}/dev.tsv", rows)
    conf, gap = oracle_eval(P, cfg, rows, CFG["n_positions"])
    r = run("eval", "-q", "--model", f"{d}/model", "--data", f"{d}/dev.tsv", "--text", "sentence",
            "--label", "label", "--json", f"{d}/out.json")
    same_eval("SST-2 layout, single sentences, 3 classes", r, f"{d}/out.json", conf, gap)
    check("per-class lines printed (label, examples, correct, predicted)",
          all(f"LABEL_{k}" in r.stdout for k in range(3)) and "confusion" in r.stdout, r.stdout)
    check("a summary line (examples, seconds, peak RSS)",
          re.search(r"\n  300 examples in [0-9.]+ s \([0-9.]+/s\), peak RSS ", r.stdout), r.stdout)
    with open(f"{d}/dev.tsv") as f, open(f"{d}/cola.tsv", "w") as g:
        g.write("".join(f"src{i}\t{ln.split(chr(9))[1].strip()}\t\t{ln.split(chr(9))[0]}\n"
                        for i, ln in enumerate(f.read().splitlines()[1:])))
    conf1, gap1 = oracle_eval(P, cfg, rows, 9)
    for batch in ("1", "7"):
        r = run("eval", "-q", "-m", f"{d}/model", "-d", f"{d}/cola.tsv", "--text", "3",
                "--label", "1", "--max-length", "9", "--batch", batch, "--json", f"{d}/b{batch}.json")
        same_eval(f"CoLA layout (no header, columns by index), --max-length 9, --batch {batch}",
                  r, f"{d}/b{batch}.json", conf1, gap1)


def group_pairs(d):
    P, cfg = write_model(f"{d}/model", 3, labels=2)
    rows = next_examples(4, 250)
    write_mrpc(f"{d}/dev.tsv", rows)
    longer = sum(len(ENC.encode(a)) + len(ENC.encode(b)) > 30 for a, b, _ in rows)
    for max_len in (CFG["n_positions"], 30):
        conf, gap = oracle_eval(P, cfg, rows, max_len)
        r = run("eval", "-q", "-m", f"{d}/model", "-d", f"{d}/dev.tsv", "--text", "#1 String",
                "--text-pair", "#2 String", "--label", "Quality", "--max-length", str(max_len),
                "--json", f"{d}/out{max_len}.json")
        same_eval(f"MRPC layout (BOM, CRLF), pairs joined, cut longest first to {max_len}"
                  f" ({longer} of {len(rows)} pairs longer than 30)", r,
                  f"{d}/out{max_len}.json", conf, gap)


def group_head(d):
    names = list(SOURCES)
    Pb, cfg = write_model(f"{d}/merged", 5, labels=0)  # a backbone without a head
    Pe, _ = write_model(f"{d}/expert", 6, labels=3, names=names)
    rows = source_examples(7, 200)
    write_jsonl(f"{d}/dev.jsonl", rows, names)
    P = OrderedDict(Pb)
    P["score.weight"] = Pe["score.weight"]
    conf, gap = oracle_eval(P, cfg, rows, CFG["n_positions"])
    r = run("eval", "-q", "-m", f"{d}/merged", "--head", f"{d}/expert", "-d", f"{d}/dev.jsonl",
            "--text", "text", "--label", "kind", "--json", f"{d}/out.json")
    j = same_eval("--head: an expert's score.weight on another backbone, JSONL, string labels "
                  "by the expert's id2label", r, f"{d}/out.json", conf, gap)
    check("--head: the expert's class names reported",
          [c["label"] for c in j.get("classes", [])] == names, j.get("classes"))
    head_file = f"{d}/expert/model.safetensors"
    r = run("eval", "-q", "-m", f"{d}/merged", "--head", head_file, "-d", f"{d}/dev.jsonl",
            "--text", "text", "--label", "kind")
    check("--head FILE (no config.json beside it): string labels take sorted ids",
          r.returncode == 0, r.stderr)
    r = run("eval", "-q", "-m", f"{d}/merged", "-d", f"{d}/dev.jsonl", "--text", "text",
            "--label", "kind")
    check("a language model without --head is refused", one_error_line(r, "--head"), r.stderr)
    write_model(f"{d}/wide", 8, labels=2)
    cfg2 = dict(json.load(open(f"{d}/wide/config.json")), n_embd=16, n_head=2)
    os.makedirs(f"{d}/narrow", exist_ok=True)
    json.dump(cfg2, open(f"{d}/narrow/config.json", "w"))
    st.write_file(f"{d}/narrow/model.safetensors", OrderedDict(
        [("score.weight", st.Tensor("F32", (2, 16), np.zeros((2, 16), np.float32)))]))
    r = run("eval", "-q", "-m", f"{d}/merged", "--head", f"{d}/narrow", "-d", f"{d}/dev.jsonl",
            "--text", "text", "--label", "kind")
    check("--head of another width refused naming n_embd", one_error_line(r, "score.weight",
                                                                          "n_embd"), r.stderr)


def group_tasks(d):
    names = list(SOURCES)
    Pb, cfg = write_model(f"{d}/merged", 9, labels=2)
    Pe, _ = write_model(f"{d}/experts/kind", 10, labels=3, names=names)
    Pn, _ = write_model(f"{d}/experts/next", 11, labels=2)
    os.makedirs(f"{d}/glue")
    src, nxt = source_examples(12, 150), next_examples(13, 150)
    write_jsonl(f"{d}/glue/kind.jsonl", src, names)
    write_mrpc(f"{d}/glue/next.tsv", nxt)
    write_sst2(f"{d}/glue/own.tsv", [(t, None, y % 2) for t, _, y in src])
    with open(f"{d}/tasks.yaml", "w") as f:
        f.write("tasks:\n"
                "  - {name: kind, data: glue/kind.jsonl, text: text, label: kind,\n"
                "     head: experts/kind, individual: 0.8}\n"
                "  - name: next\n    data: glue/next.tsv\n    text: '#1 String'\n"
                "    text_pair: '#2 String'\n    label: Quality\n    head: experts/next\n"
                "    max_length: 30\n    individual: 0.9\n"
                "  - {name: own, data: glue/own.tsv, text: sentence, label: label}\n")
    accs = []
    for head, rows, ml in ((Pe, src, 48), (Pn, nxt, 30), (None, [(t, None, y % 2) for t, _, y in src], 48)):
        P = OrderedDict(Pb)
        if head is not None:
            P["score.weight"] = head["score.weight"]
        conf, _ = oracle_eval(P, cfg, rows, ml)
        accs.append(sum(conf[k][k] for k in range(len(conf))) / len(rows))
    r = run("eval", "-q", "-m", f"{d}/merged", "--tasks", f"{d}/tasks.yaml", "--json", f"{d}/t.json")
    j = acem_json(f"{d}/t.json") if r.returncode == 0 else {}
    got = [t["accuracy"] for t in j.get("tasks", [])]
    avg, norm = sum(accs) / 3, (accs[0] / 0.8 + accs[1] / 0.9) / 2
    check(f"--tasks: per-task accuracy identical to PyTorch ({', '.join(f'{100 * a:.2f}' for a in accs)})",
          got == accs, (r.stderr, got, accs))
    check(f"--tasks: Avg {100 * avg:.2f} and Norm {100 * norm:.2f} (over the tasks with individual)",
          abs(j.get("avg", -1) - avg) < 1e-12 and abs(j.get("norm", -1) - norm) < 1e-12, j)
    check("--tasks: the table printed",
          f"| Avg | | {100 * avg:.2f} |" in r.stdout and f"| Norm | | | | {100 * norm:.2f} |"
          in r.stdout and f"| next | 150 | {100 * accs[1]:.2f} | 90.00 | {100 * accs[1] / 0.9:.2f} |"
          in r.stdout, r.stdout)
    with open(f"{d}/bad.yaml", "w") as f:
        f.write("tasks:\n  - name: kind\n    data: glue/kind.jsonl\n    text: text\n"
                "    label: kind\n    heads: experts/kind\n")
    r = run("eval", "-q", "-m", f"{d}/merged", "--tasks", f"{d}/bad.yaml")
    check("--tasks: an unknown key refused naming file:line and the key",
          one_error_line(r, "bad.yaml:6", '"heads"'), r.stderr)
    with open(f"{d}/bad2.yaml", "w") as f:
        f.write("tasks:\n  - name: kind\n    data: glue/kind.jsonl\n    text: text\n"
                "    label: kind\n    individual: 80\n")
    r = run("eval", "-q", "-m", f"{d}/merged", "--tasks", f"{d}/bad2.yaml")
    check("--tasks: an individual accuracy outside (0, 1] refused", one_error_line(r, "bad2.yaml:6"),
          r.stderr)


def group_perplexity(d):
    P, cfg = write_model(f"{d}/lm", 14, labels=0)
    text = "\n".join(SOURCES["changelog"][:60] + SOURCES["gpl"][:30]) + "\n"
    with open(f"{d}/text.txt", "w", encoding="utf-8") as f:
        f.write(text)
    ids = ENC.encode(text)
    nbytes = len(text.encode())
    for stride in (None, 17, 48):
        nll, n = oracle_perplexity(P, cfg, ids, stride or (CFG["n_positions"] + 1) // 2)
        args = ["--stride", str(stride)] if stride else []
        r = run("eval", "-q", "-m", f"{d}/lm", "--perplexity", f"{d}/text.txt", *args,
                "--json", f"{d}/p{stride}.json")
        j = acem_json(f"{d}/p{stride}.json") if r.returncode == 0 else {}
        ppl, bpb = math.exp(nll / n), nll / math.log(2) / nbytes
        rel = abs(j.get("perplexity", 0) - ppl) / ppl
        check(f"perplexity, stride {stride or 'default 24'}: {n} tokens of {len(ids)}, "
              f"perplexity {ppl:.3f} vs torch rel {rel:.1e}, {bpb:.4f} bits per byte",
              j.get("tokens") == n and (n == len(ids) - 1 or stride == CFG["n_positions"]) and
              rel < PPL_TOL and
              abs(j.get("bits_per_byte", 0) - bpb) / bpb < PPL_TOL and j.get("bytes") == nbytes,
              (r.stderr, j, ppl, n))
    r = run("eval", "-q", "-m", f"{d}/lm", "--perplexity", f"{d}/text.txt", "--stride", "49")
    check("--stride past n_positions refused", one_error_line(r, "--stride", "n_positions"), r.stderr)


def group_refusals(d):
    write_model(f"{d}/model", 15, labels=2)
    write_model(f"{d}/plain", 16, labels=2)
    cfg = json.load(open(f"{d}/plain/config.json"))
    del cfg["id2label"], cfg["label2id"]
    json.dump(cfg, open(f"{d}/plain/config.json", "w"))
    rows = source_examples(17, 40)
    write_sst2(f"{d}/dev.tsv", [(t, None, y % 2) for t, _, y in rows])
    write_sst2(f"{d}/three.tsv", rows)
    base = ["eval", "-q", "-m", f"{d}/model", "-d", f"{d}/dev.tsv", "--label", "label"]
    r = run(*base, "--text", "sentences")
    check("a missing column refused naming it", one_error_line(r, "dev.tsv", "sentences"), r.stderr)
    line = 2 + next(i for i, (_, _, y) in enumerate(rows) if y == 2)
    r = run("eval", "-q", "-m", f"{d}/model", "-d", f"{d}/three.tsv", "--text", "sentence",
            "--label", "label")
    check("a label outside the model's id2label refused naming file:line",
          one_error_line(r, f"three.tsv:{line}"), r.stderr)
    r = run("eval", "-q", "-m", f"{d}/plain", "-d", f"{d}/three.tsv", "--text", "sentence",
            "--label", "label")
    check("a label past num_labels (no id2label) refused naming file:line",
          one_error_line(r, f"three.tsv:{line}", "2 classes"), r.stderr)
    r = run(*base, "--text", "sentence", "--json", f"{d}/dev.tsv")
    check("--json over an input refused, the input kept", one_error_line(r, "dev.tsv") and
          open(f"{d}/dev.tsv").read().startswith("sentence\t"), r.stderr)
    r = run(*base, "--text", "sentence", "--json", f"{d}/model/config.json")
    check("--json over the model's config.json refused", one_error_line(r, "config.json"), r.stderr)
    r = run(*base, "--text", "sentence", "--perplexity", f"{d}/dev.tsv")
    check("two modes at once is a usage error", r.returncode == 2 and one_error_line(r, "one of"),
          r.stderr)
    r = run("eval", "-q", "-m", f"{d}/model", "--perplexity", f"{d}/dev.tsv")
    check("--perplexity on a classifier refused", one_error_line(r, "classifier"), r.stderr)
    r = run("eval", "--help")
    check("--help teaches by examples", r.returncode == 0 and "examples:" in r.stdout and
          "--text-pair" in r.stdout and "--tasks" in r.stdout, r.stdout)


def on_terminal(args, columns):
    """acem with stderr on a pseudo-terminal `columns` wide: (exit status, what it drew)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    p = subprocess.Popen([sys.argv[1], *args], stdout=subprocess.DEVNULL, stderr=slave,
                         stdin=subprocess.DEVNULL)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return p.wait(timeout=120), drawn.decode(errors="replace")


def group_terminal(d):
    write_model(f"{d}/model", 18, labels=3)
    write_sst2(f"{d}/dev.tsv", source_examples(19, 200))
    args = ["eval", "-m", f"{d}/model", "-d", f"{d}/dev.tsv", "--text", "sentence", "--label",
            "label", "--batch", "4"]
    rc, drawn = on_terminal(args, 50)
    frames = [f for f in drawn.replace("\r\n", "\n").split("\r\x1b[K") if f.strip()]
    check("a progress line on a terminal (examples done of all, under 50 columns), erased",
          rc == 0 and frames and all("/200 examples" in f and len(f) < 50 for f in frames)
          and drawn.endswith("\r\x1b[K"), repr(frames[:3]))
    rc, drawn = on_terminal(args + ["-q"], 50)
    check("no progress line with -q", rc == 0 and drawn == "", repr(drawn[:200]))
    r = run(*args)
    check("no progress line when stderr is not a terminal", r.returncode == 0 and r.stderr == "",
          r.stderr)
    r = run("eval")
    check("a bare acem eval prints its usage to stderr, exit 2",
          r.returncode == 2 and r.stderr.startswith("usage: acem eval") and r.stdout == "",
          r.stderr[:200])


GROUPS = [group_single, group_pairs, group_head, group_tasks, group_perplexity, group_refusals,
          group_terminal]

if __name__ == "__main__":
    sys.exit(run_groups(GROUPS, "acem-eval-", sys.argv[2:]))
