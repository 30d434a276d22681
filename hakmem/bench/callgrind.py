"""hakmem.bench.callgrind — instructions per op under valgrind's callgrind (``--instructions``).

Instruction counts do not move with machine load, so they show what a fast-path
change buys where wall-clock figures on a shared machine cannot. Method:

* one child interpreter per allocator runs under
  ``valgrind --tool=callgrind --dump-before=hakmem_bench_mark``; the one-thread loops of
  :mod:`hakmem.bench.loops` call ``hakmem_bench_mark()`` right before and right after the
  loop, so callgrind writes one profile part per loop holding exactly its instructions
  (the allocator's and the loop's own, nothing of Python);
* each workload runs three times in that child: a warm-up of N1 ops, then N1 ops, then
  N2 ops; instructions per op = (I(N2) - I(N1)) / (N2 - N1), so constant costs (the
  leftover frees, reading the clock) and first-touch costs drop out;
* fixed seeds (the mixed workload's xorshift seed, ``PYTHONHASHSEED=0``) and a fixed
  environment (only PATH, the locale and the HAKMEM_* switches pass), so repeated runs
  give the same figures: libc's and pymalloc's counts depend on their heap's history,
  which the interpreter's own allocations before the loops are part of;
* hakmem's exact-count check runs in the child too (its counters must move by
  exactly the ops run).

Multi-thread workloads are not counted: under valgrind threads take turns, and the
spin-waits between them would be counted as work.
"""
from __future__ import annotations

import concurrent.futures
import glob
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

import hakmem
from hakmem.bench import child, loops, runner

__all__ = ["WORKLOADS", "OPS", "instructions", "count_in_child", "check_valgrind"]

WORKLOADS = ["fixed16_ws60", "fixed256_ws50", "mixed16-1024_ws256", "glibc-simple_n25",
             "glibc-simple_n100", "glibc-simple_n400", "glibc-simple_n1600"]
# multiples of 3 x 1600, so glibc-simple's size cycle (16, 32, 64) is whole at every n
OPS = (48_000, 144_000)


def check_valgrind() -> str:
    """The valgrind executable; BenchError if it is missing or cannot work here."""
    path = shutil.which("valgrind")
    if path is None:
        raise runner.BenchError("--instructions needs valgrind (its callgrind tool), which is "
                                "not on PATH; install it (Debian/Ubuntu: apt-get install valgrind)")
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        raise runner.BenchError("--instructions cannot run under AddressSanitizer "
                                "(valgrind and ASan both replace the allocator)")
    return path


def _version(valgrind: str) -> str:
    try:
        return subprocess.run([valgrind, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip() or "valgrind"
    except (OSError, subprocess.SubprocessError):
        return "valgrind"


def _run_once(a: Any, wl: str, ops: int) -> int:
    """Run workload ``wl`` once with ``ops`` ops; return the ops actually run."""
    spec = runner.workload_spec(wl)
    if spec["kind"] == "ring":
        loops.run_ring(a, spec["size"], spec["ws"], ops)
    elif spec["kind"] == "mixed":
        loops.run_mixed(a, spec["ws"], ops)
    elif spec["kind"] == "simple":
        loops.run_simple(a, spec["n"], ops // spec["n"])
        return ops // spec["n"] * spec["n"]
    else:
        raise runner.BenchError(f"--instructions counts one-thread loops only, not {wl}")
    return ops


def count_in_child(spec: str, workloads: List[str], n1: int, n2: int) -> Dict[str, Any]:
    """Child side (under callgrind): for each workload, a warm-up of n1 ops, n1, n2.

    Returns the runs in order (each made two profile parts) and, for hakmem, the
    exact-count check of every run.
    """
    a = runner.allocator_from_spec(spec)
    is_hakmem = spec.startswith("hakmem")
    done = []
    for wl in workloads:
        for n in (n1, n1, n2):
            before = runner.hakmem_counts()
            ops = _run_once(a, wl, n)
            if is_hakmem:
                runner.CountCheck().add(before, runner.hakmem_counts(), ops,
                                        f"{wl} [{spec}] under callgrind")
            done.append([wl, ops])
    return {"runs": done, "checked": is_hakmem}


def _parts(prefix: str) -> List[int]:
    """Instruction totals of callgrind's numbered profile parts ``prefix.1, .2, ...``."""
    files = sorted(glob.glob(prefix + ".*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    out = []
    for f in files:
        with open(f) as fh:
            total = next((ln.split()[1] for ln in fh if ln.startswith("totals:")), None)
        if total is None:
            raise RuntimeError(f"callgrind wrote no totals into {f}")
        out.append(int(total))
    return out


def _measure(valgrind: str, name: str, spec: str, workloads: List[str], tmp: str,
             n1: int, n2: int) -> Dict[str, float]:
    prefix = os.path.join(tmp, name.replace("/", "_"))
    cmd = [valgrind, "--tool=callgrind", "-q", f"--callgrind-out-file={prefix}",
           "--dump-before=hakmem_bench_mark", "--dump-instr=no", "--collect-jumps=no"]
    res = child.call("hakmem.bench.callgrind:count_in_child", spec, workloads, n1, n2,
                     what=f"callgrind run for {name}", prefix=cmd, timeout=600,
                     env={"PYTHONHASHSEED": "0"}, inherit_env=False)
    parts = _parts(prefix)
    runs = res["runs"]
    # part 1 is start-up; then per run: the loop, then the Python between two runs
    if len(parts) < 2 * len(runs):
        raise RuntimeError(f"callgrind run for {name}: {len(parts)} profile parts for "
                           f"{len(runs)} loops; was hakmem_bench_mark inlined away?")
    loop_instr = [parts[2 * i + 1] for i in range(len(runs))]
    out: Dict[str, float] = {}
    for j, wl in enumerate(workloads):
        (_, o1), (_, o2) = runs[3 * j + 1], runs[3 * j + 2]
        out[wl] = (loop_instr[3 * j + 2] - loop_instr[3 * j + 1]) / (o2 - o1)
    return out


def instructions(allocators: List[Any], workloads: Optional[List[str]] = None,
                 ops: tuple = OPS, jobs: int = 2) -> Dict[str, Any]:
    """Instructions per op for each allocator (runner.Alloc) x one-thread workload.

    Runs one callgrind child per allocator, ``jobs`` at a time. Returns ``{"allocators",
    "workloads", "ops", "per_op": {workload: {allocator: instr/op}}, "method", "notes",
    "elapsed_s"}``.
    """
    valgrind = check_valgrind()
    wls = [w for w in (workloads or WORKLOADS)
           if runner.workload_spec(w)["kind"] in ("ring", "mixed", "simple")]
    if not wls:
        raise runner.BenchError("--instructions counts one-thread loops only (fixed*, mixed*, "
                                "glibc-simple*); none was selected")
    n1, n2 = ops
    if not 0 < n1 < n2:
        raise runner.BenchError(f"--instructions needs 0 < N1 < N2, got {n1}, {n2}")
    t0 = time.perf_counter()
    per_op: Dict[str, Dict[str, float]] = {w: {} for w in wls}
    with tempfile.TemporaryDirectory(prefix="hakmem-callgrind-") as tmp:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
            futs = {a.name: ex.submit(_measure, valgrind, a.name, a.spec, wls, tmp, n1, n2)
                    for a in allocators}
            for name, f in futs.items():
                for wl, v in f.result().items():
                    per_op[wl][name] = v
    notes = [f"{_version(valgrind)}; hakmem {hakmem.__version__}"
             f"{' (DEBUG build)' if hakmem.build_info()['debug'] else ''}; hakmem's counters "
             f"moved by exactly the ops run in every hakmem loop"]
    return {"allocators": [a.name for a in allocators], "workloads": wls, "ops": [n1, n2],
            "per_op": per_op, "notes": notes,
            "method": "callgrind, (I(N2) - I(N1)) / (N2 - N1) between hakmem_bench_mark calls",
            "elapsed_s": time.perf_counter() - t0}
