"""hakmem.bench.report — the printed tables of ``hakmem bench``.

The default report fits one screen: Mops/s per workload x allocator, and hakmem
divided by each baseline. ``full=True`` (``--full``) adds the ranges, the per-CPU-second
table, magazine hit rates and the count check, threads-N scaling, bytes per live
block, the call path, Python programs, records and the goals; a section whose
workload was asked for by name (``--workloads``) is printed in any case.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from hakmem.bench import goals as goals_mod

__all__ = ["format_report", "format_instructions"]


def _cell(m: Dict[str, float], full: bool) -> str:
    return f"{m['median']:.1f} ({m['min']:.1f}-{m['max']:.1f})" if full else f"{m['median']:.1f}"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(head: List[str], rows: List[List[str]], left: int = 1) -> List[str]:
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w[i]) if i < left else str(c).rjust(w[i])  # noqa: E731
                              for i, c in enumerate(r)).rstrip()
    return [fmt(head), fmt(["-" * x for x in w])] + [fmt(r) for r in rows]


def _workloads(results: List[Dict[str, Any]]) -> List[str]:
    out: List[str] = []
    for r in results:
        if r["workload"] not in out:
            out.append(r["workload"])
    return out


def _main_tables(res: Dict[str, Any], full: bool) -> List[str]:
    allocs = [a["name"] for a in res["allocators"]]
    results = res["results"]
    wls = _workloads(results)
    cell = {(r["workload"], r["allocator"]): r for r in results}
    gil = {(k["workload"], k["allocator"]) for k in res["skipped"]}
    na = "n/a"
    rows = [[wl] + [_cell(cell[(wl, a)]["mops"], full) if (wl, a) in cell
                    else (na if (wl, a) in gil else "-") for a in allocs] for wl in wls]
    out = [""] + _table(["Mops/s"] + allocs, rows)
    if full:
        for r in results:
            if r["workload"] == "xthread64" and "bytes_mapped_growth" in r:
                out.append(f"  xthread64 [{r['allocator']}]: hakmem's mapped bytes grew by "
                           f"{r['bytes_mapped_growth'] / 2**20:.1f} MiB over "
                           f"{len(r['mops']['runs'])} runs of {r['ops_per_run']:,} blocks "
                           f"(at most 1024 in flight)")
        cpu_wls = [wl for wl in wls if any(cell.get((wl, a), {}).get("mops_cpu") for a in allocs)]
        if cpu_wls:
            rows = [[wl] + [_cell(cell[(wl, a)]["mops_cpu"], True)
                            if cell.get((wl, a), {}).get("mops_cpu") else "-" for a in allocs]
                    for wl in cpu_wls]
            out += ["", "the same one-thread runs per CPU-second of the running thread: not "
                        "slowed by time spent waiting for a CPU on a busy machine"]
            out += _table(["Mops/CPU-s"] + allocs, rows)
    others = [a for a in allocs if a != "hakmem"]
    ratio = {(r["workload"], r["baseline"]): r["ratio"] for r in res["ratios"]}
    rows = []
    for wl in wls:
        row = [wl] + [f"{ratio[(wl, a)]:.2f}x" if (wl, a) in ratio
                      else (na if (wl, a) in gil else "-") for a in others]
        if full:
            chk = cell[(wl, "hakmem")]["hakmem_check"] if (wl, "hakmem") in cell else None
            row += [_pct(chk["hit_rate"]) if chk else "-",
                    f"ok ({chk['allocs']:,} allocs)" if chk else "-"]
        rows.append(row)
    out += ["", "hakmem ÷ baseline, ratio of medians (above 1.00x: hakmem is faster)"
            + ("; hit% = hakmem's magazine hit rate; check = hakmem's own counters moved "
               "by exactly the ops run" if full else "")]
    out += _table(["hakmem ÷"] + others + (["hit%", "check"] if full else []), rows)
    if gil:
        out.append("n/a: pymalloc may only be called with the GIL held, so it runs no "
                   "multi-thread workload")
    checked = sum(1 for r in results if r.get("hakmem_check"))
    if checked and not full:
        out.append(f"hakmem's own counters moved by exactly the ops run, in all {checked} "
                   f"hakmem cells")
    return out


def _scaling(res: Dict[str, Any]) -> List[str]:
    allocs = [a["name"] for a in res["allocators"]]
    sc = {(x["workload"], x["threads"], x["allocator"]): x for x in res["scaling"]}
    keys = sorted({(x["workload"], x["threads"]) for x in res["scaling"]})
    names = [a for a in allocs if any(x["allocator"] == a for x in res["scaling"])]
    ref = {(x["workload"], x["threads"]): x["speedup"] for x in res.get("scaling_reference", [])}
    rows = [[wl, str(n)] + [f"{sc[(wl, n, a)]['speedup']:.2f}x" if (wl, n, a) in sc else "-"
                            for a in names]
            + [f"{ref[(wl, n)]:.2f}x" if ref.get((wl, n)) else "-"] for wl, n in keys]
    return (["", "threads-N: total ops/s over the same allocator on one thread; cpu = N threads "
                 "of pure arithmetic over one, in the same rounds (what this machine gives N "
                 "threads now)"]
            + _table(["workload", "threads"] + names + ["cpu"], rows, left=2))


def _memory(res: Dict[str, Any]) -> List[str]:
    m0 = res["memory"][0]
    rows = [[m["allocator"], f"{m['bytes_per_block']:.1f}", f"{m['overhead_bytes']:+.1f}",
             f"{m['hakmem_slab_bytes_per_block']:.1f}" if "hakmem_slab_bytes_per_block" in m else "-"]
            for m in res["memory"]]
    return (["", f"bytes per live block, mixed 16..1024 (mean request {m0['mean_request']:.1f} B): "
                 f"RSS growth while {m0['blocks']:,} more blocks are allocated and written, in a "
                 f"fresh process, / {m0['blocks']:,}"]
            + _table(["allocator", "bytes/block", "over request", "hakmem slabs/block"], rows))


def _callpath_lines(name: str, cp: Dict[str, Any]) -> List[str]:
    mi = (f"   mimalloc vtable {_cell(cp['mimalloc_vtable'], True)}   inline/mimalloc "
          f"{cp['inline_over_mimalloc']:.2f}" if cp.get("mimalloc_vtable") else "")
    return [f"  {name}",
            f"    hakmem  vtable {_cell(cp['hakmem_vtable'], True)}   by name "
            f"{_cell(cp['hakmem_direct'], True)}   by-name/vtable {1 / cp['hakmem_vtable_over_direct']:.2f}",
            f"    hakmem  inline (cimport) {_cell(cp['hakmem_inline'], True)}   in-module "
            f"{_cell(cp['hakmem_in_module'], True)}   inline/in-module {cp['inline_over_in_module']:.2f}"
            f"   by-name/in-module {cp['cimport_over_in_module']:.2f}",
            f"    libc    vtable {_cell(cp['libc_vtable'], True)}   direct "
            f"{_cell(cp['libc_direct'], True)}   direct/vtable {1 / cp['libc_vtable_over_direct']:.2f}"
            + mi]


def _callpath(cp: Dict[str, Any]) -> List[str]:
    return (["", "call path (Mops/s): vtable = the bench's function-pointer loop; by name = "
                 "hak_malloc/hak_free called as a cimporting module calls them; inline = the "
                 "hak_heap_* API compiled into the caller; in-module = the loop inside hakmem.front"]
            + _callpath_lines("fixed16_ws60", cp) + _callpath_lines("fixed256_ws50", cp["fixed256_ws50"]))


def _records(res: Dict[str, Any]) -> List[str]:
    r0 = res["records"][0]
    rows = [[r["kind"], _cell(r["mops"], True), f"{r['bytes_per_record']:.1f}",
             f"{r['storage_bytes_per_record']:.1f}" if r["storage_bytes_per_record"] is not None
             else "-"] for r in res["records"]]
    return (["", f"Python records x:f8 y:f8, ring of 60, create-and-drop per op (Mops/s); "
                 f"bytes/record with {r0['live_records']:,} alive (RSS growth, fresh process)"]
            + _table(["kind", "Mops/s", "bytes/record", "storage/record"], rows))


def format_report(res: Dict[str, Any], full: bool = False, goals: bool = False) -> str:
    """The printed report for a results dict of :func:`hakmem.bench.runner.run`.

    ``full`` adds every table the run has data for; ``goals`` adds the goal lines
    (``full`` implies them).
    """
    s = res["settings"]
    debug = " (DEBUG build: not a speed figure)" if res["build"]["debug"] else ""
    out = [f"hakmem {res['hakmem_version']} bench{debug}: {res['cpu_count']} CPUs, Python "
           f"{res['python']}",
           f"Mops/s = median of {s['runs']} runs of {s['ops']:,} ops (one op = malloc + free; "
           f"ops per thread for threads-N and xmalloc-test-N)"]
    if full:
        for a in res["allocators"]:
            out.append(f"  {a['name']:<13} {a['note']}")
    for n in res["notes"]:
        if full or "GIL" not in n:          # the n/a line says it in short form
            out.append(f"  note: {n}")
    if res["results"]:
        out += _main_tables(res, full)
    if res["scaling"]:
        out += _scaling(res)
    if res["memory"]:
        out += _memory(res)
    if res["callpath"]:
        out += _callpath(res["callpath"])
    if res.get("python_programs"):
        out += ["", "Python programs with hakmem installed as CPython's allocator (PEP 445) vs "
                    "pymalloc, fresh interpreters, CPU seconds (ratio = pymalloc / hakmem)",
                res["python_programs"]["table"]]
    if res["records"]:
        out += _records(res)
    if res.get("arena"):
        from hakmem.bench.arena import format_rows
        out += ["", "hakmem.arena.Pool vs cymem's Pool (CPU time of the running thread, "
                    "median of interleaved rounds)"] + format_rows(res["arena"]).splitlines()
    if (full or goals) and res["goals"]:
        out += [""] + goals_mod.format_goals(res["goals"])
    out.append("")
    if not full:
        out.append("more: --full (every workload and table), --goals, --instructions; "
                   "see --help")
    out.append(f"elapsed {res['elapsed_s']:.1f} s")
    return "\n".join(out)


def format_instructions(res: Dict[str, Any]) -> str:
    """The table of ``hakmem bench --instructions`` (see hakmem.bench.callgrind)."""
    allocs = res["allocators"]
    rows = []
    for wl in res["workloads"]:
        row = [wl]
        for a in allocs:
            v = res["per_op"].get(wl, {}).get(a)
            row.append("n/a" if v is None else f"{v:.1f}")
        rows.append(row)
    out = [f"instructions per op under callgrind (one op = malloc + free): the difference "
           f"between runs of {res['ops'][1]:,} and {res['ops'][0]:,} ops of the same loop, "
           f"after a warm-up run, fixed seeds"]
    out += _table(["instr/op"] + allocs, rows)
    for n in res["notes"]:
        out.append(f"  note: {n}")
    out.append(f"elapsed {res['elapsed_s']:.1f} s")
    return "\n".join(out)
