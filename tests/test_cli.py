#!/usr/bin/python3
"""End-to-end tests of the acem command line: help, example, inspect, YAML configs,
usage errors, reports, and stale temporaries (signals and other faults: test_faults.py).

usage: /usr/bin/python3 tests/test_cli.py PATH_TO_acem
"""

import fcntl
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import safetensors_np as st  # noqa: E402
from harness import check, run_groups  # noqa: E402

ACEM = os.path.abspath(sys.argv[1])


def run(*args, **kw):
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=120, **kw)




def make_models(d, shapes, n_experts=3, dtype="F32", seed=0):
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    paths = [os.path.join(d, "base.safetensors")]
    st.write_file(paths[0], {k: st.from_f64(v, dtype) for k, v in base.items()})
    for t in range(n_experts):
        p = os.path.join(d, f"e{t}.safetensors")
        st.write_file(p, {k: st.from_f64(v + 0.1 * (t + 1) * rng.standard_normal(v.shape), dtype)
                          for k, v in base.items()})
        paths.append(p)
    return paths


def test_help():
    r = run("--help")
    check("acem --help exits 0 and lists commands", r.returncode == 0 and "merge" in r.stdout and "inspect" in r.stdout)
    r = run()
    check("acem without a command is a usage error (2)", r.returncode == 2)
    r = run("merge", "--help")
    methods = ["average", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
    check("merge --help lists every method and has examples",
          r.returncode == 0 and all(m in r.stdout for m in methods) and "examples:" in r.stdout, r.stdout)
    for cmd in ("inspect", "example"):
        r = run(cmd, "--help")
        check(f"{cmd} --help exits 0", r.returncode == 0 and "usage:" in r.stdout)
    r = run("frobnicate")
    check("unknown command: exit 2, one error line",
          r.returncode == 2 and r.stderr.startswith("acem: error: ") and r.stderr.count("\n") == 1)


def test_example(d):
    r = run("example", os.path.join(d, "ex"))
    merged = os.path.join(d, "ex", "merged")
    check("example runs and prints a summary", r.returncode == 0 and "merged 3 experts" in r.stdout
          and "peak RSS" in r.stdout, r.stdout + r.stderr)
    check("example output holds model.safetensors and config.json",
          os.path.isfile(os.path.join(merged, "model.safetensors"))
          and os.path.isfile(os.path.join(merged, "config.json")))
    r2 = run("example", os.path.join(d, "ex"))
    check("example is repeatable (replaces its own output)", r2.returncode == 0)
    r = run("inspect", merged)
    check("inspect lists tensors, dtypes and metadata",
          r.returncode == 0 and "model.layers.0.weight" in r.stdout and "F32" in r.stdout
          and "acem_method: ties" in r.stdout and "[128, 64]" in r.stdout, r.stdout)
    r = run("inspect", os.path.join(d, "nope"))
    check("inspect of a missing path: exit 1", r.returncode == 1 and r.stderr.startswith("acem: error: "))


def test_yaml_equivalence(d):
    paths = make_models(d, {"w": (16, 8), "b": (16,)})
    base, e = paths[0], paths[1:]
    out_flags = os.path.join(d, "flags.safetensors")
    r = run("merge", "-q", "--base", base, *sum((["--model", p] for p in e), []), "--method", "ties",
            "--param", "density=0.3", "--lambda", "0.7", "--dtype", "bf16", "-o", out_flags)
    check("merge from flags", r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr)
    cfg = os.path.join(d, "merge.yaml")
    with open(cfg, "w") as f:
        f.write(f"merge_method: ties\nbase_model: {base}\nmodels:\n")
        f.writelines(f"  - model: {p}\n" for p in e)
        f.write("parameters:\n  density: 0.3\n  lambda: 0.7\ndtype: bfloat16\n")
    out_yaml = os.path.join(d, "yaml.safetensors")
    r = run("merge", "-q", cfg, "-o", out_yaml)
    check("merge from YAML", r.returncode == 0, r.stderr)
    same = os.path.exists(out_yaml) and open(out_flags, "rb").read() == open(out_yaml, "rb").read()
    check("YAML and flags give byte-identical files", same)
    out_over = os.path.join(d, "over.safetensors")
    r = run("merge", "-q", cfg, "-o", out_over, "--param", "density=0.9")
    diff = os.path.exists(out_over) and open(out_over, "rb").read() != open(out_yaml, "rb").read()
    check("a --param flag overrides the YAML value", r.returncode == 0 and diff, r.stderr)
    bad = os.path.join(d, "bad.yaml")
    with open(bad, "w") as f:
        f.write("merge_methd: ties\n")
    r = run("merge", bad, "-o", os.path.join(d, "x.safetensors"))
    check("unknown YAML key: warned about, naming it, before the usage error it leads to",
          r.returncode == 2 and r.stderr.startswith(
              f'acem: warning: {bad}: unknown key "merge_methd" at the top level')
          and "acem: error: no " in r.stderr, r.stderr)


def test_usage_errors(d):
    paths = make_models(d, {"w": (4, 4)})
    base, e = paths[0], paths[1:]
    common = ["--base", base, "--model", e[0], "--model", e[1], "-o", os.path.join(d, "o.safetensors")]
    cases = [
        ("unknown option", ["merge", "--bogus"] + common + ["-M", "average"]),
        ("missing base", ["merge", "--model", e[0], "--model", e[1], "-M", "average", "-o", "x.safetensors"]),
        ("missing method", ["merge"] + common),
        ("no expert", ["merge", "--base", base, "-M", "average", "-o", "x.safetensors"]),
        ("one expert for ace, which needs 2", ["merge", "--base", base, "--model", e[0], "-M",
                                               "ace", "-o", "x.safetensors"]),
        ("lambda not a number", ["merge"] + common + ["-M", "average", "--lambda", "abc"]),
        ("param without =", ["merge"] + common + ["-M", "ties", "--param", "density"]),
        ("bad dtype", ["merge"] + common + ["-M", "ties", "--dtype", "f8"]),
        ("bad shard size", ["merge"] + common + ["-M", "ties", "--max-shard-size", "lots"]),
        ("option without value", ["merge"] + common + ["-M"]),
    ]
    for name, args in cases:
        r = run(*args)
        check(f"usage error: {name} (exit 2, one line)", r.returncode == 2 and
              r.stderr.startswith("acem: error: ") and r.stderr.count("\n") == 1, repr(r.stderr))
    for name, extra, phrase in [
        ("unknown method", ["-M", "magic"], "unknown method"),
        ("unknown parameter", ["-M", "ties", "--param", "densty=0.1"], "densty"),
        ("parameter out of range", ["-M", "ties", "--param", "density=2"], "density"),
    ]:
        r = run("merge", *common, *extra)
        check(f"usage error: {name} (exit 2)", r.returncode == 2 and phrase in r.stderr, r.stderr)
    check("no output left by failed merges", not os.path.exists(os.path.join(d, "o.safetensors")))


def test_report(d):
    paths = make_models(d, {"w": (6, 5), "ids": (3,)})
    rep = os.path.join(d, "report.json")
    r = run("merge", "-q", "--base", paths[0], "--model", paths[1], "--model", paths[2], "-M",
            "dare_ties", "--seed", "3", "--exclude", "^ids$", "--report", rep, "-o", os.path.join(d, "r.safetensors"))
    ok = r.returncode == 0 and os.path.exists(rep)
    if ok:
        j = json.load(open(rep))
        actions = {t["name"]: t["action"] for t in j["tensors"]}
        ok = j["method"] == "dare_ties" and "seed=3" in j["params"] and actions == {"w": "merged", "ids": "copied"}
    check("--report lists every tensor with its action and the resolved parameters", ok, r.stderr)


def test_stats(d):
    paths = make_models(d, {"layers.0.w": (20, 12), "layers.1.w": (12, 30), "layers.1.b": (12,)})
    out = {k: os.path.join(d, "stats." + k) for k in ("json", "csv", "svg")}
    r = run("stats", "-b", paths[0], *sum((["-m", p] for p in paths[1:]), []),
            "--json", out["json"], "--csv", out["csv"], "--svg", out["svg"])
    check("stats prints a table of 2-D tensors", r.returncode == 0 and "layers.0.w" in r.stdout
          and "layers.1.b" not in r.stdout and "gamma" in r.stdout, r.stdout + r.stderr)
    ok = all(os.path.exists(p) for p in out.values())
    if ok:
        j = json.load(open(out["json"]))
        base = st.read_file(paths[0])[0]
        experts = [st.read_file(p)[0] for p in paths[1:]]
        for t in j["tensors"]:
            name = t["name"]
            ds = [e[name].to_f64() - base[name].to_f64() for e in experts]
            s2 = np.array([np.sum(x * x) for x in ds])
            lg = np.log(s2 + 1e-12)
            gamma = np.var(lg, ddof=1) / (np.mean(lg) ** 2 + 1e-12)
            er = []
            for x in ds:
                sv = np.linalg.svd(x.reshape(t["shape"]), compute_uv=False)
                p = sv / sv.sum()
                er.append(np.exp(-np.sum(p * np.log(p))))
            ok = ok and abs(t["gamma"] - gamma) <= 1e-4 * abs(gamma) + 1e-9
            ok = ok and np.allclose(t["norm"], np.sqrt(s2), rtol=1e-5)
            ok = ok and np.allclose(t["effective_rank"], er, rtol=1e-4)
        svg = open(out["svg"]).read()
        ok = ok and svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "threshold 0.3" in svg
        ok = ok and open(out["csv"]).readline().startswith("tensor,rows,cols,gamma,branch,norm_1")
    check("stats JSON matches numpy (gamma, norms, effective ranks); CSV and SVG written", ok)


def test_stale_temporaries(d):
    """What a SIGKILLed run leaves beside the output is cleaned by the next run: a temporary
    is stale when nobody holds the output's lock (a pid means nothing across hosts or PID
    namespaces). While a run holds the lock, a second one refuses and touches nothing."""
    paths = make_models(d, {"w": (4, 4)})
    out = os.path.join(d, "o.safetensors")
    stale_file = f"{out}.acem-tmp-{os.getpid()}"  # even a live pid's: its lock is free
    stale_dir = os.path.join(d, "odir.acem-tmp-1")
    open(stale_file, "w").write("partial")
    os.mkdir(stale_dir)
    open(os.path.join(stale_dir, "model.safetensors"), "w").write("partial")
    args = ["-b", paths[0], "-m", paths[1], "-m", paths[2], "-M", "average", "-q"]
    r1 = run("merge", *args, "-o", out)
    r2 = run("merge", *args, "-o", os.path.join(d, "odir"))
    check("temporaries whose lock is free are removed",
          r1.returncode == 0 and r2.returncode == 0 and not os.path.exists(stale_file)
          and not os.path.exists(stale_dir) and not os.path.exists(out + ".acem-lock"),
          r1.stderr + r2.stderr)
    out2 = os.path.join(d, "held.safetensors")
    held_tmp = f"{out2}.acem-tmp-123"
    open(held_tmp, "w").write("partial")
    with open(out2 + ".acem-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r3 = run("merge", *args, "-o", out2)
    check("a second run refuses while the output's lock is held, touching nothing",
          r3.returncode == 1 and "another acem run" in r3.stderr and os.path.exists(held_tmp)
          and not os.path.exists(out2), r3.stderr)


def test_output_overflow(d):
    """Finite inputs whose written values are not finite in the output type (F16 past 65504)
    are refused like non-finite inputs, through every write path, unless --allow-nonfinite."""
    def model(name, big, dtype):
        w = np.ones(40000)  # past one 16K-element block: the check runs in parallel blocks
        w[30001] = big
        t = {"w": st.from_f64(w, dtype), "keep": st.from_f64(np.array([1e6, 3.0]), "F32")}
        st.write_file(os.path.join(d, name), t)
    model("b.safetensors", 60000.0, "F16")
    model("e1.safetensors", 65000.0, "F16")
    model("e2.safetensors", 65000.0, "F16")
    common = ["merge", "-q", "-b", "b.safetensors", "-m", "e1.safetensors", "-m", "e2.safetensors"]
    cases = [  # (what, extra args, tensor, element)
        ("task_arithmetic (fused kernel): 60000 + 2 x 5000 as F16",
         ["-M", "task_arithmetic", "--lambda", "1", "--exclude", "keep"], "w", 30001),
        ("ties (method path): 60000 + 3 x 5000 as F16", ["-M", "ties", "--lambda", "3", "--param", "density=1",
                                                         "--exclude", "keep"], "w", 30001),
        ("a copied F32 tensor converted by --dtype f16 (1e6)", ["-M", "average", "--exclude", "keep",
                                                                "--dtype", "f16"], "keep", 0),
    ]
    for what, extra, tensor, at in cases:
        r = run(*common, *extra, "-o", "o.safetensors", cwd=d)
        check(f"output overflow refused: {what}",
              r.returncode == 1 and r.stderr.count("\n") == 1 and f'tensor "{tensor}"' in r.stderr
              and f"element {at} " in r.stderr and "o.safetensors" in r.stderr
              and not os.path.exists(os.path.join(d, "o.safetensors")), r.stderr)
        r = run(*common, *extra, "--allow-nonfinite", "-o", "o.safetensors", "-f", cwd=d)
        out = st.read_file(os.path.join(d, "o.safetensors"))[0] if r.returncode == 0 else {}
        check(f"--allow-nonfinite writes it as Inf: {what}",
              r.returncode == 0 and np.isinf(out[tensor].to_f64().ravel()[at]), r.stderr)
        if os.path.exists(os.path.join(d, "o.safetensors")):
            os.remove(os.path.join(d, "o.safetensors"))


def test_header_length_like_pickle(d):
    """A safetensors header of 0x280 or 0x380 bytes makes the file start with 0x80 0x02 /
    0x80 0x03, a pickle's PROTO opcode: such files are safetensors, not legacy pickles."""
    paths = []
    for i, hlen in enumerate((0x280, 0x380, 0x480)):
        data = np.arange(6, dtype=np.float32) * (i + 1)
        hdr = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
        hdr += b" " * (hlen - len(hdr))
        paths.append(os.path.join(d, f"m{i}.safetensors"))
        with open(paths[-1], "wb") as f:
            f.write(hlen.to_bytes(8, "little") + hdr + data.tobytes())
    out = os.path.join(d, "o.safetensors")
    r = run("merge", "-q", "-b", paths[0], "-m", paths[1], "-m", paths[2], "-M", "average", "-o", out)
    got = st.read_file(out)[0]["w"].to_f64().ravel() if r.returncode == 0 else None
    check("files whose header length starts like a pickle (0x80 0x02..0x04) are read as safetensors",
          r.returncode == 0 and np.array_equal(got, np.arange(6) * 2.5), r.stderr)


def main():
    test_help()
    return run_groups([test_example, test_yaml_equivalence, test_usage_errors, test_report,
                       test_stats, test_stale_temporaries, test_output_overflow,
                       test_header_length_like_pickle], "acem-cli-")


if __name__ == "__main__":
    sys.exit(main())
