"""What the end-to-end test scripts share: one PASS/FAIL line per check, a fresh directory
per group of checks, the closing "N passed, N failed" line and the exit status, and a small
tmpfs for disk-full cases."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

ACEM = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else None  # the binary under test
results = []
# root may mount a tmpfs (disk full) and a read-only bind mount (root writes through 0555)
CAN_MOUNT = os.geteuid() == 0 and shutil.which("mount") is not None


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else "  " + str(detail)[:600]))
    sys.stdout.flush()


def run(*args, timeout=300, **kw):
    """acem with args, its output captured as text."""
    return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=timeout, **kw)


def one_error_line(r, *phrases):
    """Exit 1 or 2 and one error line holding every phrase (warnings before it are fine)."""
    lines = [ln for ln in r.stderr.rstrip("\n").split("\n") if not ln.startswith("acem: warning: ")]
    return (r.returncode in (1, 2) and len(lines) == 1 and lines[0].startswith("acem: error: ")
            and all(p in lines[0] for p in phrases))


def run_groups(groups, prefix, only=()):
    """Runs each group (a function of a fresh directory) whose name contains one of `only`
    (all when empty); a group that raises fails, and the others still run. Returns the exit
    status."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        for fn in groups:
            if only and not any(o in fn.__name__ for o in only):
                continue
            sub = os.path.join(d, fn.__name__)
            os.mkdir(sub)
            try:
                fn(sub)
            except Exception as e:  # noqa: BLE001 - a crash of one group fails it, not the run
                check(f"{fn.__name__} ran to the end", False, repr(e))
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


@contextlib.contextmanager
def tmpfs(path, size, fill=False):
    """A tmpfs of `size` at path (filled up when fill), or None where mounting is not
    allowed."""
    os.mkdir(path)
    ok = CAN_MOUNT and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                                      capture_output=True).returncode == 0
    try:
        if ok and fill:
            fd = os.open(os.path.join(path, "fill"), os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
        yield path if ok else None
    finally:
        if ok:
            subprocess.run(["umount", path], check=True)
        os.rmdir(path)
