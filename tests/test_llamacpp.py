#!/usr/bin/python3
"""acem's GGUF outputs run by the real llama.cpp (issue 14, items 1 and 4): the CPU build
inside the npm package node-llama-cpp, installed by scripts/deps.sh under .deps/ (or where
$NODE_LLAMA_CPP points). Without it (or without node) the script prints a SKIP line and
passes.

A tiny Llama (tests/oracle/llama_np.py, llama.cpp's tensor names and keys) and two experts,
merged by task_arithmetic to GGUF as F32, F16 and Q8_0: llama.cpp loads each output
(checkTensors), evaluates a fixed token sequence, and its logits are compared with a float64
numpy forward pass of the weights the file stores, with the activations rounded as ggml's CPU
backend rounds them before each product (F16, Q8_0). llama.cpp must also read the file type
acem declares. On main before this branch, the F16 output (1-D norms converted to F16) made
llama.cpp's CPU backend abort on the first evaluation.

usage: /usr/bin/python3 tests/test_llamacpp.py PATH_TO_acem
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import llama_np as LL  # noqa: E402
from harness import check, run, run_groups  # noqa: E402

NLC = os.environ.get("NODE_LLAMA_CPP", os.path.join(HERE, "..", ".deps", "node-llama-cpp"))
TOKENS = [1, 5, 9, 270, 17, 200, 33, 101]
# --dtype -> general.file_type (llama.h: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0)
CASES = {"f32": 0, "f16": 1, "q8_0": 7}
# the largest logit difference allowed, relative to the largest logit: float32 arithmetic in
# another order (measured: under 1e-6), and room for an odd activation code rounded the other
# way (without the rounding emulated: 5e-4 for F16, 2e-2 for Q8_0)
TOL = 1e-4


def llamacpp(path):
    """(returncode, stderr, {"file_type", "logits" [tokens x vocab]}) of llama.cpp on path."""
    r = subprocess.run(["node", os.path.join(HERE, "llamacpp_logits.mjs"), path]
                       + [str(t) for t in TOKENS], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, NODE_LLAMA_CPP=NLC))
    if r.returncode:
        return r.returncode, r.stderr, None
    got = json.loads(r.stdout)
    logits = np.full((len(TOKENS), LL.VOCAB), np.nan)
    for i, pairs in enumerate(got["logits"]):
        for tok, v in pairs:
            logits[i, tok] = v
    return 0, "", {"file_type": got["file_type"], "logits": logits}


def test_llamacpp_runs_acem_outputs(d):
    rng = np.random.default_rng(14)
    base = LL.random_weights(rng)
    paths = [os.path.join(d, "base.gguf")] + [os.path.join(d, "e%d.gguf" % t) for t in (1, 2)]
    LL.write(paths[0], base)
    for p in paths[1:]:
        LL.write(p, {n: v + 0.1 * rng.standard_normal(v.shape) * np.abs(v).mean()
                     for n, v in base.items()})
    rc, err, got = llamacpp(paths[0])
    check("llama.cpp loads the tiny Llama written by the numpy oracle", rc == 0, err[-400:])
    if rc == 0:
        diff = np.abs(got["logits"] - LL.forward(paths[0], TOKENS)).max()
        check("  and its logits equal the float64 forward pass (max |diff| %.2e)" % diff,
              diff <= 1e-5 * np.abs(got["logits"]).max())
    for dtype, ftype in CASES.items():
        out = os.path.join(d, "merged-%s.gguf" % dtype)
        r = run("merge", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2],
                "-M", "task_arithmetic", "--dtype", dtype, "-o", out)
        check("task_arithmetic --dtype %s to GGUF" % dtype, r.returncode == 0, r.stderr)
        if r.returncode:
            continue
        rc, err, got = llamacpp(out)
        check("  llama.cpp loads and evaluates the %s output" % dtype, rc == 0,
              err.strip().splitlines()[-3:] if err.strip() else rc)
        if rc:
            continue
        ref = LL.forward(out, TOKENS)
        plain = np.abs(got["logits"] - LL.forward(out, TOKENS, emulate=False)).max()
        diff, scale = np.abs(got["logits"] - ref).max(), np.abs(ref).max()
        top1 = np.mean(got["logits"].argmax(1) == ref.argmax(1))
        check("  %s: logits vs the float64 forward pass with ggml's activation rounding: max "
              "|diff| %.2e (%.1e of the largest logit; %.2e without the rounding), top-1 "
              "agreement %.0f%%" % (dtype, diff, diff / scale, plain, 100 * top1),
              diff <= TOL * scale and top1 == 1)
        check("  %s: llama.cpp reads general.file_type %s" % (dtype, ftype),
              got["file_type"] == ftype, got["file_type"])


def main():
    have = shutil.which("node") and os.path.exists(
        os.path.join(NLC, "node_modules", "node-llama-cpp", "package.json"))
    if not have:
        print("SKIP test_llamacpp: node-llama-cpp is not installed under %s (scripts/deps.sh "
              "installs it where node >= 20 and the npm registry are available)" % NLC)
        print("0 passed, 0 failed")
        return 0
    return run_groups([test_llamacpp_runs_acem_outputs], "acem-llamacpp-")


if __name__ == "__main__":
    sys.exit(main())
