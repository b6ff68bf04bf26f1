#!/usr/bin/python3
"""acem's ace against a PyTorch transcription of the reference implementation's operation
sequence (explicit trace(D^T D), Gram matrices by matmul, C @ Sigma, an explicit inverse,
a full thin SVD), on the same inputs, same machine, same thread count.

usage: ace_vs_torch.py ACEM_BINARY [--shape gpt2-2blocks] [--experts 7] [--runs 3] [--threads 2]

Prints, per branch (homogeneous: equal task strengths; heterogeneous: strengths spread over
three decades), the median wall time of each side, the ratio, and the relative Frobenius
difference of the merged deltas (must be <= 1e-4). The reference side times compute only,
on tensors already in memory; acem's time is files in -> file out.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "oracle"))
import safetensors_np as st  # noqa: E402

TINY, EPS, KFRAC, THRESHOLD = 1e-12, 1e-2, 0.3, 0.3


def ace_reference(deltas):
    """The reference's operation sequence for one 2-D tensor (ace-merging.md), float32."""
    T = len(deltas)
    n = deltas[0].shape[1]
    eye = torch.eye(n)
    s = torch.stack([torch.trace(D.T @ D) for D in deltas])
    lg = torch.log(s + TINY)
    gamma = lg.var(unbiased=True) / (lg.mean() ** 2 + TINY)
    hetero = bool(gamma > THRESHOLD)
    P = torch.zeros(n, n)
    Q = torch.zeros_like(deltas[0])
    sum_s = torch.zeros(n, n)
    covs = []
    for D in deltas:
        C = D - D.mean(dim=0, keepdim=True)
        G = C.T @ C
        tau = torch.trace(G) + TINY
        S, e = (G / tau, EPS / tau) if hetero else (G, EPS)
        P += S + e * eye
        Q += C @ (S + e * eye)
        sum_s += S
        covs.append(S)
    c = sum_s.mean(dim=0)
    if hetero:
        c = c / (s.mean() + TINY)
    A = P + c.unsqueeze(0)
    M0 = Q @ torch.linalg.inv(A)
    if not hetero:
        return M0
    Pbar = P / T
    R = sum(D @ (S - Pbar) for D, S in zip(deltas, covs))
    U, sig, Vh = torch.linalg.svd(R + M0, full_matrices=False)
    k = int(min(U.shape[0], Vh.shape[1]) * KFRAC)
    return M0 + sig[:k].mean() * (U[:, :k] @ Vh[:k])


def load(d):
    return {k: v.to_f64().reshape(v.shape).astype(np.float32) for k, v in st.read_model(d).items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("acem")
    ap.add_argument("--shape", default="gpt2-2blocks")
    ap.add_argument("--experts", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"ace on {a.shape}, T = {a.experts}, {a.threads} threads, median of {a.runs} runs")
    print(f"{'branch':<8} {'reference s':>12} {'acem s':>8} {'ratio':>6} {'max rel diff':>13}")
    for branch, hetero in (("homo", 0.0), ("hetero", 1.5)):
        with tempfile.TemporaryDirectory(prefix="acem-bench-") as d:
            subprocess.run([sys.executable, os.path.join(HERE, "make_synthetic.py"), d, "--shape", a.shape,
                            "--experts", str(a.experts), "--dtype", "F32", "--hetero", str(hetero), "--flat"],
                           check=True, stdout=subprocess.DEVNULL)
            base = load(os.path.join(d, "base"))
            experts = [load(os.path.join(d, f"expert-{t + 1}")) for t in range(a.experts)]
            names = [k for k, v in base.items() if v.ndim == 2]
            deltas = {k: [torch.from_numpy(e[k] - base[k]) for e in experts] for k in names}
            ref_times, ref = [], {}
            for _ in range(a.runs):
                t0 = time.perf_counter()
                ref = {k: ace_reference(deltas[k]) for k in names}
                ref_times.append(time.perf_counter() - t0)
            out = os.path.join(d, "merged.safetensors")
            cmd = [a.acem, "merge", "-q", "-f", "-b", os.path.join(d, "base"), "-M", "ace", "-o", out,
                   "--threads", str(a.threads)]
            for t in range(a.experts):
                cmd += ["-m", os.path.join(d, f"expert-{t + 1}")]
            acem_times = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                acem_times.append(time.perf_counter() - t0)
            merged = st.read_file(out)[0]
            diff = max(np.linalg.norm(merged[k].to_f64().reshape(base[k].shape) - base[k] - ref[k].double().numpy())
                       / np.linalg.norm(ref[k].double().numpy()) for k in names)
            r, c = statistics.median(ref_times), statistics.median(acem_times)
            print(f"{branch:<8} {r:12.2f} {c:8.2f} {r / c:6.2f} {diff:13.2e}")


if __name__ == "__main__":
    main()
