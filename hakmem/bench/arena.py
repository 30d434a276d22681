"""hakmem.bench.arena — hakmem.arena.Pool against cymem's Pool, in one process.

Workloads (the same inputs for every kind):
Speeds are CPU time of the running thread (other processes' load does not count), the
median of interleaved rounds.

  alloc+free   a ring of 64 blocks; each op frees one slot's block and allocates a new
               one of 16, 64 or 256 bytes, or of 16..256 bytes mixed (sizes from one
               xorshift sequence). Mops/s = ops/s.
  fill+drop    make a pool, allocate 10**5 blocks of 32 bytes or of 16..256 bytes mixed,
               drop the pool (which frees them all). Reported as blocks per second.
  bytes/block  a fresh interpreter fills a pool with 10**6 blocks of 32 bytes and reports
               the growth of its resident set divided by the blocks (what a user pays,
               slab and dict overhead included); for hakmem also the bytes hakmem's own
               counters say the blocks occupy.
Kinds: ``hakmem.arena`` (cymem's cdef API), ``hakmem.arena nogil`` (alloc_nogil /
free_nogil with the GIL released), ``hakmem.arena shared`` (Pool(shared=True): a mutex
per call) and ``cymem`` when it is installed.

cymem's Pool is only callable from Cython compiled against it, so the kernels live in a
small extension compiled at first use (Cython and a C compiler needed) and cached in
the temp directory. Each hakmem run checks hakmem's counters: hakmem served the blocks.

  hakmem bench --workloads arena        (or: python -m hakmem.bench.arena [--ops N] [--rounds R] [--json])
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import statistics
import subprocess

from hakmem.bench import child
import sys
import sysconfig
import tempfile
import textwrap
import time
from typing import Any, Dict, List, Optional

__all__ = ["run", "main", "KINDS"]

KINDS = ("hakmem.arena", "hakmem.arena nogil", "hakmem.arena shared", "cymem")
FILL = 100_000
MEM_BLOCKS = 1_000_000

_KERNELS = r'''
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
from libc.stdint cimport uint64_t
from hakmem.arena cimport Pool as HPool
{cymem_cimport}

ctypedef fused AnyPool:     # one kernel source for both pools
    HPool
{cymem_member}

HAS_CYMEM = {has_cymem}

cdef enum:
    RING = 64

cdef inline uint64_t xorshift(uint64_t* s) noexcept nogil:
    cdef uint64_t x = s[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    s[0] = x
    return x

cdef inline size_t size_of(uint64_t r, size_t fixed) noexcept nogil:
    """fixed bytes, or 16 .. 256 bytes from r when fixed is 0."""
    return fixed if fixed != 0 else 16 + <size_t>(r % 241)

cdef ring(AnyPool mem, long nops, size_t size):
    cdef void* slots[RING]
    cdef uint64_t s = 0x9E3779B97F4A7C15
    cdef long i
    cdef int k
    for k in range(RING):
        slots[k] = mem.alloc(1, size_of(xorshift(&s), size))
    for i in range(nops):
        k = i & (RING - 1)
        mem.free(slots[k])
        slots[k] = mem.alloc(1, size_of(xorshift(&s), size))
    for k in range(RING):
        mem.free(slots[k])

def ring_nogil(HPool mem, long nops, size_t size):
    cdef void* slots[RING]
    cdef uint64_t s = 0x9E3779B97F4A7C15
    cdef long i, bad = 0
    cdef int k
    with nogil:
        for k in range(RING):
            slots[k] = mem.alloc_nogil(1, size_of(xorshift(&s), size))
        for i in range(nops):
            k = i & (RING - 1)
            bad += mem.free_nogil(slots[k]) != 0
            slots[k] = mem.alloc_nogil(1, size_of(xorshift(&s), size))
            bad += slots[k] == NULL
        for k in range(RING):
            bad += mem.free_nogil(slots[k]) != 0
    if bad:
        raise RuntimeError(f"{{bad}} nogil calls failed")

cdef fill(AnyPool proto, long n, size_t size, dict kw):
    """Make a pool of proto's type (with kw), allocate n blocks, drop the pool."""
    cdef AnyPool mem = type(proto)(**kw)
    cdef uint64_t s = 0x9E3779B97F4A7C15
    cdef long i
    for i in range(n):
        mem.alloc(1, size_of(xorshift(&s), size))
    del mem

cdef hold(AnyPool proto, long n, size_t size):
    """A new pool of proto's type holding n blocks of size bytes."""
    cdef AnyPool mem = type(proto)()
    cdef long i
    for i in range(n):
        mem.alloc(1, size)
    return mem

{entry_points}
'''

# Python entry points, one set per pool type: def functions cannot dispatch between
# two extension types that are both named Pool.
_ENTRY_POINTS = '''
def {p}_ring({T} mem, long nops, size_t size):
    ring(mem, nops, size)

def {p}_fill({T} proto, long n, size_t size, dict kw):
    fill(proto, n, size, kw)

def {p}_hold({T} proto, long n, size_t size):
    return hold(proto, n, size)
'''


def _have(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def build_kernels(with_cymem: Optional[bool] = None):
    """The kernel extension (built once per source, hakmem and Python); None + reason if
    it cannot be built."""
    import hakmem
    import hakmem.arena

    if with_cymem is None:
        with_cymem = _have("cymem.cymem")
    src = _KERNELS.format(
        cymem_cimport="from cymem.cymem cimport Pool as CPool" if with_cymem else "",
        cymem_member="    CPool" if with_cymem else "", has_cymem=bool(with_cymem),
        entry_points=_ENTRY_POINTS.format(p="hak", T="HPool")
        + (_ENTRY_POINTS.format(p="cy", T="CPool") if with_cymem else ""))
    stamps = [src, hakmem.get_include(), sys.version,
              str(os.path.getmtime(hakmem.arena.__file__))]
    if with_cymem:
        stamps.append(str(os.path.getmtime(importlib.import_module("cymem.cymem").__file__)))
    key = hashlib.sha256("\0".join(stamps).encode())
    name = "hak_arena_kernels_" + key.hexdigest()[:12]
    d = os.path.join(tempfile.gettempdir(), "hakmem-arena-bench-%d" % os.getuid())
    os.makedirs(d, exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    if not os.path.exists(os.path.join(d, name + suffix)):
        if not _have("Cython"):
            return None, "Cython is not installed (pip install cython)"
        work = tempfile.mkdtemp(dir=d)     # concurrent builds do not share files
        with open(os.path.join(work, name + ".pyx"), "w") as f:
            f.write(src)
        with open(os.path.join(work, "setup.py"), "w") as f:
            f.write(textwrap.dedent(f"""
                from setuptools import setup, Extension
                from Cython.Build import cythonize
                setup(ext_modules=cythonize(
                    [Extension({name!r}, [{name + '.pyx'!r}], extra_compile_args=["-O2"])],
                    include_path=[{hakmem.get_include()!r}], quiet=True))
            """))
        r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=work,
                           capture_output=True, text=True)
        if r.returncode == 0:
            os.replace(os.path.join(work, name + suffix), os.path.join(d, name + suffix))
        shutil.rmtree(work, ignore_errors=True)
        if r.returncode != 0:
            return None, "kernel build failed: " + (r.stderr or r.stdout)[-800:]
    sys.path.insert(0, d)
    try:
        return importlib.import_module(name), d
    finally:
        sys.path.remove(d)


def _cpu_seconds(fn, *args) -> float:
    """CPU time of this thread for fn(*args): other processes' load does not count."""
    t = time.thread_time()
    fn(*args)
    return time.thread_time() - t


def _hak_allocs() -> int:
    import hakmem
    return hakmem.stats()["allocs"]


def _rates(kinds: Dict[str, tuple], rounds: int) -> Dict[str, Dict[str, Any]]:
    """Median Mops/s of each kind; rounds interleave the kinds so that a change of
    machine load hits them alike. hakmem kinds must show in hakmem's counters."""
    rates: Dict[str, List[float]] = {kind: [] for kind in kinds}
    for fn, args, _count in kinds.values():
        fn(*args)                                       # warm-up
    for _ in range(rounds):
        for kind, (fn, args, count) in kinds.items():
            before = _hak_allocs()
            rates[kind].append(count / _cpu_seconds(fn, *args) / 1e6)
            if kind.startswith("hakmem") and _hak_allocs() - before < count:
                raise RuntimeError(f"{kind}: hakmem's counters do not show the allocations")
    return {kind: {"mops": statistics.median(r), "min": min(r), "max": max(r)}
            for kind, r in rates.items()}


_MEM_CHILD = r'''
import gc, json, os, sys
sys.path[:0] = [sys.argv[1]]
import hakmem, hakmem.arena
k = __import__(sys.argv[2])
kind, n = sys.argv[3], int(sys.argv[4])
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
gc.collect(); gc.disable()
live0 = hakmem.stats()["live_bytes"]
r0 = rss()
if kind == "hakmem.arena":
    proto = hakmem.arena.Pool()
else:
    from cymem.cymem import Pool as proto
    proto = proto()
held = (k.hak_hold if kind == "hakmem.arena" else k.cy_hold)(proto, n, 32)
r1 = rss()
out = {"rss": (r1 - r0) / n}
if kind == "hakmem.arena":
    out["hakmem"] = (hakmem.stats()["live_bytes"] - live0) / n
print(json.dumps(out))
'''


def _bytes_per_block(kdir: str, modname: str, kind: str, n: int) -> Dict[str, Any]:
    # a fresh interpreter started where this hakmem lives (not in the caller's
    # directory, which may be an unbuilt source checkout)
    return child.run_json(["-c", _MEM_CHILD, kdir, modname, kind, str(n)],
                          f"arena bytes per block ({kind})")


def run(ops: int = 2_000_000, rounds: int = 5, fill: int = FILL,
        mem_blocks: int = MEM_BLOCKS) -> List[Dict[str, Any]]:
    """Measure every kind; one row per (workload, kind). Rows of kinds that cannot run
    carry ``skipped`` with the reason; ``vs_cymem`` is the speed (or memory) ratio."""
    k, where = build_kernels()
    if k is None:
        return [{"workload": "arena", "case": "all", "kind": kind, "skipped": where}
                for kind in KINDS]
    has_cymem = k.HAS_CYMEM
    from hakmem.arena import Pool
    cy = None
    if has_cymem:
        from cymem.cymem import Pool as CPool
        cy = CPool()
    rows: List[Dict[str, Any]] = []
    cases = {}
    for size in (16, 64, 256, 0):
        label = f"{size} B" if size else "16-256 B mixed"
        cases[f"alloc+free {label}"] = {
            "hakmem.arena": (k.hak_ring, (Pool(), ops, size), ops),
            "hakmem.arena nogil": (k.ring_nogil, (Pool(), ops, size), ops),
            "hakmem.arena shared": (k.hak_ring, (Pool(shared=True), ops, size), ops),
            "cymem": (getattr(k, "cy_ring", None), (cy, ops, size), ops),
        }
    for size in (32, 0):
        label = f"{size} B" if size else "16-256 B mixed"
        cases[f"fill+drop {fill} x {label}"] = {
            "hakmem.arena": (k.hak_fill, (Pool(), fill, size, {}), fill),
            "hakmem.arena shared": (k.hak_fill, (Pool(), fill, size, {"shared": True}), fill),
            "cymem": (getattr(k, "cy_fill", None), (cy, fill, size, {}), fill),
        }
    for case, kinds in cases.items():
        skipped = {}
        if not has_cymem:
            skipped["cymem"] = {"skipped": "cymem is not installed (pip install cymem)"}
            del kinds["cymem"]
        results = {**_rates(kinds, rounds), **skipped}
        base = results.get("cymem", {}).get("mops")
        for kind, res in results.items():
            row = {"workload": "arena", "case": case, "kind": kind, **res}
            if base and "mops" in res:
                row["vs_cymem"] = res["mops"] / base
            rows.append(row)
    mem = {"hakmem.arena": _bytes_per_block(where, k.__name__, "hakmem.arena", mem_blocks)}
    if has_cymem:
        mem["cymem"] = _bytes_per_block(where, k.__name__, "cymem", mem_blocks)
    for kind, res in mem.items():
        row = {"workload": "arena", "case": "bytes per live 32-byte block", "kind": kind,
               "rss_bytes": res["rss"]}
        if "hakmem" in res:
            row["hakmem_bytes"] = res["hakmem"]
        if "cymem" in mem:
            row["vs_cymem"] = res["rss"] / mem["cymem"]["rss"]
        rows.append(row)
    if not has_cymem:
        rows.append({"workload": "arena", "case": "bytes per live 32-byte block",
                     "kind": "cymem", "skipped": "cymem is not installed (pip install cymem)"})
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    """The rows as a text table."""
    out = [f"{'case':38} {'kind':22} {'result':>26} {'vs cymem':>9}"]
    for r in rows:
        if "skipped" in r:
            res = "skipped: " + r["skipped"]
        elif "mops" in r:
            res = f"{r['mops']:8.2f} Mops/s ({r['min']:.1f}-{r['max']:.1f})"
        else:
            res = f"{r['rss_bytes']:6.1f} B RSS"
            if "hakmem_bytes" in r:
                res += f", {r['hakmem_bytes']:.1f} B hakmem"
        ratio = f"{r['vs_cymem']:8.2f}x" if "vs_cymem" in r else ""
        out.append(f"{r['case']:38} {r['kind']:22} {res:>26} {ratio:>9}")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: print the table (or JSON rows)."""
    ap = argparse.ArgumentParser(prog="python -m hakmem.bench.arena", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=2_000_000, help="alloc+free ops per round")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    ap.add_argument("--fill", type=int, default=FILL, help="blocks per fill+drop round")
    ap.add_argument("--mem-blocks", type=int, default=MEM_BLOCKS,
                    help="blocks held for the bytes-per-block figure")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = ap.parse_args(argv)
    rows = run(a.ops, a.rounds, a.fill, a.mem_blocks)
    print(json.dumps(rows, indent=1) if a.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
