#!/usr/bin/python3
"""End-to-end tests of `acem lab --quick`: both suites run, every method and reference is
in the tables, two runs with one seed give byte-identical files, another seed does not,
the experts beat the base on their own tasks, the saved checkpoints merge with the CLI,
and bad options and data files are refused with clear errors. `--heads frozen` (synthetic):
the same, every table names the regime, the heads are the probe's (the experts' and the
multitask model's byte-identical), every backbone tensor moves, the base is the tuned
run's.

usage: /usr/bin/python3 tests/test_lab.py PATH_TO_acem
"""

import csv
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

ACEM = os.path.abspath(sys.argv[1])
DIGITS = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
REFERENCES = ["zero-shot", "individual", "multitask", "regmean_true_grams"]
results = []


def run(*args):
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=900)


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + detail))


def methods():
    """Method names from `acem merge --help` (the library's registry)."""
    text = run("merge", "--help").stdout
    block = text[text.index("\nmethods") :]
    return [m for m in re.findall(r"^  ([a-z_]+)  ", block, re.M)]


def read_csv(path):
    with open(path, newline="") as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def lab(out, *extra):
    return run("lab", "--quick", "--out", out, *extra)


def tensors(path):
    """name -> (dtype, shape, raw bytes) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], blob[8 + n + v["data_offsets"][0]:8 + n
                                              + v["data_offsets"][1]])
            for k, v in header.items()}


def check_regime(tag, heads, out):
    """What --heads changes: the tables say which regime ran; under frozen the experts'
    heads are the multitask model's (both the probe's), under tuned they are not; every
    backbone tensor of every expert moves from the base either way."""
    rows = read_csv(os.path.join(out, "results.csv"))
    check(f"{tag}: results.csv's heads column", all(r["heads"] == heads
                                                               for r in rows.values()))
    with open(os.path.join(out, "covariance.csv")) as f:
        check(f"{tag}: covariance.csv's heads column",
              all(r["heads"] == heads for r in csv.DictReader(f)))
    md = open(os.path.join(out, "results.md")).read()
    check(f"{tag}: results.md names the regime",
          f"--heads {heads}" in md and f"Heads: **{heads}**" in md)
    check(f"{tag}: the chart names the regime",
          f"heads {heads}:" in open(os.path.join(out, "results.svg")).read())
    n_experts = len(os.listdir(os.path.join(out, "experts")))
    experts, multitask = (tensors(os.path.join(out, "heads.safetensors")),
                          tensors(os.path.join(out, "multitask.safetensors")))
    names = [k for k in experts if k.startswith("head.")]
    same = [experts[k] == multitask[k] for k in names]
    check(f"{tag}: the experts' and multitask heads are "
          + ("byte-identical (the probe's)" if heads == "frozen" else "different (fine-tuned)"),
          len(names) == 2 * n_experts and (all(same) if heads == "frozen" else not any(same)), same)
    base = tensors(os.path.join(out, "base.safetensors"))
    moved = [tensors(os.path.join(out, "experts", e))[k][2] != base[k][2]
             for e in os.listdir(os.path.join(out, "experts")) for k in base]
    check(f"{tag}: every backbone tensor of every expert moved from the base",
          len(moved) == n_experts * 6 and all(moved))


def check_suite(tmp, suite, tasks, heads="tuned"):
    tag = suite if heads == "tuned" else f"{suite}-{heads}"
    a, b = os.path.join(tmp, tag + "-a"), os.path.join(tmp, tag + "-b")
    extra = [] if heads == "tuned" else ["--heads", heads]  # tuned is the default
    r = lab(a, "--suite", suite, *extra)
    check(f"{tag}: runs", r.returncode == 0, r.stderr[-2000:])
    if r.returncode:
        return
    check(f"{tag}: prints the table", "## Test accuracy" in r.stdout)
    check(f"{tag}: a progress line per phase", "pretraining the base" in r.stderr
          and "merging with ace" in r.stderr)
    rows = read_csv(os.path.join(a, "results.csv"))
    # every method that merges this many experts (the lab names those it skips, as slerp)
    skipped = re.findall(r"skipping ([a-z_]+): it does not merge", r.stderr)
    expected = REFERENCES + ["task_arithmetic_val"] + [m for m in methods()
                                                       if m != "regmean" and m not in skipped]
    check(f"{tag}: only the one- and two-model methods are skipped "
          f"({', '.join(skipped) or 'none'})",
          all(re.search(r"^  %s +[^\n]*\b(2 models|one model|1 model)" % m,
                        run("merge", "--help").stdout, re.M) for m in skipped), str(skipped))
    check(f"{tag}: every method and reference has a row",
          sorted(rows) == sorted(expected), f"{sorted(rows)} vs {sorted(expected)}")
    header = list(next(iter(rows.values())).keys())
    check(f"{tag}: columns method, heads, {tasks} tasks, avg, norm",
          header[:2] == ["method", "heads"] and header[-2:] == ["avg", "norm"]
          and len(header) == tasks + 4, str(header))
    accs = [float(v) for row in rows.values() for k, v in row.items()
            if k not in ("method", "heads")]
    check(f"{tag}: accuracies are percentages", all(0 <= x <= 200 for x in accs))
    ind, zero = rows["individual"], rows["zero-shot"]
    margin = float(ind["avg"]) - float(zero["avg"])
    check(f"{tag}: experts beat the base on their own tasks (avg +{margin:.1f} points)",
          margin > 3.0, f"individual {ind['avg']} vs zero-shot {zero['avg']}")
    check(f"{tag}: individual's norm is 100", ind["norm"] == "100.00")
    for name in ["results.md", "results.svg", "covariance.csv", "base.safetensors",
                 "heads.safetensors", "multitask.safetensors"]:
        check(f"{tag}: wrote {name}", os.path.isfile(os.path.join(a, name)))
    check(f"{tag}: no temporary files left",
          not [f for f in os.listdir(a) if f.endswith(".tmp") or ".acem-tmp" in f
               or ".acem-lock" in f or (f.startswith(".acem") and f != ".acem-workdir")])
    with open(os.path.join(a, "covariance.csv")) as f:
        cov = list(csv.DictReader(f))
    check(f"{tag}: covariance match for 3 layers x {tasks} tasks", len(cov) == 3 * tasks and
          all(0 <= float(c[k]) <= 1 for c in cov for k in ["cos_own", "cos_other", "cos_random"]))
    svg = open(os.path.join(a, "results.svg")).read()
    check(f"{tag}: the chart has a bar per row", svg.count("<rect") == len(rows) + 1)

    check_regime(tag, heads, a)
    r2 = lab(b, "--suite", suite, *extra)
    same = all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
               for f in ["results.csv", "results.md", "covariance.csv", "results.svg",
                         "heads.safetensors", "multitask.safetensors"])
    check(f"{tag}: same seed, byte-identical results", r2.returncode == 0 and same)

    experts = [t + ".safetensors" for t in header[2:-2]]  # in the lab's task order
    check(f"{tag}: one expert checkpoint per task",
          sorted(experts) == sorted(os.listdir(os.path.join(a, "experts"))))
    out = os.path.join(tmp, tag + "-cli.safetensors")
    models = [x for e in experts for x in ["--model", os.path.join(a, "experts", e)]]
    r = run("merge", "--method", "ace", "-q", "--out", out,
            "--base", os.path.join(a, "base.safetensors"), *models)
    check(f"{tag}: the lab's experts merge with the CLI", r.returncode == 0, r.stderr)
    same = r.returncode == 0 and open(out, "rb").read() == open(
        os.path.join(a, "merged", "ace.safetensors"), "rb").read()
    check(f"{tag}: CLI merge == the lab's ace merge, byte for byte", same)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        check_suite(tmp, "synthetic", 8)
        check_suite(tmp, "synthetic", 8, "frozen")
        same = open(os.path.join(tmp, "synthetic-a", "base.safetensors"), "rb").read() == open(
            os.path.join(tmp, "synthetic-frozen-a", "base.safetensors"), "rb").read()
        check("synthetic: --heads frozen trains the same base", same)
        if os.path.exists(DIGITS):
            check_suite(tmp, "digits", 8)
        else:
            check("digits data present (install python3-sklearn)", False, DIGITS)

        r = lab(os.path.join(tmp, "seed1"), "--seed", "1", "--tasks", "3")
        a = open(os.path.join(tmp, "synthetic-a", "results.csv")).read()
        b = open(os.path.join(tmp, "seed1", "results.csv")).read() if r.returncode == 0 else a
        check("another seed and task count: runs, different results",
              r.returncode == 0 and a != b and "T4" not in b.splitlines()[0], r.stderr[-500:])

        bad = [
            (["--suite", "imagenet"], 2, "unknown suite"),
            (["--tasks", "1"], 2, "--tasks"),
            (["--tasks", "21"], 2, "--tasks"),
            (["--seed", "-3"], 2, "--seed"),
            (["--heads", "fixed"], 2, "--heads"),
            (["--suite", "digits", "--data", os.path.join(tmp, "none.csv.gz")], 1,
             "python3-sklearn"),
        ]
        for args, code, needle in bad:
            r = lab(os.path.join(tmp, "bad"), *args)
            check(f"refused: {' '.join(args)}", r.returncode == code and needle in r.stderr
                  and r.stderr.count("\n") == 1, f"{r.returncode} {r.stderr}")
        corrupt = os.path.join(tmp, "corrupt.csv.gz")
        with gzip.open(corrupt, "wt") as f:
            f.write("0," * 64 + "3\n" + "0," * 30 + "x\n")
        r = lab(os.path.join(tmp, "bad"), "--suite", "digits", "--data", corrupt)
        check("refused: a malformed digits file, naming file and line",
              r.returncode == 1 and corrupt in r.stderr and "line 2" in r.stderr, r.stderr)
        with open(corrupt, "wb") as f:
            f.write(b"\x1f\x8b\x08\x00garbage")
        r = lab(os.path.join(tmp, "bad"), "--suite", "digits", "--data", corrupt)
        check("refused: a corrupt gzip stream", r.returncode == 1 and corrupt in r.stderr,
              r.stderr)
        r = run("lab", "--help")
        check("lab --help teaches", r.returncode == 0 and "--quick" in r.stdout
              and "examples" in r.stdout)

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
