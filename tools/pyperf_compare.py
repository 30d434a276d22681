#!/usr/bin/env python3
"""Run pyperformance's benchmarks under pymalloc and under hakmem, then compare them.

    pip install pyperf pyperformance
    python tools/pyperf_compare.py                      # the default set, --fast runs
    python tools/pyperf_compare.py -b json_dumps,go --rigorous --out /tmp/pp

Each benchmark is a `run_benchmark.py` script shipped inside the pyperformance package
(no virtual environment is made: the default set needs nothing but pyperf). It runs
twice, back to back and in alternating order, so drift in the machine's load hits both
sides: once plain (pymalloc) and once with hakmem installed in every pyperf worker (a
`sitecustomize.py` that calls `hakmem.install()`, found through PYTHONPATH, which pyperf
passes on to its workers). Results go to `<out>/pymalloc.json` and `<out>/hakmem.json`;
the script prints `pyperf compare_to` on them, then one line per benchmark with the
time ratio (pymalloc / hakmem: above 1 means hakmem is faster) and the peak RSS ratio
(hakmem / pymalloc, from pyperf's `mem_max_rss`), and the geometric means.
"""
import argparse
import compileall
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

# Allocation-heavy benchmarks that need no package beyond pyperf.
DEFAULT = ("json_dumps json_loads deepcopy pprint xml_etree gc_collect richards deltablue "
           "go nbody float unpack_sequence regex_v8 comprehensions raytrace chaos").split()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import childenv  # noqa: E402  (tools/ is not a package)


def benchmark_dir():
    """pyperformance's directory of benchmark scripts (SystemExit if not installed)."""
    try:
        import pyperformance
    except ImportError:
        raise SystemExit("pyperf_compare: needs pyperformance and pyperf "
                         "(pip install pyperf pyperformance)") from None
    d = os.path.join(os.path.dirname(pyperformance.__file__), "data-files", "benchmarks")
    if not os.path.isdir(d):
        raise SystemExit(f"pyperf_compare: no benchmark directory in {d}")
    return d


def run_side(script, side, out, site, pyperf_args):
    """One benchmark script for one side, appending to <out>/<side>.json."""
    env = childenv.env(site if side == "hakmem" else None)
    cmd = [sys.executable, script, "--append", os.path.join(out, side + ".json"),
           "--quiet"] + pyperf_args
    r = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"pyperf_compare: {os.path.basename(os.path.dirname(script))} "
                         f"({side}) failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def load(path):
    """{benchmark name: (mean seconds, peak RSS bytes or None)} from a pyperf file."""
    import pyperf
    out = {}
    for b in pyperf.BenchmarkSuite.load(path).get_benchmarks():
        rss = [r.get_metadata().get("mem_max_rss") for r in b.get_runs()]
        rss = [x for x in rss if x]
        out[b.get_name()] = (b.mean(), max(rss) if rss else None)
    return out


def summarize(out):
    """The per-benchmark ratio table and geometric means, as text."""
    base, hak = load(os.path.join(out, "pymalloc.json")), load(os.path.join(out, "hakmem.json"))
    lines = [f"{'benchmark':<26} {'pymalloc':>10} {'hakmem':>10} {'speed':>7} "
             f"{'peak RSS':>9}",
             f"{'':<26} {'ms':>10} {'ms':>10} {'py/hak':>7} {'hak/py':>9}"]
    speed, mem = [], []
    for name in base:
        if name not in hak:
            continue
        (tb, rb), (th, rh) = base[name], hak[name]
        s = tb / th
        speed.append(s)
        m = rh / rb if rb and rh else float("nan")
        if rb and rh:
            mem.append(m)
        lines.append(f"{name:<26} {tb * 1e3:>10.2f} {th * 1e3:>10.2f} {s:>6.3f}x {m:>8.3f}x")
    if speed:
        g = math.exp(sum(map(math.log, speed)) / len(speed))
        gm = math.exp(sum(map(math.log, mem)) / len(mem)) if mem else float("nan")
        lines.append(f"{'geometric mean':<26} {'':>10} {'':>10} {g:>6.3f}x {gm:>8.3f}x")
        lines.append(f"slowest: {min(speed):.3f}x; largest peak RSS: "
                     f"{max(mem) if mem else float('nan'):.3f}x")
    return "\n".join(lines)


def main(argv=None):
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-b", "--benchmarks", default=",".join(DEFAULT),
                   help="comma-separated pyperformance benchmark names (default: %(default)s)")
    p.add_argument("--out", help="directory for the result files (default: a new temporary one)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--rigorous", action="store_true", help="pyperf --rigorous (slow)")
    speed.add_argument("--processes", type=int, default=6,
                       help="pyperf worker processes per benchmark and side (default 6)")
    p.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    a = p.parse_args(argv)
    bdir = benchmark_dir()
    avail = sorted(d[3:] for d in os.listdir(bdir) if d.startswith("bm_"))
    if a.list:
        print(" ".join(avail))
        return 0
    names = [n for n in a.benchmarks.replace(" ", ",").split(",") if n]
    unknown = [n for n in names if n not in avail]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; see --list")
    out = a.out or tempfile.mkdtemp(prefix="hakmem-pyperf-")
    os.makedirs(out, exist_ok=True)
    for side in ("pymalloc", "hakmem"):
        if os.path.exists(os.path.join(out, side + ".json")):
            os.remove(os.path.join(out, side + ".json"))
    # Workers import hakmem from this checkout: compile its modules to bytecode first,
    # as pip does at install. Under PYTHONDONTWRITEBYTECODE every worker would otherwise
    # compile hakmem/__init__.py afresh, and the compiler's ~0.4 MiB of heap would count
    # in hakmem's peak RSS.
    if childenv.BUILT:
        compileall.compile_dir(os.path.join(childenv.ROOT, "hakmem"), quiet=1)
    site = childenv.write_site(out)
    pyperf_args = ["--rigorous"] if a.rigorous else ["--processes", str(a.processes)]
    for i, n in enumerate(names):
        script = os.path.join(bdir, "bm_" + n, "run_benchmark.py")
        sides = ("pymalloc", "hakmem") if i % 2 == 0 else ("hakmem", "pymalloc")
        for side in sides:
            print(f"[{i + 1}/{len(names)}] {n} ({side})", file=sys.stderr, flush=True)
            run_side(script, side, out, site, pyperf_args)
    r = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", "--table",
                        os.path.join(out, "pymalloc.json"), os.path.join(out, "hakmem.json")],
                       capture_output=True, text=True)
    print(r.stdout)
    print(summarize(out))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
