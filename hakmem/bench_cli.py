"""hakmem.bench_cli — ``python -m hakmem bench``: options, the printed tables, --json, --plot.

:func:`add_bench_parser` wires the ``bench`` subcommand into the top-level parser
of ``hakmem/__main__.py``; the measuring is done by :mod:`hakmem.bench_runner`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, TextIO

__all__ = ["add_bench_parser", "main", "format_report", "write_plot"]

QUICK = {"ops": 100_000, "runs": 5, "mem_blocks": 20_000, "record_ops": 20_000,
         "live_records": 100_000}
FULL = {"ops": 2_000_000, "runs": 7, "mem_blocks": 100_000, "record_ops": 200_000,
        "live_records": 1_000_000}


def _count(text: str) -> int:
    """argparse type: a positive integer (accepts 1_000_000 and 1e6)."""
    try:
        v = float(text.replace("_", "")) if ("e" in text.lower()) else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != int(v) or int(v) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return int(v)


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``subparsers``; it runs :func:`main`."""
    p = subparsers.add_parser(
        "bench", help="microbenchmark hakmem against libc, pymalloc and mimalloc",
        description="Run the allocator workloads (nogil C loops, identical for every "
                    "allocator) and print Mops/s, ratios, magazine hit rate and bytes "
                    "per live block. See docs/bench.md.")
    p.add_argument("--workloads", metavar="A,B",
                   help="comma-separated workloads (default: all): fixed16_ws60, "
                        "fixed256_ws50, mixed16-1024_ws256, xthread64, threads-N, "
                        "records, callpath, python")
    p.add_argument("--ops", type=_count, help=f"ops per run, per thread (default {FULL['ops']:,}; "
                                              f"--quick {QUICK['ops']:,})")
    p.add_argument("--runs", type=_count, help="measured runs per cell, after one warm-up (default 7; --quick 5)")
    p.add_argument("--quick", action="store_true", help="a few-second run (fewer ops per run)")
    p.add_argument("--vs", action="append", default=[], metavar="PATH",
                   help="also compare a shared library exporting malloc/free (repeatable)")
    p.add_argument("--no-mimalloc", action="store_true", help="do not look for libmimalloc.so.2")
    p.add_argument("--mem-blocks", type=_count, metavar="N",
                   help=f"live blocks for bytes per block (default {FULL['mem_blocks']:,})")
    p.add_argument("--live-records", type=_count, metavar="N",
                   help=f"records alive for bytes per record (default {FULL['live_records']:,})")
    p.add_argument("--record-ops", type=_count, metavar="N",
                   help=f"ops per run of the Python record ring (default {FULL['record_ops']:,})")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw a grouped bar chart (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=main)
    return p


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, else a line per step."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last_step = None
        self.width = 0

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            line = msg[:119]
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.stream.flush()
        else:
            step = msg.split("]", 1)[0]
            if step != self.last_step:
                self.last_step = step
                self.stream.write("bench " + msg + "\n")
                self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _fail(msg: str, code: int = 2) -> int:
    print(f"hakmem bench: error: {msg}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    """Run the bench for parsed ``args``; print the report; return the exit code."""
    from hakmem import bench_runner as br

    try:
        workloads = br.parse_workloads(args.workloads)
    except br.BenchError as e:
        return _fail(str(e))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib (pip install matplotlib, or hakmem[plot])")
    for path in filter(None, (args.json, args.plot)):
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d) or not os.access(d, os.W_OK):
            return _fail(f"cannot write {path}: directory {d} is missing or not writable")
    base = QUICK if args.quick else FULL
    pick = lambda v, k: v if v is not None else base[k]  # noqa: E731
    prog = _Progress(sys.stderr, not args.quiet)
    opts = br.Options(workloads=workloads, ops=pick(args.ops, "ops"), runs=pick(args.runs, "runs"),
                      vs=list(args.vs), mimalloc=not args.no_mimalloc, quick=args.quick,
                      mem_blocks=pick(args.mem_blocks, "mem_blocks"),
                      record_ops=pick(args.record_ops, "record_ops"),
                      live_records=pick(args.live_records, "live_records"), progress=prog)
    try:
        res = br.run(opts)
    except br.BenchError as e:
        prog.done()
        return _fail(str(e))
    except (RuntimeError, MemoryError) as e:
        prog.done()
        return _fail(str(e), 1)
    prog.done()
    print(format_report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    if args.plot:
        write_plot(res, args.plot)
    return 0


# ---- the printed report ------------------------------------------------------------
def _cell(m: Dict[str, float]) -> str:
    return f"{m['median']:.1f} ({m['min']:.1f}-{m['max']:.1f})"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(head: List[str], rows: List[List[str]], left: int = 1) -> List[str]:
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w[i]) if i < left else str(c).rjust(w[i])  # noqa: E731
                              for i, c in enumerate(r)).rstrip()
    return [fmt(head), fmt(["-" * x for x in w])] + [fmt(r) for r in rows]


def format_report(res: Dict[str, Any]) -> str:
    """The human-readable tables for a results dict from :func:`hakmem.bench_runner.run`."""
    s = res["settings"]
    allocs = [a["name"] for a in res["allocators"]]
    out = [f"hakmem {res['hakmem_version']} bench{' (DEBUG build: not a speed figure)' if res['build']['debug'] else ''}"
           f" - {res['cpu_count']} CPUs, Python {res['python']}",
           f"Mops/s, median of {s['runs']} runs after {s['warmup']} warm-up (min-max); "
           f"{s['ops']:,} ops per run (per thread for threads-N; one op = free + malloc, "
           f"xthread: one block)"]
    for a in res["allocators"]:
        out.append(f"  {a['name']:<13} {a['note']}")
    for n in res["notes"]:
        out.append(f"  note: {n}")
    results = res["results"]
    if results:
        wls: List[str] = []
        for r in results:
            if r["workload"] not in wls:
                wls.append(r["workload"])
        cell = {(r["workload"], r["allocator"]): r for r in results}
        gil = {(k["workload"], k["allocator"]) for k in res["skipped"]}
        rows = []
        for wl in wls:
            row = [wl]
            for a in allocs:
                if (wl, a) in cell:
                    row.append(_cell(cell[(wl, a)]["mops"]))
                else:
                    row.append("n/a (GIL)" if (wl, a) in gil else "-")
            rows.append(row)
        out += [""] + _table(["workload"] + allocs, rows)
        for r in results:
            if r["workload"] == "xthread64" and "bytes_mapped_growth" in r:
                out.append(f"  xthread64 [{r['allocator']}]: hakmem's mapped bytes grew by "
                           f"{r['bytes_mapped_growth'] / 2**20:.1f} MiB over "
                           f"{len(r['mops']['runs'])} runs of {r['ops_per_run']:,} blocks "
                           f"(at most 1024 in flight)")

        cpu_wls = [wl for wl in wls if any(cell.get((wl, a), {}).get("mops_cpu") for a in allocs)]
        if cpu_wls:
            rows = [[wl] + [_cell(cell[(wl, a)]["mops_cpu"]) if cell.get((wl, a), {}).get("mops_cpu")
                            else "-" for a in allocs] for wl in cpu_wls]
            out += ["", "the same one-thread runs per CPU-second of the running thread (Mops per "
                        "CPU-s): not slowed by time spent waiting for a CPU on a busy machine"]
            out += _table(["workload"] + allocs, rows)

        others = [a for a in allocs if a != "hakmem"]
        ratio = {(r["workload"], r["baseline"]): r["ratio"] for r in res["ratios"]}
        rows = []
        for wl in wls:
            h = cell.get((wl, "hakmem"))
            chk = h["hakmem_check"] if h else None
            rows.append([wl] + [f"{ratio[(wl, a)]:.2f}x" if (wl, a) in ratio else "-" for a in others]
                        + [_pct(chk["hit_rate"]) if chk else "-",
                           f"ok ({chk['allocs']:,} allocs)" if chk else "-"])
        out += ["", "hakmem / baseline (ratio of medians); hit% = hakmem's magazine hit rate; "
                    "check = hakmem's own counters moved by exactly the ops run"]
        out += _table(["workload"] + [f"/{a}" for a in others] + ["hit%", "check"], rows)
    if res["scaling"]:
        sc = {(x["workload"], x["threads"], x["allocator"]): x for x in res["scaling"]}
        keys = sorted({(x["workload"], x["threads"]) for x in res["scaling"]})
        names = [a for a in allocs if any(x["allocator"] == a for x in res["scaling"])]
        ref = {(x["workload"], x["threads"]): x["speedup"] for x in res.get("scaling_reference", [])}
        rows = [[wl, str(n)] + [f"{sc[(wl, n, a)]['speedup']:.2f}x" if (wl, n, a) in sc else "-"
                                for a in names]
                + [f"{ref[(wl, n)]:.2f}x" if ref.get((wl, n)) else "-"] for wl, n in keys]
        out += ["", "threads-N: total ops/s over the same allocator on one thread; cpu = N "
                    "threads of pure arithmetic over one, measured in the same rounds (what this "
                    "machine gives N threads now)"]
        out += _table(["workload", "threads"] + names + ["cpu"], rows, left=2)
    if res["memory"]:
        m0 = res["memory"][0]
        out += ["", f"bytes per live block, mixed 16..1024 (mean request {m0['mean_request']:.1f} B): "
                    f"RSS growth while {m0['blocks']:,} blocks are allocated, every byte written, on "
                    f"top of {m0['blocks']:,} live ones, in a fresh process, / {m0['blocks']:,}"]
        rows = [[m["allocator"], f"{m['bytes_per_block']:.1f}", f"{m['overhead_bytes']:+.1f}",
                 f"{m['hakmem_slab_bytes_per_block']:.1f}" if "hakmem_slab_bytes_per_block" in m else "-"]
                for m in res["memory"]]
        out += _table(["allocator", "bytes/block", "over request", "hakmem slabs/block"], rows)
    if res["callpath"]:
        cp = res["callpath"]
        out += ["", "call path, fixed16_ws60 (Mops/s): vtable = the bench's function-pointer "
                    "loop; by name = hak_malloc/hak_free called as a cimporting module calls them",
                f"  hakmem  vtable {_cell(cp['hakmem_vtable'])}   by name {_cell(cp['hakmem_direct'])}"
                f"   by-name/vtable {1 / cp['hakmem_vtable_over_direct']:.2f}",
                f"  hakmem  in-module {_cell(cp['hakmem_in_module'])}   "
                f"cimport/in-module {cp['cimport_over_in_module']:.2f}",
                f"  libc    vtable {_cell(cp['libc_vtable'])}   direct  {_cell(cp['libc_direct'])}"
                f"   direct/vtable {1 / cp['libc_vtable_over_direct']:.2f}",
                f"  ({cp['note']})"]
    if res.get("python_programs"):
        py = res["python_programs"]
        out += ["", "Python programs with hakmem installed as CPython's allocator (PEP 445) vs "
                    "pymalloc, fresh interpreters, CPU seconds (ratio = pymalloc / hakmem)",
                py["table"]]
    if res["records"]:
        r0 = res["records"][0]
        out += ["", f"Python records x:f8 y:f8, ring of 60, create-and-drop per op (Mops/s); "
                    f"bytes/record with {r0['live_records']:,} alive = RSS growth in a fresh "
                    f"process, references kept in a list made beforehand"]
        rows = [[r["kind"], _cell(r["mops"]), f"{r['bytes_per_record']:.1f}",
                 f"{r['storage_bytes_per_record']:.1f}" if r["storage_bytes_per_record"] is not None else "-"]
                for r in res["records"]]
        out += _table(["kind", "Mops/s", "bytes/record", "storage/record"], rows)
    if res["targets"]:
        out += ["", "targets (issue 4): value from the wall-clock medians; per CPU-s from the "
                    "CPU-time medians (one-thread workloads)"]
        rows = []
        for t in res["targets"]:
            if t["met"]:
                verdict = "met"
            elif t.get("lower_is_better"):
                verdict = f"missed by {100 * (t['value'] / t['goal'] - 1):.0f}%"
            else:
                verdict = f"missed by {100 * (1 - t['value'] / t['goal']):.0f}%"
            vc = t.get("value_cpu")
            rows.append([t["target"], f"{t['value']:.2f}", f"{vc:.2f}" if vc else "-", verdict])
        out += _table(["target", "value", "per CPU-s", "verdict"], rows)
    out.append("")
    out.append(f"elapsed {res['elapsed_s']:.1f} s")
    return "\n".join(out)


def write_plot(res: Dict[str, Any], path: str) -> None:
    """A grouped bar chart (workload x allocator, median Mops/s, min-max whiskers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allocs = [a["name"] for a in res["allocators"]]
    wls: List[str] = []
    for r in res["results"]:
        if r["workload"] not in wls:
            wls.append(r["workload"])
    cell = {(r["workload"], r["allocator"]): r["mops"] for r in res["results"]}
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(wls)), 5))
    width = 0.8 / max(1, len(allocs))
    for i, a in enumerate(allocs):
        xs, ys, lo, hi = [], [], [], []
        for j, wl in enumerate(wls):
            m = cell.get((wl, a))
            if m is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(m["median"])
            lo.append(m["median"] - m["min"])
            hi.append(m["max"] - m["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=a)
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels(wls, rotation=20, ha="right")
    ax.set_ylabel("Mops/s (median, min-max)")
    ax.set_title(f"hakmem {res['hakmem_version']} bench, {res['cpu_count']} CPUs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
