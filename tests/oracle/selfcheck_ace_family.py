#!/usr/bin/python3
"""Self-checks of the float64 oracle tests/oracle/ace_family.py (no acem needed).

Usage: /usr/bin/python3 tests/oracle/selfcheck_ace_family.py [--calibrate]
  --calibrate: also evaluate the same formulas in float32 (numpy's single
  precision LAPACK) on the golden test's shapes and print the relative
  Frobenius error vs float64: what a plain f32 implementation reaches.
Last line: "N passed, M failed".
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ace_family as A  # noqa: E402

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s %s" % (name, detail))
    else:
        failed += 1
        print("FAIL %s %s" % (name, detail))


def rel(a, b):
    nb = np.linalg.norm(b)
    return np.linalg.norm(a - b) / (nb if nb > 0 else 1.0)


def rand_ds(rng, T, shape, scales=None):
    scales = scales or [0.02] * T
    return [rng.normal(0, s, size=shape) for s in scales]


def main(argv):
    rng = np.random.default_rng(7)

    # ACE: optimised transcription == literal transcription (explicit inverse)
    for shape in [(24, 40), (56, 20), (32, 32), (3, 40), (40, 2), (1, 16), (12, 12)]:
        for T, scales in [(3, None), (2, [0.01, 10.0]), (4, [0.02, 0.02, 5.0, 5.0]),
                          (5, [0.02, 0.03, 0.04, 0.02, 0.01])]:
            ds = rand_ds(rng, T, shape, scales)
            info = {}
            a = A.ace_delta(ds, info=info)
            b = A.ace_delta_plain(ds)
            check("ace optimised == literal %s T=%d" % (shape, T), rel(a, b) < 1e-9,
                  "rel %.2e gamma %.3g %s k=%d" % (rel(a, b), info["gamma"], info["branch"],
                                                   info["k"]))

    # ACE identical experts: gamma 0, homo, result independent of T
    d = rng.normal(0, 0.02, size=(20, 30))
    i2, i5 = {}, {}
    a2 = A.ace_delta([d] * 2, info=i2)
    a5 = A.ace_delta([d] * 5, info=i5)
    check("ace identical experts: homo, gamma 0, T-independent",
          i2["branch"] == "homo" and abs(i2["gamma"]) < 1e-20 and rel(a5, a2) < 1e-10,
          "gamma %g, rel(T=5,T=2) %.2e, ||Delta||/||D|| %.3f"
          % (i2["gamma"], rel(a5, a2), np.linalg.norm(a2) / np.linalg.norm(d)))
    # ... and with eps -> 0 and a prior that vanishes in the row space, M0 -> C
    # (not exact because of the prior c; only check it is in the right ballpark)
    C = d - d.mean(axis=0)
    check("ace identical experts: Delta close to the centred delta",
          rel(a2, C) < 0.5, "rel(Delta, C) %.3f" % rel(a2, C))

    # ACE k == 0 in the hetero branch -> Delta = M0
    ds = rand_ds(rng, 2, (12, 20), [0.01, 30.0])
    info = {}
    a = A.ace_delta(ds, k_frac=0.01, info=info)
    info2 = {}
    a_big = A.ace_delta(ds, k_frac=0.3, info=info2)
    check("ace hetero k=0 skips refinement", info["branch"] == "hetero" and info["k"] == 0
          and np.all(np.isfinite(a)) and rel(a, a_big) > 1e-3,
          "gamma %.3g, k %d; with k_frac 0.3: k %d" % (info["gamma"], info["k"], info2["k"]))

    # ACE all-zero expert: tau = tiny -> e_t = eps/tiny = 1e10 (reference quirk)
    ds = rand_ds(rng, 3, (16, 24))
    ds[0] = np.zeros_like(ds[0])
    info = {}
    a = A.ace_delta(ds, info=info)
    check("ace zero expert: finite (hetero, e_t = 1e10 quirk)", np.all(np.isfinite(a)),
          "gamma %.3g %s, max|Delta| %.3g (vs max|D| %.3g)"
          % (info["gamma"], info["branch"], np.abs(a).max(), max(np.abs(x).max() for x in ds)))

    # ACE 1 x n: centred deltas are 0 -> Delta 0
    ds = rand_ds(rng, 3, (1, 16), [0.01, 1.0, 100.0])
    a = A.ace_delta(ds)
    check("ace 1xn -> zero delta", np.all(a == 0))

    # Iso-C: all singular values of Delta equal, = mean(sigma(S))
    for shape in [(24, 40), (56, 20), (32, 32)]:
        ds = rand_ds(rng, 4, shape)
        a = A.iso_c_delta(ds)
        sv = np.linalg.svd(a, compute_uv=False)
        s0 = np.linalg.svd(sum(ds), compute_uv=False).mean()
        check("iso_c flat spectrum %s" % (shape,), np.ptp(sv) < 1e-12 * sv.max()
              and abs(sv[0] - s0) < 1e-12 * s0, "spread %.2e" % (np.ptp(sv) / sv.max()))

    # TSV: orthonormal U' / V'; disjoint supports -> sum of truncated deltas
    ds = rand_ds(rng, 3, (30, 45))
    k = 30 // 3
    Us = np.concatenate([np.linalg.svd(d, full_matrices=False)[0][:, :k] for d in ds], axis=1)
    Up = A.polar(Us)
    check("tsv polar factor orthonormal (kT=%d <= m=30)" % (3 * k),
          np.abs(Up.T @ Up - np.eye(3 * k)).max() < 1e-12)
    T, m, n = 3, 36, 48
    ds = []
    trunc = np.zeros((m, n))
    k = min(m, n) // T
    for t in range(T):
        d = np.zeros((m, n))
        d[t * 12:(t + 1) * 12, t * 16:(t + 1) * 16] = rng.normal(0, 1, (12, 16))
        U, s, Vt = np.linalg.svd(d)
        trunc += (U[:, :k] * s[:k]) @ Vt[:k]
        ds.append(d)
    a = A.tsv_delta(ds)
    check("tsv disjoint supports == sum of truncated deltas", rel(a, trunc) < 1e-10,
          "rel %.2e" % rel(a, trunc))
    ds = rand_ds(rng, 2, (10, 40))
    a = A.tsv_delta(ds)
    check("tsv T=2 finite", np.all(np.isfinite(a)))

    # WUDI: ridge -> 0 on full-rank inputs == least squares of the stated objective
    for shape, T in [((40, 12), 3), ((24, 40), 3), ((16, 16), 2)]:
        ds = rand_ds(rng, T, shape, [0.02 * (t + 1) for t in range(T)])
        a = A.wudi_delta(ds, ridge=1e-13)
        # minimise sum_t ||(M - Dt) Dt^T||^2 / ||Dt||^2
        X = np.concatenate([d.T / np.linalg.norm(d) for d in ds], axis=1)   # n x (T m)
        Y = np.concatenate([d @ d.T / np.linalg.norm(d) for d in ds], axis=1)  # m x (T m)
        Mls = np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T
        check("wudi ridge->0 == least squares %s T=%d" % (shape, T), rel(a, Mls) < 1e-7,
              "rel %.2e" % rel(a, Mls))
    # WUDI zero delta skipped == WUDI without it
    ds = rand_ds(rng, 3, (20, 30))
    a = A.wudi_delta(ds[:2])
    b = A.wudi_delta(ds[:2] + [np.zeros((20, 30))])
    check("wudi zero delta is skipped", rel(a, b) < 1e-14)

    # ActMat: full-rank A == solve; rank-deficient == numpy pinv
    ds = rand_ds(rng, 3, (40, 12))
    a = A.actmat_delta(ds, A.MACH_EPS["f64"])
    Am = sum(d.T @ d for d in ds)
    B = sum(d @ d.T @ d for d in ds)
    check("actmat full rank == solve", rel(a, np.linalg.solve(Am.T, B.T).T) < 1e-10)
    for me in ("f32", "f64"):
        ds = rand_ds(rng, 2, (6, 40))
        info = {}
        a = A.actmat_delta(ds, A.MACH_EPS[me], info)
        Am = sum(d.T @ d for d in ds)
        B = sum(d @ d.T @ d for d in ds)
        ref = B @ np.linalg.pinv(Am, rcond=40 * A.MACH_EPS[me], hermitian=True)
        check("actmat rank-deficient == pinv (%s cut-off)" % me, rel(a, ref) < 1e-9,
              "rank %d, min kept/cut %.3g, max dropped/cut %.3g"
              % (info["rank"], info["min_kept_over_cut"], info["max_dropped_over_cut"]))
        # identical experts: M = D D^T D (D^T D)^+ = D
        d = ds[0]
        a = A.actmat_delta([d, d, d], A.MACH_EPS[me])
        check("actmat identical experts == D (%s)" % me, rel(a, d) < 1e-9, "rel %.2e" % rel(a, d))

    # Iso-CTS: ranks; common_frac 1 == iso_c; stacked bases orthonormal
    for (r, T), exp in {(10, 2): (8, 1), (3, 2): (3, 0), (768, 8): (616, 19), (64, 3): (52, 4),
                        (6, 2): (4, 1), (4, 2): (4, 0), (20, 8): (20, 0)}.items():
        got = A.iso_cts_ranks(r, T, 0.8)
        check("iso_cts ranks r=%d T=%d" % (r, T), got == exp, "%r (expect %r)" % (got, exp))
    ds = rand_ds(rng, 3, (24, 40))
    a = A.iso_cts_delta(ds, common_frac=1.0)
    check("iso_cts common_frac=1 == iso_c", rel(a, A.iso_c_delta(ds)) < 1e-12)
    a = A.iso_cts_delta(ds)
    sv = np.linalg.svd(a, compute_uv=False)
    check("iso_cts flat spectrum", np.ptp(sv) < 1e-12 * sv.max())

    # CART: T=2 -> residuals opposite -> low-rank parts cancel; rank_ratio 1 -> mean
    ds = rand_ds(rng, 2, (24, 40))
    check("cart T=2 == mean", rel(A.cart_delta(ds), (ds[0] + ds[1]) / 2) < 1e-12)
    ds = rand_ds(rng, 4, (24, 40))
    check("cart rank_ratio=1 == mean", rel(A.cart_delta(ds, 1.0), sum(ds) / 4) < 1e-12)
    ds = rand_ds(rng, 4, (24, 40))
    a = A.cart_delta(ds, 0.08)
    check("cart k=2 differs from mean", rel(a, sum(ds) / 4) > 1e-3)

    # covariance axis: input == transpose, method, transpose back (conv1d names only)
    w0 = rng.normal(0, 0.5, (16, 48))
    ws = [w0 + rng.normal(0, 0.02 * (t + 1), (16, 48)) for t in range(3)]
    for meth in ("ace", "wudi", "actmat", "tsv"):
        a = A.merge_delta(meth, "transformer.h.0.attn.c_attn.weight", w0, ws,
                          covariance_axis="input")
        b = A.merge_delta(meth, "x", w0.T, [w.T for w in ws]).T
        c = A.merge_delta(meth, "transformer.h.0.attn.c_attn.weight", w0, ws)
        c2 = A.merge_delta(meth, "transformer.wte.weight", w0, ws, covariance_axis="input")
        if meth in A.COVARIANCE_METHODS:
            ok = rel(a, b) < 1e-12 and rel(a, c) > 1e-6 and rel(c2, c) == 0
        else:
            ok = rel(a, c) == 0
        check("covariance_axis=input for %s" % meth, ok)

    # non-2-D and text_projection -> mean
    w0 = rng.normal(0, 0.5, (4, 5, 6))
    ws = [w0 + rng.normal(0, 0.02, w0.shape) for _ in range(3)]
    for meth in A.METHODS:
        a = A.merge_delta(meth, "conv", w0, ws)
        check("%s 3-D -> mean" % meth, rel(a, sum(w - w0 for w in ws) / 3) < 1e-15)
    w0 = rng.normal(0, 0.5, (8, 6))
    ws = [w0 + rng.normal(0, 0.02, w0.shape) for _ in range(3)]
    a = A.merge_delta("ace", "visual.text_projection", w0, ws)
    check("ace text_projection -> mean", rel(a, sum(w - w0 for w in ws) / 3) < 1e-15)

    if "--calibrate" in argv:
        calibrate(rng)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


def calibrate(rng):
    """Plain float32 evaluation of the same formulas vs float64."""
    print("\ncalibration: float32 formulas vs float64 (rel. Frobenius of Delta)")
    shapes = [(24, 40), (56, 20), (32, 32), (3, 40), (40, 2), (96, 160), (768, 2304),
              (3072, 768), (50257, 64)]
    for shape in shapes:
        for T, prof in [(2, "homo"), (4, "homo"), (8, "homo"), (2, "hetero"), (4, "hetero")]:
            if prof == "homo":
                scales = [0.02 * (1 + 0.1 * t) for t in range(T)]
            else:
                scales = [0.01 * (1000.0 if t % 2 else 1.0) for t in range(T)]
            ds = [np.asarray(x, dtype=np.float32).astype(np.float64)
                  for x in rand_ds(rng, T, shape, scales)]
            row = []
            for meth in A.METHODS:
                if prof == "hetero" and meth != "ace":
                    continue
                kw = {}
                info = {}
                f = {"ace": A.ace_delta, "wudi": A.wudi_delta, "tsv": A.tsv_delta,
                     "iso_c": A.iso_c_delta, "iso_cts": A.iso_cts_delta,
                     "cart": A.cart_delta}.get(meth)
                if meth == "actmat":
                    ref = A.actmat_delta(ds, A.MACH_EPS["f32"], info)
                    got = A.actmat_delta(ds, A.MACH_EPS["f32"], dt=np.float32)
                else:
                    ref = f(ds, info=info, **kw)
                    got = f(ds, dt=np.float32, **kw)
                e = rel(got.astype(np.float64), ref)
                extra = ""
                if meth == "ace":
                    extra = "[%s g=%.2g]" % (info["branch"], info["gamma"])
                row.append("%s %.1e%s" % (meth, e, extra))
            print("%-12s T=%d %-6s: %s" % (shape, T, prof, ", ".join(row)))
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
