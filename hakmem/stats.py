"""hakmem.stats — the allocator's counters as a dict, and the table printed at exit.

Counters are kept per thread on the fast path (plain increments on the thread's own
cache) and summed here over live threads, exited threads and cacheless frees.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, TextIO

from hakmem import classes, front
from hakmem.large import info as large_info
from hakmem.slab import info as slab_info

__all__ = ["stats", "format_table", "print_table"]


def stats() -> Dict[str, Any]:
    """Every counter hakmem keeps, as a dict.

    ``classes`` holds one dict per size class (``size``, ``allocs``, ``frees``,
    ``mag_hits``, ``mag_misses``, ``hit_rate``, ``sll_pops``, ``refills``,
    ``flushes``, ``remote_frees``, ``live_blocks``, ``live_bytes``); the top level
    sums them and adds the backend (``bytes_mapped``, slabs) and the large path.
    """
    rows = front._class_stats()
    sizes = classes.block_sizes()
    out_classes = []
    tot = dict(allocs=0, frees=0, mag_hits=0, mag_misses=0, sll_pops=0,
               refills=0, flushes=0, remote_frees=0, live_blocks=0, live_bytes=0)
    for c, (r, size) in enumerate(zip(rows, sizes)):
        allocs = r["mag_hit"] + r["sll_pop"]
        frees = r["free_mag"] + r["free_sll"] + r["free_remote"]
        looked = r["mag_hit"] + r["mag_miss"]
        d = dict(
            cls=c, size=size, allocs=allocs, frees=frees,
            mag_hits=r["mag_hit"], mag_misses=r["mag_miss"],
            hit_rate=(r["mag_hit"] / looked) if looked else None,
            sll_pops=r["sll_pop"], refills=r["refills"], flushes=r["flushes"],
            remote_frees=r["free_remote"], mag_pushes=r["free_mag"],
            live_blocks=allocs - frees, live_bytes=(allocs - frees) * size,
        )
        out_classes.append(d)
        for k in tot:
            tot[k] += d[k]
    looked = tot["mag_hits"] + tot["mag_misses"]
    tot["hit_rate"] = (tot["mag_hits"] / looked) if looked else None
    sl = slab_info()
    lg = large_info()
    tot.update(
        classes=out_classes,
        bytes_mapped=sl["bytes_mapped"], regions=sl["regions"],
        slabs_active=sl["slabs_active"], slabs_pooled=sl["slabs_pooled"],
        slabs_abandoned=sl["slabs_abandoned"], slabs_decommitted=sl["slabs_decommitted"],
        bytes_trimmed=sl["bytes_trimmed"], mmap_failures=sl["mmap_failures"],
        large_allocs=lg["allocs"], large_frees=lg["frees"],
        large_live_blocks=lg["blocks_live"], large_live_bytes=lg["bytes_live"],
    )
    tot["bytes_live"] = tot["live_bytes"] + lg["bytes_live"]
    return tot


def format_table(st: Dict[str, Any] | None = None) -> str:
    """The per-class stats as a fixed-width text table."""
    st = stats() if st is None else st
    head = (f"{'class':>5} {'size':>5} {'allocs':>12} {'frees':>12} {'live':>9} "
            f"{'mag hit%':>8} {'sll pops':>11} {'refills':>9} {'remote':>9}")
    lines = ["hakmem stats", head]
    for d in st["classes"]:
        if not d["allocs"] and not d["frees"]:
            continue
        hr = "-" if d["hit_rate"] is None else f"{100 * d['hit_rate']:.1f}"
        lines.append(f"{d['cls']:>5} {d['size']:>5} {d['allocs']:>12} {d['frees']:>12} "
                     f"{d['live_blocks']:>9} {hr:>8} {d['sll_pops']:>11} "
                     f"{d['refills']:>9} {d['remote_frees']:>9}")
    lines.append(f"mapped {st['bytes_mapped'] / 2**20:.1f} MiB in {st['regions']} regions; "
                 f"slabs active {st['slabs_active']}, pooled {st['slabs_pooled']}, "
                 f"abandoned {st['slabs_abandoned']}; live {st['bytes_live']} bytes; "
                 f"large blocks live {st['large_live_blocks']}")
    return "\n".join(lines)


def print_table(file: TextIO | None = None) -> None:
    """Print :func:`format_table` to ``file`` (stderr by default)."""
    print(format_table(), file=sys.stderr if file is None else file)
