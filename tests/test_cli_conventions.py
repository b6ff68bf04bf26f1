#!/usr/bin/python3
"""The command line's conventions (issue 16, items 7, 13's sizes, 14 and 17): usage errors
exit 2 and say what is valid, -p lambda, sizes as Hugging Face reads them, YAML paths from
the file's directory, FIFO configs and unreadable directories, help texts, the SVG's axis,
the progress bar on a narrow terminal, SIGHUP, and the peak RSS of acem alone.

usage: /usr/bin/python3 tests/test_cli_conventions.py PATH_TO_acem
"""

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "oracle"))
import safetensors_np as st  # noqa: E402
from harness import check, run_groups  # noqa: E402

ACEM = os.path.abspath(sys.argv[1])
ASAN = b"__asan_init" in open(ACEM, "rb").read()
SLOW = 4 if ASAN else 1
PRESETS = ("gpt2", "bert", "roberta", "llama", "clip-vit")




def run(*args, timeout=120, **kw):
    try:
        return subprocess.run([ACEM, *args], capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, "timeout", "", "timed out")


def make_models(d, shapes, n_experts=2, seed=0):
    rng = np.random.default_rng(seed)
    base = {k: rng.standard_normal(s) for k, s in shapes.items()}
    paths = [os.path.join(d, "base.safetensors")]
    st.write_file(paths[0], {k: st.from_f64(v, "F32") for k, v in base.items()})
    for t in range(n_experts):
        paths.append(os.path.join(d, f"e{t}.safetensors"))
        st.write_file(paths[-1], {k: st.from_f64(v + 0.1 * (t + 1) * rng.standard_normal(v.shape), "F32")
                                  for k, v in base.items()})
    return paths


def model_args(paths):
    return ["-b", paths[0], *sum((["-m", p] for p in paths[1:]), [])]


def one_line(r, code, *phrases):
    lines = r.stderr.rstrip("\n").split("\n")
    return (r.returncode == code and len(lines) == 1 and lines[0].startswith("acem: error: ")
            and all(p in lines[0] for p in phrases))


def tensors_of(path):
    return {k: t.to_f64() for k, t in st.read_file(path)[0].items()}


# ----------------------------------------------------------------- item 14: usage errors

def test_usage_errors(d):
    paths = make_models(d, {"layer.0.weight": (8, 8)})
    out = os.path.join(d, "o.safetensors")
    merge = ["merge", "-q", *model_args(paths), "-o", out]
    cases = [
        ("unknown method", ["-M", "magic"], ("unknown method", "ties")),
        ("unknown parameter", ["-M", "ties", "-p", "densty=0.1"], ("densty",)),
        ("parameter out of range", ["-M", "ties", "-p", "density=2"], ("density",)),
        ("unknown preset", ["-M", "ties", "--preset", "gpt3"], ("gpt3",)),
        ("bad regex", ["-M", "ties", "-x", "(unclosed"], ("(unclosed",)),
    ]
    for name, extra, phrases in cases:
        r = run(*merge, *extra)
        check(f"item14 {name} exits 2 with one line", one_line(r, 2, *phrases),
              f"rc={r.returncode} err={r.stderr!r}")
    r = run(*merge, "-M", "ties", "-p", "densty=0.1")
    check("item14 an unknown parameter lists the valid ones",
          "its parameters: density" in r.stderr, repr(r.stderr))
    r = run(*merge, "-M", "dare_ties", "-p", "rescale=l2")
    check("item14 an unknown choice lists the valid ones", one_line(r, 2, "l2", "inverse, l1"),
          f"rc={r.returncode} err={r.stderr!r}")
    r = run(*merge, "-M", "average", "-p", "density=0.1")
    check("item14 a parameter of a method that takes none says so",
          "it takes none" in r.stderr, repr(r.stderr))
    for name, extra in (("unknown preset", ["--preset", "gpt3"]), ("bad regex", ["-x", "a{1"]),
                        ("--threads abc", ["-t", "abc"])):
        r = run("stats", "-q", *model_args(paths), *extra)
        check(f"item14 stats: {name} exits 2", one_line(r, 2), f"rc={r.returncode} err={r.stderr!r}")
    cfg = os.path.join(d, "bad-method.yaml")
    with open(cfg, "w") as f:
        f.write(f"method: magic\nbase: {paths[0]}\nmodels: [{paths[1]}, {paths[2]}]\n")
    r = run("merge", "-q", cfg, "-o", out)
    check("item14 an unknown method in a YAML config exits 2", one_line(r, 2, "magic"),
          f"rc={r.returncode} err={r.stderr!r}")


def test_param_lambda(d):
    paths = make_models(d, {"layer.0.weight": (16, 12), "layer.0.bias": (12,)})
    outs = {k: os.path.join(d, k + ".safetensors") for k in ("flag", "param", "yaml")}
    common = ["merge", "-q", *model_args(paths), "-M", "task_arithmetic"]
    r1 = run(*common, "-l", "0.7", "-o", outs["flag"])
    r2 = run(*common, "-p", "lambda=0.7", "-o", outs["param"])
    cfg = os.path.join(d, "lambda.yaml")
    with open(cfg, "w") as f:
        f.write(f"method: task_arithmetic\nbase: {paths[0]}\nmodels: [{paths[1]}, {paths[2]}]\n"
                "parameters:\n  lambda: 0.7\n")
    r3 = run("merge", "-q", cfg, "-o", outs["yaml"])
    ok = all(r.returncode == 0 for r in (r1, r2, r3))
    if ok:
        a, b, c = (tensors_of(outs[k]) for k in ("flag", "param", "yaml"))
        ok = all(np.array_equal(a[k], b[k]) and np.array_equal(a[k], c[k]) for k in a)
    check("item14 -p lambda=0.7 merges as --lambda 0.7 and YAML's parameters.lambda", ok,
          r1.stderr + r2.stderr + r3.stderr)
    r = run(*common, "-p", "lambda=abc", "-o", os.path.join(d, "x.safetensors"))
    check("item14 -p lambda=abc is a usage error naming lambda", one_line(r, 2, "lambda", "abc"),
          f"rc={r.returncode} err={r.stderr!r}")


# --------------------------------------------------------------- item 13: size units

def test_size_units(d):
    # four tensors of 51,000 bytes: two fit in 100KiB (102,400 bytes), one in 100KB
    paths = make_models(d, {f"layer.{i}.weight": (12750,) for i in range(4)})

    def shards(size):
        out = os.path.join(d, "out-" + size)
        r = run("merge", "-q", *model_args(paths), "-M", "average", "--max-shard-size", size, "-o", out)
        if r.returncode:
            return r.stderr
        return len([f for f in os.listdir(out) if f.endswith(".safetensors")])
    got = {s: shards(s) for s in ("100KB", "100kb", "100KiB", "100K")}
    check("item13 --max-shard-size 100KB is 10^5 bytes, 100KiB and 100K are 100*2^10",
          got == {"100KB": 4, "100kb": 4, "100KiB": 2, "100K": 2}, repr(got))
    r = run("merge", "--help")
    check("item13 merge --help says 5GB is 5*10^9 bytes and 5GiB 5*2^30",
          "5GB is 5*10^9" in r.stdout and "5GiB" in r.stdout and "5*2^30" in r.stdout)


# ------------------------------------------------------- item 14: YAML paths, FIFO, dirs

def test_yaml_relative_paths(d):
    conf = os.path.join(d, "conf")
    os.mkdir(conf)
    make_models(conf, {"layer.0.weight": (6, 6)})
    cfg = os.path.join(conf, "merge.yaml")
    with open(cfg, "w") as f:
        f.write("method: average\nbase: base.safetensors\nmodels:\n  - e0.safetensors\n"
                "  - model: ./e1.safetensors\noutput: merged.safetensors\nreport: report.json\n")
    elsewhere = os.path.join(d, "elsewhere")
    os.mkdir(elsewhere)
    r = run("merge", "-q", "../conf/merge.yaml", cwd=elsewhere)
    check("item14 relative paths in a YAML file resolve against the file's directory",
          r.returncode == 0 and os.path.isfile(os.path.join(conf, "merged.safetensors"))
          and os.path.isfile(os.path.join(conf, "report.json")) and os.listdir(elsewhere) == [],
          f"rc={r.returncode} err={r.stderr!r}")
    # --force: the config's report.json exists from the run above, and is replaced
    r = run("merge", "-q", os.path.join(conf, "merge.yaml"), "-o", "here.safetensors", "--force",
            cwd=elsewhere)
    check("item14 an -o path on the command line stays relative to the working directory",
          r.returncode == 0 and os.path.isfile(os.path.join(elsewhere, "here.safetensors"))
          and not os.path.exists(os.path.join(conf, "here.safetensors")),
          f"rc={r.returncode} err={r.stderr!r}")


def test_fifo_config(d):
    fifo = os.path.join(d, "merge.yaml")
    os.mkfifo(fifo)
    t0 = time.time()
    r = run("merge", "-q", fifo, "-o", os.path.join(d, "o.safetensors"), timeout=10 * SLOW)
    check("item14 a FIFO config is refused at once, not waited on",
          one_line(r, 1, "merge.yaml", "not a regular file") and time.time() - t0 < 5 * SLOW,
          f"rc={r.returncode} err={r.stderr!r}")


def test_unreadable_dir(d):
    for up in (os.path.dirname(d), d):  # the test's own directories: another user looks in
        os.chmod(up, 0o755)
    locked = os.path.join(d, "locked")
    os.mkdir(locked)
    make_models(locked, {"w": (2, 2)}, n_experts=0)
    os.rename(os.path.join(locked, "base.safetensors"), os.path.join(locked, "model.safetensors"))
    os.chmod(locked, 0)
    # root reads through modes: look as nobody
    drop = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
    r = run("inspect", locked, preexec_fn=drop)
    os.chmod(locked, 0o755)
    check("item14 an unreadable directory says Permission denied",
          one_line(r, 1, "locked", "Permission denied"), f"rc={r.returncode} err={r.stderr!r}")


# ----------------------------------------------------------- item 14: usage and help texts

def test_help_texts(d):
    for cmd in ("merge", "stats", "inspect"):
        r = run(cmd)
        check(f"item14 acem {cmd} with no arguments prints its usage to stderr, exit 2",
              r.returncode == 2 and r.stderr.startswith("usage: acem " + cmd) and r.stdout == "",
              f"rc={r.returncode} err={r.stderr[:200]!r}")
    r = run("lab", "--bogus")
    check("item14 lab: an unknown option is one error line, exit 2", one_line(r, 2, "--bogus"),
          f"rc={r.returncode} err={r.stderr[:200]!r}")
    texts = {cmd: run(cmd, "--help").stdout for cmd in ("merge", "stats", "inspect")}
    check("item14 help texts of merge, stats and inspect mention .bin inputs",
          all(".bin" in t for t in texts.values()), repr({k: ".bin" in t for k, t in texts.items()}))
    check("item14 help texts of merge and stats name every preset",
          all(re.search(r"\b%s\b" % re.escape(p), texts[c]) for c in ("merge", "stats") for p in PRESETS))


def test_svg_axis(d):
    paths = make_models(d, {"layer.0.weight": (8, 6), "head": (6, 4)})
    svg = os.path.join(d, "gamma.svg")
    r = run("stats", "-q", *model_args(paths), "--svg", svg)
    text = open(svg).read() if r.returncode == 0 else ""
    check("item14 the SVG's axis labels tensors of no layer without 'no layer -1'",
          r.returncode == 0 and ">no layer<" in text and "no layer -1" not in text, r.stderr)


def run_on_terminal(args, columns):
    """Runs acem with stderr on a pseudo-terminal `columns` wide; returns (rc, what it drew)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    p = subprocess.Popen([ACEM, *args], stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return p.wait(timeout=60), drawn.decode(errors="replace")


def test_progress_bar(d):
    paths = make_models(d, {f"layer.{i}.weight": (64, 64) for i in range(4)})
    out = os.path.join(d, "o.safetensors")
    rc, drawn = run_on_terminal(["merge", *model_args(paths), "-M", "ties", "-o", out], 40)
    frames = [f for f in drawn.replace("\r\n", "\n").split("\r\x1b[K") if f.strip()]
    bars = [f for f in frames if "tensors" in f]
    check("item14 the progress bar fits a 40-column terminal",
          rc == 0 and bars and all(len(f) < 40 for f in bars), repr(bars))
    check("item14 the progress bar appears at once (drawn at 0%, before the first tensor is done)",
          rc == 0 and bars and bars[0].lstrip("[#.] ").startswith("0%"), repr(bars[:2]))


# ------------------------------------------------------------------------ item 7: SIGHUP

def test_sighup(d):
    rng = np.random.default_rng(1)
    tensors = {f"layer.{i}.weight": rng.standard_normal((1024, 1024)) for i in range(16)}
    base, exp = os.path.join(d, "big-base.safetensors"), os.path.join(d, "big-e.safetensors")
    st.write_file(base, {k: st.from_f64(v, "F32") for k, v in tensors.items()})
    st.write_file(exp, {k: st.from_f64(v + 1, "F32") for k, v in tensors.items()})
    for name in ("hup.safetensors", "hupdir"):
        out = os.path.join(d, name)
        p = subprocess.Popen([ACEM, "merge", "-q", "-t", "1", "-b", base, "-m", exp, "-m", exp, "-m", exp,
                              "-M", "ties", "-o", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30 * SLOW
        while time.time() < deadline and not any(f.startswith(name + ".acem-") for f in os.listdir(d)):
            time.sleep(0.002)
        p.send_signal(signal.SIGHUP)
        _, err = p.communicate(timeout=60 * SLOW)
        left = sorted(f for f in os.listdir(d) if f == name or f.startswith(name + ".acem-"))
        check(f"item7 SIGHUP during a merge to {name}: exit 129, nothing left",
              p.returncode == 129 and left == [] and "interrupted" in err,
              f"rc={p.returncode} left={left} err={err!r}")


# ------------------------------------------------------------------- item 17: peak RSS

def test_peak_rss(d):
    paths = make_models(d, {"layer.0.weight": (32, 32)})
    hog = np.ones(512 << 17)  # 512 MiB of this (the parent) process, touched
    r = run("merge", *model_args(paths), "-M", "average", "-o", os.path.join(d, "o.safetensors"))
    del hog
    m = re.search(r"peak RSS\s+([0-9.]+) (B|KiB|MiB|GiB)", r.stdout)
    mib = float(m.group(1)) * {"B": 2 ** -20, "KiB": 2 ** -10, "MiB": 1, "GiB": 1024}[m.group(2)] if m else None
    check("item17 peak RSS is acem's own, not its 512 MiB parent's (< 200 MiB)",
          r.returncode == 0 and mib is not None and mib < 200, r.stdout + r.stderr)


def main():
    return run_groups([test_usage_errors, test_param_lambda, test_size_units,
                       test_yaml_relative_paths, test_fifo_config, test_unreadable_dir,
                       test_help_texts, test_svg_axis, test_progress_bar, test_sighup,
                       test_peak_rss], "acem-conv-")


if __name__ == "__main__":
    sys.exit(main())
