#!/usr/bin/python3
"""regmean end to end: Gram files given per expert (flags and YAML), f32 and f64 against
the float64 oracle, tensors without Gram matrices averaged, malformed Gram files refused.

usage: /usr/bin/python3 tests/test_regmean_golden.py PATH_TO_acem
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import safetensors_np as st  # noqa: E402
from regmean import regmean_delta  # noqa: E402

ACEM = os.path.abspath(sys.argv[1])
results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + detail))


def f64(t):
    return t.to_f64().reshape(t.shape)


def main():
    rng = np.random.default_rng(7)
    T, shapes = 3, {"a.weight": (12, 9), "b.weight": (5, 20), "a.bias": (12,)}
    with tempfile.TemporaryDirectory(prefix="acem-regmean-") as d:
        os.chdir(d)
        base = {k: rng.standard_normal(s) for k, s in shapes.items()}
        experts = [{k: v + 0.1 * rng.standard_normal(v.shape) for k, v in base.items()} for _ in range(T)]
        grams = []
        st.write_file("base.safetensors", {k: st.from_f64(v, "F64") for k, v in base.items()})
        for t in range(T):
            st.write_file(f"e{t}.safetensors", {k: st.from_f64(v, "F64") for k, v in experts[t].items()})
            X = rng.standard_normal((60, 9)) * rng.uniform(0.5, 2.0, 9)
            grams.append((X.T @ X).astype(np.float32).astype(np.float64))
            # only a.weight has Gram matrices: b.weight must fall back to the mean
            st.write_file(f"g{t}.safetensors", {"a.weight": st.from_f64(grams[t], "F32")})
        args = [ACEM, "merge", "-q", "-b", "base.safetensors", "-M", "regmean"]
        for t in range(T):
            args += ["-m", f"e{t}.safetensors", "--gram", f"e{t}.safetensors=g{t}.safetensors"]
        deltas = {k: [e[k] - base[k] for e in experts] for k in shapes}
        ref = regmean_delta(deltas["a.weight"], grams)
        for prec, tol in (("f32", 1e-4), ("f64", 1e-8)):
            out = f"out-{prec}.safetensors"
            r = subprocess.run(args + ["--precision", prec, "--dtype", "f64", "-o", out], capture_output=True, text=True)
            if r.returncode:
                check(f"regmean {prec} runs", False, r.stderr)
                continue
            o = st.read_file(out)[0]
            err = np.linalg.norm(f64(o["a.weight"]) - base["a.weight"] - ref) / np.linalg.norm(ref)
            mean_err = max(np.abs(f64(o[k]) - base[k] - np.mean(deltas[k], axis=0)).max() for k in ("b.weight", "a.bias"))
            print(f"  {prec}: relative Frobenius error of Delta {err:.2e}; mean fallback max error {mean_err:.1e}")
            check(f"regmean {prec} within {tol:g} of the float64 oracle", err <= tol)
            check(f"regmean {prec}: tensors without Gram matrices get the mean", mean_err <= (1e-6 if prec == "f32" else 1e-12))
        with open("merge.yaml", "w") as f:
            f.write("merge_method: regmean\nbase_model: base.safetensors\nparameters: {alpha: 0.5}\nmodels:\n")
            f.writelines(f"  - model: e{t}.safetensors\n    gram: g{t}.safetensors\n" for t in range(T))
        r = subprocess.run([ACEM, "merge", "-q", "merge.yaml", "--precision", "f64", "--dtype", "f64", "-o", "yaml.safetensors"],
                           capture_output=True, text=True)
        ok = r.returncode == 0
        if ok:
            ref5 = regmean_delta(deltas["a.weight"], grams, alpha=0.5)
            o = st.read_file("yaml.safetensors")[0]
            ok = np.linalg.norm(f64(o["a.weight"]) - base["a.weight"] - ref5) / np.linalg.norm(ref5) < 1e-8
        check("YAML models with gram: keys and alpha=0.5", ok, r.stderr)
        # F32 weights of 2 x 30 with F64 Gram matrices of 30 x 30: the Gram matrix is 15x
        # the bytes of any tensor (regression: it once overflowed the conversion buffer)
        w0 = rng.standard_normal((2, 30))
        wide = [w0 + 0.1 * rng.standard_normal((2, 30)) for _ in range(T)]
        wide_grams = []
        st.write_file("wbase.safetensors", {"w.weight": st.from_f64(w0, "F32")})
        wargs = [ACEM, "merge", "-q", "-b", "wbase.safetensors", "-M", "regmean"]
        for t in range(T):
            X = rng.standard_normal((80, 30))
            wide_grams.append(X.T @ X)
            st.write_file(f"we{t}.safetensors", {"w.weight": st.from_f64(wide[t], "F32")})
            st.write_file(f"wg{t}.safetensors", {"w.weight": st.from_f64(wide_grams[t], "F64")})
            wargs += ["-m", f"we{t}.safetensors", "--gram", f"we{t}.safetensors=wg{t}.safetensors"]
        r = subprocess.run(wargs + ["--dtype", "f64", "-o", "wide.safetensors"], capture_output=True, text=True)
        ok = r.returncode == 0
        if ok:
            w0r = f64(st.read_file("wbase.safetensors")[0]["w.weight"])
            wd = [f64(st.read_file(f"we{t}.safetensors")[0]["w.weight"]) - w0r for t in range(T)]
            ref_w = regmean_delta(wd, wide_grams)
            o = st.read_file("wide.safetensors")[0]
            ok = np.linalg.norm(f64(o["w.weight"]) - w0r - ref_w) / np.linalg.norm(ref_w) < 1e-4
        check("F64 Gram matrices larger than every tensor, with F32 weights", ok, r.stderr)
        st.write_file("bad.safetensors", {"a.weight": st.from_f64(np.ones((9, 8)), "F32")})
        bad = list(args)
        bad[bad.index("e0.safetensors=g0.safetensors")] = "e0.safetensors=bad.safetensors"
        r = subprocess.run(bad + ["-o", "bad-out.safetensors"], capture_output=True, text=True)
        check("a Gram matrix of the wrong shape is refused naming the file",
              r.returncode == 1 and "bad.safetensors" in r.stderr and not os.path.exists("bad-out.safetensors"), r.stderr)
        r = subprocess.run(args[:7] + ["-m", "e0.safetensors", "-m", "e1.safetensors", "--gram",
                                       "nope.safetensors=g0.safetensors", "-o", "x.safetensors"], capture_output=True, text=True)
        check("--gram for a model that is not merged is a usage error", r.returncode == 2, r.stderr)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
