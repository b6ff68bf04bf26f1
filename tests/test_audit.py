#!/usr/bin/python3
"""Regression tests of the audit that followed issue 16 ("Nothing lost"): defects of the
same classes found elsewhere. Each check failed on c6a6d69 or on the main of the issue-16
fixes (or both) and must pass now; "(guard)" checks hold on every version and keep a fix
from going too far.

  example / lab   `acem example DIR` and `acem lab --out DIR` rewrote the files of any DIR
                  (a user's base/model.safetensors, base.safetensors): their directory
                  must now be one they made (a marker), new or empty
  report inside   --report OUT/report.json with a directory output OUT failed after the
                  whole merge ("cannot move the finished output into place")
  0-D tensors     a scalar (CLIP's logit_scale) in a GGUF output was refused by the
                  read-back check as an internal error
  aux files       links out of the base directory and its subdirectories (1_Pooling/)
                  were left out of a directory output without a word
  base as expert  an expert that is the base (a mergekit config lists it under models)
                  counted as a zero delta without a word
  control chars   names and metadata of a file reached the terminal raw (inspect, errors,
                  warnings); stats --csv did not quote names, --svg was not XML

usage: /usr/bin/python3 tests/test_audit.py PATH_TO_acem
"""

import csv
import json
import os
import sys
import xml.dom.minidom

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import gguf_np as gg  # noqa: E402
import safetensors_np as st  # noqa: E402
from harness import check, one_error_line, run, run_groups  # noqa: E402



def warnings(r):
    return [ln for ln in r.stderr.split("\n") if ln.startswith("acem: warning: ")]


def tree(d):
    """Every path under d with the bytes of each file: what must stay untouched."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs:
            out[os.path.relpath(os.path.join(root, n), d)] = None
        for n in files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, d)] = open(p, "rb").read()
    return out


def models(d, name="m", values=None, base_dir=True):
    """A base (a directory with config.json, or a file) and two experts, all F32."""
    rng = np.random.default_rng(len(name))
    shapes = values or {"h.0.w": (8, 32), "h.0.b": (32,)}
    base_v = {k: rng.standard_normal(s) for k, s in shapes.items()}
    paths = []
    for t in range(3):
        v = {k: x + 0.1 * t * rng.standard_normal(np.shape(x)) for k, x in base_v.items()}
        tensors = {k: st.from_f64(np.asarray(x), "F32") for k, x in v.items()}
        if t == 0 and base_dir:
            p = os.path.join(d, name + "-base")
            os.mkdir(p)
            st.write_file(os.path.join(p, "model.safetensors"), tensors)
            with open(os.path.join(p, "config.json"), "w") as f:
                json.dump({"model_type": "test"}, f)
        else:
            p = os.path.join(d, f"{name}-{t}.safetensors")
            st.write_file(p, tensors)
        paths.append(p)
    return paths


def margs(paths, out, *extra):
    return ["merge", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "-M", "average",
            "-o", out, *extra]


# ------------------------------------------------------------------ example, lab

def test_example(d):
    mine = os.path.join(d, "models")
    os.makedirs(os.path.join(mine, "base"))
    open(os.path.join(mine, "base", "model.safetensors"), "w").write("my own model")
    open(os.path.join(mine, "base", "config.json"), "w").write("{\"mine\": true}")
    open(os.path.join(mine, "notes.txt"), "w").write("mine")
    before = tree(mine)
    r = run("example", mine)
    check("audit: acem example DIR refuses a directory of the user's and leaves every file of "
          "it as it was", one_error_line(r, "models", "not made by") and tree(mine) == before,
          (r.returncode, r.stderr, sorted(tree(mine))))
    ours = os.path.join(d, "ex")
    r1, r2 = run("example", ours), run("example", ours)
    check("audit: (guard) acem example writes a new DIR and writes it again on a rerun",
          r1.returncode == 0 and r2.returncode == 0
          and os.path.isfile(os.path.join(ours, "merged", "model.safetensors")), r1.stderr + r2.stderr)
    empty = os.path.join(d, "empty")
    os.mkdir(empty)
    r = run("example", empty)
    check("audit: (guard) acem example fills an empty DIR", r.returncode == 0
          and os.path.isfile(os.path.join(empty, "base", "model.safetensors")), r.stderr)


def test_lab(d):
    mine = os.path.join(d, "work")
    os.mkdir(mine)
    open(os.path.join(mine, "base.safetensors"), "w").write("my own model")
    os.mkdir(os.path.join(mine, "merged"))
    open(os.path.join(mine, "merged", "ace.safetensors"), "w").write("my own merge")
    before = tree(mine)
    r = run("lab", "--quick", "--tasks", "2", "--out", mine, timeout=600)
    check("audit: acem lab --out DIR refuses a directory of the user's and leaves every file "
          "of it as it was", one_error_line(r, "work", "not made by") and tree(mine) == before,
          (r.returncode, r.stderr[-400:], sorted(tree(mine))))


# ------------------------------------------------------------------ outputs

def test_report_inside_output(d):
    paths = models(d, "r")
    out = os.path.join(d, "merged")
    for report in (os.path.join(out, "report.json"), os.path.join(out, "sub", "report.json")):
        r = run(*margs(paths, out, "--report", report))
        left = [f for f in os.listdir(d) if f.startswith("merged")]
        check(f"audit: --report {os.path.relpath(report, d)} inside the directory output is "
              f"refused before the merge, in one line, leaving nothing",
              one_error_line(r, "inside") and not left, (r.returncode, r.stderr, left))
    r = run(*margs(paths, out, "--report", out + ".json"))
    check("audit: (guard) --report beside the directory output is written",
          r.returncode == 0 and os.path.isfile(out + ".json")
          and os.path.isfile(os.path.join(out, "model.safetensors")), r.stderr)


def test_scalar_gguf(d):
    paths = models(d, "s", {"h.0.w": (8, 32), "logit_scale": ()}, base_dir=False)
    want = [st.read_model(p)["logit_scale"].to_f64() for p in paths]
    for dtype in ("default", "f16", "q8_0"):
        out = os.path.join(d, f"scalar-{dtype}.gguf")
        r = run(*margs(paths, out, *([] if dtype == "default" else ["--dtype", dtype])))
        ok, got = r.returncode == 0, None
        if ok:
            _, _, tensors, _ = gg.read(out)
            got = tensors.get("logit_scale")
        expect = want[0] + ((want[1] - want[0]) + (want[2] - want[0])) / 2
        check(f"audit: a 0-D tensor (CLIP's logit_scale) merges into a GGUF output "
              f"(--dtype {dtype}), stored as [1] with the merged value",
              ok and got is not None and tuple(got.shape) == (1,)
              and abs(float(gg.values(got)[0]) - float(expect)) <= 1e-3 * max(1.0, abs(float(expect))),
              (r.returncode, r.stderr, None if got is None else (got.shape, gg.values(got))))


def test_aux_not_copied(d):
    paths = models(d, "a")
    base = paths[0]
    secret = os.path.join(d, "secret.txt")
    open(secret, "w").write("private")
    os.symlink(secret, os.path.join(base, "vocab.txt"))
    os.mkdir(os.path.join(base, "1_Pooling"))
    open(os.path.join(base, "1_Pooling", "config.json"), "w").write("{}")
    out = os.path.join(d, "aux-out")
    r = run(*margs(paths, out))
    w = warnings(r)
    check("audit: a link out of the base directory, left out of the output, is named in a warning",
          r.returncode == 0 and any("vocab.txt" in x and "link" in x for x in w)
          and not os.path.exists(os.path.join(out, "vocab.txt")), r.stderr)
    check("audit: a subdirectory of the base (sentence-transformers' 1_Pooling), left out of "
          "the output, is named in a warning",
          r.returncode == 0 and any("1_Pooling" in x and "subdirector" in x for x in w), r.stderr)
    r = run(*margs(paths, os.path.join(d, "aux-strict"), "--strict"))
    check("audit: with --strict a base directory whose files cannot all be carried over is "
          "refused before the merge", (one_error_line(r, "vocab.txt", "--strict")
                                       or one_error_line(r, "1_Pooling", "--strict"))
          and not os.path.exists(os.path.join(d, "aux-strict")), r.stderr)
    plain = models(d, "p")
    r = run(*margs(plain, os.path.join(d, "plain-out")))
    check("audit: (guard) a base directory of plain files gives no warning",
          r.returncode == 0 and not warnings(r), r.stderr)


def test_base_as_expert(d):
    paths = models(d, "b")
    r = run(*margs([paths[0], os.path.join(paths[0], "model.safetensors"), paths[2]],
                   os.path.join(d, "be.safetensors")))
    check("audit: an expert that is the base model (its delta is zero) is named in a warning",
          r.returncode == 0 and any("is the base model" in x for x in warnings(r)), r.stderr)


# ------------------------------------------------------------------ text from the inputs

EVIL = 'h.0.a"b,\x1b[31mRED\nfake.weight  F32  [1]  4'


def test_control_characters(d):
    rng = np.random.default_rng(3)
    paths = []
    for t in range(3):
        p = os.path.join(d, f"c{t}.safetensors")
        st.write_file(p, {EVIL: st.from_f64(rng.standard_normal((8, 8)), "F32"),
                          "h.1.w": st.from_f64(rng.standard_normal((8, 8)), "F32")},
                      metadata={"k\x1b]0;title\x07": "v\nforged: line"})
        paths.append(p)
    r = run("inspect", paths[0])
    lines = r.stdout.split("\n")
    check("audit: inspect prints no control characters from a file's names and metadata, one "
          "line per key and per tensor",
          r.returncode == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout
          and not any(ln.startswith("forged") or ln.startswith("fake.weight") for ln in lines)
          and sum(ln.startswith("h.") for ln in lines) == 2, repr(r.stdout))
    # an error naming the tensor: the expert's shape differs
    bad = os.path.join(d, "bad.safetensors")
    st.write_file(bad, {EVIL: st.from_f64(rng.standard_normal((4, 8)), "F32"),
                        "h.1.w": st.from_f64(rng.standard_normal((8, 8)), "F32")})
    r = run(*margs([paths[0], bad, paths[2]], os.path.join(d, "x.safetensors")))
    check("audit: an error naming an input's tensor carries no control characters and stays "
          "one line", one_error_line(r) and "\x1b" not in r.stderr and "RED" in r.stderr, repr(r.stderr))
    extra = os.path.join(d, "extra.safetensors")
    st.write_file(extra, {EVIL: st.from_f64(rng.standard_normal((8, 8)), "F32"),
                          "h.1.w": st.from_f64(rng.standard_normal((8, 8)), "F32"),
                          "score\x1b[2J.weight": st.from_f64(rng.standard_normal((2, 8)), "F32")})
    r = run(*margs([paths[0], extra, paths[2]], os.path.join(d, "y.safetensors")))
    check("audit: a warning naming an input's tensor carries no control characters",
          r.returncode == 0 and warnings(r) and "\x1b" not in r.stderr, repr(r.stderr))
    # stats tables: fresh paths (c6a6d69 has no --force)
    csv_path, svg_path = os.path.join(d, "s.csv"), os.path.join(d, "s.svg")
    r = run("stats", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "--csv", csv_path,
            "--svg", svg_path)
    names = []
    if r.returncode == 0 and os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            names = [row[0] for row in list(csv.reader(f))[1:]]
    check("audit: stats --csv quotes a name holding quotes, commas and a newline (RFC 4180)",
          r.returncode == 0 and sorted(names) == sorted([EVIL, "h.1.w"]), (r.stderr, names))
    try:
        xml.dom.minidom.parse(svg_path)
        well_formed = True
    except Exception as e:  # noqa: BLE001 - any parser failure is the finding
        well_formed = e
    check("audit: stats --svg is well-formed XML whatever the names hold",
          r.returncode == 0 and well_formed is True, (r.stderr, well_formed))


def main():
    return run_groups([test_example, test_lab, test_report_inside_output, test_scalar_gguf,
             test_aux_not_copied, test_base_as_expert, test_control_characters], "acem-audit-", sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
