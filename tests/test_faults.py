#!/usr/bin/python3
"""Fault injection: what acem does when the world fails under it.

Disk full (RLIMIT_FSIZE, and a 1 MiB tmpfs where one can be mounted), an input truncated
while it is read, SIGINT/SIGTERM/SIGKILL during a merge, an unwritable output directory,
absurd headers that must be refused quickly, and allocation failure (RLIMIT_AS). The
promise checked every time: a clear one-line error (or the exit status of the signal),
and nothing at the output path; what a killed run leaves is removed by the next one.
An output path equal to an input is refused by the cases in test_hostile_inputs.py.

usage: /usr/bin/python3 tests/test_faults.py PATH_TO_acem
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import safetensors_np as st  # noqa: E402
from harness import CAN_MOUNT, check, run_groups, tmpfs  # noqa: E402

ACEM = os.path.abspath(sys.argv[1])
# The sanitizer build reserves terabytes of address space and runs slower.
ASAN = b"__asan_init" in open(ACEM, "rb").read()
SLOW = 4 if ASAN else 1




def skip(name, why):
    print("SKIP %s: %s" % (name, why))


def run(args, timeout=120, **kw):
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=timeout, **kw)


def one_error_line(r, *phrases):
    lines = r.stderr.rstrip("\n").split("\n")
    return (r.returncode == 1 and len(lines) == 1 and lines[0].startswith("acem: error: ")
            and all(p in lines[0] for p in phrases))


def leftovers(d, out):
    """Anything acem made beside the output: the output itself or a temporary."""
    name = os.path.basename(out)
    return sorted(f for f in os.listdir(d) if f == name or f.startswith(name + ".acem-"))


def small_models(d, n_experts=2):
    rng = np.random.default_rng(0)
    base = {f"layer.{i}.weight": rng.standard_normal((64, 64)) for i in range(4)}
    paths = [os.path.join(d, "base.safetensors")]
    st.write_file(paths[0], {k: st.from_f64(v, "F32") for k, v in base.items()})
    for t in range(n_experts):
        paths.append(os.path.join(d, f"e{t}.safetensors"))
        st.write_file(paths[-1], {k: st.from_f64(v + 0.1 * (t + 1), "F32") for k, v in base.items()})
    return paths


_big = {}


def big_models(d):
    """24 tensors x 1M floats (written once, beside d): a ties merge of these runs for a
    second or more."""
    root = os.path.dirname(d)
    if root not in _big:
        rng = np.random.default_rng(1)
        tensors = {f"layer.{i}.weight": rng.standard_normal((1024, 1024)) for i in range(24)}
        base, exp = os.path.join(root, "big-base.safetensors"), os.path.join(root, "big-e.safetensors")
        st.write_file(base, {k: st.from_f64(v, "F32") for k, v in tensors.items()})
        st.write_file(exp, {k: st.from_f64(v + 1, "F32") for k, v in tensors.items()})
        _big[root] = base, exp
    return _big[root]


def merge_args(paths, out, method="average"):
    args = ["merge", "-q", "--threads", "1", "-b", paths[0]]
    for p in paths[1:]:
        args += ["-m", p]
    return args + ["-M", method, "-o", out]


def start_big_merge(d, paths, out):
    """Starts a ties merge and returns once its temporary exists (it is writing)."""
    p = subprocess.Popen([ACEM, *merge_args(paths, out, "ties")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = os.path.basename(out) + ".acem-tmp-"
    deadline = time.time() + 30 * SLOW
    while time.time() < deadline and not any(f.startswith(name) for f in os.listdir(d)):
        time.sleep(0.002)
    return p


# --------------------------------------------------------------------------- disk full

def test_file_size_limit(d):
    paths = small_models(d)
    for out, what in ((os.path.join(d, "o.safetensors"), "file"), (os.path.join(d, "odir"), "directory")):
        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
        r = run(merge_args(paths, out) + (["--max-shard-size", "30K"] if what == "directory" else []),
                preexec_fn=limit)
        check(f"RLIMIT_FSIZE below the {what} output: one error line (File too large), nothing left",
              one_error_line(r, "File too large", os.path.basename(out)) and not leftovers(d, out),
              f"rc={r.returncode} err={r.stderr!r} left={leftovers(d, out)}")


def test_disk_full(d):
    paths = small_models(d)
    with tmpfs(os.path.join(d, "full"), "48k") as mnt:
        if mnt is None:
            skip("disk full on a tmpfs", "mounting a tmpfs needs root (RLIMIT_FSIZE above covers the write path)")
            return
        for name in ("o.safetensors", "odir"):
            out = os.path.join(mnt, name)
            r = run(merge_args(paths, out))
            check(f"a full disk under the output {name}: one error line (No space left), nothing left",
                  one_error_line(r, "No space left on device") and os.listdir(mnt) == [],
                  f"rc={r.returncode} err={r.stderr!r} left={os.listdir(mnt)}")


# ------------------------------------------------------------- inputs failing under us

def test_truncated_while_read(d):
    base, exp = big_models(d)
    victim = os.path.join(d, "victim.safetensors")
    shutil.copyfile(exp, victim)
    out = os.path.join(d, "t.safetensors")
    p = start_big_merge(d, [base, exp, victim], out)
    os.truncate(victim, 4096)  # the header stays, the data goes
    _, err = p.communicate(timeout=120)
    lines = err.rstrip("\n").split("\n")
    check("an input truncated during the merge: one error line naming it, nothing left",
          p.returncode == 1 and len(lines) == 1 and "victim.safetensors" in lines[0]
          and "truncated" in lines[0] and not leftovers(d, out),
          f"rc={p.returncode} err={err!r} left={leftovers(d, out)}")


# ---------------------------------------------------------------------------- signals

def test_sigint_sigterm(d):
    base, exp = big_models(d)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        for out in (os.path.join(d, "sig.safetensors"), os.path.join(d, "sigdir")):
            p = start_big_merge(d, [base, exp, exp, exp], out)
            p.send_signal(sig)
            _, err = p.communicate(timeout=60 * SLOW)
            check(f"{sig.name} during a merge to {os.path.basename(out)}: exit {code}, nothing left",
                  p.returncode == code and not leftovers(d, out) and "interrupted" in err,
                  f"rc={p.returncode} left={leftovers(d, out)} err={err!r}")


def test_second_signal(d):
    """A second SIGTERM ends the process at once; the next run removes what it left."""
    base, exp = big_models(d)
    out = os.path.join(d, "twice.safetensors")
    p = start_big_merge(d, [base, exp, exp, exp], out)
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60 * SLOW)
    check("two SIGTERMs: killed by the signal or exit 143, nothing at the output",
          p.returncode in (-signal.SIGTERM, 143) and not os.path.exists(out), f"rc={p.returncode}")
    paths = small_models(d)
    r = run(merge_args(paths, out))
    check("the next run succeeds and leaves no temporary", r.returncode == 0 and leftovers(d, out) == [os.path.basename(out)],
          f"rc={r.returncode} left={leftovers(d, out)} err={r.stderr!r}")


def test_sigkill(d):
    base, exp = big_models(d)
    paths = small_models(d)
    for out in (os.path.join(d, "k.safetensors"), os.path.join(d, "kdir")):
        p = start_big_merge(d, [base, exp, exp, exp], out)
        p.kill()
        p.communicate(timeout=60)
        left = leftovers(d, out)
        check(f"SIGKILL during a merge to {os.path.basename(out)}: nothing at the output path",
              p.returncode == -signal.SIGKILL and not os.path.exists(out) and left,
              f"rc={p.returncode} left={left}")
        r = run(merge_args(paths, out))
        check(f"the next run to {os.path.basename(out)} removes the dead run's temporary",
              r.returncode == 0 and leftovers(d, out) == [os.path.basename(out)],
              f"rc={r.returncode} left={leftovers(d, out)} err={r.stderr!r}")


# ------------------------------------------------------------------ output directory

@contextlib.contextmanager
def read_only(path):
    """Makes the directory unwritable for acem: mode 0555, or for root (who writes anyway) a
    read-only bind mount. Yields how, or None where neither is possible."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield "mode 0555"
        finally:
            os.chmod(path, 0o755)
        return
    mount = lambda *a: CAN_MOUNT and subprocess.run(["mount", *a], capture_output=True).returncode == 0
    bound = mount("--bind", path, path)
    ok = bound and mount("-o", "remount,bind,ro", path)
    try:
        yield "read-only bind mount" if ok else None
    finally:
        if bound:
            subprocess.run(["umount", path], check=True)


def test_unwritable_directory(d):
    paths = small_models(d)
    locked = os.path.join(d, "locked")
    os.mkdir(locked)
    with read_only(locked) as how:
        if how is None:
            skip("an unwritable output directory", "root without permission to mount: 0555 does not stop root")
            return
        for name in ("o.safetensors", "odir"):
            out = os.path.join(locked, name)
            r = run(merge_args(paths, out))
            check(f"an unwritable output directory ({how}, {name}): one error line naming the output",
                  one_error_line(r, out) and ("Permission denied" in r.stderr or "Read-only" in r.stderr)
                  and os.listdir(locked) == [],
                  f"rc={r.returncode} err={r.stderr!r} left={os.listdir(locked)}")


# ------------------------------------------------------------------- resource bounds

def header_file(path, header, data=b""):
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def timed_merge(name, d, inputs, bound, phrase=None):
    """A merge of inputs that must finish within bound seconds: refused with one line naming
    inputs[0] and holding phrase, or (phrase None) accepted."""
    out = os.path.join(d, "r.safetensors")
    t0 = time.time()
    r = run(merge_args(inputs, out), timeout=bound * SLOW * 3)
    secs = time.time() - t0
    ok = (one_error_line(r, os.path.basename(inputs[0]), phrase) and not leftovers(d, out) if phrase
          else r.returncode == 0)
    check(f"{name}: {'refused' if phrase else 'merged'} in {secs:.1f} s (bound {bound * SLOW} s)",
          ok and secs < bound * SLOW, f"rc={r.returncode} err={r.stderr[:300]!r}")
    if os.path.exists(out):
        os.remove(out)


def timed_refusal(name, d, bad, phrase, bound):
    paths = small_models(d)
    timed_merge(name, d, [bad, paths[1], paths[2]], bound, phrase)


def test_too_many_tensors(d):
    n = 1000001
    entry = '{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    header = ("{" + ",".join('"t%d":%s' % (i, entry) for i in range(n)) + "}").encode()
    bad = os.path.join(d, "many.safetensors")
    header_file(bad, header)
    timed_refusal("1,000,001 tensors (limit 1,000,000)", d, bad, "limit", 15)


def near_limit_file(path):
    """A header of exactly 100,000,000 bytes (the limit): one long metadata string, one tensor."""
    header = ('{"__metadata__":{"pad":"' + "x" * (100000000 - 200) + '"},"w":{"dtype":"F32",'
              '"shape":[1],"data_offsets":[0,4]}}').encode()
    header_file(path, header + b" " * (100000000 - len(header)), b"\0\0\0\0")


def test_header_near_limit(d):
    bad = os.path.join(d, "near.safetensors")
    near_limit_file(bad)
    timed_merge("a header of exactly 100,000,000 bytes (the limit)", d, [bad, bad, bad], 30)
    with open(bad, "r+b") as f:  # one byte more is past the limit
        f.write(struct.pack("<Q", 100000001))
        f.seek(0, 2)
        f.write(b"\0")
    timed_refusal("a header of 100,000,001 bytes", d, bad, "outside", 5)


def test_numel_overflow(d):
    bad = os.path.join(d, "numel.safetensors")
    header_file(bad, json.dumps({"w": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 1 << 32],
                                       "data_offsets": [0, 0]}}).encode())
    timed_refusal("a shape whose element count overflows 64 bits", d, bad, "overflows", 5)


def test_out_of_memory(d):
    if ASAN:
        skip("allocation failure under RLIMIT_AS", "AddressSanitizer reserves its shadow memory past any such limit")
        return
    # Sparse 256 MiB tensors (zeros): ties holds (T + 2) of them, about 1.25 GiB.
    paths = []
    for name in ("base", "e0", "e1", "e2"):
        p = os.path.join(d, name + ".safetensors")
        header = json.dumps({"w": {"dtype": "F32", "shape": [8192, 8192], "data_offsets": [0, 1 << 28]}}).encode()
        header += b" " * (-len(header) % 8)
        header_file(p, header)
        os.truncate(p, 8 + len(header) + (1 << 28))
        paths.append(p)
    out = os.path.join(d, "oom.safetensors")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

    def limit(mib):
        return lambda: resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))
    r = run(merge_args(paths, out, "ties"), preexec_fn=limit(768), env=env)
    check("a merge that needs more memory than RLIMIT_AS allows: one 'out of memory' line, nothing left",
          one_error_line(r, "out of memory") and not leftovers(d, out),
          f"rc={r.returncode} err={r.stderr!r} left={leftovers(d, out)}")
    near = os.path.join(d, "near.safetensors")
    near_limit_file(near)
    r = run(merge_args([near, near, near], out), preexec_fn=limit(200), env=env)
    check("a 100 MB header under a 200 MiB RLIMIT_AS: one 'out of memory' line naming the file",
          one_error_line(r, "out of memory", "near.safetensors") and not leftovers(d, out),
          f"rc={r.returncode} err={r.stderr!r}")


def main():
    return run_groups([test_file_size_limit, test_disk_full, test_truncated_while_read,
                       test_sigint_sigterm, test_second_signal, test_sigkill,
                       test_unwritable_directory, test_too_many_tensors, test_header_near_limit,
                       test_numel_overflow, test_out_of_memory], "acem-faults-")


if __name__ == "__main__":
    sys.exit(main())
