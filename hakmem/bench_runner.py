"""hakmem.bench_runner — runs the benchmark's workloads and gathers the results.

The loops live in :mod:`hakmem.bench` (nogil C); this module picks allocators,
interleaves runs, checks from hakmem's own counters that hakmem really served
every op, measures memory in fresh child processes, and returns one dict whose
keys are documented in docs/bench.md (``SCHEMA`` names the version).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import hakmem
from hakmem import bench as _b
from hakmem import bench_records as _rec

__all__ = ["SCHEMA", "C_WORKLOADS", "DEFAULT_WORKLOADS", "MIMALLOC", "BenchError",
           "Options", "parse_workloads", "make_allocators", "run", "TARGETS"]

SCHEMA = "hakmem-bench/1"
MIMALLOC = "libmimalloc.so.2"

# name -> how the C loop is driven
C_WORKLOADS: Dict[str, Dict[str, Any]] = {
    "fixed16_ws60": {"kind": "ring", "size": 16, "ws": 60},
    "fixed256_ws50": {"kind": "ring", "size": 256, "ws": 50},
    "mixed16-1024_ws256": {"kind": "mixed", "ws": 256},
    "xthread64": {"kind": "xthread", "size": 64},
}
FIXED = ("fixed16_ws60", "fixed256_ws50")     # what threads-N runs
SLAB_BYTES = 64 * 1024                        # hakmem slab size (hakmem.slab)
MAX_THREADS = 64


def _default_workloads() -> List[str]:
    out = list(C_WORKLOADS) + ["threads-1", "threads-2"]
    if (os.cpu_count() or 1) >= 4:
        out.append("threads-4")
    out += ["records", "callpath", "python"]
    return out


DEFAULT_WORKLOADS = _default_workloads()
KNOWN = ("fixed16_ws60, fixed256_ws50, mixed16-1024_ws256, xthread64, threads-N, records, "
         "callpath, python")


class BenchError(ValueError):
    """A bad benchmark argument (unknown workload, bad count, unusable library)."""


def parse_workloads(text: Optional[str]) -> List[str]:
    """Split ``a,b`` into workload names, checking each; None gives the default set."""
    if text is None:
        return list(DEFAULT_WORKLOADS)
    out: List[str] = []
    for w in (t.strip() for t in text.split(",")):
        if not w:
            continue
        if w in C_WORKLOADS or w in ("records", "callpath", "python"):
            pass
        elif w.startswith("threads-"):
            n = w[len("threads-"):]
            if not n.isdigit() or not 1 <= int(n) <= MAX_THREADS:
                raise BenchError(f"bad workload {w!r}: threads-N needs N in 1..{MAX_THREADS}")
            w = f"threads-{int(n)}"
        else:
            raise BenchError(f"unknown workload {w!r}; known: {KNOWN}")
        if w not in out:
            out.append(w)
    if not out:
        raise BenchError("no workload given")
    # scaling needs its one-thread reference
    if any(w.startswith("threads-") for w in out) and "threads-1" not in out:
        out.insert(next(i for i, w in enumerate(out) if w.startswith("threads-")), "threads-1")
    return out


@dataclass
class Options:
    """What to run. Counts are per run (per thread for threads-N)."""

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
        return self.heap_v2 is not None

    @property
    def needs_gil(self) -> bool:
        return bool(self.obj.needs_gil)


def make_allocators(opts: Options) -> tuple:
    """(allocators, skipped lines). Raises BenchError for an unusable --vs library."""
    allocs = [
        Alloc("hakmem", _b.hakmem_allocator("hakmem"), heap_v2=True, spec="hakmem",
              note="magazine (TinyHeapV2) on"),
        Alloc("hakmem-nomag", _b.hakmem_allocator("hakmem-nomag"), heap_v2=False,
              spec="hakmem-nomag", note="magazine off: TLS free list only"),
        Alloc("libc", _b.libc_allocator(), spec="libc", note="glibc malloc/free"),
        Alloc("pymalloc", _b.pymalloc_allocator(), spec="pymalloc",
              note="PyObject_Malloc/Free; runs hold the GIL; skipped on multi-thread workloads"),
    ]
    skipped: List[str] = []
    if opts.mimalloc:
        try:
            a = _b.dl_allocator(MIMALLOC, "mimalloc", "mi_malloc", "mi_free")
            allocs.append(Alloc("mimalloc", a, spec=f"dl:{MIMALLOC}:mi_malloc:mi_free",
                                note=f"mi_malloc/mi_free from {a.path}"))
        except OSError as e:
            skipped.append(f"mimalloc skipped: {e} (Debian package libmimalloc2.0)")
    seen = {a.name for a in allocs}
    for path in opts.vs:
        if not os.path.exists(path) or not os.access(path, os.R_OK):
            raise BenchError(f"--vs {path}: cannot read the library")
        base = os.path.basename(path).split(".so")[0]
        name = base[3:] if base.startswith("lib") else base
        while name in seen:
            name += "'"
        try:
            a = _b.dl_allocator(path, name)
        except OSError as e:
            raise BenchError(f"--vs {path}: {e}") from None
        seen.add(name)
        allocs.append(Alloc(name, a, spec=f"dl:{path}:malloc:free", note=f"malloc/free from {a.path}"))
    return allocs, skipped


def _alloc_from_spec(spec: str):
    """Rebuild an allocator in a child process from its spec string."""
    if spec in ("hakmem", "hakmem-nomag"):
        hakmem.configure(heap_v2=(spec == "hakmem"))
        return _b.hakmem_allocator(spec)
    if spec == "libc":
        return _b.libc_allocator()
    if spec == "pymalloc":
        return _b.pymalloc_allocator()
    if spec.startswith("dl:"):
        path, m, f = spec.split(":", 1)[1].rsplit(":", 2)
        return _b.dl_allocator(path, os.path.basename(path), m, f)
    raise ValueError(f"bad allocator spec {spec!r}")


# ---- hakmem's own counters: proof that hakmem served the ops --------------------
def _hak_counts() -> Dict[str, int]:
    s = hakmem.stats()
    return {k: s[k] for k in ("allocs", "frees", "mag_hits", "mag_misses", "bytes_mapped",
                              "large_allocs", "large_frees")}


class _Proof:
    """Accumulates hakmem's counter deltas over the measured runs of one cell."""

    def __init__(self) -> None:
        self.expected = 0
        self.allocs = 0
        self.frees = 0
        self.mag_hits = 0
        self.mag_misses = 0

    def add(self, before: Dict[str, int], after: Dict[str, int], expected: int, where: str) -> None:
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
        looked = self.mag_hits + self.mag_misses
        return {"expected_ops": self.expected, "allocs": self.allocs, "frees": self.frees,
                "mag_hits": self.mag_hits, "mag_misses": self.mag_misses,
                "hit_rate": (self.mag_hits / looked) if looked else None, "verified": True}


# ---- one measurement ------------------------------------------------------------
def _once(wl: str, a: Alloc, ops: int, threads: int, fixed: Optional[str]) -> tuple:
    """Run one workload once; return (wall seconds, CPU seconds or None, blocks counted as ops).

    CPU seconds (the calling thread's) are measured for the one-thread loops only.
    """
    cpu: List[float] = []
    if wl.startswith("threads-"):
        p = C_WORKLOADS[fixed]
        return _b.run_threads(a.obj, threads, p["size"], p["ws"], ops), None, threads * ops
    p = C_WORKLOADS[wl]
    if p["kind"] == "ring":
        return _b.run_ring(a.obj, p["size"], p["ws"], ops, cpu=cpu), cpu[0], ops
    if p["kind"] == "mixed":
        return _b.run_mixed(a.obj, p["ws"], ops, cpu=cpu), cpu[0], ops
    return _b.run_xthread(a.obj, p["size"], ops), None, ops


def _summary(mops: List[float]) -> Dict[str, Any]:
    return {"median": statistics.median(mops), "min": min(mops), "max": max(mops),
            "runs": mops}


def _measure_cell_rounds(wl: str, fixed: Optional[str], threads: int, allocs: List[Alloc],
                         opts: Options, tick: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Warm up each allocator, then `runs` rounds, allocators interleaved in each round."""
    label = f"{wl}/{fixed}" if fixed else wl
    proofs = {a.name: _Proof() for a in allocs if a.is_hakmem}
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
                before = _hak_counts()
            dt, cpu, blocks = _once(wl, a, opts.ops, threads, fixed)
            if a.is_hakmem:
                after = _hak_counts()
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
            one = _b.run_spin(1, iters)
            many = _b.run_spin(threads, iters) / threads
            spin.append(one / many)
    out = []
    for a in allocs:
        row: Dict[str, Any] = {
            "workload": wl if not fixed else f"{wl}:{fixed}",
            "base_workload": fixed or wl,
            "threads": threads if fixed else (2 if C_WORKLOADS[wl]["kind"] == "xthread" else 1),
            "allocator": a.name,
            "ops_per_run": opts.ops * (threads if fixed else 1),
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
def _mem_child(spec: str, n: int) -> Dict[str, Any]:
    """In a fresh interpreter: the marginal memory of n more live mixed-size blocks.

    A first batch of n blocks soaks up memory the allocator (or the interpreter,
    for libc) already had resident; then RSS is read, a second batch of n blocks
    (the same size sequence) is allocated with every byte written, and RSS is read
    again. bytes_per_block = RSS growth / n. For hakmem the growth in active 64 KiB
    slabs over the second batch is reported too (its own view of the same thing).
    """
    a = _alloc_from_spec(spec)
    first = _b.LiveBlocks(a, n)
    st0 = hakmem.stats()
    before_rss = _rec.rss_bytes()
    held = _b.LiveBlocks(a, n)
    after_rss = _rec.rss_bytes()
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
    code = ("import json; from hakmem.bench_runner import _mem_child; "
            f"print(json.dumps(_mem_child({a.spec!r}, {int(n)})))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [_rec._root(), env.get("PYTHONPATH", "")] if p)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=_rec._root())
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory child for {a.name} failed: {last}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["allocator"] = a.name
    d["overhead_bytes"] = d["bytes_per_block"] - d["mean_request"]
    return d


# ---- the call path: vtable vs calling the cimported function by name --------------
def _callpath(opts: Options, tick: Callable[[str], None]) -> Dict[str, Any]:
    """fixed16_ws60 with hak_malloc/hak_free through the vtable vs called by name.

    Both go through the function pointers Cython imported from hakmem.front's
    capsule table (a cimporting module cannot inline them); the libc pair shows
    what a direct (PLT) call gains over the vtable.
    """
    res: Dict[str, List[float]] = {"hakmem_vtable": [], "hakmem_direct": [],
                                   "hakmem_in_module": [],
                                   "libc_vtable": [], "libc_direct": []}
    hk = _b.hakmem_allocator()
    lc = _b.libc_allocator()
    hakmem.configure(heap_v2=True)
    for r in range(opts.warmup + opts.runs):
        tick(f"callpath round {r + 1}")
        before = _hak_counts()
        t = {"hakmem_vtable": _b.run_ring(hk, 16, 60, opts.ops),
             "hakmem_direct": _b.run_ring_direct("hakmem", 16, 60, opts.ops),
             "hakmem_in_module": hakmem.front._ring_in_module(opts.ops, 60, 16),
             "libc_vtable": _b.run_ring(lc, 16, 60, opts.ops),
             "libc_direct": _b.run_ring_direct("libc", 16, 60, opts.ops)}
        after = _hak_counts()
        _Proof().add(before, after, 3 * opts.ops, "callpath")
        if r >= opts.warmup:
            for k, v in t.items():
                res[k].append(opts.ops / v / 1e6)
    out = {k: _summary(v) for k, v in res.items()}
    out["hakmem_vtable_over_direct"] = out["hakmem_vtable"]["median"] / out["hakmem_direct"]["median"]
    out["libc_vtable_over_direct"] = out["libc_vtable"]["median"] / out["libc_direct"]["median"]
    out["in_module_loop"] = out["hakmem_in_module"]
    out["cimport_over_in_module"] = out["hakmem_direct"]["median"] / out["hakmem_in_module"]["median"]
    out["note"] = ("hakmem_direct calls hak_malloc/hak_free from hakmem.bench through Cython's "
                   "imported function pointers (the cimport path); hakmem_in_module is the same "
                   "loop compiled inside hakmem.front (front._ring_in_module), where the "
                   "compiler may inline them")
    return out


# ---- targets from the issue -------------------------------------------------------
TARGETS = [
    # (name, workload, baseline, goal ratio)
    ("fixed16_ws60 >= 1.15x pymalloc", "fixed16_ws60", "pymalloc", 1.15),
    ("fixed16_ws60 >= 1.25x mimalloc", "fixed16_ws60", "mimalloc", 1.25),
    ("fixed256_ws50 >= 1.15x pymalloc", "fixed256_ws50", "pymalloc", 1.15),
    ("fixed256_ws50 >= 1.25x mimalloc", "fixed256_ws50", "mimalloc", 1.25),
    ("mixed16-1024_ws256 >= 1.2x mimalloc", "mixed16-1024_ws256", "mimalloc", 1.2),
    ("xthread64 >= 1.5x mimalloc", "xthread64", "mimalloc", 1.5),
]


def _targets(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    ratio = {(r["workload"], r["baseline"]): r for r in res["ratios"]}
    out = []
    for name, wl, base, goal in TARGETS:
        r = ratio.get((wl, base))
        if r is not None:
            out.append({"target": name, "value": r["ratio"], "goal": goal,
                        "met": r["ratio"] >= goal, "value_cpu": r["ratio_cpu"]})
    mem = {m["allocator"]: m for m in res["memory"]}
    if "hakmem" in mem and "mimalloc" in mem:
        v = mem["hakmem"]["bytes_per_block"] / mem["mimalloc"]["bytes_per_block"]
        out.append({"target": "mixed bytes/live block <= mimalloc", "value": v, "goal": 1.0,
                    "met": v <= 1.0, "lower_is_better": True})
    for s in res["scaling"]:
        if s["allocator"] == "hakmem" and s["threads"] == 2:
            out.append({"target": f"{s['workload']} 2 threads >= 1.8x 1 thread",
                        "value": s["speedup"], "goal": 1.8, "met": s["speedup"] >= 1.8})
    cp = res.get("callpath")
    if cp:
        v = cp["cimport_over_in_module"]
        out.append({"target": "cimport path within 10% of the in-module loop",
                    "value": v, "goal": 0.9, "met": v >= 0.9})
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
        "records": [], "callpath": None, "targets": [], "scaling_reference": [],
        "python_programs": None,
    }
    if any(a.needs_gil for a in allocs):
        res["notes"].append("pymalloc (PyObject_Malloc) runs hold the GIL, as the C API "
                            "requires; it is skipped on multi-thread workloads")

    # planned steps, for the progress line
    steps = []
    for wl in opts.workloads:
        if wl in C_WORKLOADS:
            steps.append((wl, None, 1))
        elif wl.startswith("threads-"):
            for f in FIXED:
                steps.append((wl, f, int(wl.split("-")[1])))
    n_steps = len(steps) + (1 if "mixed16-1024_ws256" in opts.workloads else 0) \
        + (1 if "records" in opts.workloads else 0) + (1 if "callpath" in opts.workloads else 0) \
        + (1 if "python" in opts.workloads else 0)
    done = [0]

    def tick(msg: str) -> None:
        say(f"[{done[0] + 1}/{n_steps}] {msg}  ({time.perf_counter() - t_start:.0f}s)")

    try:
        for wl, fixed, threads in steps:
            multi = fixed is not None or C_WORKLOADS[wl]["kind"] == "xthread"
            use = [a for a in allocs if not (multi and a.needs_gil)]
            for a in allocs:
                if a not in use:
                    res["skipped"].append({"workload": f"{wl}:{fixed}" if fixed else wl,
                                           "allocator": a.name,
                                           "reason": "needs the GIL; cannot run on several threads"})
            rows = _measure_cell_rounds(wl, fixed, threads, use, opts, tick)
            spin = rows[0].pop("_spin", None) if rows else None
            if spin:
                res["scaling_reference"].append({"workload": fixed, "threads": threads,
                                                 "speedups": spin,
                                                 "speedup": statistics.median(spin)})
            res["results"].extend(rows)
            done[0] += 1
        if "mixed16-1024_ws256" in opts.workloads:
            for a in allocs:
                tick(f"bytes per live block {a.name}")
                res["memory"].append(_mem_measure(a, opts.mem_blocks))
            done[0] += 1
        if "callpath" in opts.workloads:
            res["callpath"] = _callpath(opts, tick)
            done[0] += 1
        if "records" in opts.workloads:
            res["records"] = _records(opts, tick)
            if _rec.pool_available():
                res["notes"].append(f"records: RecordPool skipped ({_rec.pool_available()})")
            done[0] += 1
        if "python" in opts.workloads:
            tick("python programs under hakmem.install() vs pymalloc")
            res["python_programs"] = _python_programs(opts)
            done[0] += 1
    finally:
        hakmem.configure(heap_v2=saved_cfg["heap_v2"])

    _derive(res, allocs)
    res["targets"] = _targets(res)
    res["elapsed_s"] = time.perf_counter() - t_start
    return res


def _python_programs(opts: Options) -> Dict[str, Any]:
    """Python programs (dicts, json, strings, re, object trees) with hakmem installed
    as CPython's allocator vs pymalloc, each side in fresh interpreters (issue 8)."""
    from hakmem import pyworkloads
    res = pyworkloads.compare(repeat=2 if opts.quick else 5, rounds=1 if opts.quick else 2)
    ratios = [v["ratio"] for v in res.values()]
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return {"workloads": res, "geomean_ratio": geo, "unit": "CPU seconds, best of runs",
            "table": pyworkloads.format_compare(res)}


def _records(opts: Options, tick: Callable[[str], None]) -> List[Dict[str, Any]]:
    out = []
    kinds = _rec.kinds()
    times: Dict[str, List[float]] = {k: [] for k in kinds}
    for r in range(opts.warmup + opts.runs):
        for k in kinds:
            tick(f"records {k} round {r + 1}")
            dt = _rec.run_ring(k, opts.record_ops)
            if r >= opts.warmup:
                times[k].append(opts.record_ops / dt / 1e6)
    for k in kinds:
        tick(f"records {k}: {opts.live_records} alive")
        mem = _rec.bytes_per_record(k, opts.live_records)
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
            f"(median); wall-clock figures are low and noisy, the per-CPU-second table less so")
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
