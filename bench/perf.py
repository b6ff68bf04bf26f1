#!/usr/bin/python3
"""acem's performance against references measured on the same machine in the same run.

usage: perf.py ACEM_BINARY [--runs 3] [--threads N] [--quick] [--skip-llama] [--skip-io]

Workloads (synthetic checkpoints from make_synthetic.py, named shapes):
  ace gpt2-2blocks T=7, homogeneous and heterogeneous task strengths, and ace
  llama7b-block T=3: acem (files in -> file out) against the PyTorch transcription of the
  reference's operation sequence (ace_vs_torch.py) on tensors already in memory; both are
  compared with a float64 evaluation (tests/oracle/ace_family.py), which acem must match to
  1e-4 (relative Frobenius of the merged deltas; a row past it is flagged).
  task_arithmetic and ties on a 2 GiB float32 model (+3 experts) against `cat FILES`.
Columns: reference seconds, acem seconds (medians), ratio, acem's dense-phase rate
(flops of acem's own formulation / seconds spent in the method, from --report) and that
rate as a share of the machine's sgemm (numpy float32 matmul on the same OpenBLAS, same
threads), peak RSS (/usr/bin/time -v) against (T + 2) x largest tensor + n x n
workspaces + 64 MiB.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "oracle"))
import safetensors_np as st  # noqa: E402

MiB = 1 << 20


def sgemm_gflops(threads):
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    n = 4096  # large enough for OpenBLAS to reach its peak
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / best / 1e9


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rel(x, y):
    """Relative Frobenius difference of x from y."""
    return np.linalg.norm(x - y) / np.linalg.norm(y)


def run_acem(cmd):
    """Runs acem under /usr/bin/time -v; returns (seconds, peak RSS bytes)."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"acem failed: {r.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
    return dt, rss


def ace_flops(m, n, T, hetero):
    """Flops of acem's formulation in the dense phases (src/methods/ace.c, cov.c)."""
    per_task = m * n * n + (3 * m * m * n if 2 * m < n else 2 * m * n * n) + (2 * n * n if hetero else 0)
    return T * per_task + (2 * m * n * n if hetero else 0) + 2 * n ** 3 / 3 + 2 * m * n * n


def bench_ace(acem, shape, T, hetero, runs, threads, quick):
    from ace_vs_torch import ace_reference, load
    from ace_family import ace_delta
    import torch
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="acem-perf-") as d:
        subprocess.run([sys.executable, os.path.join(HERE, "make_synthetic.py"), d, "--shape", shape,
                        "--experts", str(T), "--dtype", "F32", "--hetero", str(hetero), "--flat"],
                       check=True, stdout=subprocess.DEVNULL)
        base = load(os.path.join(d, "base"))
        experts = [load(os.path.join(d, f"expert-{t + 1}")) for t in range(T)]
        names = [k for k, v in base.items() if v.ndim == 2]
        deltas = {k: [torch.from_numpy(e[k] - base[k]) for e in experts] for k in names}
        del experts
        ref_times, ref = [], None
        for _ in range(1 if quick else runs):
            t0 = time.perf_counter()
            ref = {k: ace_reference(deltas[k]) for k in names}
            ref_times.append(time.perf_counter() - t0)
        del deltas
        out, rep = os.path.join(d, "merged.safetensors"), os.path.join(d, "report.json")
        cmd = [acem, "merge", "-q", "-f", "-b", os.path.join(d, "base"), "-M", "ace", "-o", out,
               "--threads", str(threads), "--report", rep] + sum((["-m", os.path.join(d, f"expert-{t + 1}")]
                                                                   for t in range(T)), [])
        acem_runs = [run_acem(cmd) for _ in range(runs)]
        experts = [load(os.path.join(d, f"expert-{t + 1}")) for t in range(T)]
        report = {t["name"]: t for t in json.load(open(rep))["tensors"]}
        merged = st.read_file(out)[0]
        got = {k: merged[k].to_f64().reshape(base[k].shape) - base[k] for k in names}

        def stored(k, delta):
            """The delta as a float32 file holds it: W0 + delta rounded to float32, less W0. The
            deltas are ~1e-3 of the weights, so this rounding alone is up to ~7e-5 relative."""
            return (base[k] + delta).astype(np.float32).astype(np.float64) - base[k]
        ref = {k: stored(k, ref[k].double().numpy()) for k in names}
        diff = {k: rel(got[k], ref[k]) for k in names}
        # The float64 evaluation (tests/oracle, written from the spec) decides which side a
        # difference belongs to: every tensor when they are small, else the worst one.
        small = sum(base[k].size for k in names) <= 1 << 24
        checked = names if small else [max(names, key=diff.get)]
        f64 = {k: stored(k, ace_delta([e[k].astype(np.float64) - base[k] for e in experts])) for k in checked}
        flops = sum(ace_flops(*base[k].shape, T, report[k].get("branch") == "hetero") for k in names)
        # dense phases: the method's time less the refinement SVD (hetero branch)
        method_s = sum(report[k]["method_seconds"] - report[k].get("svd_seconds", 0) for k in names)
        largest = max(v.nbytes for v in base.values())
        # ACE's workspaces: S and P (n x n), and K (m x m) where (C C^T) C is the cheaper order
        ws = max(4 * (2 * n * n + (m * m if 2 * m < n else 0))
                 for m, n in (v.shape for v in base.values() if v.ndim == 2))
        branches = sorted({report[k].get("branch") for k in names})
        return dict(workload=f"ace {shape} T={T} {'/'.join(branches)}", ref=statistics.median(ref_times),
                    acem=statistics.median(r[0] for r in acem_runs), flops=flops, method_s=method_s,
                    rss=max(r[1] for r in acem_runs), bound=(T + 2) * largest + ws + 64 * MiB,
                    diff=max(diff.values()), f64=max(rel(got[k], f64[k]) for k in checked),
                    ref_f64=max(rel(ref[k], f64[k]) for k in checked), f64_of="all" if small else "worst")


def write_big_model(path, n_tensors, numel, seed):
    rng = np.random.default_rng(seed)
    block = rng.standard_normal(numel, dtype=np.float32) * np.float32(0.02)
    hdr, off = {}, 0
    for i in range(n_tensors):
        hdr[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [numel // 4096, 4096], "data_offsets": [off, off + 4 * numel]}
        off += 4 * numel
    hb = json.dumps(hdr).encode()
    hb += b" " * (-(8 + len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for i in range(n_tensors):
            f.write((block * np.float32(1 + 0.01 * i)).tobytes())


def bench_io(acem, runs, threads, quick):
    rows = []
    n_tensors, numel = (8, 1 << 24) if quick else (32, 1 << 24)  # 512 MiB or 2 GiB per model
    with tempfile.TemporaryDirectory(prefix="acem-io-", dir=os.environ.get("ACEM_BENCH_DIR")) as d:
        files = [os.path.join(d, f"{name}.safetensors") for name in ("base", "e1", "e2", "e3")]
        for i, f in enumerate(files):
            write_big_model(f, n_tensors, numel, i)
        total = sum(os.path.getsize(f) for f in files)

        def cat():
            subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
        cat()  # warm the page cache
        out = os.path.join(d, "out.safetensors")
        methods = ("task_arithmetic", "ties")
        cat_times, res = [], {m: [] for m in methods}
        # Runs interleave cat and the methods: this VM's page-cache read rate drifts (cat took
        # 0.72 to 1.24 s on the same files within an hour), so each run of each side sees the
        # same conditions as its neighbours.
        for _ in range(runs):
            cat_times.append(timed(cat))
            for method in methods:
                # untimed: deleting the previous 2 GiB output (freeing its blocks) is not the
                # merge's work, and on a VM's disk it slows whatever runs next
                if os.path.exists(out):
                    os.unlink(out)
                os.sync()
                res[method].append(run_acem([acem, "merge", "-q", "-f", "-b", files[0], "-m", files[1], "-m", files[2],
                                             "-m", files[3], "-M", method, "-o", out, "--threads", str(threads)]))
        cat_s = statistics.median(cat_times)
        for method in methods:
            acem_s = statistics.median(r[0] for r in res[method])
            rows.append(dict(workload=f"{method} 4 x {total // 4 // MiB} MiB f32", ref=cat_s, acem=acem_s,
                             rss=max(r[1] for r in res[method]), bound=5 * 4 * numel + 64 * MiB,
                             gbps=total / acem_s / 1e9, cat_gbps=total / cat_s / 1e9))
        os.unlink(out)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("acem")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--only-llama", action="store_true", help="just the llama7b-block rows")
    ap.add_argument("--skip-io", action="store_true")
    ap.add_argument("--only-io", action="store_true", help="just the task_arithmetic/ties I/O rows")
    a = ap.parse_args()
    acem = os.path.abspath(a.acem)
    peak = sgemm_gflops(a.threads)
    print(f"machine: {os.cpu_count()} cores, {a.threads} threads; sgemm (numpy float32 on OpenBLAS) {peak:.1f} GFLOP/s")
    print(f"medians of {a.runs} runs{' (reference: 1 run, --quick)' if a.quick else ''}\n")
    print(f"{'workload':<36} {'ref s':>8} {'acem s':>8} {'ratio':>6} {'GFLOP/s':>8} {'% sgemm':>8} "
          f"{'peak RSS':>9} {'bound':>9} {'vs ref':>8} {'vs f64':>8} {'ref-f64':>8}")
    rows = []
    gpt2 = [] if a.only_llama else [("gpt2-2blocks", 7, 0.0), ("gpt2-2blocks", 7, 1.5)]
    llama = [] if a.skip_llama else [("llama7b-block", 3, 0.0), ("llama7b-block", 3, 1.5)]
    ace_rows = [] if a.only_io else gpt2 + llama
    a.skip_io = a.skip_io or a.only_llama
    for shape, T, h in ace_rows:
        r = bench_ace(acem, shape, T, h, a.runs, a.threads, a.quick)
        rate = r["flops"] / r["method_s"] / 1e9
        print(f"{r['workload']:<36} {r['ref']:8.2f} {r['acem']:8.2f} {r['ref'] / r['acem']:6.2f} {rate:8.1f} "
              f"{100 * rate / peak:7.0f}% {r['rss'] / MiB:7.0f}Mi {r['bound'] / MiB:7.0f}Mi {r['diff']:8.1e} "
              f"{r['f64']:8.1e} {r['ref_f64']:8.1e} ({r['f64_of']}){'' if r['f64'] <= 1e-4 else '  > 1e-4!'}",
              flush=True)
        rows.append(r)
    if not a.skip_io:
        for r in bench_io(acem, a.runs, a.threads, a.quick):
            print(f"{r['workload']:<36} {r['ref']:8.2f} {r['acem']:8.2f} {r['ref'] / r['acem']:6.2f} "
                  f"{'-':>8} {'-':>8} {r['rss'] / MiB:7.0f}Mi {r['bound'] / MiB:7.0f}Mi {'-':>8} {'-':>8} {'-':>8}"
                  f"   read {r['gbps']:.2f} GB/s vs cat {r['cat_gbps']:.2f} GB/s", flush=True)
    print("\nref s: PyTorch transcription of the reference (ace) or `cat FILES > /dev/null` from the page cache (I/O rows);"
          "\nratio: ref / acem (> 1: acem faster); GFLOP/s: flops of acem's formulation / seconds in its dense"
          "\nphases (the method's time less the refinement SVD, both from --report);"
          "\nvs ref / vs f64 / ref-f64: relative Frobenius differences of the merged deltas, acem against the"
          "\nreference, acem against a float64 evaluation (tests/oracle/ace_family.py) and the reference against"
          "\nit, each side as a float32 checkpoint stores W0 + delta; the float64 evaluation covers every 2-D"
          "\ntensor (all) or the one farthest from the reference (worst).")


if __name__ == "__main__":
    main()
