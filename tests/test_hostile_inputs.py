#!/usr/bin/python3
"""Feed malformed and hostile safetensors inputs to `acem merge`.

Usage:
    /usr/bin/python3 tests/test_hostile_inputs.py PATH_TO_acem [--keep] [--only SUBSTR]...
    /usr/bin/python3 tests/test_hostile_inputs.py --list-md     (case list as Markdown)

Every case runs in a fresh temporary directory:

    TMP/in/base.safetensors, TMP/in/m1.safetensors, TMP/in/m2.safetensors   (good inputs)
    TMP/in/evil-<case>...                                                   (the hostile input)
    TMP/out.safetensors  or  TMP/outdir                                     (output; must not appear)

File-level cases run twice: the hostile input as --base (with two good
experts, output to a .safetensors file) and as the second --model (good base
and one good expert, output to a directory).  Expected for every hostile run:

  * exit status 1 (usage errors: 1 or 2), never killed by a signal;
  * finishes within 10 s;
  * stderr is exactly one line starting with "acem: error: " that names the
    offending file (path or basename) or, for cross-file mismatches, the tensor;
  * stdout carries no error text;
  * the temporary directory is unchanged afterwards: no output, no leftover
    temporary files, every input byte-for-byte unchanged.

Two control cases (valid inputs) must succeed, so a binary that rejects
everything does not pass.

The files in tests/hostile/ are inputs that once broke acem, most found by the
fuzzers (fuzz/): a .safetensors file runs as base and as expert with its method
beside fuzz/make_seeds.py's valid models (numpy), a .yaml file is the config of
`acem merge FILE -o out.safetensors`.  Everything else is stdlib only.
"""

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

TIMEOUT_S = 10

T1 = "model.layers.0.mlp.up_proj.weight"   # F32 [4, 3] -> 48 bytes
T2 = "model.norm.weight"                   # F32 [3]    -> 12 bytes
T3 = "model.layers.0.extra.bias"           # only used by hostile cases

INDEX = "model.safetensors.index.json"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


# --------------------------------------------------------------------------- #
# safetensors builders
# --------------------------------------------------------------------------- #

def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def tensor_values(seed):
    t1 = [round(0.25 * (i + 1) + seed, 4) for i in range(12)]
    t2 = [1.0 + 0.5 * seed + 0.125 * i for i in range(3)]
    return t1, t2


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def good_parts(seed=3):
    """(header dict, buffer) of a valid two-tensor model."""
    t1, t2 = tensor_values(seed)
    hdr = {
        "__metadata__": {"format": "pt"},
        T1: entry("F32", [4, 3], 0, 48),
        T2: entry("F32", [3], 48, 60),
    }
    return hdr, f32(t1) + f32(t2)


def d1(seed=3):
    return f32(tensor_values(seed)[0])


def d2(seed=3):
    return f32(tensor_values(seed)[1])


def hdr_bytes(obj, pad=True):
    """JSON header; padded with spaces to a multiple of 8 like the reference writer."""
    s = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    if pad:
        s += b" " * (-len(s) % 8)
    return s


def st(hdr, buf=b"", n=None, pad=True):
    h = hdr_bytes(hdr, pad)
    return struct.pack("<Q", len(h) if n is None else n) + h + buf


def good_file(seed=3):
    hdr, buf = good_parts(seed)
    return st(hdr, buf)


def with_entry(**changes):
    """Good model with entries replaced: keys T1/T2/META/EXTRA -> value (None deletes)."""
    hdr, buf = good_parts()
    keymap = {"T1": T1, "T2": T2, "META": "__metadata__", "EXTRA": T3}
    for k, v in changes.items():
        name = keymap[k]
        if v is None:
            hdr.pop(name, None)
        else:
            hdr[name] = v
    return hdr, buf


def raw_header_with_meta_value(raw_value):
    """Good header whose __metadata__ value is the given raw bytes inside a JSON string."""
    _, buf = good_parts()
    h = (b'{"__metadata__":{"format":"' + raw_value + b'"},'
         + json.dumps(T1).encode() + b":" + json.dumps(entry("F32", [4, 3], 0, 48)).encode() + b","
         + json.dumps(T2).encode() + b":" + json.dumps(entry("F32", [3], 48, 60)).encode() + b"}")
    return st(h, buf)


def tensors_json(*pairs):
    return b",".join(json.dumps(n).encode() + b":" + json.dumps(e).encode() for n, e in pairs)


def nan_file(value):
    t1, t2 = tensor_values(3)
    t1[5] = value
    hdr, _ = good_parts()
    return st(hdr, f32(t1) + f32(t2))


# --------------------------------------------------------------------------- #
# Hostile safetensors files (name, description, content builder)
# --------------------------------------------------------------------------- #

def _len_prefix_cases():
    good = good_file()
    h = hdr_bytes(good_parts()[0])
    buf = good_parts()[1]
    return [
        ("empty-file", "zero-byte file", lambda: b""),
        ("seven-bytes", "7-byte file, shorter than the length prefix", lambda: b"\x10\x00\x00\x00\x00\x00\x00"),
        ("header-len-0", "N = 0 (below the minimum of 2)", lambda: struct.pack("<Q", 0) + buf),
        ("header-len-1", "N = 1, header '{'", lambda: struct.pack("<Q", 1) + b"{" + buf),
        ("header-len-past-eof", "N one byte larger than the rest of the file",
         lambda: struct.pack("<Q", len(good) - 8 + 1) + good[8:]),
        ("header-len-2^63", "N = 2^63", lambda: struct.pack("<Q", 1 << 63) + h + buf),
        ("header-len-200M", "N = 200,000,000 (above the 100,000,000 limit)",
         lambda: struct.pack("<Q", 200000000) + h + buf),
        ("header-len-2^64-1", "N = 2^64-1 (8+N wraps to 7)", lambda: struct.pack("<Q", (1 << 64) - 1) + h + buf),
        ("header-len-2^64-8", "N = 2^64-8 (8+N wraps to 0)", lambda: struct.pack("<Q", (1 << 64) - 8) + h + buf),
    ]


def _json_cases():
    hdr, buf = good_parts()
    h = hdr_bytes(hdr, pad=False)
    tj = tensors_json((T1, entry("F32", [4, 3], 0, 48)), (T2, entry("F32", [3], 48, 60)))
    deep = 100000
    return [
        ("utf8-invalid-byte", "0xFF byte inside a __metadata__ string", lambda: raw_header_with_meta_value(b"p\xfft")),
        ("utf8-surrogate", "UTF-8-encoded surrogate ED A0 80 in a __metadata__ string",
         lambda: raw_header_with_meta_value(b"p\xed\xa0\x80t")),
        ("utf8-overlong", "overlong encoding C0 AF ('/') in a __metadata__ string",
         lambda: raw_header_with_meta_value(b"p\xc0\xaft")),
        ("json-truncated", "header JSON cut off before its closing brace", lambda: st(h[:-7], buf)),
        ("json-trailing-garbage", "valid object followed by ' xyz' inside the header", lambda: st(h + b" xyz", buf)),
        ("json-nul-then-garbage", "valid object, a NUL byte, then garbage inside the header",
         lambda: st(h + b"\x00{garbage", buf)),
        ("json-top-array", "header is a JSON array of entries",
         lambda: st(json.dumps([entry("F32", [4, 3], 0, 48), entry("F32", [3], 48, 60)]).encode(), buf)),
        ("json-top-number", "header is the JSON number 12345678", lambda: st(b"12345678", buf)),
        ("json-top-string", "header is a JSON string", lambda: st(b'"F32"', buf)),
        ("json-deep-unclosed", "header is 100,000 '[' characters", lambda: st(b"[" * deep, buf)),
        ("json-deep-unclosed-in-object", "'{\"__metadata__\":' followed by 100,000 '['",
         lambda: st(b'{"__metadata__":' + b"[" * deep, buf)),
        ("json-deep-objects", "100,000 nested objects {\"x\":{\"x\":...1}} (balanced)",
         lambda: st(b'{"x":' * deep + b"1" + b"}" * deep, buf)),
        ("json-deep-in-metadata", "__metadata__ value nested 100,000 arrays deep (balanced)",
         lambda: st(b'{"__metadata__":{"format":' + b"[" * deep + b"]" * deep + b"}," + tj + b"}", buf)),
        ("json-no-tensors-with-data", "header '{}' (N = 2) followed by 60 data bytes",
         lambda: st(b"{}", buf, pad=False)),
    ]


def _entry_cases():
    big = 1 << 64
    return [
        ("duplicate-tensor-name", "the same tensor name twice (both entries tile correctly)",
         lambda: st(b"{" + tensors_json((T1, entry("F32", [4, 3], 0, 48)), (T1, entry("F32", [4, 3], 48, 96)),
                                         (T2, entry("F32", [3], 96, 108))) + b"}", d1() + d1() + d2())),
        ("duplicate-key-in-entry", "an entry with two 'dtype' keys (F32 and F16)",
         lambda: st(b"{" + json.dumps(T1).encode()
                    + b':{"dtype":"F32","dtype":"F16","shape":[4,3],"data_offsets":[0,48]},'
                    + tensors_json((T2, entry("F32", [3], 48, 60))) + b"}", d1() + d2())),
        ("dtype-unknown", "dtype 'F128'", lambda: st(*with_entry(T2=entry("F128", [3], 48, 60)))),
        ("dtype-lowercase", "dtype 'f32' (wrong case)", lambda: st(*with_entry(T2=entry("f32", [3], 48, 60)))),
        ("dtype-not-string", "dtype is the number 4", lambda: st(*with_entry(T2=entry(4, [3], 48, 60)))),
        ("shape-not-list", "shape is the string '4,3'", lambda: st(*with_entry(T1=entry("F32", "4,3", 0, 48)))),
        ("shape-negative", "shape [-4, -3] (product 12 matches the byte size)",
         lambda: st(*with_entry(T1=entry("F32", [-4, -3], 0, 48)))),
        ("shape-fractional", "shape [1.5, 8] (product 12 matches the byte size)",
         lambda: st(*with_entry(T1=entry("F32", [1.5, 8], 0, 48)))),
        ("shape-string-dim", "shape ['4', 3]", lambda: st(*with_entry(T1=entry("F32", ["4", 3], 0, 48)))),
        ("shape-9-dims", "shape with 9 dimensions [1,1,1,1,1,1,1,4,3]",
         lambda: st(*with_entry(T1=entry("F32", [1, 1, 1, 1, 1, 1, 1, 4, 3], 0, 48)))),
        ("shape-overflow-numel", "shape [2^40, 2^40]: numel wraps to 0, data_offsets [0,0]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [1 << 40, 1 << 40], 0, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("shape-overflow-bytes", "F32 shape [2^31, 2^31]: numel 2^62 fits, numel*4 wraps to 0, data_offsets [0,0]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [1 << 31, 1 << 31], 0, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("shape-dim-2^62", "F32 shape [2^62]: numel*4 wraps to 0, data_offsets [0,0]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [1 << 62], 0, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("shape-overflow-3dims", "shape [2^32, 2^32, 3]: numel wraps to 0, data_offsets [0,0]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [1 << 32, 1 << 32, 3], 0, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("shape-dim-2^64", "shape [18446744073709551616] (not representable as u64), data_offsets [0,0]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [big], 0, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("shape-dim-1e300", "shape [1e300], data_offsets [0,0]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [1e300], 0, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("offsets-three", "data_offsets with three elements [0,48,48]",
         lambda: st(*with_entry(T1={"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48, 48]}))),
        ("offsets-one", "data_offsets with one element [48]",
         lambda: st(*with_entry(T1={"dtype": "F32", "shape": [4, 3], "data_offsets": [48]}))),
        ("offsets-not-list", "data_offsets is the number 48",
         lambda: st(*with_entry(T1={"dtype": "F32", "shape": [4, 3], "data_offsets": 48}))),
        ("offsets-begin-gt-end", "data_offsets [60, 12] for a 48-byte tensor (end-begin wraps)",
         lambda: st({"__metadata__": {"format": "pt"}, T2: entry("F32", [3], 0, 12),
                     T1: entry("F32", [4, 3], 60, 12)}, d2() + d1())),
        ("offsets-negative", "data_offsets [-48, 0] (end-begin = 48)",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [4, 3], -48, 0),
                     T2: entry("F32", [3], 0, 12)}, d2())),
        ("offsets-fractional", "data_offsets [0, 48.5] and [48.5, 60.5]",
         lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [4, 3], 0, 48.5),
                     T2: entry("F32", [3], 48.5, 60.5)}, d1() + d2())),
        ("offsets-strings", "data_offsets ['0', '48']",
         lambda: st(*with_entry(T1=entry("F32", [4, 3], "0", "48")))),
        ("offsets-2^64", "data_offsets [0, 18446744073709551616]",
         lambda: st(*with_entry(T1=entry("F32", [4, 3], 0, big)))),
        ("offsets-1e300", "data_offsets [0, 1e300]",
         lambda: st(*with_entry(T1=entry("F32", [4, 3], 0, 1e300)))),
        ("entry-missing-offsets", "tensor entry without data_offsets",
         lambda: st(*with_entry(T2={"dtype": "F32", "shape": [3]}))),
        ("entry-extra-key", "tensor entry with an extra key 'extra'",
         lambda: st(*with_entry(T2=dict(entry("F32", [3], 48, 60), extra=1)))),
        ("entry-not-object", "tensor entry is the string 'F32'", lambda: st(*with_entry(T2="F32"))),
        ("entry-null", "tensor entry is null",
         lambda: st(b"{" + tensors_json((T1, entry("F32", [4, 3], 0, 48))) + b","
                    + json.dumps(T2).encode() + b":null}", d1())),
        ("metadata-not-object", "__metadata__ is the string 'pt'", lambda: st(*with_entry(META="pt"))),
        ("metadata-non-string-value", "__metadata__ {'format': 1}", lambda: st(*with_entry(META={"format": 1}))),
        ("metadata-array", "__metadata__ is an array of strings", lambda: st(*with_entry(META=["pt"]))),
        ("metadata-nested-object", "__metadata__ value is an object", lambda: st(*with_entry(META={"f": {"a": "b"}}))),
    ]


def _layout_cases():
    meta = {"format": "pt"}
    return [
        ("layout-gap", "4 unused bytes between the two tensors",
         lambda: st({"__metadata__": meta, T1: entry("F32", [4, 3], 0, 48), T2: entry("F32", [3], 52, 64)},
                    d1() + b"\0" * 4 + d2())),
        ("layout-overlap", "second tensor starts 4 bytes inside the first",
         lambda: st({"__metadata__": meta, T1: entry("F32", [4, 3], 0, 48), T2: entry("F32", [3], 44, 56)},
                    d1() + d2()[4:])),
        ("layout-trailing-bytes", "4 bytes after the last tensor",
         lambda: st(good_parts()[0], good_parts()[1] + b"\0" * 4)),
        ("layout-first-not-zero", "first tensor starts at offset 4 (4 leading bytes)",
         lambda: st({"__metadata__": meta, T1: entry("F32", [4, 3], 4, 52), T2: entry("F32", [3], 52, 64)},
                    b"\0" * 4 + d1() + d2())),
        ("layout-truncated-data", "data buffer 4 bytes shorter than the offsets claim",
         lambda: st(good_parts()[0], good_parts()[1][:-4])),
        ("layout-size-mismatch", "offsets tile the buffer but T1 has 44 bytes for 48 needed",
         lambda: st({"__metadata__": meta, T1: entry("F32", [4, 3], 0, 44), T2: entry("F32", [3], 44, 56)},
                    d1()[:44] + d2())),
        ("layout-aliased", "two [4,3] tensors share the byte range [0,48]",
         lambda: st({"__metadata__": meta, T1: entry("F32", [4, 3], 0, 48), T2: entry("F32", [4, 3], 0, 48)},
                    d1())),
        ("layout-empty-tensor-past-end", "extra zero-size tensor at offsets [1000,1000], past the buffer",
         lambda: st(*with_entry(EXTRA=entry("F32", [0], 1000, 1000)))),
        ("layout-empty-tensor-inside", "extra zero-size tensor at [10,10], inside another tensor",
         lambda: st(*with_entry(EXTRA=entry("F32", [0], 10, 10)))),
        ("layout-dtype-size", "F16 dtype with F32-sized data ([3] with 12 bytes)",
         lambda: st(*with_entry(T2=entry("F16", [3], 48, 60)))),
        ("nan-in-f32", "NaN value in an F32 tensor", lambda: nan_file(float("nan"))),
        ("inf-in-f32", "+Inf value in an F32 tensor", lambda: nan_file(float("inf"))),
        ("neg-inf-in-f32", "-Inf value in an F32 tensor", lambda: nan_file(float("-inf"))),
    ]


# --------------------------------------------------------------------------- #
# Hostile GGUF files: the same two tensors (T1 F32 ne [3, 4], T2 F32 ne [3])
# --------------------------------------------------------------------------- #

G_STRING, G_ARRAY = 8, 9


def gstr(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def gkv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def ginfo(name, ne, gtype=0, off=0):
    return (gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            + struct.pack("<IQ", gtype, off))


GOOD_KV = [gkv("general.architecture", G_STRING, gstr("llama"))]


def good_infos(off2=64):
    return [ginfo(T1, [3, 4], 0, 0), ginfo(T2, [3], 0, off2)]


def good_gguf_data(seed=3):
    return d1(seed) + b"\0" * 16 + d2(seed) + b"\0" * 20


def gguf(kvs=None, infos=None, data=None, magic=b"GGUF", version=3, n_t=None, n_kv=None,
         align=32):
    kvs = GOOD_KV if kvs is None else kvs
    infos = good_infos() if infos is None else infos
    data = good_gguf_data() if data is None else data
    head = magic + struct.pack("<IQQ", version, len(infos) if n_t is None else n_t,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * ((-len(head)) % align) + data


def gguf_nan():
    t1 = tensor_values(3)[0]
    t1[4] = float("nan")
    return gguf(data=f32(t1) + b"\0" * 16 + d2() + b"\0" * 20)


def _gguf_cases():
    big = (1 << 64) - 1
    arch = gstr("general.architecture")

    def nested(depth):
        payload = struct.pack("<I", 4) + struct.pack("<Q", 1) + struct.pack("<I", 7)  # u32 7
        for _ in range(depth - 1):
            payload = struct.pack("<I", G_ARRAY) + struct.pack("<Q", 1) + payload
        return gkv("t.deep", G_ARRAY, payload)

    return [
        ("gguf-bad-magic", "a .gguf file whose magic is 'GGUX'", lambda: gguf(magic=b"GGUX")),
        ("gguf-magic-only", "the four bytes 'GGUF'", lambda: b"GGUF"),
        ("gguf-truncated-header", "header cut after 20 of its 24 bytes", lambda: gguf()[:20]),
        ("gguf-version-1", "version 1 (32-bit counts)", lambda: gguf(version=1)),
        ("gguf-version-4", "version 4", lambda: gguf(version=4)),
        ("gguf-big-endian", "version written big-endian (00 00 00 03)", lambda: gguf(version=0x03000000)),
        ("gguf-tensor-count-2^63", "tensor count 2^63", lambda: gguf(n_t=1 << 63)),
        ("gguf-tensor-count-over-limit", "tensor count 1,000,001", lambda: gguf(n_t=1000001)),
        ("gguf-kv-count-2^64-1", "key-value count 2^64-1", lambda: gguf(n_kv=big)),
        ("gguf-kv-count-too-many", "100,000 key-values claimed in a small file", lambda: gguf(n_kv=100000)),
        ("gguf-tensor-count-too-many", "3 tensors claimed, 2 infos present", lambda: gguf(n_t=3)),
        ("gguf-key-len-2^64-1", "a key whose length is 2^64-1 (pos + len wraps)",
         lambda: gguf(kvs=[struct.pack("<Q", big) + b"general.architecture"])),
        ("gguf-key-len-past-eof", "a key length one byte past the end of the file",
         lambda: gguf(kvs=[struct.pack("<Q", len(gguf()) + 1) + b"x"])),
        ("gguf-key-empty", "an empty key", lambda: gguf(kvs=[gkv("", G_STRING, gstr("x"))])),
        ("gguf-key-invalid-utf8", "a key with the byte 0xFF", lambda: gguf(kvs=[gkv(b"gen\xffx", G_STRING, gstr("x"))])),
        ("gguf-key-nul", "a key with a NUL byte", lambda: gguf(kvs=[gkv(b"gen\x00x", G_STRING, gstr("x"))])),
        ("gguf-key-duplicate", "the same key twice", lambda: gguf(kvs=GOOD_KV * 2)),
        ("gguf-value-string-len-2^63", "a string value of length 2^63",
         lambda: gguf(kvs=[arch + struct.pack("<IQ", G_STRING, 1 << 63) + b"llama"])),
        ("gguf-value-invalid-utf8", "a string value with an overlong encoding C0 AF",
         lambda: gguf(kvs=[gkv("general.name", G_STRING, gstr(b"a\xc0\xafb"))])),
        ("gguf-value-type-unknown", "value type 13", lambda: gguf(kvs=[gkv("t.x", 13, b"\0" * 8)])),
        ("gguf-value-type-2^32-1", "value type 2^32-1", lambda: gguf(kvs=[gkv("t.x", 0xFFFFFFFF, b"\0" * 8)])),
        ("gguf-bool-2", "a bool value 2", lambda: gguf(kvs=[gkv("t.b", 7, b"\x02")])),
        ("gguf-array-elem-type-unknown", "array of value type 42",
         lambda: gguf(kvs=[gkv("t.a", G_ARRAY, struct.pack("<IQ", 42, 1) + b"\0" * 8)])),
        ("gguf-array-count-2^62", "array of 2^62 uint32 (count x 4 wraps)",
         lambda: gguf(kvs=[gkv("t.a", G_ARRAY, struct.pack("<IQ", 4, 1 << 62) + b"\0" * 16)])),
        ("gguf-array-strings-count-huge", "array claiming 2^40 strings",
         lambda: gguf(kvs=[gkv("t.a", G_ARRAY, struct.pack("<IQ", G_STRING, 1 << 40) + gstr("a"))])),
        ("gguf-array-string-len-huge", "array whose second string has length 2^64-1",
         lambda: gguf(kvs=[gkv("t.a", G_ARRAY, struct.pack("<IQ", G_STRING, 2) + gstr("a")
                                + struct.pack("<Q", big) + b"b")])),
        ("gguf-array-nested-9", "arrays nested 9 deep", lambda: gguf(kvs=[nested(9)])),
        ("gguf-array-nested-100000", "arrays nested 100,000 deep", lambda: gguf(kvs=[nested(100000)])),
        ("gguf-alignment-0", "general.alignment 0",
         lambda: gguf(kvs=GOOD_KV + [gkv("general.alignment", 4, struct.pack("<I", 0))])),
        ("gguf-alignment-48", "general.alignment 48 (not a power of two)",
         lambda: gguf(kvs=GOOD_KV + [gkv("general.alignment", 4, struct.pack("<I", 48))])),
        ("gguf-alignment-2^31", "general.alignment 2^31",
         lambda: gguf(kvs=GOOD_KV + [gkv("general.alignment", 4, struct.pack("<I", 1 << 31))])),
        ("gguf-alignment-u64", "general.alignment stored as uint64",
         lambda: gguf(kvs=GOOD_KV + [gkv("general.alignment", 10, struct.pack("<Q", 32))])),
        ("gguf-tensor-name-empty", "a tensor with an empty name", lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo("", [3], 0, 64)])),
        ("gguf-tensor-name-len-huge", "a tensor name of length 2^63",
         lambda: gguf(infos=[ginfo(T1, [3, 4]), struct.pack("<Q", 1 << 63) + b"x"])),
        ("gguf-tensor-name-duplicate", "two tensors with one name",
         lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo(T1, [3], 0, 64)])),
        ("gguf-tensor-ndims-0", "a tensor with 0 dimensions", lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo(T2, [], 0, 64)])),
        ("gguf-tensor-ndims-5", "a tensor with 5 dimensions",
         lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo(T2, [3, 1, 1, 1, 1], 0, 64)])),
        ("gguf-tensor-ndims-2^32-1", "n_dims 2^32-1", lambda: gguf(infos=[ginfo(T1, [3, 4]), gstr(T2) + struct.pack("<I", 0xFFFFFFFF)])),
        ("gguf-tensor-numel-overflow", "ne [2^32, 2^32, 16] (element count wraps to 0)",
         lambda: gguf(infos=[ginfo(T1, [1 << 32, 1 << 32, 16]), ginfo(T2, [3], 0, 0)], data=d2() + b"\0" * 20)),
        ("gguf-tensor-bytes-overflow", "F32 ne [2^62] (byte size wraps to 0)",
         lambda: gguf(infos=[ginfo(T1, [1 << 62]), ginfo(T2, [3], 0, 0)], data=d2() + b"\0" * 20)),
        ("gguf-tensor-dim-2^63", "a dimension of 2^63 (negative as ggml's int64)",
         lambda: gguf(infos=[ginfo(T1, [1 << 63, 0]), ginfo(T2, [3], 0, 0)], data=d2() + b"\0" * 20)),
        ("gguf-tensor-type-unknown", "ggml type 99", lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo(T2, [3], 99, 64)])),
        ("gguf-tensor-type-q4_1", "ggml type Q4_1 (3), not read by acem",
         lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo(T2, [256], 3, 64)], data=d1() + b"\0" * 16 + b"\0" * 160)),
        ("gguf-q8_0-row-not-blocks", "Q8_0 tensor whose rows (3 values) do not split into blocks of 32",
         lambda: gguf(infos=[ginfo(T1, [3, 4]), ginfo(T2, [3], 8, 64)])),
        ("gguf-offset-misaligned", "second tensor at offset 48 (not a multiple of 32)",
         lambda: gguf(infos=good_infos(48), data=d1() + d2() + b"\0" * 4)),
        ("gguf-offset-overlap", "second tensor at offset 32, inside the first",
         lambda: gguf(infos=good_infos(32), data=d1()[:32] + d2() + b"\0" * 20)),
        ("gguf-offset-gap", "second tensor at offset 96, a 32-byte gap after the first's padding",
         lambda: gguf(infos=good_infos(96), data=d1() + b"\0" * 48 + d2() + b"\0" * 20)),
        ("gguf-offset-first-not-zero", "first tensor at offset 32",
         lambda: gguf(infos=[ginfo(T1, [3, 4], 0, 32), ginfo(T2, [3], 0, 96)],
                      data=b"\0" * 32 + good_gguf_data())),
        ("gguf-offset-2^64-32", "second tensor at offset 2^64-32 (data start + offset wraps)",
         lambda: gguf(infos=good_infos((1 << 64) - 32))),
        ("gguf-data-truncated", "data section 24 bytes short (second tensor cut)", lambda: gguf()[:-24]),
        ("gguf-trailing-bytes", "64 bytes after the last tensor's padding", lambda: gguf() + b"\0" * 64),
        ("gguf-nan-in-f32", "NaN value in an F32 tensor", gguf_nan),
    ]


# --------------------------------------------------------------------------- #
# Hostile PyTorch zip checkpoints (torch.save layout, pickles written by hand)
# --------------------------------------------------------------------------- #

MARKER = "PWNED-by-acem-test"   # a payload that ran would create this file


def p_str(s):
    b = s.encode() if isinstance(s, str) else s
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(v):
    return b"J" + struct.pack("<i", v)


def p_tuple(items):
    return b"(" + b"".join(items) + b"t"


def p_tensor(key, numel, offset, size, stride, storage=b"FloatStorage"):
    pid = p_tuple([p_str("storage"), b"ctorch\n" + storage + b"\n", p_str(key), p_str("cpu"), p_int(numel)])
    args = p_tuple([pid + b"Q", p_int(offset), p_tuple([p_int(x) for x in size]),
                    p_tuple([p_int(x) for x in stride]), b"\x89",
                    b"ccollections\nOrderedDict\n)R"])
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def p_state_dict(t1=None, t2=None):
    t1 = p_tensor("0", 12, 0, [4, 3], [3, 1]) if t1 is None else t1
    t2 = p_tensor("1", 3, 0, [3], [1]) if t2 is None else t2
    return b"\x80\x02}(" + p_str(T1) + t1 + p_str(T2) + t2 + b"u."


def torch_zip(pkl=None, storages=None, compress=False, extra=()):
    import io
    import zipfile
    pkl = p_state_dict() if pkl is None else pkl
    storages = {"0": d1(), "1": d2()} if storages is None else storages
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("archive/data.pkl", pkl)
        for k, v in storages.items():
            z.writestr("archive/data/" + k, v)
        z.writestr("archive/version", "3\n")
        for name, data in extra:
            z.writestr(name, data)
    return buf.getvalue()


def _torch_cases():
    cmd = ("touch " + MARKER).encode()
    system = b"\x80\x02cos\nsystem\n" + p_str(cmd) + b"\x85R."
    good = torch_zip()
    crc_at = good.index(b"PK\x01\x02") + 16          # CRC of data.pkl in the directory
    bad_crc = good[:crc_at] + bytes([good[crc_at] ^ 1]) + good[crc_at + 1:]
    return [
        ("torch-os-system", "data.pkl calls os.system('touch ...') (must not run)",
         lambda: torch_zip(system)),
        ("torch-builtins-eval", "data.pkl calls builtins.eval",
         lambda: torch_zip(b"\x80\x02cbuiltins\neval\n" + p_str("1+1") + b"\x85R.")),
        ("torch-reduce-storage-class", "REDUCE of torch.FloatStorage (allowed only as a persistent id)",
         lambda: torch_zip(b"\x80\x02}(" + p_str(T1) + b"ctorch\nFloatStorage\n" + p_int(12) + b"\x85Ru.")),
        ("torch-reduce-ordereddict-args", "collections.OrderedDict called with arguments",
         lambda: torch_zip(b"\x80\x02ccollections\nOrderedDict\n" + p_tuple([p_str("x")]) + b"R.")),
        ("torch-reduce-non-global", "REDUCE whose callable is a string",
         lambda: torch_zip(b"\x80\x02" + p_str("os.system") + b")R.")),
        ("torch-global-torch-load", "global torch.load (not on the allow list)",
         lambda: torch_zip(b"\x80\x02ctorch\nload\n)R.")),
        ("torch-opcode-inst", "protocol-0 INST opcode ('i') naming os system",
         lambda: torch_zip(b"\x80\x02(" + p_str(cmd) + b"ios\nsystem\n.")),
        ("torch-opcode-newobj", "NEWOBJ opcode (0x81)",
         lambda: torch_zip(b"\x80\x02ccollections\nOrderedDict\n)\x81.")),
        ("torch-deep-marks", "100,000 nested MARKs",
         lambda: torch_zip(b"\x80\x02" + b"(" * 100000 + b"t" * 100000 + b".")),
        ("torch-deep-lists", "2,000,000 empty lists pushed (stack limit)",
         lambda: torch_zip(b"\x80\x02" + b"]" * 2000000 + b".")),
        ("torch-deep-nesting", "a list nested 100,000 deep (built with APPEND)",
         lambda: torch_zip(b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".")),
        ("torch-memo-huge-index", "LONG_BINPUT at index 2^32-1",
         lambda: torch_zip(b"\x80\x02}r\xff\xff\xff\xff.")),
        ("torch-memo-unset", "BINGET of a memo slot never set",
         lambda: torch_zip(b"\x80\x02}q\x00h\x07.")),
        ("torch-string-len-huge", "BINUNICODE of length 2^32-1",
         lambda: torch_zip(b"\x80\x02}(X\xff\xff\xff\xffabc")),
        ("torch-truncated-pickle", "data.pkl cut in the middle", lambda: torch_zip(p_state_dict()[:60])),
        ("torch-no-stop", "data.pkl without STOP", lambda: torch_zip(p_state_dict()[:-1])),
        ("torch-not-state-dict", "data.pkl holds a list of tensors",
         lambda: torch_zip(b"\x80\x02](" + p_tensor("0", 12, 0, [4, 3], [3, 1]) + b"e.")),
        ("torch-int-value", "a state_dict value that is an int",
         lambda: torch_zip(b"\x80\x02}(" + p_str(T1) + p_int(3) + b"u.")),
        ("torch-storage-missing", "tensor storage '7' absent from the archive",
         lambda: torch_zip(p_state_dict(t2=p_tensor("7", 3, 0, [3], [1])))),
        ("torch-storage-size", "storage entry 4 bytes shorter than its element count",
         lambda: torch_zip(storages={"0": d1(), "1": d2()[:8]})),
        ("torch-view-past-storage", "view [4, 3] at offset 4 of a 12-element storage",
         lambda: torch_zip(p_state_dict(t1=p_tensor("0", 12, 4, [4, 3], [3, 1])))),
        ("torch-stride-past-storage", "view [4, 3] with strides [3, 2] past the storage",
         lambda: torch_zip(p_state_dict(t1=p_tensor("0", 12, 0, [4, 3], [3, 2])))),
        ("torch-negative-size", "a negative size", lambda: torch_zip(p_state_dict(t1=p_tensor("0", 12, 0, [-4, -3], [3, 1])))),
        ("torch-stride-overflow", "stride 2^62 x size (index overflows)",
         lambda: torch_zip(p_state_dict(t1=b"ctorch._utils\n_rebuild_tensor_v2\n" + p_tuple([
             p_tuple([p_str("storage"), b"ctorch\nFloatStorage\n", p_str("0"), p_str("cpu"), p_int(12)]) + b"Q",
             p_int(0), p_tuple([p_int(4), p_int(3)]), p_tuple([b"\x8a\x08" + struct.pack("<q", 1 << 62), p_int(1)]),
             b"\x89", b"ccollections\nOrderedDict\n)R"]) + b"R"))),
        ("torch-storage-unknown-class", "storage class torch.ComplexFloatStorage",
         lambda: torch_zip(p_state_dict(t2=p_tensor("1", 3, 0, [3], [1], b"ComplexFloatStorage")))),
        ("torch-compressed-entry", "entries deflate-compressed", lambda: torch_zip(compress=True)),
        ("torch-crc-mismatch", "data.pkl's CRC in the directory is wrong", lambda: bad_crc),
        ("torch-two-pickles", "two data.pkl entries", lambda: torch_zip(extra=[("other/data.pkl", p_state_dict())])),
        ("torch-no-pickle", "a zip archive without data.pkl",
         lambda: torch_zip(pkl=b"", extra=()).replace(b"archive/data.pkl", b"archive/data.xyz")),
        ("torch-zip-truncated", "the archive cut before its central directory", lambda: torch_zip()[:-200]),
        ("torch-legacy-pickle", "a bare pickle (legacy torch.save, not zip)", lambda: b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."),
    ]


# --------------------------------------------------------------------------- #
# Case machinery
# --------------------------------------------------------------------------- #

class Case:
    def __init__(self, name, desc, make, roles=("base", "expert"), rc=(1,)):
        self.name, self.desc, self.make, self.roles, self.rc = name, desc, make, roles, rc


def write(tmp, rel, data):
    p = os.path.join(tmp, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    return rel


def file_case(name, desc, builder, ext=".safetensors"):
    def make(tmp, role):
        rel = write(tmp, "in/evil-%s%s" % (name, ext), builder())
        return {"bad": rel, "names": [os.path.basename(rel)]}
    return Case(name, desc, make)


def hf_dir(tmp, rel, shards, index):
    """shards: {filename: bytes}; index: dict (json-dumped) or bytes (raw) or None."""
    os.makedirs(os.path.join(tmp, rel), exist_ok=True)
    for fn, data in shards.items():
        write(tmp, os.path.join(rel, fn), data)
    if index is not None:
        write(tmp, os.path.join(rel, INDEX), index if isinstance(index, bytes) else json.dumps(index).encode())
    return rel


def shard_t1(seed=3, extra=False):
    h = {"__metadata__": {"format": "pt"}, T1: entry("F32", [4, 3], 0, 48)}
    buf = d1(seed)
    if extra:
        h[T3] = entry("F32", [3], 48, 60)
        buf += d2(seed)
    return st(h, buf)


def shard_t2(seed=3):
    return st({"__metadata__": {"format": "pt"}, T2: entry("F32", [3], 0, 12)}, d2(seed))


def good_index(map1=SHARD1, map2=SHARD2):
    return {"metadata": {"total_size": 60}, "weight_map": {T1: map1, T2: map2}}


def hf_case(name, desc, build):
    """build(tmp, dir_rel) -> list of extra acceptable names (file basenames / tensor names)."""
    def make(tmp, role):
        rel = "in/evil-%s" % name
        extra = build(tmp, rel) or []
        return {"bad": rel, "names": [os.path.basename(rel), INDEX] + extra}
    return Case(name, desc, make)


def _hf_cases():
    def traversal(tmp, rel):
        write(tmp, "in/outside.safetensors", shard_t2())
        hf_dir(tmp, rel, {SHARD1: shard_t1()}, good_index(map2="../outside.safetensors"))
        return ["../outside.safetensors", "outside.safetensors"]

    def absolute(tmp, rel):
        p = write(tmp, "in/outside.safetensors", shard_t2())
        absp = os.path.join(os.path.realpath(tmp), p)
        hf_dir(tmp, rel, {SHARD1: shard_t1()}, good_index(map2=absp))
        return [absp, "outside.safetensors"]

    def subdir(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1(), "sub/" + SHARD2: shard_t2()}, good_index(map2="sub/" + SHARD2))
        return ["sub/" + SHARD2, SHARD2]

    def missing(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1()}, good_index())
        return [SHARD2]

    def extra_name(tmp, rel):
        idx = good_index()
        idx["weight_map"][T3] = SHARD1
        hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: shard_t2()}, idx)
        return [T3, SHARD1]

    def unlisted(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1(extra=True), SHARD2: shard_t2()}, good_index())
        return [T3, SHARD1]

    def swapped(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: shard_t2()}, good_index(map1=SHARD2, map2=SHARD1))
        return [T1, T2, SHARD1, SHARD2]

    def dup_key(tmp, rel):
        raw = ('{"metadata":{},"weight_map":{%s:%s,%s:%s,%s:%s}}' % (
            json.dumps(T1), json.dumps(SHARD1), json.dumps(T1), json.dumps(SHARD2),
            json.dumps(T2), json.dumps(SHARD2))).encode()
        hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: shard_t2()}, raw)
        return [T1]

    def with_index(raw):
        def b(tmp, rel):
            hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: shard_t2()}, raw)
            return []
        return b

    def hostile_shard(tmp, rel):
        bad = struct.pack("<Q", 1 << 63) + shard_t2()[8:]
        hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: bad}, good_index())
        return [SHARD2]

    def shard_is_index(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1()}, good_index(map2=INDEX))
        return []

    def index_fifo(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: shard_t2()}, None)
        os.mkfifo(os.path.join(tmp, rel, INDEX))
        return []

    def shard_fifo(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1()}, good_index())
        os.mkfifo(os.path.join(tmp, rel, SHARD2))
        return [SHARD2]

    def empty_dir(tmp, rel):
        os.makedirs(os.path.join(tmp, rel))
        return []

    def dir_without_index(tmp, rel):
        hf_dir(tmp, rel, {SHARD1: shard_t1(), SHARD2: shard_t2()}, None)
        return []

    return [
        hf_case("hf-traversal-dotdot", "index maps a tensor to '../outside.safetensors' (file exists)", traversal),
        hf_case("hf-absolute-path", "index maps a tensor to an absolute path (file exists)", absolute),
        hf_case("hf-subdir-slash", "index maps a tensor to 'sub/<shard>' (contains '/', file exists)", subdir),
        hf_case("hf-shard-missing", "index names a shard file that does not exist", missing),
        hf_case("hf-index-extra-name", "index lists a tensor that its shard does not contain", extra_name),
        hf_case("hf-shard-unlisted-tensor", "a shard contains a tensor the index does not list", unlisted),
        hf_case("hf-swapped-shards", "index maps each tensor to the other shard", swapped),
        hf_case("hf-weight-map-dup-key", "weight_map names the same tensor twice", dup_key),
        hf_case("hf-index-invalid-json", "index file is not valid JSON",
                with_index(b'{"weight_map": {"' + T1.encode() + b'": ')),
        hf_case("hf-index-empty", "index file is empty", with_index(b"")),
        hf_case("hf-index-top-array", "index file is a JSON array", with_index(b"[]")),
        hf_case("hf-weight-map-array", "weight_map is an array",
                with_index(json.dumps({"weight_map": [[T1, SHARD1], [T2, SHARD2]]}).encode())),
        hf_case("hf-weight-map-missing", "index without weight_map",
                with_index(json.dumps({"metadata": {"total_size": 60}}).encode())),
        hf_case("hf-weight-map-value-number", "weight_map value is a number instead of a file name",
                with_index(json.dumps({"weight_map": {T1: SHARD1, T2: 2}}).encode())),
        hf_case("hf-weight-map-value-empty", "weight_map value is the empty string",
                with_index(json.dumps({"weight_map": {T1: SHARD1, T2: ""}}).encode())),
        hf_case("hf-hostile-shard", "a shard's header length is 2^63", hostile_shard),
        hf_case("hf-shard-is-index", "index maps a tensor to the index file itself", shard_is_index),
        hf_case("hf-index-fifo", "index file is a named pipe (nobody writes to it)", index_fifo),
        hf_case("hf-shard-fifo", "a shard file is a named pipe (nobody writes to it)", shard_fifo),
        hf_case("hf-empty-dir", "input is an empty directory", empty_dir),
        hf_case("hf-no-index", "directory with two shards but no index and no model.safetensors",
                dir_without_index),
    ]


def _cross_and_special_cases():
    def mismatch(builder, names):
        def make(tmp, role):
            rel = write(tmp, "in/evil-mismatch.safetensors", builder())
            return {"bad": rel, "names": names}
        return make

    def nonexistent(tmp, role):
        return {"bad": "in/evil-missing.safetensors", "names": ["evil-missing.safetensors"]}

    def fifo(tmp, role):
        os.makedirs(os.path.join(tmp, "in"), exist_ok=True)
        os.mkfifo(os.path.join(tmp, "in/evil-fifo.safetensors"))
        return {"bad": "in/evil-fifo.safetensors", "names": ["evil-fifo.safetensors"]}

    def dev_zero(tmp, role):
        os.makedirs(os.path.join(tmp, "in"), exist_ok=True)
        os.symlink("/dev/zero", os.path.join(tmp, "in/evil-zero.safetensors"))
        return {"bad": "in/evil-zero.safetensors", "names": ["evil-zero.safetensors", "/dev/zero"]}

    def dir_named_file(tmp, role):
        os.makedirs(os.path.join(tmp, "in/evil-dir.safetensors"))
        return {"bad": "in/evil-dir.safetensors", "names": ["evil-dir.safetensors"]}

    shape_mm = lambda: st(*with_entry(T1=entry("F32", [3, 4], 0, 48)))
    # float types mix freely (each is read as stored); an integer one does not convert
    dtype_mm = lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [4, 3], 0, 48),
                           T2: entry("I32", [3], 48, 60)}, d1() + struct.pack("<3i", 1, 2, 3))
    missing_t = lambda: st({"__metadata__": {"format": "pt"}, T1: entry("F32", [4, 3], 0, 48)}, d1())
    return [
        Case("shape-mismatch", "valid file whose %s is [3,4] instead of [4,3]" % T1, mismatch(shape_mm, [T1])),
        Case("dtype-mismatch", "valid expert file whose %s is I32 instead of F32" % T2, mismatch(dtype_mm, [T2]),
             roles=("expert",)),
        Case("tensor-missing", "valid expert file lacking %s" % T2, mismatch(missing_t, [T2]), roles=("expert",)),
        Case("input-nonexistent", "input path does not exist", nonexistent),
        Case("input-fifo", "input is a named pipe (nobody writes to it)", fifo),
        Case("input-dev-zero", "input is a symlink to /dev/zero", dev_zero),
        Case("input-dir-named-safetensors", "input is an empty directory named *.safetensors", dir_named_file),
    ]


def merge_argv(base, models, out, extra=(), method="average"):
    argv = ["merge", "--base", base]
    for m in models:
        argv += ["--model", m]
    return argv + ["--method", method, "-o", out] + list(extra)


HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE_DIR = os.path.join(HERE, "hostile")
# Every file in tests/hostile/ but README.md: name -> (method for .safetensors, description).
REGRESSIONS = {
    "fuzz-ace-overflow-hang.safetensors":
        ("ace", "fuzz_merge: finite F32 weights (7e22) whose deltas overflow ACE's float32 Gram "
                "matrix to Inf; LAPACK's SVD then never returned"),
    "fuzz-config-repeated-models.yaml":
        (None, "fuzz_config: `models` given twice (the first list leaked)"),
    "config-repeated-parameters.yaml":
        (None, "`parameters` given twice: the second mapping was written past its allocation"),
}


def _regression_cases():
    found = sorted(f for f in os.listdir(HOSTILE_DIR) if f != "README.md")
    assert found == sorted(REGRESSIONS), "tests/hostile/ and REGRESSIONS disagree: %r" % found
    cases = []
    for fn in found:
        method, desc = REGRESSIONS[fn]
        data = open(os.path.join(HOSTILE_DIR, fn), "rb").read()

        def make(tmp, role, fn=fn, method=method, data=data):
            rel = write(tmp, "in/" + fn, data)
            if fn.endswith(".yaml"):
                return {"argv": ["merge", rel, "-o", "out.safetensors"], "names": [fn]}
            sys.path.insert(0, os.path.join(HERE, "..", "fuzz"))
            import make_seeds
            make_seeds.write_models(os.path.join(tmp, "in", "fz"))
            m = ["in/fz/e1.safetensors", rel]
            argv = (merge_argv(rel, ["in/fz/e1.safetensors", "in/fz/e2.safetensors"], "out.safetensors",
                               method=method) if role == "base" else
                    merge_argv("in/fz/base.safetensors", m, "outdir", method=method))
            return {"argv": argv, "names": [fn, 'tensor "']}
        roles = ("-",) if fn.endswith(".yaml") else ("base", "expert")
        cases.append(Case(fn.rsplit(".", 1)[0], desc, make, roles=roles, rc=(1, 2)))
    return cases


GOOD_BASE, GOOD_M1, GOOD_M2 = "in/base.safetensors", "in/m1.safetensors", "in/m2.safetensors"


def _output_cases():
    def out_is_input(target, force, names):
        def make(tmp, role):
            return {"argv": merge_argv(GOOD_BASE, [GOOD_M1, GOOD_M2], target, ["--force"] if force else []),
                    "names": names}
        return make

    def out_is_input_dir(tmp, role):
        hf_dir(tmp, "in/gooddir", {SHARD1: shard_t1(1), SHARD2: shard_t2(1)}, good_index())
        return {"argv": merge_argv("in/gooddir", [GOOD_M1, GOOD_M2], "in/gooddir", ["--force"]),
                "names": ["gooddir"]}

    def out_is_input_link(kind):
        def make(tmp, role):
            (os.link if kind == "hard" else os.symlink)(
                os.path.join(tmp, GOOD_M2) if kind == "hard" else "m2.safetensors",
                os.path.join(tmp, "in/link.safetensors"))
            return {"argv": merge_argv(GOOD_BASE, [GOOD_M1, GOOD_M2], "in/link.safetensors", ["--force"]),
                    "names": ["link.safetensors"]}
        return make

    def out_exists(tmp, role):
        write(tmp, "out.safetensors", b"precious bytes, must survive\n")
        return {"argv": merge_argv(GOOD_BASE, [GOOD_M1, GOOD_M2], "out.safetensors"), "names": ["out.safetensors"]}

    def out_dir_exists(tmp, role):
        write(tmp, "outdir/keep.txt", b"precious bytes, must survive\n")
        return {"argv": merge_argv(GOOD_BASE, [GOOD_M1, GOOD_M2], "outdir"), "names": ["outdir"]}

    def out_parent_is_file(tmp, role):
        return {"argv": merge_argv(GOOD_BASE, [GOOD_M1, GOOD_M2], "in/m2.safetensors/out.safetensors", ["--force"]),
                "names": ["in/m2.safetensors/out.safetensors", "m2.safetensors"]}

    def one_expert(tmp, role):
        # average takes one expert (docs/methods.md); ace's covariance solve needs two
        return {"argv": merge_argv(GOOD_BASE, [GOOD_M1], "out.safetensors", method="ace"),
                "names": []}

    return [
        Case("output-is-base", "-o equals the --base path, with --force",
             out_is_input(GOOD_BASE, True, ["base.safetensors"]), roles=("-",)),
        Case("output-is-expert", "-o equals a --model path, with --force",
             out_is_input(GOOD_M2, True, ["m2.safetensors"]), roles=("-",)),
        Case("output-is-input-respelled", "-o is in/../in/./m1.safetensors (same file as --model), with --force",
             out_is_input("in/../in/./m1.safetensors", True, ["m1.safetensors"]), roles=("-",)),
        Case("output-is-base-no-force", "-o equals the --base path, without --force",
             out_is_input(GOOD_BASE, False, ["base.safetensors"]), roles=("-",)),
        Case("output-is-input-dir", "-o equals the HF directory given as --base, with --force",
             out_is_input_dir, roles=("-",)),
        Case("output-is-input-hardlink", "-o is a hard link of a --model file, with --force",
             out_is_input_link("hard"), roles=("-",)),
        Case("output-is-input-symlink", "-o is a symbolic link to a --model file, with --force",
             out_is_input_link("sym"), roles=("-",)),
        Case("output-exists", "output file already exists, no --force (must stay byte-identical)",
             out_exists, roles=("-",)),
        Case("output-dir-exists", "output directory already exists, no --force (must stay unchanged)",
             out_dir_exists, roles=("-",)),
        Case("output-parent-is-file", "-o in/m2.safetensors/out.safetensors (parent is a regular file)",
             out_parent_is_file, roles=("-",)),
        Case("one-expert", "only one --model for ace (usage error)", one_expert, roles=("-",), rc=(1, 2)),
    ]


def all_cases():
    cases = []
    for group in (_len_prefix_cases, _json_cases, _entry_cases, _layout_cases):
        cases += [file_case(n, d, b) for n, d, b in group()]
    cases += [file_case(n, d, b, ".gguf") for n, d, b in _gguf_cases()]
    cases += [file_case(n, d, b, ".bin") for n, d, b in _torch_cases()]
    cases += _cross_and_special_cases() + _hf_cases() + _output_cases() + _regression_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


# --------------------------------------------------------------------------- #
# Controls: valid inputs must merge
# --------------------------------------------------------------------------- #

def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    hdr = json.loads(data[8:8 + n].decode("utf-8"))
    hdr.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in hdr.items()}


def control_files(tmp):
    return {"argv": merge_argv(GOOD_BASE, [GOOD_M1, GOOD_M2], "out.safetensors"), "out": "out.safetensors"}


def control_dirs(tmp):
    hf_dir(tmp, "in/gooddir", {SHARD1: shard_t1(1), SHARD2: shard_t2(1)}, good_index())
    return {"argv": merge_argv("in/gooddir", [GOOD_M1, "in/gooddir"], "outdir"), "out": "outdir"}


def control_gguf(tmp):
    write(tmp, "in/good.gguf", gguf(data=good_gguf_data(1)))
    return {"argv": merge_argv("in/good.gguf", [GOOD_M1, "in/good.gguf"], "out.safetensors"),
            "out": "out.safetensors"}


def control_torch(tmp):
    write(tmp, "in/good.bin", torch_zip())
    return {"argv": merge_argv("in/good.bin", [GOOD_M1, "in/good.bin"], "out.safetensors"),
            "out": "out.safetensors"}


CONTROLS = [("control-torch", "valid torch.save-style zip as base and expert, output to a "
             ".safetensors file", control_torch),
            ("control-gguf", "valid GGUF file as base and expert, output to a .safetensors file",
             control_gguf),
            ("control-files", "valid files, output to a .safetensors file", control_files),
            ("control-hf-dir", "valid HF directory as base and expert, output to a directory", control_dirs)]


def check_control_output(tmp, out):
    p = os.path.join(tmp, out)
    found = {}
    if os.path.isdir(p):
        for dp, _, fns in os.walk(p):
            for fn in fns:
                if fn.endswith(".safetensors"):
                    found.update(read_st(os.path.join(dp, fn)))
    elif os.path.isfile(p):
        found = read_st(p)
    else:
        return "output %s missing" % out
    want = {T1: ("F32", [4, 3]), T2: ("F32", [3])}
    if found != want:
        return "output tensors %r, expected %r" % (found, want)
    return None


# --------------------------------------------------------------------------- #
# Runner
# --------------------------------------------------------------------------- #

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root):
    snap = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            s = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(s.st_mode):
                snap[rel] = ("file", s.st_size, sha256(p))
            elif stat.S_ISLNK(s.st_mode):
                snap[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(s.st_mode):
                snap[rel] = ("dir",)
            else:
                snap[rel] = ("other", stat.S_IFMT(s.st_mode))
    return snap


def diff_snap(before, after, allowed_prefix=None):
    problems = []
    for k in sorted(set(before) | set(after)):
        if allowed_prefix and (k == allowed_prefix or k.startswith(allowed_prefix + os.sep)) and k not in before:
            continue
        if k not in after:
            problems.append("removed " + k)
        elif k not in before:
            problems.append("left behind " + k)
        elif before[k] != after[k]:
            problems.append("modified " + k)
    return problems


def setup_good(tmp):
    write(tmp, GOOD_BASE, good_file(0))
    write(tmp, GOOD_M1, good_file(1))
    write(tmp, GOOD_M2, good_file(2))


def run_acem(binary, argv, tmp):
    env = dict(os.environ, OMP_NUM_THREADS="1", LC_ALL="C")
    try:
        r = subprocess.run([binary] + argv, cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode("utf-8", "replace"), (e.stderr or b"").decode("utf-8", "replace")
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def first_line(text):
    t = text.strip("\n")
    return t.split("\n")[0] if t else ""


def judge_hostile(rc, out, err, spec, expected_rc, snap_problems):
    problems = []
    if rc is None:
        problems.append("timed out after %d s" % TIMEOUT_S)
    elif rc < 0:
        problems.append("killed by signal %d" % -rc)
    elif rc not in expected_rc:
        problems.append("exit %d, expected %s" % (rc, "/".join(map(str, expected_rc))))
    body = err.rstrip("\n")
    # one error line; warnings about what was accepted may come before it
    lines = [ln for ln in body.split("\n") if not ln.startswith("acem: warning: ")] if body else []
    if len(lines) != 1:
        problems.append("stderr has %d lines besides warnings, expected 1" % len(lines))
    if lines and not lines[0].startswith("acem: error: "):
        problems.append("stderr does not start with 'acem: error: '")
    names = spec.get("names") or []
    if names and lines and not any(n in lines[0] for n in names):
        problems.append("message names none of %s" % ", ".join(repr(n) for n in names))
    if "error" in out.lower():
        problems.append("error text on stdout")
    problems += snap_problems
    return problems


def run_case(binary, tmp, case, role):
    setup_good(tmp)
    spec = case.make(tmp, role)
    if "argv" in spec:
        argv = spec["argv"]
    elif role == "base":
        argv = merge_argv(spec["bad"], [GOOD_M1, GOOD_M2], "out.safetensors")
    else:
        argv = merge_argv(GOOD_BASE, [GOOD_M1, spec["bad"]], "outdir")
    before = snapshot(tmp)
    rc, out, err = run_acem(binary, argv, tmp)
    snap_problems = diff_snap(before, snapshot(tmp))
    return judge_hostile(rc, out, err, spec, case.rc, snap_problems), err, rc


def run_control(binary, tmp, make):
    setup_good(tmp)
    spec = make(tmp)
    before = snapshot(tmp)
    rc, out, err = run_acem(binary, spec["argv"], tmp)
    problems = []
    if rc is None:
        problems.append("timed out")
    elif rc != 0:
        problems.append("exit %d" % rc)
    else:
        msg = check_control_output(tmp, spec["out"])
        if msg:
            problems.append(msg)
    problems += diff_snap(before, snapshot(tmp), allowed_prefix=spec["out"])
    return problems, err, rc


def list_md():
    print("# Hostile inputs fed to `acem merge` by tests/test_hostile_inputs.py\n")
    print("Roles: *base* = the hostile input is `--base` (two good experts, output file);")
    print("*expert* = it is the second `--model` (good base, output directory); *-* = own command line.\n")
    print("Every hostile run must exit 1 (usage: 1 or 2), not crash, finish within 10 s, print exactly one")
    print("`acem: error: ` line naming the offending file (or tensor for cross-file mismatches), and leave")
    print("the working directory byte-for-byte unchanged (no output, no temporary files).\n")
    for name, desc, _ in CONTROLS:
        print("- `%s` (must succeed): %s" % (name, desc))
    for c in all_cases():
        print("- `%s` [%s]: %s" % (c.name, ", ".join(c.roles), c.desc))


def main(argv):
    if argv[1:2] == ["--list-md"]:
        list_md()
        return 0
    args = argv[1:]
    keep = "--keep" in args
    only = []
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--keep":
            pass
        elif args[i] == "--only" and i + 1 < len(args):
            only.append(args[i + 1])
            i += 1
        else:
            rest.append(args[i])
        i += 1
    if len(rest) != 1:
        sys.stderr.write(__doc__)
        return 2
    binary = os.path.abspath(rest[0])
    if not os.access(binary, os.X_OK):
        sys.stderr.write("not an executable: %s\n" % binary)
        return 2

    passed = failed = 0

    def report(ok, label, problems, err, tmp):
        nonlocal passed, failed
        msg = first_line(err)
        if ok:
            passed += 1
            print("PASS %s: %s" % (label, msg[:300]))
        else:
            failed += 1
            print("FAIL %s: %s" % (label, "; ".join(problems)))
            shown = err.strip("\n")
            if shown:
                for line in shown.split("\n")[:8]:
                    print("     stderr| %s" % line[:300])
            if keep:
                print("     kept: %s" % tmp)
        sys.stdout.flush()

    def selected(name):
        return not only or any(o in name for o in only)

    for name, _, make in CONTROLS:
        if not selected(name):
            continue
        tmp = tempfile.mkdtemp(prefix="acem-hostile-")
        try:
            problems, err, _ = run_control(binary, tmp, make)
            report(not problems, name, problems, err, tmp)
        finally:
            if not (keep and problems):
                shutil.rmtree(tmp, ignore_errors=True)

    for case in all_cases():
        if not selected(case.name):
            continue
        for role in case.roles:
            label = case.name if role == "-" else "%s [as %s]" % (case.name, role)
            tmp = tempfile.mkdtemp(prefix="acem-hostile-")
            problems = ["harness error"]
            try:
                problems, err, _ = run_case(binary, tmp, case, role)
                report(not problems, label, problems, err, tmp)
            finally:
                if not (keep and problems):
                    shutil.rmtree(tmp, ignore_errors=True)

    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
