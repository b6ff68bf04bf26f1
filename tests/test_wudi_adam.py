#!/usr/bin/python3
"""wudi with solver=adam: acem against a float64 numpy transcription of the documented
solver (Adam, lr 1e-5, betas 0.9/0.999, eps 1e-8, 300 steps from sum_t Dt, loss
sum_t ||(M - Dt) Dt^T||_F^2 / ||Dt||_F^2, gradient 2 (M sum_t S_t - sum_t Dt S_t)).

usage: /usr/bin/python3 tests/test_wudi_adam.py PATH_TO_acem
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import safetensors_np as st  # noqa: E402


def adam_oracle(ds, steps=300, lr=1e-5, b1=0.9, b2=0.999, eps=1e-8):
    S = [d.T @ d / np.sum(d * d) for d in ds]
    P, Y = sum(S), sum(d @ s for d, s in zip(ds, S))
    M = sum(ds).copy()
    m1 = np.zeros_like(M)
    m2 = np.zeros_like(M)
    for k in range(1, steps + 1):
        g = 2 * (M @ P - Y)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        M = M - lr * (m1 / (1 - b1 ** k)) / (np.sqrt(m2 / (1 - b2 ** k)) + eps)
    return M


def main():
    acem = os.path.abspath(sys.argv[1])
    rng = np.random.default_rng(3)
    results = []
    with tempfile.TemporaryDirectory(prefix="acem-adam-") as d:
        base = rng.standard_normal((10, 14))
        ds = [0.05 * (t + 1) * rng.standard_normal(base.shape) for t in range(3)]
        st.write_file(f"{d}/base.safetensors", {"w": st.from_f64(base, "F64")})
        for t, x in enumerate(ds):
            st.write_file(f"{d}/e{t}.safetensors", {"w": st.from_f64(base + x, "F64")})
        ref = adam_oracle(ds)
        for prec, tol in (("f64", 1e-8), ("f32", 1e-4)):
            out = f"{d}/out-{prec}.safetensors"
            cmd = [acem, "merge", "-q", "-b", f"{d}/base.safetensors", "-M", "wudi", "-p", "solver=adam",
                   "--precision", prec, "--dtype", "f64", "-o", out]
            for t in range(3):
                cmd += ["-m", f"{d}/e{t}.safetensors"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            ok = r.returncode == 0
            err = float("nan")
            if ok:
                got = st.read_file(out)[0]["w"].to_f64().reshape(base.shape) - base
                err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
                ok = err <= tol
            print(("PASS" if ok else "FAIL") + f" wudi solver=adam {prec}: relative error {err:.2e} (<= {tol:g}) {r.stderr}")
            results.append(ok)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
