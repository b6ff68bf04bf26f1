"""Tiny, independent GGUF reader/writer in numpy (test oracle), written from the format's
description (ggml docs/gguf.md, ggml-common.h block layouts); it shares no code with acem.

File: "GGUF", u32 version, u64 n_tensors, u64 n_kv; key-values (string key, u32 value type,
value); tensor infos (string name, u32 n_dims, u64 ne[n_dims] (ne[0] fastest), u32 ggml
type, u64 offset relative to the data section); zero padding to the alignment
(general.alignment, default 32); the data section, each tensor at its offset.
Strings are u64 length + UTF-8 bytes. Everything little-endian.

Shapes here are row-major (ne reversed), like numpy's.  Quantised tensors come back as
`Quant(type, shape, blocks)`; `dequantize()` gives float32 values.  `quantize()` follows
ggml's reference quantisers (quantize_row_q8_0_ref, quantize_row_q4_0_ref) bit for bit.
"""

import struct
from collections import OrderedDict

import numpy as np

# value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}

# ggml types
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K = 0, 1, 2, 8, 12, 13, 14
GGML_Q5_0, GGML_Q5_1 = 6, 7
GGML_Q2_K, GGML_Q3_K, GGML_Q8_K = 10, 11, 15
GGML_I8, GGML_I16, GGML_I32, GGML_I64, GGML_F64, GGML_BF16 = 24, 25, 26, 27, 28, 30
PLAIN = {GGML_F32: "<f4", GGML_F16: "<f2", GGML_BF16: "<u2", GGML_F64: "<f8",
         GGML_I8: "i1", GGML_I16: "<i2", GGML_I32: "<i4", GGML_I64: "<i8"}
# (values per block, bytes per block)
BLOCK = {GGML_Q8_0: (32, 34), GGML_Q4_0: (32, 18), GGML_Q5_0: (32, 22), GGML_Q5_1: (32, 24), GGML_Q4_K: (256, 144), GGML_Q5_K: (256, 176),
         GGML_Q6_K: (256, 210), GGML_Q2_K: (256, 84), GGML_Q3_K: (256, 110), GGML_Q8_K: (256, 292)}
NAMES = {GGML_F32: "F32", GGML_F16: "F16", GGML_BF16: "BF16", GGML_F64: "F64", GGML_Q8_0: "Q8_0",
         GGML_Q4_0: "Q4_0", GGML_Q4_K: "Q4_K", GGML_Q5_K: "Q5_K", GGML_Q6_K: "Q6_K", GGML_I8: "I8",
         GGML_I16: "I16", GGML_I32: "I32", GGML_I64: "I64", GGML_Q5_0: "Q5_0", GGML_Q5_1: "Q5_1",
         GGML_Q2_K: "Q2_K", GGML_Q3_K: "Q3_K", GGML_Q8_K: "Q8_K"}


class FormatError(Exception):
    pass


class Quant:
    def __init__(self, gtype, shape, blocks):
        self.gtype, self.shape, self.blocks = gtype, tuple(shape), blocks

    def dequantize(self):
        return dequantize(self.gtype, self.blocks).reshape(self.shape)


# ------------------------------------------------------------ blocks --

def _half(b, at):
    return b[:, at:at + 2].copy().view("<f2").astype(np.float32)[:, 0]


def dequantize(gtype, raw):
    """Stored blocks (bytes) -> float32 values, computed in float32 like ggml."""
    be, bb = BLOCK[gtype]
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, bb)
    if gtype == GGML_Q8_0:
        d = _half(b, 0)[:, None]
        return (b[:, 2:].view(np.int8).astype(np.float32) * d).ravel()
    if gtype == GGML_Q4_0:
        d = _half(b, 0)[:, None]
        qs = b[:, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - np.float32(8)
        return (q * d).ravel()
    if gtype in (GGML_Q5_0, GGML_Q5_1):  # u32 qh: bit j is the fifth bit of value j
        m = gtype == GGML_Q5_1
        d = _half(b, 0)[:, None]
        qh = b[:, 2 + 2 * m:6 + 2 * m].copy().view("<u4")[:, 0]
        qs = b[:, 6 + 2 * m:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)
        q |= ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32) << 4
        if m:
            return (q.astype(np.float32) * d + _half(b, 2)[:, None]).ravel()
        return ((q - 16).astype(np.float32) * d).ravel()
    if gtype in (GGML_Q4_K, GGML_Q5_K):
        d, dmin = _half(b, 0)[:, None], _half(b, 2)[:, None]
        s = b[:, 4:16].astype(np.int32)
        sc = np.empty((len(b), 8), np.int32)
        mn = np.empty((len(b), 8), np.int32)
        sc[:, :4], mn[:, :4] = s[:, 0:4] & 63, s[:, 4:8] & 63
        sc[:, 4:] = (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)
        mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
        qs = b[:, 16:] if gtype == GGML_Q4_K else b[:, 48:]
        qs = qs.reshape(-1, 4, 32)  # four groups of 32 bytes: 64 values each
        q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.int32)
        if gtype == GGML_Q5_K:  # bit j of qh[l]: the fifth bit of value l of sub-block j
            qh = b[:, 16:48].astype(np.int32)
            q = q | np.stack([((qh >> j) & 1) << 4 for j in range(8)], axis=1)
        q = q.astype(np.float32)
        scale = (d * sc.astype(np.float32))[:, :, None]
        mins = (dmin * mn.astype(np.float32))[:, :, None]
        return (scale * q - mins).ravel()
    if gtype in (GGML_Q2_K, GGML_Q3_K):
        # 2 low bits: value 128*h + 32*k + l (h = 0, 1; k = 0..3; l < 32) at bits 2k of
        # qs[32*h + l]
        qs = b[:, 16:80] if gtype == GGML_Q2_K else b[:, 32:96]
        qs = qs.reshape(-1, 2, 1, 32).astype(np.int32)
        q = ((qs >> (2 * np.arange(4))[None, None, :, None]) & 3).reshape(-1, 256)
        if gtype == GGML_Q2_K:  # scales[j]: scale in the low, min in the high nibble
            sc = b[:, 0:16].astype(np.int32)
            dl = _half(b, 80)[:, None] * (sc & 15).astype(np.float32)
            ml = _half(b, 82)[:, None] * (sc >> 4).astype(np.float32)
            return (np.repeat(dl, 16, axis=1) * q.astype(np.float32) - np.repeat(ml, 16, axis=1)).ravel()
        # Q3_K: third bit of value v: bit v // 32 of hmask[v % 32]; set means q, clear q - 4
        hm = b[:, 0:32].astype(np.int32)
        v = np.arange(256)
        high = (hm[:, v % 32] >> (v // 32)) & 1
        q = q - np.where(high == 1, 0, 4)
        s = b[:, 96:108].astype(np.int32)
        j = np.arange(16)
        low = np.where(j < 8, s[:, j % 8] & 15, s[:, j % 8] >> 4)
        sc = (low | ((s[:, 8 + j % 4] >> (2 * (j // 4))) & 3) << 4) - 32
        dl = _half(b, 108)[:, None] * sc.astype(np.float32)
        return (np.repeat(dl, 16, axis=1) * q.astype(np.float32)).ravel()
    if gtype == GGML_Q8_K:
        d = b[:, 0:4].copy().view("<f4")[:, 0][:, None]
        return (d * b[:, 4:260].view(np.int8).astype(np.float32)).ravel()
    # Q6_K: two halves of 128 values; within a half, value 32*k + l (k = 0..3, l < 32)
    ql, qh = b[:, :128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32).reshape(-1, 2, 8)
    d = _half(b, 208)[:, None, None, None]
    lo = np.stack([ql[:, :, :32] & 15, ql[:, :, 32:] & 15, ql[:, :, :32] >> 4,
                   ql[:, :, 32:] >> 4], axis=2).astype(np.int32)
    hi = np.stack([(qh >> s) & 3 for s in (0, 2, 4, 6)], axis=2).astype(np.int32)
    q = (lo | (hi << 4)) - 32                                   # (n, 2, 4, 32)
    scale = sc.reshape(-1, 2, 4, 2)                               # sub-blocks of 16
    scale = np.repeat(scale, 16, axis=3)                          # (n, 2, 4, 32)
    return (d * scale * q.astype(np.float32)).ravel()


def _round_away(v):
    v = v.astype(np.float64)
    return np.trunc(v + np.copysign(0.5, v))


def quantize(gtype, x):
    """float32 values (a multiple of 32) -> blocks as bytes, ggml's reference rounding."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, 32)
    if gtype == GGML_Q8_0:
        amax = np.abs(x).max(axis=1)
        d = (amax / np.float32(127)).astype(np.float32)
        with np.errstate(divide="ignore"):
            idv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        q = _round_away((x * idv[:, None]).astype(np.float32)).astype(np.int8)
        out = np.empty((len(x), 34), np.uint8)
        out[:, :2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
        out[:, 2:] = q.view(np.uint8)
        return out.tobytes()
    if gtype == GGML_Q4_0:
        d, q = _symmetric_32(x, 8)
        q = q.astype(np.uint8)
        out = np.empty((len(x), 18), np.uint8)
        out[:, :2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
        out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
        return out.tobytes()
    if gtype == GGML_Q5_0:  # quantize_row_q5_0_ref: d = max / -16, min(31, (int8)(x/d + 16.5))
        d, q = _symmetric_32(x, 16)
        return _q5_blocks(d, None, q.astype(np.uint32))
    if gtype == GGML_Q5_1:  # quantize_row_q5_1_ref: d = (max - min) / 31, (uint8)((x-min)/d + .5)
        lo, hi = x.min(axis=1), x.max(axis=1)
        d = ((hi - lo) / np.float32(31)).astype(np.float32)
        with np.errstate(divide="ignore"):
            idv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = (((x - lo[:, None]).astype(np.float32) * idv[:, None]).astype(np.float32)
             + np.float32(0.5)).astype(np.float32)
        q = np.trunc(v.astype(np.float64)).astype(np.uint32)
        return _q5_blocks(d, lo, q)
    raise ValueError("no quantiser for ggml type %d" % gtype)


def _symmetric_32(x, half):
    """Q4_0 / Q5_0: d = (the first value of largest magnitude) / -half, codes
    min(2 half - 1, trunc(x / d + half + 0.5))."""
    mx = x[np.arange(len(x)), np.argmax(np.abs(x), axis=1)]
    d = (mx / np.float32(-half)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = ((x * idv[:, None]).astype(np.float32) + np.float32(half + 0.5)).astype(np.float32)
    return d, np.minimum(2 * half - 1, np.trunc(v.astype(np.float64)))


def _q5_blocks(d, m, q):
    head = [d.astype("<f2").view(np.uint8).reshape(-1, 2)]
    if m is not None:
        head.append(m.astype("<f2").view(np.uint8).reshape(-1, 2))
    qh = (((q >> 4) & 1) << np.arange(32, dtype=np.uint32)).sum(axis=1).astype("<u4")
    qs = ((q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)).astype(np.uint8)
    return np.concatenate(head + [qh.view(np.uint8).reshape(-1, 4), qs], axis=1).tobytes()


def block_scales(gtype, raw):
    """The f16 scale d of every block of a Q8_0 / Q4_0 tensor, as float64."""
    bb = BLOCK[gtype][1]
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, bb)
    return _half(b, 0).astype(np.float64)


# ------------------------------------------------------------ reading --

class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise FormatError("read past the end of the file at %d" % self.pos)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def scalar(self, t):
        fmt = _SCALAR[t]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.scalar(U64)
        return self.take(n).decode("utf-8")

    def value(self, t):
        if t == STRING:
            return self.string()
        if t == ARRAY:
            et, n = self.scalar(U32), self.scalar(U64)
            return (et, [self.value(et) for _ in range(n)])
        if t not in _SCALAR:
            raise FormatError("unknown value type %d" % t)
        return self.scalar(t)


def read(path):
    """-> (version, OrderedDict key -> (type, value), OrderedDict name -> ndarray or Quant,
    alignment).  Arrays are (element type, [values])."""
    with open(path, "rb") as f:
        data = f.read()
    r = _Reader(data)
    if r.take(4) != b"GGUF":
        raise FormatError("%s: bad magic" % path)
    version, n_t, n_kv = r.scalar(U32), r.scalar(U64), r.scalar(U64)
    if version not in (2, 3):
        raise FormatError("%s: version %d" % (path, version))
    kv = OrderedDict()
    for _ in range(n_kv):
        key = r.string()
        t = r.scalar(U32)
        if key in kv:
            raise FormatError("%s: key %r twice" % (path, key))
        kv[key] = (t, r.value(t))
    align = kv.get("general.alignment", (U32, 32))[1]
    infos = []
    for _ in range(n_t):
        name = r.string()
        nd = r.scalar(U32)
        ne = [r.scalar(U64) for _ in range(nd)]
        infos.append((name, tuple(reversed(ne)), r.scalar(U32), r.scalar(U64)))
    start = r.pos + (-r.pos) % align
    tensors = OrderedDict()
    expected = 0
    for name, shape, gt, off in infos:
        if off != expected:
            raise FormatError("%s: %r at offset %d, expected %d" % (path, name, off, expected))
        n = int(np.prod(shape, dtype=np.int64))
        if gt in BLOCK:
            be, bb = BLOCK[gt]
            size = n // be * bb
            tensors[name] = Quant(gt, shape, data[start + off:start + off + size])
        else:
            dt = np.dtype(PLAIN[gt])
            size = n * dt.itemsize
            tensors[name] = np.frombuffer(data[start + off:start + off + size], dt).reshape(shape)
        if start + off + size > len(data):
            raise FormatError("%s: %r past the end" % (path, name))
        expected = off + size + (-size) % align
    if len(data) > start + expected:
        raise FormatError("%s: trailing bytes" % path)
    return version, kv, tensors, align


def values(t):
    """A tensor from read() as float64 values (BF16 bits converted, blocks dequantised)."""
    if isinstance(t, Quant):
        return t.dequantize().astype(np.float64)
    if t.dtype == np.dtype("<u2"):  # BF16 bits
        return (t.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return t.astype(np.float64)


# ------------------------------------------------------------ writing --

def _enc_value(t, v):
    if t == STRING:
        b = v.encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    if t == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(_enc_value(et, x) for x in items)
    return struct.pack(_SCALAR[t], v)


def encode_kv(key, t, v):
    return _enc_value(STRING, key) + struct.pack("<I", t) + _enc_value(t, v)


def write(path, kvs, tensors, align=32, version=3):
    """kvs: list of (key, type, value); tensors: list of (name, ggml type, float array)
    (quantised here for Q8_0/Q4_0; a (shape, bytes) pair is stored as given)."""
    infos, blobs, off = b"", [], 0
    for name, gt, arr in tensors:
        if isinstance(arr, tuple):
            shape, raw = arr
        else:
            shape = np.shape(arr)
            a = np.asarray(arr)
            if gt in BLOCK:
                raw = quantize(gt, a.astype(np.float32).ravel())
            elif gt == GGML_BF16:
                b = np.ascontiguousarray(a.astype(np.float32)).view(np.uint32).astype(np.uint64)
                raw = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype("<u2").tobytes()
            else:
                raw = np.ascontiguousarray(a.astype(PLAIN[gt])).tobytes()
        ne = list(reversed(shape)) or [1]
        infos += _enc_value(STRING, name) + struct.pack("<I", len(ne))
        infos += b"".join(struct.pack("<Q", d) for d in ne) + struct.pack("<IQ", gt, off)
        blobs.append(raw + b"\0" * ((-len(raw)) % align))
        off += len(blobs[-1])
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    head += b"".join(encode_kv(k, t, v) for k, t, v in kvs) + infos
    head += b"\0" * ((-len(head)) % align)
    with open(path, "wb") as f:
        f.write(head + b"".join(blobs))
