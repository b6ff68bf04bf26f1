"""ggml's reference K-quant quantisers (quantize_row_q2_K_ref, _q3_K_ref, _q4_K_ref, _q5_K_ref,
_q6_K_ref, _q8_K_ref) in
numpy float32, written from the algorithm for acem's tests, independently of src/formats/quant.c.

Every float32 operation is done in the order ggml's C code does it (sums run sequentially,
not numpy's pairwise .sum), with no fused multiply-add, so that the blocks come out bit for
bit. Rounding to an integer is round half to even, as ggml's nearest_int."""

import numpy as np

F = np.float32
EPS = F(1e-15)  # ggml's GROUP_MAX_EPS


def _seq_sum(terms):
    """(rows, n) float32 -> the float32 sums of each row, added left to right."""
    acc = np.zeros(terms.shape[0], F)
    for i in range(terms.shape[1]):
        acc = acc + terms[:, i]
    return acc


def _rint(v):
    return np.rint(v).astype(np.int64)


def _symmetric(X, nmax):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, NULL) for each row of X -> (scale, L)."""
    rows = np.arange(len(X))
    idx = np.argmax(np.abs(X), axis=1)  # the first of the largest magnitude
    amax, mx = np.abs(X)[rows, idx], X[rows, idx]
    zero = amax < EPS
    mx = np.where(zero, F(1), mx)
    W = X * X

    def trial(iscale):
        lf = np.clip(_rint(iscale[:, None] * X), -nmax, nmax - 1).astype(F)
        return lf, _seq_sum(W * X * lf), _seq_sum(W * lf * lf)

    with np.errstate(divide="ignore", invalid="ignore"):
        lf, sx, s2 = trial(F(-nmax) / mx)
        L = lf.astype(np.int64) + nmax
        scale = np.where(s2 != 0, sx / s2, F(0)).astype(F)
        best = scale * sx
        for i in list(range(-9, 0)) + list(range(1, 10)):
            lf, sx, s2 = trial(-(F(nmax) + F(0.1) * F(i)) / mx)
            upd = (s2 > 0) & (sx * sx > best * s2)
            L[upd] = lf[upd].astype(np.int64) + nmax
            scale = np.where(upd, sx / s2, scale).astype(F)
            best = np.where(upd, scale * sx, best).astype(F)
    scale[zero] = 0
    L[zero] = 0
    return scale, L


def _affine(X, W, nmax, rmin, rdelta, nstep, mad=False):
    """make_qkx2_quants(n, nmax, x, w, L, &min, Laux, rmin, rdelta, nstep, mad) for each row
    -> (scale, the_min, L); mad: the error is |diff|, else diff^2."""
    def err_of(diff):
        return np.abs(diff) if mad else diff * diff

    mn, mx, sum_w, sum_x = X[:, 0].copy(), X[:, 0].copy(), W[:, 0].copy(), W[:, 0] * X[:, 0]
    for i in range(1, X.shape[1]):
        mn = np.where(X[:, i] < mn, X[:, i], mn)
        mx = np.where(X[:, i] > mx, X[:, i], mx)
        sum_w = sum_w + W[:, i]
        sum_x = sum_x + W[:, i] * X[:, i]
    mn = np.where(mn > 0, F(0), mn)
    flat = mx == mn
    span = np.where(flat, F(1), mx - mn)
    iscale = F(nmax) / span
    scale = F(1) / iscale
    lf = np.clip(_rint(iscale[:, None] * (X - mn[:, None])), 0, nmax).astype(F)
    L = lf.astype(np.int64)
    diff = scale[:, None] * lf + mn[:, None] - X
    best = _seq_sum(W * err_of(diff))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(nstep + 1):
            # min moves with every better trial, and the next trials' range with it
            span = np.where(flat, F(1), mx - mn)
            iscale = (F(rmin) + F(rdelta) * F(i) + F(nmax)) / span
            lf = np.clip(_rint(iscale[:, None] * (X - mn[:, None])), 0, nmax).astype(F)
            sum_l, sum_l2, sum_xl = _seq_sum(W * lf), _seq_sum(W * lf * lf), _seq_sum(W * lf * X)
            D = sum_w * sum_l2 - sum_l * sum_l
            ts = (sum_w * sum_xl - sum_x * sum_l) / D
            tm = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = tm > 0
            tm = np.where(pos, F(0), tm).astype(F)
            ts = np.where(pos, sum_xl / sum_l2, ts).astype(F)
            diff = ts[:, None] * lf + tm[:, None] - X
            err = _seq_sum(W * err_of(diff))
            upd = (D > 0) & (err < best) & ~flat
            L[upd] = lf[upd].astype(np.int64)
            best = np.where(upd, err, best).astype(F)
            scale = np.where(upd, ts, scale).astype(F)
            mn = np.where(upd, tm, mn).astype(F)
    scale[flat] = 0
    L[flat] = 0
    return scale, -mn, L


def _half(v):
    return np.asarray(v, F).astype(np.float16)


def quantize_q6_k(x):
    """float32 values (a multiple of 256) -> Q6_K blocks as bytes."""
    X = np.asarray(x, F).reshape(-1, 256)
    nb = len(X)
    scales, L = _symmetric(X.reshape(-1, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 256)
    rows = np.arange(nb)
    idx = np.argmax(np.abs(scales), axis=1)
    max_abs, max_scale = np.abs(scales)[rows, idx], scales[rows, idx]
    zero = max_abs < EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F(-128) / np.where(zero, F(1), max_scale)
        d16 = _half(F(1) / iscale)
        sc = np.minimum(127, _rint(iscale[:, None] * scales)).astype(np.int8)
        d = d16.astype(F)[:, None] * sc.astype(F)
        Xs = X.reshape(nb, 16, 16)
        q = np.clip(_rint(Xs / d[:, :, None]), -32, 31) + 32
    L = np.where((d != 0)[:, :, None], q, L.reshape(nb, 16, 16)).reshape(nb, 256)
    out = np.zeros((nb, 210), np.uint8)
    for h in range(2):
        Lh = L[:, 128 * h:128 * (h + 1)]
        a, b, c, e = Lh[:, 0:32], Lh[:, 32:64], Lh[:, 64:96], Lh[:, 96:128]
        out[:, 64 * h:64 * h + 32] = (a & 15) | (c & 15) << 4
        out[:, 64 * h + 32:64 * h + 64] = (b & 15) | (e & 15) << 4
        out[:, 128 + 32 * h:128 + 32 * h + 32] = (a >> 4) | (b >> 4) << 2 | (c >> 4) << 4 | (e >> 4) << 6
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = d16.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[zero] = 0
    return out.tobytes()


def _affine_k(x, nmax, rmin, nstep):
    """Q4_K / Q5_K: the 4 header bytes (d, dmin), the 12 scale bytes and the codes (nb, 256)."""
    X = np.asarray(x, F).reshape(-1, 256)
    nb = len(X)
    S = X.reshape(-1, 32)
    av_x = np.sqrt(_seq_sum(S * S) / F(32))
    W = av_x[:, None] + np.abs(S)
    scales, mins, L = _affine(S, W, nmax, rmin, 0.1, nstep)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)
    max_scale = np.maximum(scales.max(axis=1), F(0))
    max_min = np.maximum(mins.max(axis=1), F(0))
    with np.errstate(divide="ignore"):
        inv_s = np.where(max_scale > 0, F(63) / max_scale, F(0)).astype(F)
        inv_m = np.where(max_min > 0, F(63) / max_min, F(0)).astype(F)
    ls = np.minimum(_rint(inv_s[:, None] * scales) & 0xFF, 63)
    lm = np.minimum(_rint(inv_m[:, None] * mins) & 0xFF, 63)
    sc = np.zeros((nb, 12), np.int64)
    sc[:, 0:4], sc[:, 4:8] = ls[:, 0:4], lm[:, 0:4]
    sc[:, 8:12] = (ls[:, 4:8] & 15) | (lm[:, 4:8] & 15) << 4
    sc[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    sc[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    d16, dmin16 = _half(max_scale / F(63)), _half(max_min / F(63))
    d = d16.astype(F)[:, None] * ls.astype(F)
    dm = dmin16.astype(F)[:, None] * lm.astype(F)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(_rint((X.reshape(nb, 8, 32) + dm[:, :, None]) / d[:, :, None]), 0, nmax)
    L = np.where((d != 0)[:, :, None], q, L).reshape(nb, 256)
    head = np.zeros((nb, 16), np.uint8)
    head[:, 0:2] = d16.astype("<f2").view(np.uint8).reshape(-1, 2)
    head[:, 2:4] = dmin16.astype("<f2").view(np.uint8).reshape(-1, 2)
    head[:, 4:16] = sc
    return head, L


def quantize_q4_k(x):
    """float32 values (a multiple of 256) -> Q4_K blocks as bytes."""
    head, L = _affine_k(x, 15, -1.0, 20)
    qs = [L[:, 64 * j:64 * j + 32] | L[:, 64 * j + 32:64 * j + 64] << 4 for j in range(4)]
    return np.concatenate([head] + [q.astype(np.uint8) for q in qs], axis=1).tobytes()


def quantize_q5_k(x):
    """float32 values (a multiple of 256) -> Q5_K blocks as bytes: codes 0..31, the fifth bit
    of value l of sub-block j in bit j of qh[l]."""
    head, L = _affine_k(x, 31, -0.5, 15)
    qh = np.zeros((len(L), 32), np.int64)
    for j in range(8):
        qh |= (L[:, 32 * j:32 * j + 32] >> 4) << j
    qs = [(L[:, 64 * j:64 * j + 32] & 15) | (L[:, 64 * j + 32:64 * j + 64] & 15) << 4 for j in range(4)]
    return np.concatenate([head, qh.astype(np.uint8)] + [q.astype(np.uint8) for q in qs], axis=1).tobytes()


def _pack_low2(L):
    """(nb, 256) codes < 4 -> the 64 qs bytes: value 128 h + 32 k + l at bits 2k of qs[32 h + l]."""
    Lr = L.reshape(-1, 2, 4, 32)
    return (Lr[:, :, 0] | Lr[:, :, 1] << 2 | Lr[:, :, 2] << 4 | Lr[:, :, 3] << 6).reshape(-1, 64)


def quantize_q2_k(x):
    """float32 values (a multiple of 256) -> Q2_K blocks as bytes."""
    X = np.asarray(x, F).reshape(-1, 256)
    nb = len(X)
    S = X.reshape(-1, 16)
    scales, mins, L = _affine(S, np.abs(S), 3, -0.5, 0.1, 15, mad=True)
    scales, mins, L = scales.reshape(nb, 16), mins.reshape(nb, 16), L.reshape(nb, 16, 16)
    max_scale = np.maximum(scales.max(axis=1), F(0))
    max_min = np.maximum(mins.max(axis=1), F(0))
    with np.errstate(divide="ignore"):
        inv_s = np.where(max_scale > 0, F(15) / max_scale, F(0)).astype(F)
        inv_m = np.where(max_min > 0, F(15) / max_min, F(0)).astype(F)
    sc = (_rint(inv_s[:, None] * scales) | _rint(inv_m[:, None] * mins) << 4) & 0xFF
    d16, dmin16 = _half(max_scale / F(15)), _half(max_min / F(15))
    d = d16.astype(F)[:, None] * (sc & 15).astype(F)
    dm = dmin16.astype(F)[:, None] * (sc >> 4).astype(F)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(_rint((X.reshape(nb, 16, 16) + dm[:, :, None]) / d[:, :, None]), 0, 3)
    L = np.where((d != 0)[:, :, None], q, L).reshape(nb, 256)
    out = np.zeros((nb, 84), np.uint8)
    out[:, 0:16] = sc
    out[:, 16:80] = _pack_low2(L)
    out[:, 80:82] = d16.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 82:84] = dmin16.astype("<f2").view(np.uint8).reshape(-1, 2)
    return out.tobytes()


def _q3(X):
    """make_q3_quants(16, 4, x, L, do_rmse=true) for each row of X -> (scale, L): the codes at
    max / -4, then up to 5 passes over the values, each moving one code where that raises
    sumlx^2 / suml2 (w = x^2)."""
    nmax = 4
    rows = np.arange(len(X))
    idx = np.argmax(np.abs(X), axis=1)
    amax, mx = np.abs(X)[rows, idx], X[rows, idx]
    zero = amax < EPS
    mx = np.where(zero, F(1), mx)
    W = X * X
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l = np.clip(_rint((F(-nmax) / mx)[:, None] * X), -nmax, nmax - 1)
        sumlx, suml2 = _seq_sum(W * X * l.astype(F)), _seq_sum(W * l.astype(F) * l.astype(F))
        active = ~zero
        for _ in range(5):
            changed = np.zeros(len(X), bool)
            for i in range(X.shape[1]):
                w, xi, li = W[:, i], X[:, i], l[:, i].astype(F)
                slx = sumlx - w * xi * li
                sl2 = suml2 - w * li * li
                new = np.clip(_rint(np.where(slx > 0, xi * sl2 / slx, F(0))), -nmax, nmax - 1)
                nslx = slx + w * xi * new.astype(F)
                nsl2 = sl2 + w * new.astype(F) * new.astype(F)
                upd = (active & (slx > 0) & (new != l[:, i]) & (nsl2 > 0)
                       & (nslx * nslx * suml2 > sumlx * sumlx * nsl2))
                l[upd, i] = new[upd]
                sumlx = np.where(upd, nslx, sumlx).astype(F)
                suml2 = np.where(upd, nsl2, suml2).astype(F)
                changed |= upd
            active &= changed
        scale = np.where(suml2 > 0, sumlx / suml2, F(0)).astype(F)
    L = l + nmax
    scale[zero] = 0
    L[zero] = 0
    return scale, L


def quantize_q3_k(x):
    """float32 values (a multiple of 256) -> Q3_K blocks as bytes."""
    X = np.asarray(x, F).reshape(-1, 256)
    nb = len(X)
    scales, L = _q3(X.reshape(-1, 16))
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16)
    rows = np.arange(nb)
    idx = np.argmax(np.abs(scales), axis=1)
    max_scale = scales[rows, idx]
    zero = max_scale == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F(-32) / np.where(zero, F(1), max_scale)
        ls = np.clip(_rint(iscale[:, None] * scales), -32, 31) + 32
        d16 = _half(np.where(zero, F(0), F(1) / iscale))
    ls[zero] = 0
    sc = np.zeros((nb, 12), np.int64)
    for j in range(16):
        sc[:, j % 8] |= (ls[:, j] & 15) << (0 if j < 8 else 4)
        sc[:, 8 + j % 4] |= (ls[:, j] >> 4) << (2 * (j // 4))
    d = d16.astype(F)[:, None] * (ls - 32).astype(F)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(_rint(X.reshape(nb, 16, 16) / d[:, :, None]), -4, 3) + 4
    L = np.where((d != 0)[:, :, None], q, L).reshape(nb, 256)
    hm = np.zeros((nb, 32), np.int64)
    for bit in range(8):
        hm |= (L[:, 32 * bit:32 * bit + 32] > 3).astype(np.int64) << bit
    out = np.zeros((nb, 110), np.uint8)
    out[:, 0:32] = hm
    out[:, 32:96] = _pack_low2(L & 3)
    out[:, 96:108] = sc
    out[:, 108:110] = d16.astype("<f2").view(np.uint8).reshape(-1, 2)
    return out.tobytes()


def quantize_q8_k(x):
    """float32 values (a multiple of 256) -> Q8_K blocks as bytes (an all-zero block: all
    zero bytes, bsums included)."""
    X = np.asarray(x, F).reshape(-1, 256)
    nb = len(X)
    rows = np.arange(nb)
    idx = np.argmax(np.abs(X), axis=1)
    amax, mx = np.abs(X)[rows, idx], X[rows, idx]
    zero = amax == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F(-127) / np.where(zero, F(1), mx)
        q = np.minimum(127, _rint(iscale[:, None] * X))
        d = (F(1) / iscale).astype(F)
    q[zero] = 0
    d[zero] = 0
    out = np.zeros((nb, 292), np.uint8)
    out[:, 0:4] = d.astype("<f4").view(np.uint8).reshape(-1, 4)
    out[:, 4:260] = q.astype(np.int8).view(np.uint8)
    out[:, 260:292] = q.reshape(nb, 16, 16).sum(axis=2).astype("<i2").view(np.uint8).reshape(-1, 32)
    return out.tobytes()
