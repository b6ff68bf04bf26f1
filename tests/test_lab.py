#!/usr/bin/python3
"""End-to-end tests of `acem lab --quick`: both suites run, every method and reference is
in the tables, two runs with one seed give byte-identical files, another seed does not,
the experts beat the base on their own tasks, the saved checkpoints merge with the CLI,
and bad options and data files are refused with clear errors.

usage: /usr/bin/python3 tests/test_lab.py PATH_TO_acem
"""

import csv
import gzip
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


def check_suite(tmp, suite, tasks):
    a, b = os.path.join(tmp, suite + "-a"), os.path.join(tmp, suite + "-b")
    r = lab(a, "--suite", suite)
    check(f"{suite}: runs", r.returncode == 0, r.stderr[-2000:])
    if r.returncode:
        return
    check(f"{suite}: prints the table", "## Test accuracy" in r.stdout)
    check(f"{suite}: a progress line per phase", "pretraining the base" in r.stderr
          and "merging with ace" in r.stderr)
    rows = read_csv(os.path.join(a, "results.csv"))
    # every method that merges this many experts (the lab names those it skips, as slerp)
    skipped = re.findall(r"skipping ([a-z_]+): it does not merge", r.stderr)
    expected = REFERENCES + ["task_arithmetic_val"] + [m for m in methods()
                                                       if m != "regmean" and m not in skipped]
    check(f"{suite}: only the two-model methods are skipped ({', '.join(skipped) or 'none'})",
          all(re.search(r"^  %s +[^\n]*\b2 models" % m, run("merge", "--help").stdout, re.M)
              for m in skipped), skipped)
    check(f"{suite}: every method and reference has a row",
          sorted(rows) == sorted(expected), f"{sorted(rows)} vs {sorted(expected)}")
    header = list(next(iter(rows.values())).keys())
    check(f"{suite}: columns method, {tasks} tasks, avg, norm",
          header[0] == "method" and header[-2:] == ["avg", "norm"] and len(header) == tasks + 3,
          str(header))
    accs = [float(v) for row in rows.values() for k, v in row.items() if k != "method"]
    check(f"{suite}: accuracies are percentages", all(0 <= x <= 200 for x in accs))
    ind, zero = rows["individual"], rows["zero-shot"]
    margin = float(ind["avg"]) - float(zero["avg"])
    check(f"{suite}: experts beat the base on their own tasks (avg +{margin:.1f} points)",
          margin > 3.0, f"individual {ind['avg']} vs zero-shot {zero['avg']}")
    check(f"{suite}: individual's norm is 100", ind["norm"] == "100.00")
    for name in ["results.md", "results.svg", "covariance.csv", "base.safetensors",
                 "heads.safetensors", "multitask.safetensors"]:
        check(f"{suite}: wrote {name}", os.path.isfile(os.path.join(a, name)))
    check(f"{suite}: no temporary files left",
          not [f for f in os.listdir(a) if f.endswith(".tmp") or ".acem-tmp" in f
               or ".acem-lock" in f or (f.startswith(".acem") and f != ".acem-workdir")])
    with open(os.path.join(a, "covariance.csv")) as f:
        cov = list(csv.DictReader(f))
    check(f"{suite}: covariance match for 3 layers x {tasks} tasks", len(cov) == 3 * tasks and
          all(0 <= float(c[k]) <= 1 for c in cov for k in ["cos_own", "cos_other", "cos_random"]))
    svg = open(os.path.join(a, "results.svg")).read()
    check(f"{suite}: the chart has a bar per row", svg.count("<rect") == len(rows) + 1)

    r2 = lab(b, "--suite", suite)
    same = all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
               for f in ["results.csv", "results.md", "covariance.csv", "results.svg"])
    check(f"{suite}: same seed, byte-identical results", r2.returncode == 0 and same)

    experts = [t + ".safetensors" for t in header[1:-2]]  # in the lab's task order
    check(f"{suite}: one expert checkpoint per task",
          sorted(experts) == sorted(os.listdir(os.path.join(a, "experts"))))
    out = os.path.join(tmp, suite + "-cli.safetensors")
    models = [x for e in experts for x in ["--model", os.path.join(a, "experts", e)]]
    r = run("merge", "--method", "ace", "-q", "--out", out,
            "--base", os.path.join(a, "base.safetensors"), *models)
    check(f"{suite}: the lab's experts merge with the CLI", r.returncode == 0, r.stderr)
    same = r.returncode == 0 and open(out, "rb").read() == open(
        os.path.join(a, "merged", "ace.safetensors"), "rb").read()
    check(f"{suite}: CLI merge == the lab's ace merge, byte for byte", same)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        check_suite(tmp, "synthetic", 8)
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
