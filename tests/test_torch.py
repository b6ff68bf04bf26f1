#!/usr/bin/python3
"""PyTorch zip checkpoints (torch.save >= 1.6) end to end, with fixtures written by
Debian's python3-torch: they must merge exactly (bit for bit) like the same tensors in
safetensors.

usage: /usr/bin/python3 tests/test_torch.py PATH_TO_acem

Fixtures: state_dicts with a tied weight (two names, one tensor), a transposed view, a
column slice (strided, with a storage offset), a row slice (storage offset), f16, bf16,
f64, int64 and bool tensors, nn.Parameters (keep_vars=True: _rebuild_parameter); as
single .bin files, as directories with pytorch_model.bin, and as sharded directories
(pytorch_model-0000i-of-00002.bin + pytorch_model.bin.index.json). A legacy (non-zip)
torch.save file is refused with a message saying so. Copies rewritten with every size and
offset in ZIP64 form (as archives > 4 GiB have them) merge the same.
The last line printed is always "N passed, M failed".
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import safetensors_np as st  # noqa: E402

ACEM = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None
results = []
DT = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
      "torch.float64": "F64", "torch.int64": "I64", "torch.bool": "BOOL"}


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + str(detail)[:600]))
    sys.stdout.flush()


def acem(*args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=600, env=env)


def state_dict(torch, seed):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(12, 8)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(8, 12, generator=g))
        lin.bias.copy_(torch.randn(8, generator=g))
    sd = lin.state_dict(keep_vars=True)  # nn.Parameters: _rebuild_parameter
    w = torch.randn(16, 24, generator=g)
    sd["w"] = w
    sd["tied"] = w                                  # the same tensor under two names
    sd["wt"] = torch.randn(24, 16, generator=g).t()  # transposed view
    big = torch.randn(10, 6, generator=g)
    sd["cols"] = big[:, 1:4]                        # strided, storage offset 1
    sd["rows"] = big[3:7]                           # contiguous, storage offset 18
    sd["h"] = torch.randn(4, 8, generator=g).half()
    sd["bf"] = torch.randn(8, 4, generator=g).bfloat16()
    sd["d"] = torch.randn(5, generator=g).double()
    sd["ids"] = torch.arange(6).reshape(2, 3)
    sd["mask"] = torch.tensor([True, False, True, True])
    return sd


def to_safetensors(torch, sd, path):
    out = {}
    for k, v in sd.items():
        v = v.detach().contiguous()
        dt = DT[str(v.dtype)]
        if dt == "BF16":
            raw = v.view(torch.int16).numpy().view(np.uint16)
        else:
            raw = v.numpy()
        out[k] = st.Tensor(dt, tuple(v.shape), raw.copy())
    st.write_file(path, out)


def sharded(torch, sd, d):
    os.makedirs(d)
    names = list(sd)
    parts = [names[:len(names) // 2], names[len(names) // 2:]]
    wm = {}
    for i, part in enumerate(parts):
        fn = "pytorch_model-%05d-of-00002.bin" % (i + 1)
        torch.save({k: sd[k] for k in part}, os.path.join(d, fn))
        wm.update({k: fn for k in part})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)


def zip64_copy(src, dst, cdir_extra=True):
    """Rewrites a torch.save archive with every size and offset in ZIP64 form: 0xFFFFFFFF in
    the local headers and the central directory, the values in ZIP64 extra fields, and a
    ZIP64 end record + locator. The form archives > 4 GiB take, at a test's size.
    cdir_extra=False leaves the central directory's extra fields out (malformed)."""
    import struct
    import zipfile
    with zipfile.ZipFile(src) as z:
        entries = [(i.filename.encode(), z.read(i), i.CRC) for i in z.infolist()]
    out, cdir = bytearray(), bytearray()
    for name, data, crc in entries:
        off, n = len(out), len(data)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), 20) + name + struct.pack("<HHQQ", 1, 16, n, n) + data
        extra = struct.pack("<HHQQQ", 1, 24, n, n, off) if cdir_extra else b""
        cdir += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF,
                            0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name + extra
    cd_off, rec_off = len(out), len(out) + len(cdir)
    out += cdir
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries),
                       len(cdir), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, rec_off, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(out)


def same_output(a, b):
    ta, tb = st.read_file(a)[0], st.read_file(b)[0]
    if list(ta) != list(tb):
        return "names differ: %s vs %s" % (list(ta), list(tb))
    for k in ta:
        if ta[k].dtype != tb[k].dtype or ta[k].tobytes() != tb[k].tobytes():
            return "%s differs" % k
    return None


def main():
    if not ACEM:
        print(__doc__)
        return 2
    try:
        import torch
    except ImportError:
        print("python3-torch is missing (scripts/deps.sh installs it)")
        print("0 passed, 1 failed")
        return 1
    d = tempfile.mkdtemp(prefix="acem-torch-")
    try:
        sds = [state_dict(torch, s) for s in range(4)]
        bins, sts = [], []
        for i, sd in enumerate(sds):
            bins.append(os.path.join(d, "m%d.bin" % i))
            torch.save(sd, bins[-1])
            sts.append(os.path.join(d, "m%d.safetensors" % i))
            to_safetensors(torch, sd, sts[-1])
        r = acem("inspect", bins[0])
        check("inspect reads a torch.save archive (views, tied weights, all dtypes)",
              r.returncode == 0 and "wt " in r.stdout and "BF16" in r.stdout and "BOOL" in r.stdout,
              r.stdout + r.stderr)
        for m in ("task_arithmetic", "ties", "dare_ties", "ace", "tsv"):
            o1, o2 = os.path.join(d, m + "-bin.safetensors"), os.path.join(d, m + "-st.safetensors")
            r1 = acem("merge", "-q", "-b", bins[0], "-m", bins[1], "-m", bins[2], "-m", bins[3],
                      "-M", m, "-o", o1)
            r2 = acem("merge", "-q", "-b", sts[0], "-m", sts[1], "-m", sts[2], "-m", sts[3],
                      "-M", m, "-o", o2)
            diff = (r1.stderr + r2.stderr) if r1.returncode or r2.returncode else same_output(o1, o2)
            check("%s: torch.save inputs merge bit for bit like safetensors" % m, diff is None, diff)
        # directories: pytorch_model.bin, and sharded with an index
        single = os.path.join(d, "dir1")
        os.makedirs(single)
        shutil.copy(bins[1], os.path.join(single, "pytorch_model.bin"))
        shard = os.path.join(d, "dir2")
        sharded(torch, sds[2], shard)
        o1 = os.path.join(d, "dirs.safetensors")
        r = acem("merge", "-q", "-b", bins[0], "-m", single, "-m", shard, "-m", bins[3],
                 "-M", "ties", "-o", o1)
        diff = r.stderr if r.returncode else same_output(o1, os.path.join(d, "ties-st.safetensors"))
        check("pytorch_model.bin and sharded pytorch_model.bin.index.json directories merge like "
              "safetensors", diff is None, diff)
        # ZIP64: every size and offset through the ZIP64 extra fields and end records
        z64 = [os.path.join(d, "z64-%d.bin" % i) for i in range(4)]
        for src, dst in zip(bins, z64):
            zip64_copy(src, dst)
        o1 = os.path.join(d, "z64.safetensors")
        r = acem("merge", "-q", "-b", z64[0], "-m", z64[1], "-m", z64[2], "-m", z64[3],
                 "-M", "ties", "-o", o1)
        diff = r.stderr if r.returncode else same_output(o1, os.path.join(d, "ties-st.safetensors"))
        check("ZIP64 archives (sizes and offsets in ZIP64 extra fields) merge like safetensors",
              diff is None, diff)
        bad = os.path.join(d, "z64-bad.bin")
        zip64_copy(bins[1], bad, cdir_extra=False)
        r = acem("merge", "-q", "-b", z64[0], "-m", bad, "-m", z64[2], "-M", "average",
                 "-o", os.path.join(d, "x.safetensors"))
        check("a ZIP64 entry without its extra field is refused in one line naming the file",
              r.returncode == 1 and "ZIP64" in r.stderr and bad in r.stderr
              and r.stderr.count("\n") == 1, r.stderr)
        legacy = os.path.join(d, "legacy.bin")
        torch.save(sds[0], legacy, _use_new_zipfile_serialization=False)
        r = acem("merge", "-q", "-b", legacy, "-m", bins[1], "-m", bins[2], "-M", "average",
                 "-o", os.path.join(d, "x.safetensors"))
        check("a legacy (non-zip) torch.save file is refused, saying so",
              r.returncode == 1 and "legacy" in r.stderr and r.stderr.count("\n") == 1, r.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("%d passed, %d failed" % (sum(results), len(results) - sum(results)))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
