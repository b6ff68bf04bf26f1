"""Tiny, independent safetensors reader/writer in numpy (test oracle).

Only the Python standard library and numpy are used.

File layout: u64 little-endian header length N, N bytes of UTF-8 JSON
    {name: {"dtype": str, "shape": [..], "data_offsets": [begin, end]},
     "__metadata__": {str: str}}            (metadata optional)
followed by the data buffer (offsets are relative to its start).

Tensors are represented as `Tensor(dtype, shape, raw)` where `raw` is a
numpy array holding the exact stored bits: for BF16 it is a uint16 array,
for every other dtype the natural numpy dtype.  `to_f64()` converts any
float tensor to float64 exactly.

A model is an ordered dict name -> Tensor (order = data order of the file,
or shard order then data order for sharded Hugging Face directories).
"""

import json
import os
import struct
from collections import OrderedDict

import numpy as np

# safetensors dtype string -> (numpy storage dtype, itemsize)
_NP = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),  # raw bits
    "F8_E5M2": np.dtype("u1"),  # raw bits
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
DTYPES = tuple(_NP)


def itemsize(dtype):
    return _NP[dtype].itemsize


# ---------------------------------------------------------------- bf16 --

def bf16_bits_to_f32(bits):
    """uint16 bf16 bits -> float32 (exact)."""
    b = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return b.view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> uint16 bf16 bits, round to nearest even, NaN kept (quiet)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    b = x.view(np.uint32).astype(np.uint64)
    nan = np.isnan(x)
    lsb = (b >> np.uint64(16)) & np.uint64(1)
    r = (b + np.uint64(0x7FFF) + lsb) >> np.uint64(16)
    q = (b >> np.uint64(16)) | np.uint64(0x0040)
    out = np.where(nan, q, r) & np.uint64(0xFFFF)
    return out.astype(np.uint16).reshape(x.shape)


def f64_to_bf16_bits(x):
    """float64 -> bf16 bits with a single correct round-to-nearest-even.

    Goes through float32 with round-to-odd (truncate, then set the sticky
    LSB if inexact), which makes the second rounding to bf16 exact-RNE.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32)
    bits = np.ascontiguousarray(f).view(np.uint32).copy()
    fin = np.isfinite(x)
    back = f.astype(np.float64)
    # RNE went away from zero (incl. overflow to inf) -> step back toward zero
    over = fin & (np.abs(back) > np.abs(x))
    bits[over] -= np.uint32(1)
    inexact = fin & (bits.view(np.float32).astype(np.float64) != x)
    bits[inexact] |= np.uint32(1)
    return f32_to_bf16_bits(bits.view(np.float32))


# -------------------------------------------------------------- Tensor --

class Tensor:
    __slots__ = ("dtype", "shape", "raw")

    def __init__(self, dtype, shape, raw):
        if dtype not in _NP:
            raise ValueError("unsupported dtype %r" % dtype)
        self.dtype = dtype
        self.shape = tuple(int(s) for s in shape)
        self.raw = np.asarray(raw, dtype=_NP[dtype]).reshape(self.shape)

    @property
    def is_float(self):
        return self.dtype in FLOAT_DTYPES

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize(self.dtype)

    def to_f64(self):
        if self.dtype == "BF16":
            return bf16_bits_to_f32(self.raw).astype(np.float64)
        return self.raw.astype(np.float64)

    def tobytes(self):
        return np.ascontiguousarray(self.raw).tobytes()

    def __repr__(self):
        return "Tensor(%s, %s)" % (self.dtype, list(self.shape))


def from_f64(values, dtype):
    """Round float64 values to a float dtype (or cast to int/bool) -> Tensor."""
    v = np.asarray(values, dtype=np.float64)
    if dtype == "BF16":
        raw = f64_to_bf16_bits(v)
    elif dtype in ("F64", "F32", "F16"):
        with np.errstate(over="ignore"):
            raw = v.astype(_NP[dtype])
    else:
        raw = np.asarray(values).astype(_NP[dtype])
    return Tensor(dtype, v.shape, raw)


# ------------------------------------------------------------- reading --

class FormatError(Exception):
    pass


def read_header(path):
    """-> (header_len N, header dict (incl. __metadata__), raw header bytes, file size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise FormatError("%s: file shorter than 8 bytes" % path)
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise FormatError("%s: header length %d exceeds file size %d" % (path, n, size))
        hb = f.read(n)
    try:
        hdr = json.loads(hb.decode("utf-8"), object_pairs_hook=OrderedDict)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError("%s: bad header JSON: %s" % (path, e))
    if not isinstance(hdr, dict):
        raise FormatError("%s: header is not a JSON object" % path)
    return n, hdr, hb, size


def validate_file(path, require_alignment=True):
    """Strict structural checks; returns a list of problem strings."""
    probs = []
    try:
        n, hdr, hb, size = read_header(path)
    except FormatError as e:
        return [str(e)]
    if require_alignment and (8 + n) % 8 != 0:
        probs.append("%s: 8+N=%d not a multiple of 8" % (path, 8 + n))
    txt = hb.decode("utf-8")
    stripped = txt.rstrip(" ")
    if not stripped.endswith("}") or not txt.startswith("{"):
        probs.append("%s: header not '{...}' followed only by space padding" % path)
    meta = hdr.get("__metadata__")
    if meta is not None:
        if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            probs.append("%s: __metadata__ must map str->str" % path)
    ents = []
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or set(e) - {"dtype", "shape", "data_offsets"} \
                or not {"dtype", "shape", "data_offsets"} <= set(e):
            probs.append("%s: bad entry for %r: %r" % (path, name, e))
            continue
        if e["dtype"] not in _NP:
            probs.append("%s: %r unknown dtype %r" % (path, name, e["dtype"]))
            continue
        b, en = e["data_offsets"]
        numel = int(np.prod(e["shape"], dtype=np.int64))
        if en - b != numel * itemsize(e["dtype"]):
            probs.append("%s: %r byte size %d != numel*itemsize %d"
                         % (path, name, en - b, numel * itemsize(e["dtype"])))
        ents.append((b, en, name))
    ents.sort()
    pos = 0
    for b, en, name in ents:
        if b != pos:
            probs.append("%s: %r starts at %d, expected %d (gap/overlap)" % (path, name, b, pos))
        pos = en
    if 8 + n + pos != size:
        probs.append("%s: file size %d != 8+N+data %d" % (path, size, 8 + n + pos))
    return probs


def read_file(path):
    """-> (OrderedDict name->Tensor in data order, metadata dict or None)."""
    n, hdr, _, size = read_header(path)
    meta = hdr.get("__metadata__")
    ents = [(e["data_offsets"][0], name, e) for name, e in hdr.items() if name != "__metadata__"]
    ents.sort(key=lambda x: (x[0], x[1]))
    out = OrderedDict()
    with open(path, "rb") as f:
        f.seek(8 + n)
        data = f.read()
    for b, name, e in ents:
        b, en = e["data_offsets"]
        if en > len(data) or b > en:
            raise FormatError("%s: %r offsets %r out of range" % (path, name, e["data_offsets"]))
        dt = _NP[e["dtype"]]
        arr = np.frombuffer(data[b:en], dtype=dt).copy()
        if arr.size != int(np.prod(e["shape"], dtype=np.int64)):
            raise FormatError("%s: %r size mismatch" % (path, name))
        out[name] = Tensor(e["dtype"], e["shape"], arr)
    return out, meta


INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def read_model(path):
    """Read a .safetensors file or a Hugging Face directory -> OrderedDict."""
    if os.path.isfile(path):
        return read_file(path)[0]
    idx = os.path.join(path, INDEX_NAME)
    if os.path.isfile(idx):
        with open(idx) as f:
            index = json.load(f, object_pairs_hook=OrderedDict)
        shards = []
        for shard in index["weight_map"].values():
            if shard not in shards:
                shards.append(shard)
        shards.sort()
        out = OrderedDict()
        for shard in shards:
            ts, _ = read_file(os.path.join(path, shard))
            for k, v in ts.items():
                if k in out:
                    raise FormatError("%s: tensor %r in several shards" % (path, k))
                out[k] = v
        return out
    single = os.path.join(path, SINGLE_NAME)
    if os.path.isfile(single):
        return read_file(single)[0]
    raise FormatError("%s: not a safetensors file or HF directory" % path)


# ------------------------------------------------------------- writing --

def _header_bytes(tensors, metadata, align=8):
    hdr = OrderedDict()
    if metadata is not None:
        hdr["__metadata__"] = OrderedDict((str(k), str(v)) for k, v in metadata.items())
    pos = 0
    for name, t in tensors.items():
        hdr[name] = OrderedDict([("dtype", t.dtype), ("shape", list(t.shape)),
                                 ("data_offsets", [pos, pos + t.nbytes])])
        pos += t.nbytes
    hb = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    pad = (-(8 + len(hb))) % align
    return hb + b" " * pad


def write_file(path, tensors, metadata=None):
    """tensors: OrderedDict name->Tensor (written in that order)."""
    hb = _header_bytes(tensors, metadata)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for t in tensors.values():
            f.write(t.tobytes())


def shard_name(i, n):
    return "model-%05d-of-%05d.safetensors" % (i, n)


def write_sharded(dirpath, tensors, max_shard_bytes, metadata=None):
    """Write a HF sharded directory (always with an index, even for 1 shard).

    Tensors are packed greedily in order; a shard is closed when adding the
    next tensor would exceed max_shard_bytes (a single oversize tensor gets
    its own shard).  Returns the list of shard file names.
    """
    os.makedirs(dirpath, exist_ok=True)
    groups, cur, cur_b = [], OrderedDict(), 0
    for name, t in tensors.items():
        if cur and cur_b + t.nbytes > max_shard_bytes:
            groups.append(cur)
            cur, cur_b = OrderedDict(), 0
        cur[name] = t
        cur_b += t.nbytes
    if cur or not groups:
        groups.append(cur)
    n = len(groups)
    weight_map = OrderedDict()
    names = []
    for i, g in enumerate(groups, 1):
        sn = shard_name(i, n)
        names.append(sn)
        write_file(os.path.join(dirpath, sn), g, metadata if metadata is not None else {"format": "pt"})
        for k in g:
            weight_map[k] = sn
    index = OrderedDict([("metadata", {"total_size": sum(t.nbytes for t in tensors.values())}),
                         ("weight_map", weight_map)])
    with open(os.path.join(dirpath, INDEX_NAME), "w") as f:
        json.dump(index, f, indent=2)
    return names


def write_single_dir(dirpath, tensors, metadata=None):
    os.makedirs(dirpath, exist_ok=True)
    write_file(os.path.join(dirpath, SINGLE_NAME), tensors,
               metadata if metadata is not None else {"format": "pt"})


def validate_hf_dir(dirpath):
    """Check a sharded HF output dir. Returns (problems, shard_names, index)."""
    probs = []
    idxp = os.path.join(dirpath, INDEX_NAME)
    if not os.path.isfile(idxp):
        if os.path.isfile(os.path.join(dirpath, SINGLE_NAME)):
            return validate_file(os.path.join(dirpath, SINGLE_NAME)), [SINGLE_NAME], None
        return ["%s: neither index nor model.safetensors" % dirpath], [], None
    try:
        with open(idxp) as f:
            index = json.load(f)
    except ValueError as e:
        return ["%s: index not JSON: %s" % (idxp, e)], [], None
    wm = index.get("weight_map")
    md = index.get("metadata")
    if not isinstance(wm, dict) or not isinstance(md, dict):
        return ["%s: missing weight_map/metadata" % idxp], [], index
    shards = sorted(f for f in os.listdir(dirpath) if f.endswith(".safetensors"))
    n = len(shards)
    expect = [shard_name(i, n) for i in range(1, n + 1)]
    if shards != expect:
        probs.append("shard files %r != expected %r" % (shards, expect))
    referenced = set(wm.values())
    if referenced != set(shards):
        probs.append("weight_map shards %r != files present %r" % (sorted(referenced), shards))
    total = 0
    where = {}
    for s in shards:
        probs += validate_file(os.path.join(dirpath, s))
        try:
            ts, _ = read_file(os.path.join(dirpath, s))
        except FormatError as e:
            probs.append(str(e))
            continue
        for k, t in ts.items():
            where.setdefault(k, []).append(s)
            total += t.nbytes
    for k, s in wm.items():
        if where.get(k) != [s]:
            probs.append("weight_map[%r]=%r but tensor found in %r" % (k, s, where.get(k)))
    for k in where:
        if k not in wm:
            probs.append("tensor %r in shard %r missing from weight_map" % (k, where[k]))
    if md.get("total_size") != total:
        probs.append("metadata.total_size %r != sum of tensor bytes %d" % (md.get("total_size"), total))
    return probs, shards, index
