#!/usr/bin/python3
"""The fused streaming kernel of the linear methods (average, task_arithmetic) on tensors
that span several 2^20-element chunks and many 2^14-element blocks: agreement with the
float64 numpy oracle, the same bytes with 1 and 2 threads, F16 inputs, and the first
non-finite element reported exactly as the unfused path reports it (the base before the
experts, then the lowest index), wherever the threads split the chunk.

usage: /usr/bin/python3 tests/test_streaming.py PATH_TO_acem
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import safetensors_np as st  # noqa: E402

ACEM = os.path.abspath(sys.argv[1])
SHAPE = (1201, 2099)  # 2,520,899 elements: 3 chunks, the last one partial
results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + detail))


def merge(d, method, paths, out, *extra):
    args = [ACEM, "merge", "-q", "-b", paths[0], "-M", method, "-o", out, *extra]
    for p in paths[1:]:
        args += ["-m", p]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def write_models(d, dtype, rng, T=3, poison=None):
    w0 = rng.normal(0, 0.5, SHAPE)
    models = [w0] + [w0 + rng.normal(0, 0.01 * (t + 1), SHAPE) for t in range(T)]
    paths = []
    for k, w in enumerate(models):
        w = w.copy()
        for at_k, index, value in poison or []:
            if at_k == k:
                w.flat[index] = value
        paths.append(os.path.join(d, f"{dtype}-m{k}.safetensors"))
        st.write_file(paths[-1], {"w": st.from_f64(w, dtype), "b": st.from_f64(w[0, :7], dtype)})
    return paths


def main():
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory(prefix="acem-stream-") as d:
        paths = write_models(d, "F32", rng)
        loaded = [st.read_file(p)[0]["w"].to_f64().reshape(SHAPE) for p in paths]
        w0, experts = loaded[0], loaded[1:]
        for method, lam, scale in (("task_arithmetic", 0.3, 1.0), ("average", 1.0, 1 / 3)):
            out = os.path.join(d, method + ".safetensors")
            r = merge(d, method, paths, out, "--dtype", "f64")
            if r.returncode:
                check(f"{method} runs", False, r.stderr)
                continue
            got = st.read_file(out)[0]["w"].to_f64().reshape(SHAPE)
            delta = sum(e - w0 for e in experts) * scale
            err = np.linalg.norm(got - w0 - lam * delta) / np.linalg.norm(lam * delta)
            print(f"  {method}: relative Frobenius error of lambda * Delta {err:.2e}")
            check(f"{method} over 3 chunks agrees with the float64 oracle", err < 1e-6)

        paths16 = write_models(d, "F16", rng)
        outs = []
        for threads in ("1", "2"):
            outs.append(os.path.join(d, f"t{threads}.safetensors"))
            r = merge(d, "task_arithmetic", paths16, outs[-1], "--threads", threads)
            check(f"F16 task_arithmetic with {threads} thread(s) runs", r.returncode == 0, r.stderr)
        same = all(os.path.exists(o) for o in outs) and \
            open(outs[0], "rb").read() == open(outs[1], "rb").read()
        check("1 and 2 threads give the same bytes", same)

        n = SHAPE[0] * SHAPE[1]
        cases = [
            # (poison list (input, element, value), input named, element named)
            ([(2, 2_000_123, np.nan)], 2, 2_000_123),
            ([(2, 1_100_000, np.inf), (0, 1_900_000, np.nan)], 0, 1_900_000),  # base first
            ([(3, 1_048_575 + 1_048_576 - 1, -np.inf), (3, 1_048_576 + 40_000, np.nan)], 3,
             1_048_576 + 40_000),  # the lower index wins within one chunk
            ([(1, n - 1, np.nan)], 1, n - 1),
        ]
        for i, (poison, k, index) in enumerate(cases):
            sub = os.path.join(d, f"p{i}")
            os.mkdir(sub)
            pp = write_models(sub, "F32", rng, poison=poison)
            out = os.path.join(sub, "out.safetensors")
            r = merge(sub, "task_arithmetic", pp, out, "--threads", "2")
            ok = (r.returncode == 1 and os.path.basename(pp[k]) in r.stderr
                  and f"element {index}" in r.stderr and not os.path.exists(out))
            check(f"non-finite case {i}: names input {k} and element {index}", ok, r.stderr)

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
