#!/usr/bin/env python3
"""How much of each pyperformance benchmark's CPU time the allocator takes: the most
any allocator can gain on it by costing less.

    pip install pyperf pyperformance           # and Linux perf on PATH
    python tools/alloc_share.py                # pyperf_compare's default set, pymalloc
    python tools/alloc_share.py --hakmem -b json_loads,float
    python tools/alloc_share.py --programs     # the bench's Python programs instead

Each benchmark runs in one pyperf worker process (a few values), or each of the bench's
Python programs ten times in one interpreter (its start-up counts too), under
`perf record -e cpu-clock` (software sampling: it works where hardware counters do not,
as in most VMs). Two shares s are printed, each its functions' samples over all
samples: the small-object allocator that a PEP 445 hook replaces (pymalloc's
`_PyObject_Malloc`, `_PyObject_Free`, ..., and with --hakmem hakmem's functions), and
the whole allocator (adding CPython's `PyObject_Malloc` wrappers and glibc's malloc
family). Making that part cost nothing would run the benchmark 1 / (1 - s) times as
fast; the geometric mean of those is the ceiling of the speed-up an allocator can reach
through its own cost. An allocator can do better
only by changing how fast the rest of the program runs (where objects are placed,
how many pages fault in), which this tool does not estimate.
"""
import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import childenv  # noqa: E402  (tools/ is not a package)
import pyperf_compare  # noqa: E402

# Functions that are the small-object allocator a PEP 445 hook replaces: pymalloc's
# own, and hakmem's (the hook, the Cython modules' C functions).
SMALL = re.compile(
    r"^(_PyObject_(Malloc|Calloc|Realloc|Free)|pymalloc_\w+|address_in_range"
    r"|allocate_from_new_pool|insert_to_\w+|new_arena|_PyObject_Arena\w+|arena_map_\w+"
    r"|__pyx_f_6hakmem_\w+)$")
# The rest of the allocator: CPython's dispatching wrappers and glibc's malloc family
# (which serves the requests above 512 bytes under either).
OTHER = re.compile(
    r"^(PyObject_(Malloc|Calloc|Realloc|Free)|_?PyMem_(Raw)?(Malloc|Calloc|Realloc|Free)"
    r"|(__libc_)?(malloc|calloc|realloc|free|cfree)(@\S+)?|_int_(malloc|free|realloc)"
    r"|malloc_consolidate|unlink_chunk(\.\w+)?|tcache_\w+)$")


def parse_report(text):
    """{symbol: samples} from `perf report --stdio -F sample,sym` output."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+\[.\]\s+(\S+)", line)
        if m:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1))
    return out


def share(samples):
    """(small-object allocator samples, whole allocator samples, all samples) of a
    parse_report result."""
    small = sum(n for s, n in samples.items() if SMALL.match(s))
    other = sum(n for s, n in samples.items() if OTHER.match(s))
    return small, small + other, sum(samples.values())


def profile(args, out, site):
    """perf samples of `python *args` (in directory out): {symbol: samples}."""
    env = childenv.env(site)
    data = os.path.join(out, "perf.data")
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-o", data, "--",
           sys.executable] + list(args)
    r = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"alloc_share: {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym",
                          "--stdio", "-F", "sample,sym"], capture_output=True, text=True)
    return parse_report(rep.stdout)


def main(argv=None):
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-b", "--benchmarks", default=",".join(pyperf_compare.DEFAULT),
                   help="comma-separated pyperformance benchmark names (default: %(default)s)")
    p.add_argument("--hakmem", action="store_true",
                   help="profile with hakmem installed (a sitecustomize calling install())")
    p.add_argument("--values", type=int, default=6, help="pyperf values per benchmark")
    p.add_argument("--programs", action="store_true",
                   help="profile the bench's Python programs (hakmem/bench/programs.py, "
                        "each run 10 times in one process) instead of pyperformance")
    a = p.parse_args(argv)
    if shutil.which("perf") is None:
        raise SystemExit("alloc_share: needs Linux perf on PATH")
    if a.programs:
        progs = os.path.join(childenv.ROOT, "hakmem", "bench", "programs.py")
        sys.path.insert(0, os.path.dirname(progs))
        import programs
        names = list(programs.WORKLOADS)

        def command(n):
            return [progs, "--repeat", "10", n]
    else:
        bdir = pyperf_compare.benchmark_dir()
        names = [n for n in a.benchmarks.replace(" ", ",").split(",") if n]
        unknown = [n for n in names if not os.path.isdir(os.path.join(bdir, "bm_" + n))]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}")

        def command(n):
            return [os.path.join(bdir, "bm_" + n, "run_benchmark.py"), "-p", "1",
                    "-n", str(a.values), "-w", "1", "-q", "-o", os.path.join(out, n + ".json")]
    out = tempfile.mkdtemp(prefix="hakmem-share-")
    site = childenv.write_site(out) if a.hakmem else None
    side = "hakmem" if a.hakmem else "pymalloc"
    print(f"{'':<18} {'small-object alloc.':>20} {'whole allocator':>20}")
    print(f"{'benchmark':<18} {'share':>10} {'ceiling':>9} {'share':>10} {'ceiling':>9}"
          f"   ({side}, perf cpu-clock)")
    logs = ([], [])
    try:
        for n in names:
            small, alloc, total = share(profile(command(n), out, site))
            if total == 0 or alloc >= total:
                raise SystemExit(f"alloc_share: no usable samples for {n}")
            ceil = (total / (total - small), total / (total - alloc))
            for log, c in zip(logs, ceil):
                log.append(math.log(c))
            print(f"{n:<18} {100 * small / total:>9.1f}% {ceil[0]:>8.3f}x "
                  f"{100 * alloc / total:>9.1f}% {ceil[1]:>8.3f}x", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    g = [math.exp(sum(log) / len(log)) for log in logs]
    print(f"{'geometric mean':<18} {'':>10} {g[0]:>8.3f}x {'':>10} {g[1]:>8.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
