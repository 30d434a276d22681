"""hakmem.bench.runner — runs the benchmark's workloads and gathers the results.

The loops live in :mod:`hakmem.bench.loops` and :mod:`hakmem.bench.threads` (nogil C);
this module picks allocators, interleaves runs, checks from hakmem's own counters
that hakmem really served every op, measures memory in fresh child processes, and
returns one dict whose keys are documented in docs/bench.md (``SCHEMA`` names the
version).
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import hakmem
from hakmem.bench import child, goals, loops, records, threads

__all__ = ["SCHEMA", "DEFAULT_WORKLOADS", "FULL_WORKLOADS", "MIMALLOC", "BenchError",
           "Options", "workload_spec", "parse_workloads", "check_vs_path", "make_allocators",
           "allocator_from_spec", "CountCheck", "hakmem_counts", "run_once", "live_block_memory",
           "run"]

SCHEMA = "hakmem-bench/2"
MIMALLOC = "libmimalloc.so.2"

FIXED = {"fixed16_ws60": (16, 60), "fixed256_ws50": (256, 50)}   # what threads-N runs
MIXED = "mixed16-1024_ws256"
SIMPLE_N = (25, 100, 400, 1600)          # glibc-simple's block counts
XM_SIZE = 64                             # xthread64 and xmalloc-test block size
SLAB_BYTES = 64 * 1024                   # hakmem slab size (hakmem.slab)
MAX_THREADS = 64
EXTRAS = ("memory", "callpath", "records", "python", "arena")   # not C loops: their own tables
MULTI = ("threads", "xthread", "xmalloc")     # loops on new threads: pymalloc cannot run them


def _n_suffix(name: str, prefix: str, lo: int, hi: int) -> Optional[int]:
    """N of ``<prefix>N`` if it is an integer in lo..hi; None if name has another prefix."""
    if not name.startswith(prefix):
        return None
    n = name[len(prefix):]
    if not n.isdigit() or not lo <= int(n) <= hi:
        raise BenchError(f"bad workload {name!r}: {prefix}N needs N in {lo}..{hi}")
    return int(n)


def workload_spec(name: str) -> Dict[str, Any]:
    """How the C loop of workload ``name`` is driven: ``kind`` (ring, mixed, simple,
    xthread, xmalloc, threads) and its parameters; ``threads`` = threads it runs on.

    Raises BenchError for a name that is not a C-loop workload.
    """
    if name in FIXED:
        size, ws = FIXED[name]
        return {"kind": "ring", "size": size, "ws": ws, "threads": 1}
    if name == MIXED:
        return {"kind": "mixed", "ws": 256, "threads": 1}
    if name == "xthread64":
        return {"kind": "xthread", "size": XM_SIZE, "threads": 2}
    n = _n_suffix(name, "glibc-simple_n", 1, 4096)
    if n is not None:
        return {"kind": "simple", "n": n, "threads": 1}
    n = _n_suffix(name, "xmalloc-test-", 1, MAX_THREADS // 2)
    if n is not None:
        return {"kind": "xmalloc", "size": XM_SIZE, "n": n, "threads": 2 * n}
    n = _n_suffix(name, "threads-", 1, MAX_THREADS)
    if n is not None:
        return {"kind": "threads", "n": n, "threads": n}
    raise BenchError(f"unknown workload {name!r}; known: {KNOWN}")


def _default_workloads(full: bool) -> List[str]:
    xm = [1, 2] + ([(os.cpu_count() or 1) // 2] if (os.cpu_count() or 1) >= 8 else [])
    out = list(FIXED) + [MIXED, "xthread64"] + [f"glibc-simple_n{n}" for n in SIMPLE_N] \
        + [f"xmalloc-test-{n}" for n in xm]
    if full:
        out += ["threads-1", "threads-2"] + (["threads-4"] if (os.cpu_count() or 1) >= 4 else [])
        out += list(EXTRAS)
    return out


DEFAULT_WORKLOADS = _default_workloads(False)
FULL_WORKLOADS = _default_workloads(True)
KNOWN = ("fixed16_ws60, fixed256_ws50, mixed16-1024_ws256, xthread64, glibc-simple "
         "(= glibc-simple_n25,_n100,_n400,_n1600; any _nN), xmalloc-test-N, threads-N, "
         "memory, callpath, records, python, arena")


_PREFIX = {"threads": "threads-", "xmalloc": "xmalloc-test-", "simple": "glibc-simple_n"}


class BenchError(ValueError):
    """A bad benchmark argument (unknown workload, bad count, unusable library)."""


def parse_workloads(text: Optional[str], full: bool = False) -> List[str]:
    """Split ``a,b`` into workload names, checking each; None gives the default set
    (``full``: every workload). ``glibc-simple`` stands for its four block counts."""
    if text is None:
        return list(FULL_WORKLOADS if full else DEFAULT_WORKLOADS)
    out: List[str] = []
    for w in (t.strip() for t in text.split(",")):
        if not w:
            continue
        names = [f"glibc-simple_n{n}" for n in SIMPLE_N] if w == "glibc-simple" else [w]
        for name in names:
            if name not in EXTRAS:
                spec = workload_spec(name)
                prefix = _PREFIX.get(spec["kind"])
                if prefix:
                    name = f"{prefix}{spec['n']}"      # threads-02 -> threads-2
            if name not in out:
                out.append(name)
    if not out:
        raise BenchError("no workload given")
    # scaling needs its one-thread reference
    if any(w.startswith("threads-") for w in out) and "threads-1" not in out:
        out.insert(next(i for i, w in enumerate(out) if w.startswith("threads-")), "threads-1")
    return out


@dataclass
class Options:
    """What to run. Counts are per run (per thread for threads-N and xmalloc-test-N)."""

    workloads: List[str] = field(default_factory=lambda: list(DEFAULT_WORKLOADS))
    ops: int = 2_000_000
    runs: int = 7
    warmup: int = 1
    vs: List[str] = field(default_factory=list)
    mimalloc: bool = True
    quick: bool = False
    mem_blocks: int = 100_000           # live blocks for bytes-per-block
    record_ops: int = 200_000           # Python-level ring ops per run
    live_records: int = 1_000_000       # records alive for bytes-per-record
    progress: Optional[Callable[[str], None]] = None

    def check(self) -> None:
        """Raise BenchError on a count that makes no sense."""
        for name in ("ops", "runs", "mem_blocks", "record_ops", "live_records"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise BenchError(f"{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.warmup < 0:
            raise BenchError(f"warmup must be >= 0, got {self.warmup}")


# ---- allocators ----------------------------------------------------------------
@dataclass
class Alloc:
    """An allocator column: the vtable object, how to set it up, and what it may run."""

    name: str
    obj: Any                            # hakmem.bench.Allocator
    heap_v2: Optional[bool] = None      # hakmem only: magazine on/off
    spec: str = ""                      # how a child process rebuilds it
    note: str = ""

    @property
    def is_hakmem(self) -> bool:
        """True for the hakmem columns (whose runs get the exact-count check)."""
        return self.heap_v2 is not None

    @property
    def needs_gil(self) -> bool:
        """True for pymalloc: its runs hold the GIL and it runs no multi-thread workload."""
        return bool(self.obj.needs_gil)


def check_vs_path(path: str) -> None:
    """BenchError if ``path`` names a file that cannot be read. A bare name without a
    slash (``libjemalloc.so.2``) is left to the dynamic linker's search, as dlopen does."""
    if "/" in path and (not os.path.exists(path) or not os.access(path, os.R_OK)):
        raise BenchError(f"--vs {path}: cannot read the library")


def make_allocators(opts: Options) -> tuple:
    """(allocators, skipped lines). Raises BenchError for an unusable --vs library."""
    allocs = [
        Alloc("hakmem", loops.hakmem_allocator("hakmem"), heap_v2=True, spec="hakmem",
              note="magazine (TinyHeapV2) on"),
        Alloc("hakmem-nomag", loops.hakmem_allocator("hakmem-nomag"), heap_v2=False,
              spec="hakmem-nomag", note="magazine off: TLS free list only"),
        Alloc("libc", loops.libc_allocator(), spec="libc", note="glibc malloc/free"),
        Alloc("pymalloc", loops.pymalloc_allocator(), spec="pymalloc",
              note="PyObject_Malloc/Free; runs hold the GIL; skipped on multi-thread workloads"),
    ]
    skipped: List[str] = []
    if opts.mimalloc:
        try:
            a = loops.dl_allocator(MIMALLOC, "mimalloc", "mi_malloc", "mi_free")
            allocs.append(Alloc("mimalloc", a, spec=f"dl:{MIMALLOC}:mi_malloc:mi_free",
                                note=f"mi_malloc/mi_free from {a.path}"))
        except OSError as e:
            skipped.append(f"mimalloc skipped: {e} (Debian package libmimalloc2.0)")
    seen = {a.name for a in allocs}
    for path in opts.vs:
        check_vs_path(path)
        base = os.path.basename(path).split(".so")[0]
        name = base[3:] if base.startswith("lib") else base
        while name in seen:
            name += "'"
        try:
            a = loops.dl_allocator(path, name)
        except OSError as e:
            raise BenchError(f"--vs {path}: {e}") from None
        seen.add(name)
        allocs.append(Alloc(name, a, spec=f"dl:{path}:malloc:free", note=f"malloc/free from {a.path}"))
    return allocs, skipped


def allocator_from_spec(spec: str) -> Any:
    """Rebuild an allocator (hakmem.bench.loops.Allocator) from its spec string, as a
    child process does; for hakmem specs, also switch the magazine as the spec says."""
    if spec in ("hakmem", "hakmem-nomag"):
        hakmem.configure(heap_v2=(spec == "hakmem"))
        return loops.hakmem_allocator(spec)
    if spec == "libc":
        return loops.libc_allocator()
    if spec == "pymalloc":
        return loops.pymalloc_allocator()
    if spec.startswith("dl:"):
        path, m, f = spec.split(":", 1)[1].rsplit(":", 2)
        return loops.dl_allocator(path, os.path.basename(path), m, f)
    raise ValueError(f"bad allocator spec {spec!r}")


# ---- hakmem's own counters: proof that hakmem served the ops --------------------
def hakmem_counts() -> Dict[str, int]:
    """hakmem's counters the exact-count check reads (allocs and frees, large included)."""
    s = hakmem.stats()
    return {k: s[k] for k in ("allocs", "frees", "mag_hits", "mag_misses", "bytes_mapped",
                              "large_allocs", "large_frees")}


class CountCheck:
    """The exact-count check: hakmem's counters must move by exactly the ops run.

    :meth:`add` takes two :func:`hakmem_counts` snapshots around one run and raises
    RuntimeError if allocs or frees moved by anything but ``expected``; it sums the
    deltas (and magazine hits/misses) over the measured runs of one cell.
    """

    def __init__(self) -> None:
        self.expected = 0
        self.allocs = 0
        self.frees = 0
        self.mag_hits = 0
        self.mag_misses = 0

    def add(self, before: Dict[str, int], after: Dict[str, int], expected: int, where: str) -> None:
        """Check one run (see the class docstring); ``where`` names it in the error."""
        da = (after["allocs"] - before["allocs"]) + (after["large_allocs"] - before["large_allocs"])
        df = (after["frees"] - before["frees"]) + (after["large_frees"] - before["large_frees"])
        if da != expected or df != expected:
            raise RuntimeError(
                f"{where}: hakmem's counters moved by {da} allocs / {df} frees, expected "
                f"{expected} each; the run did not go through hakmem as measured")
        self.expected += expected
        self.allocs += da
        self.frees += df
        self.mag_hits += after["mag_hits"] - before["mag_hits"]
        self.mag_misses += after["mag_misses"] - before["mag_misses"]

    def as_dict(self) -> Dict[str, Any]:
        """The sums, as the ``hakmem_check`` of a results row."""
        looked = self.mag_hits + self.mag_misses
        return {"expected_ops": self.expected, "allocs": self.allocs, "frees": self.frees,
                "mag_hits": self.mag_hits, "mag_misses": self.mag_misses,
                "hit_rate": (self.mag_hits / looked) if looked else None, "verified": True}


# ---- one measurement ------------------------------------------------------------
def run_once(wl: str, obj: Any, ops: int, fixed: Optional[str] = None) -> tuple:
    """Run C-loop workload ``wl`` once on allocator ``obj`` (a hakmem.bench.loops.Allocator);
    return (wall seconds, CPU seconds or None, blocks counted as ops).

    ``ops`` is per thread; threads-N runs the ring ``fixed`` names. glibc-simple runs
    ops // n whole rounds. CPU seconds (the calling thread's) are measured for the
    one-thread loops only.
    """
    spec = workload_spec(wl)
    cpu: List[float] = []
    k = spec["kind"]
    if k == "threads":
        size, ws = FIXED[fixed]
        return threads.run_threads(obj, spec["n"], size, ws, ops), None, spec["n"] * ops
    if k == "ring":
        return loops.run_ring(obj, spec["size"], spec["ws"], ops, cpu=cpu), cpu[0], ops
    if k == "mixed":
        return loops.run_mixed(obj, spec["ws"], ops, cpu=cpu), cpu[0], ops
    if k == "simple":
        rounds = max(1, ops // spec["n"])
        return loops.run_simple(obj, spec["n"], rounds, cpu=cpu), cpu[0], rounds * spec["n"]
    if k == "xmalloc":
        return threads.run_xmalloc(obj, spec["n"], spec["size"], ops), None, spec["n"] * ops
    return threads.run_xthread(obj, spec["size"], ops), None, ops


def _summary(mops: List[float]) -> Dict[str, Any]:
    return {"median": statistics.median(mops), "min": min(mops), "max": max(mops),
            "runs": mops}


def _measure_cell_rounds(wl: str, fixed: Optional[str], allocs: List[Alloc],
                         opts: Options, tick: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Warm up each allocator, then `runs` rounds, allocators interleaved in each round."""
    label = f"{wl}/{fixed}" if fixed else wl
    spec = workload_spec(wl)
    nthreads = spec["threads"]
    proofs = {a.name: CountCheck() for a in allocs if a.is_hakmem}
    mops: Dict[str, List[float]] = {a.name: [] for a in allocs}
    cpu_mops: Dict[str, List[float]] = {a.name: [] for a in allocs}
    spin: List[float] = []
    mapped: Dict[str, List[int]] = {a.name: [] for a in allocs if a.is_hakmem}
    rounds = [False] * opts.warmup + [True] * opts.runs
    for r, measured in enumerate(rounds):
        for a in allocs:
            tick(f"{label} {a.name} {'run ' + str(r - opts.warmup + 1) if measured else 'warm-up'}")
            if a.is_hakmem:
                hakmem.configure(heap_v2=a.heap_v2)
                before = hakmem_counts()
            dt, cpu, blocks = run_once(wl, a.obj, opts.ops, fixed)
            if a.is_hakmem:
                after = hakmem_counts()
                if measured:
                    proofs[a.name].add(before, after, blocks, f"{label} [{a.name}]")
                    mapped[a.name].append(after["bytes_mapped"] - before["bytes_mapped"])
            if measured:
                mops[a.name].append(blocks / dt / 1e6 if dt > 0 else float("inf"))
                if cpu:
                    cpu_mops[a.name].append(blocks / cpu / 1e6)
        if fixed and measured:
            # the machine's own scaling, in the same round: N arithmetic threads vs one
            tick(f"{label} cpu reference")
            iters = max(1_000_000, 10 * opts.ops)
            one = threads.run_spin(1, iters)
            many = threads.run_spin(nthreads, iters) / nthreads
            spin.append(one / many)
    out = []
    for a in allocs:
        row: Dict[str, Any] = {
            "workload": wl if not fixed else f"{wl}:{fixed}",
            "base_workload": fixed or wl,
            "threads": nthreads,
            "allocator": a.name,
            "ops_per_run": opts.ops * (spec["n"] if spec["kind"] in ("threads", "xmalloc") else 1),
            "mops": _summary(mops[a.name]),
            "mops_cpu": _summary(cpu_mops[a.name]) if cpu_mops[a.name] else None,
            "gil_held": a.needs_gil,
            "hakmem_check": proofs[a.name].as_dict() if a.is_hakmem else None,
        }
        if a.is_hakmem:
            row["bytes_mapped_growth"] = sum(mapped[a.name])
        out.append(row)
    if spin:
        out[0]["_spin"] = spin        # taken out by run() into scaling_reference
    return out


# ---- memory: bytes per live block (fresh child per allocator) ---------------------
def live_block_memory(spec: str, n: int) -> Dict[str, Any]:
    """The marginal memory of n more live mixed-size blocks, measured in this process.

    Meant for a fresh interpreter (the runner starts one per allocator). A first batch
    of n blocks soaks up memory the allocator (or the interpreter, for libc) already
    had resident; then RSS is read, a second batch of n blocks (the same size sequence)
    is allocated with every byte written, and RSS is read again. bytes_per_block = RSS
    growth / n. For hakmem the growth in active 64 KiB slabs over the second batch is
    reported too (its own view of the same thing).
    """
    a = allocator_from_spec(spec)
    first = loops.LiveBlocks(a, n)
    st0 = hakmem.stats()
    before_rss = records.rss_bytes()
    held = loops.LiveBlocks(a, n)
    after_rss = records.rss_bytes()
    st1 = hakmem.stats()
    out = {"blocks": n, "requested_bytes": held.requested,
           "mean_request": held.requested / n,
           "rss_delta": after_rss - before_rss,
           "bytes_per_block": (after_rss - before_rss) / n}
    if spec.startswith("hakmem"):
        out["hakmem_slab_bytes_per_block"] = ((st1["slabs_active"] - st0["slabs_active"])
                                              * SLAB_BYTES / n)
    held.release()
    first.release()
    return out


def _mem_measure(a: Alloc, n: int) -> Dict[str, Any]:
    d = child.call("hakmem.bench.runner:live_block_memory", a.spec, int(n),
                   what=f"bytes per live block ({a.name})", timeout=120)
    d["allocator"] = a.name
    d["overhead_bytes"] = d["bytes_per_block"] - d["mean_request"]
    return d


# ---- the call path: vtable vs calling the cimported function by name --------------
def _in_module_ring() -> Callable[[int, int, int], float]:
    """hakmem.front's own copy of the ring loop (compiled where hak_malloc can inline)."""
    from hakmem import front
    return front.ring_in_module


CALLPATH_RINGS = (("fixed16_ws60", 16, 60), ("fixed256_ws50", 256, 50))


def _callpath_ring(opts: Options, tick: Callable[[str], None], name: str, size: int,
                   ws: int) -> Dict[str, Any]:
    """One ring with hakmem through the vtable, by name (the cimport table), inline (the
    hak_heap_* API compiled into the bench) and inside hakmem.front; libc through the
    vtable and by name; mimalloc through the vtable when it is installed."""
    keys = ["hakmem_vtable", "hakmem_direct", "hakmem_inline", "hakmem_in_module",
            "libc_vtable", "libc_direct"]
    hk = loops.hakmem_allocator()
    lc = loops.libc_allocator()
    try:
        mi = loops.dl_allocator(MIMALLOC, "mimalloc", "mi_malloc", "mi_free") if opts.mimalloc else None
    except OSError:
        mi = None
    if mi is not None:
        keys.append("mimalloc_vtable")
    res: Dict[str, List[float]] = {k: [] for k in keys}
    in_module = _in_module_ring()
    hakmem.configure(heap_v2=True)
    for r in range(opts.warmup + opts.runs):
        tick(f"callpath {name} round {r + 1}")
        before = hakmem_counts()
        t = {"hakmem_vtable": loops.run_ring(hk, size, ws, opts.ops),
             "hakmem_direct": loops.run_ring_direct("hakmem", size, ws, opts.ops),
             "hakmem_inline": loops.run_ring_direct("hakmem-inline", size, ws, opts.ops),
             "hakmem_in_module": in_module(opts.ops, ws, size),
             "libc_vtable": loops.run_ring(lc, size, ws, opts.ops),
             "libc_direct": loops.run_ring_direct("libc", size, ws, opts.ops)}
        if mi is not None:
            t["mimalloc_vtable"] = loops.run_ring(mi, size, ws, opts.ops)
        after = hakmem_counts()
        CountCheck().add(before, after, 4 * opts.ops, "callpath")
        if r >= opts.warmup:
            for k, v in t.items():
                res[k].append(opts.ops / v / 1e6)
    out: Dict[str, Any] = {k: _summary(v) for k, v in res.items()}
    med = {k: v["median"] for k, v in out.items()}
    out["hakmem_vtable_over_direct"] = med["hakmem_vtable"] / med["hakmem_direct"]
    out["libc_vtable_over_direct"] = med["libc_vtable"] / med["libc_direct"]
    out["in_module_loop"] = out["hakmem_in_module"]
    out["cimport_over_in_module"] = med["hakmem_direct"] / med["hakmem_in_module"]
    out["inline_over_in_module"] = med["hakmem_inline"] / med["hakmem_in_module"]
    out["inline_over_mimalloc"] = (med["hakmem_inline"] / med["mimalloc_vtable"]
                                   if mi is not None else None)
    return out


def _callpath(opts: Options, tick: Callable[[str], None]) -> Dict[str, Any]:
    """The call-path rings: fixed16_ws60's figures at the top level (as before), and
    fixed256_ws50's under its own key.

    hak_malloc/hak_free called by name still go through the function pointers Cython
    imported from hakmem.front's capsule table (a cimporting module cannot inline
    them); the inline heap API compiles the fast path into the caller; the libc pair
    shows what a direct (PLT) call gains over the vtable.
    """
    (n16, s16, w16), (n256, s256, w256) = CALLPATH_RINGS
    out = _callpath_ring(opts, tick, n16, s16, w16)
    out[n256] = _callpath_ring(opts, tick, n256, s256, w256)
    out["note"] = ("hakmem_direct calls hak_malloc/hak_free from hakmem.bench.loops through Cython's "
                   "imported function pointers (the cimport path); hakmem_inline uses the inline "
                   "heap API (hak_heap_malloc/hak_heap_free, compiled into hakmem.bench.loops); "
                   "hakmem_in_module is the same loop compiled inside hakmem.front "
                   "(front.ring_in_module), where the compiler may inline them")
    return out


# ---- the whole run ----------------------------------------------------------------
def run(opts: Options) -> Dict[str, Any]:
    """Run everything ``opts`` asks for; return the results dict (see docs/bench.md)."""
    opts.check()
    say = opts.progress or (lambda s: None)
    allocs, skipped_lines = make_allocators(opts)
    saved_cfg = hakmem.config()
    t_start = time.perf_counter()
    res: Dict[str, Any] = {
        "schema": SCHEMA,
        "hakmem_version": hakmem.__version__,
        "build": {"debug": bool(hakmem.build_info()["debug"])},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "settings": {"workloads": list(opts.workloads), "ops": opts.ops, "runs": opts.runs,
                     "warmup": opts.warmup, "quick": opts.quick, "mem_blocks": opts.mem_blocks,
                     "record_ops": opts.record_ops, "live_records": opts.live_records},
        "allocators": [{"name": a.name, "note": a.note, "gil_held": a.needs_gil} for a in allocs],
        "notes": list(skipped_lines),
        "results": [], "skipped": [], "ratios": [], "scaling": [], "memory": [],
        "records": [], "callpath": None, "goals": [], "scaling_reference": [], "arena": [],
        "python_programs": None,
    }
    tun = os.environ.get("GLIBC_TUNABLES", "")
    if "optional_static_tls" in tun and opts.vs:
        res["notes"].append(f"GLIBC_TUNABLES={tun} (room in the static TLS block for --vs "
                            f"libraries that use initial-exec TLS)")
    if any(a.needs_gil for a in allocs):
        res["notes"].append("pymalloc (PyObject_Malloc) runs hold the GIL, as the C API "
                            "requires; it is skipped on multi-thread workloads")

    # planned steps, for the progress line
    steps = []
    for wl in opts.workloads:
        if wl in EXTRAS:
            continue
        if wl.startswith("threads-"):
            steps += [(wl, f) for f in FIXED]
        else:
            steps.append((wl, None))
    n_steps = len(steps) + sum(1 for w in EXTRAS if w in opts.workloads)
    done = [0]

    def tick(msg: str) -> None:
        say(f"[{done[0] + 1}/{n_steps}] {msg}  ({time.perf_counter() - t_start:.0f}s)")

    try:
        for wl, fixed in steps:
            multi = workload_spec(wl)["kind"] in MULTI
            use = [a for a in allocs if not (multi and a.needs_gil)]
            for a in allocs:
                if a not in use:
                    res["skipped"].append({"workload": f"{wl}:{fixed}" if fixed else wl,
                                           "allocator": a.name,
                                           "reason": "needs the GIL; cannot run on several threads"})
            rows = _measure_cell_rounds(wl, fixed, use, opts, tick)
            spin = rows[0].pop("_spin", None) if rows else None
            if spin:
                res["scaling_reference"].append({"workload": fixed,
                                                 "threads": workload_spec(wl)["n"],
                                                 "speedups": spin,
                                                 "speedup": statistics.median(spin)})
            res["results"].extend(rows)
            done[0] += 1
        if "memory" in opts.workloads:
            for a in allocs:
                tick(f"bytes per live block {a.name}")
                res["memory"].append(_mem_measure(a, opts.mem_blocks))
            done[0] += 1
        if "callpath" in opts.workloads:
            res["callpath"] = _callpath(opts, tick)
            done[0] += 1
        if "records" in opts.workloads:
            res["records"] = _records(opts, tick)
            if records.pool_available():
                res["notes"].append(f"records: RecordPool skipped ({records.pool_available()})")
            done[0] += 1
        if "arena" in opts.workloads:
            tick("arena: hakmem.arena.Pool vs cymem's Pool")
            from hakmem.bench import arena
            res["arena"] = arena.run(ops=opts.ops, rounds=opts.runs)
            done[0] += 1
        if "python" in opts.workloads:
            tick("python programs under hakmem.install() vs pymalloc")
            res["python_programs"] = _python_programs(opts)
            done[0] += 1
    finally:
        hakmem.configure(heap_v2=saved_cfg["heap_v2"])

    _derive(res, allocs)
    res["goals"] = goals.evaluate(res)
    res["elapsed_s"] = time.perf_counter() - t_start
    return res


def _python_programs(opts: Options) -> Dict[str, Any]:
    """Python programs (dicts, json, strings, re, object trees, ast, xml, sorting,
    graphs, deepcopy, pprint, GC cycles) with hakmem installed as CPython's allocator
    vs pymalloc, each program and side in its own fresh interpreter."""
    from hakmem.bench import programs
    res = programs.compare(repeat=2 if opts.quick else 5, rounds=1 if opts.quick else 2)

    def geo(key: str) -> float:
        return math.exp(sum(math.log(v[key]) for v in res.values()) / len(res))
    return {"workloads": res, "geomean_ratio": geo("ratio"),
            "geomean_rss_ratio": geo("rss_ratio"),
            "unit": "CPU seconds, best of runs; peak RSS in MiB, lowest of runs",
            "table": programs.format_compare(res)}


def _records(opts: Options, tick: Callable[[str], None]) -> List[Dict[str, Any]]:
    out = []
    kinds = records.kinds()
    times: Dict[str, List[float]] = {k: [] for k in kinds}
    for r in range(opts.warmup + opts.runs):
        for k in kinds:
            tick(f"records {k} round {r + 1}")
            dt = records.run_ring(k, opts.record_ops)
            if r >= opts.warmup:
                times[k].append(opts.record_ops / dt / 1e6)
    for k in kinds:
        tick(f"records {k}: {opts.live_records} alive")
        mem = records.bytes_per_record(k, opts.live_records)
        out.append({"kind": k, "ops_per_run": opts.record_ops, "mops": _summary(times[k]),
                    "live_records": mem["records"], "bytes_per_record": mem["bytes_per_record"],
                    "storage_bytes_per_record": (mem["storage_bytes"] / mem["records"]
                                                 if "storage_bytes" in mem else None)})
    return out


def _derive(res: Dict[str, Any], allocs: List[Alloc]) -> None:
    """Ratios of hakmem to each baseline, threads-N speed-ups, and how busy the machine was."""
    shares = [r["mops"]["median"] / r["mops_cpu"]["median"] for r in res["results"]
              if r.get("mops_cpu")]
    res["cpu_share"] = statistics.median(shares) if shares else None
    if res["cpu_share"] is not None and res["cpu_share"] < 0.85:
        res["notes"].append(
            f"the machine was busy: one-thread runs got {100 * res['cpu_share']:.0f}% of a CPU "
            f"(median); wall-clock figures are low and noisy; the per-CPU-second table "
            f"(--full) is steadier")
    med = {(r["workload"], r["allocator"]): r["mops"]["median"] for r in res["results"]}
    cpu = {(r["workload"], r["allocator"]): r["mops_cpu"]["median"] for r in res["results"]
           if r.get("mops_cpu")}
    workloads = []
    for r in res["results"]:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
    for wl in workloads:
        h = med.get((wl, "hakmem"))
        if h is None:
            continue
        for a in allocs:
            if a.name == "hakmem" or (wl, a.name) not in med:
                continue
            hc, bc = cpu.get((wl, "hakmem")), cpu.get((wl, a.name))
            res["ratios"].append({"workload": wl, "baseline": a.name,
                                  "ratio": h / med[(wl, a.name)],
                                  "ratio_cpu": hc / bc if hc and bc else None})
    for r in res["results"]:
        if not r["workload"].startswith("threads-"):
            continue
        n = r["threads"]
        one = med.get((f"threads-1:{r['base_workload']}", r["allocator"]))
        if one:
            res["scaling"].append({"workload": r["base_workload"], "allocator": r["allocator"],
                                   "threads": n, "mops": r["mops"]["median"],
                                   "speedup": r["mops"]["median"] / one})
