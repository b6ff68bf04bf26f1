#!/usr/bin/python3
"""End-to-end tests of `acem lab --suite text --quick` (lab/lab_text.c): every method and
reference has a row, the design criterion's verdict is in results.md and is logged before
any merge, the covariance match covers every matmul of every block, two runs with one seed
give byte-identical files, the byte-only vocabulary is GPT-2's byte alphabet in GPT-2's id
order (against a transcription of encoder.py's bytes_to_unicode), the lab's folders are
read by `acem tokenize` and merged by `acem merge` into the lab's own bytes, and options
the suite does not take are refused. A separate file from test_lab.py so that ctest runs
the MLP and text suites side by side. About 45 s on 2 loaded cores (two quick runs).

usage: /usr/bin/python3 tests/test_lab_text.py PATH_TO_acem
"""

import csv
import json
import os
import re
import subprocess
import sys
import tempfile

ACEM = os.path.abspath(sys.argv[1])
REFERENCES = ["zero-shot", "individual", "regmean_true_grams"]
LAYERS, TASKS = 2, 7  # the quick model's blocks; the suite's tasks
results = []


def run(*args):
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=600)


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + str(detail)))


def lab(out, *extra):
    # one thread: the quick model's matrices are too small for two to pay on a loaded machine
    return run("lab", "--suite", "text", "--quick", "--threads", "1", "--out", out, *extra)


def methods():
    """Method names from `acem merge --help` (the library's registry)."""
    text = run("merge", "--help").stdout
    return re.findall(r"^  ([a-z_]+)  ", text[text.index("\nmethods"):], re.M)


def tensors(path):
    """name -> (dtype, shape, raw bytes) of a safetensors file, its metadata left out."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], blob[8 + n + v["data_offsets"][0]:8 + n
                                              + v["data_offsets"][1]])
            for k, v in header.items()}


def bytes_to_unicode():
    """encoder.py's bytes_to_unicode (openai/gpt-2, src/encoder.py), transcribed."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def check_rows(a, stderr):
    with open(os.path.join(a, "results.csv"), newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    skipped = re.findall(r"skipping ([a-z_]+): it does not merge", stderr)
    expected = REFERENCES + ["task_arithmetic_val"] + [m for m in methods()
                                                       if m != "regmean" and m not in skipped]
    check("every method and reference has a row (skipped: %s)" % ", ".join(skipped),
          sorted(rows) == sorted(expected), f"{sorted(rows)} vs {sorted(expected)}")
    help_text = run("merge", "--help").stdout
    check("only the one- and two-model methods are skipped",
          skipped and all(re.search(r"^  %s +[^\n]*(\n {19}[^\n]*)*?\b(2 models|1 model|"
                                    r"one model)" % m, help_text, re.M) for m in skipped),
          skipped)
    header = list(next(iter(rows.values())).keys())
    check("columns: method, heads, the 7 tasks, avg, norm",
          header[2:-2] == ["fortune", "noun_sense", "verb_sense", "pos", "word_lang",
                           "man_section", "source_lang"], header)
    accs = [float(v) for r in rows.values() for k, v in r.items() if k not in ("method", "heads")]
    check("accuracies are percentages", all(0 <= x <= 1000 for x in accs))
    check("individual's norm is 100", rows["individual"]["norm"] == "100.00")
    return rows


def check_criterion(a, stderr, rows):
    md = open(os.path.join(a, "results.md")).read()
    m = re.search(r"zero-shot Norm ([0-9.]+) \(Avg ([0-9.]+)\) against individual Avg "
                  r"([0-9.]+): criterion zero-shot Norm < 70 \*\*(held|not held)\*\*", md)
    check("results.md states the criterion and its verdict", m, md[:1500])
    if m:
        norm = float(rows["zero-shot"]["norm"])
        check("the verdict follows the zero-shot row's Norm",
              abs(float(m.group(1)) - norm) < 0.051 and (m.group(4) == "held") == (norm < 70),
              m.group(0))
    log = stderr.splitlines()
    at = [i for i, line in enumerate(log) if "criterion: zero-shot Norm" in line]
    first_merge = next((i for i, line in enumerate(log) if "merging with" in line), -1)
    check("the verdict is logged before any merge", at and 0 <= at[0] < first_merge, stderr[-800:])


def check_covariance(a):
    with open(os.path.join(a, "covariance.csv")) as f:
        cov = list(csv.DictReader(f))
    names = sorted({c["layer"] for c in cov})
    want = sorted(f"transformer.h.{l}.{k}.weight" for l in range(LAYERS)
                  for k in ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"])
    check(f"covariance match: {len(want)} matmuls x {TASKS} tasks",
          names == want and len(cov) == len(want) * TASKS, names)
    check("cosines in [0, 1] and gamma finite",
          all(0 <= float(c[k]) <= 1 for c in cov for k in ["cos_own", "cos_other", "cos_random"])
          and all(float(c["gamma"]) == float(c["gamma"]) for c in cov))


def check_vocab(a):
    vocab = json.load(open(os.path.join(a, "base", "vocab.json"), encoding="utf-8"))
    b2u = bytes_to_unicode()
    order = sorted(range(256), key=lambda b: ord(b2u[b]))  # GPT-2's ids: code point order
    want = {b2u[b]: i for i, b in enumerate(order)}
    want["<|endoftext|>"] = 256
    check("vocab.json: GPT-2's byte alphabet in GPT-2's id order, <|endoftext|> 256",
          vocab == want, sorted(set(vocab.items()) ^ set(want.items()))[:5])
    merges = open(os.path.join(a, "base", "merges.txt")).read()
    check("merges.txt: the version line only", merges == "#version: 0.2\n", repr(merges))
    src = os.path.join(a, "tok.txt")
    with open(src, "w", encoding="utf-8") as f:
        f.write("ab é<|endoftext|>\n")
    r = run("tokenize", "--model", os.path.join(a, "experts", "pos"), "--file", src)
    # 'a' 64, 'b' 65, ' ' is byte 0x20 -> U+0120 (id 220), 'é' is C3 A9 -> 127 102
    check("acem tokenize reads an expert's folder: bytes and <|endoftext|>",
          r.returncode == 0 and r.stdout.split() == ["64", "65", "220", "127", "102", "256"],
          r.stdout + r.stderr)


def check_cli_merge(tmp, a):
    experts = ["fortune", "noun_sense", "verb_sense", "pos", "word_lang", "man_section",
               "source_lang"]
    out = os.path.join(tmp, "cli-ace")
    models = [x for e in experts for x in ["--model", os.path.join(a, "experts", e)]]
    r = run("merge", "--method", "ace", "--preset", "gpt2", "-q", "--out", out,
            "--base", os.path.join(a, "base"), *models)
    check("the lab's folders merge with the CLI", r.returncode == 0, r.stderr)
    same = r.returncode == 0 and open(os.path.join(out, "model.safetensors"), "rb").read() == \
        open(os.path.join(a, "merged", "ace", "model.safetensors"), "rb").read()
    check("CLI merge == the lab's ace merge, byte for byte", same)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        r = lab(a)
        check("text --quick runs", r.returncode == 0, r.stderr[-2000:])
        if r.returncode:
            sys.exit(1)
        check("prints the table", "## Test accuracy" in r.stdout)
        rows = check_rows(a, r.stderr)
        check_criterion(a, r.stderr, rows)
        check_covariance(a)
        check_vocab(a)
        check_cli_merge(tmp, a)

        r2 = lab(b)
        files = ["results.csv", "results.md", "covariance.csv", "results.svg",
                 "base/model.safetensors", "experts/word_lang/model.safetensors",
                 "grams/pos.safetensors"]
        diff = [f for f in files if open(os.path.join(a, f), "rb").read()
                != open(os.path.join(b, f), "rb").read()] if r2.returncode == 0 else files
        check("same seed, byte-identical results and checkpoints", not diff, diff)
        # a merge's metadata names its inputs' paths, which differ; its tensors may not
        merged = "merged/ties/model.safetensors"
        check("same seed, identical merged tensors", r2.returncode == 0 and tensors(
            os.path.join(a, merged)) == tensors(os.path.join(b, merged)))

        for args, needle in [(["--heads", "frozen"], "fresh score head"),
                             (["--suite", "texts"], "unknown suite")]:
            r = run("lab", "--suite", "text", "--quick", "--out", os.path.join(tmp, "bad"), *args)
            check(f"refused: {' '.join(args)}", r.returncode in (1, 2) and needle in r.stderr
                  and r.stderr.count("\n") == 1, f"{r.returncode} {r.stderr}")

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
