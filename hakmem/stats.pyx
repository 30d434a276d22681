"""hakmem.stats — the allocator's counters as a dict, and the table printed at exit.

Counters are kept per thread on the fast path (plain increments on the thread's own
cache) and summed here over live threads, exited threads and cacheless frees.
"""
import sys
from typing import Any, Dict, List, Optional, TextIO

from libc.stdint cimport uint64_t
from hakmem.classes cimport HAK_NCLASSES
from hakmem.front cimport (hak_stats_collect, hak_class_stats_t, hak_class_stat_names,
                           hak_class_stat_docs, HAK_NSTATS)
from hakmem import classes
from hakmem.large import info as large_info
from hakmem.slab import info as slab_info

__all__ = ["stats", "format_table", "print_table", "class_stats", "stat_names", "stat_docs"]


def stat_names() -> List[str]:
    """Names of the per-class counters, in the order of the C field list
    (HAK_CLASS_STATS in front.pxd): the struct, the dict keys and the table columns."""
    return [hak_class_stat_names[i].decode() for i in range(HAK_NSTATS)]


def stat_docs() -> List[str]:
    """One line per counter saying what it counts (same order as stat_names())."""
    return [hak_class_stat_docs[i].decode() for i in range(HAK_NSTATS)]


def class_stats() -> List[Dict[str, int]]:
    """Raw per-class counters summed over every thread: a list of dicts keyed by
    ``stat_names()``, C0 first."""
    cdef hak_class_stats_t st[HAK_NCLASSES]
    cdef uint64_t* row
    hak_stats_collect(st)
    names = stat_names()
    out = []
    for c in range(HAK_NCLASSES):
        row = <uint64_t*>&st[c]
        out.append({names[i]: row[i] for i in range(HAK_NSTATS)})
    return out


def stats() -> Dict[str, Any]:
    """Every counter hakmem keeps, as a dict.

    ``classes`` holds one dict per size class: the raw counters (``stat_names()``:
    ``mag_hits``, ``mag_misses``, ``sll_pops``, ``mag_pushes``, ``sll_pushes``, ``slab_frees``,
    ``remote_frees``, ``refills``, ``flushes``) plus ``cls``, ``size``, ``allocs``,
    ``frees``, ``hit_rate``, ``live_blocks`` and ``live_bytes``; the top level sums
    them and adds the backend (``bytes_mapped``, slabs) and the large path.
    """
    names = stat_names()
    sizes = classes.block_sizes()
    out_classes = []
    tot: Dict[str, Any] = dict.fromkeys(names + ["allocs", "frees", "live_blocks",
                                                 "live_bytes"], 0)
    for c, (r, size) in enumerate(zip(class_stats(), sizes)):
        d: Dict[str, Any] = dict(cls=c, size=size)
        d.update(r)
        d["allocs"] = r["mag_hits"] + r["sll_pops"]
        d["frees"] = r["mag_pushes"] + r["sll_pushes"] + r["slab_frees"] + r["remote_frees"]
        looked = r["mag_hits"] + r["mag_misses"]
        d["hit_rate"] = (r["mag_hits"] / looked) if looked else None
        d["live_blocks"] = d["allocs"] - d["frees"]
        d["live_bytes"] = d["live_blocks"] * size
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
        purges=sl["purges"], bytes_purged=sl["bytes_purged"],
        large_allocs=lg["allocs"], large_frees=lg["frees"],
        large_live_blocks=lg["blocks_live"], large_live_bytes=lg["bytes_live"],
    )
    tot["bytes_live"] = tot["live_bytes"] + lg["bytes_live"]
    return tot


# Columns of the printed table: derived ones, then every raw counter by its own name.
_DERIVED_COLUMNS = ("allocs", "frees", "live_blocks", "hit_rate")


def format_table(st: Optional[Dict[str, Any]] = None) -> str:
    """The per-class stats as a fixed-width text table (one column per counter)."""
    st = stats() if st is None else st
    cols = list(_DERIVED_COLUMNS) + stat_names()
    widths = [max(len(c), 10) for c in cols]
    lines = ["hakmem stats",
             f"{'class':>5} {'size':>5} " + " ".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
    for d in st["classes"]:
        if not d["allocs"] and not d["frees"]:
            continue
        cells = []
        for c, w in zip(cols, widths):
            v = d[c]
            if c == "hit_rate":
                v = "-" if v is None else f"{100 * v:.1f}%"
            cells.append(f"{v:>{w}}")
        lines.append(f"{d['cls']:>5} {d['size']:>5} " + " ".join(cells))
    lines.append(f"mapped {st['bytes_mapped'] / 2**20:.1f} MiB in {st['regions']} regions; "
                 f"slabs active {st['slabs_active']}, pooled {st['slabs_pooled']}, "
                 f"abandoned {st['slabs_abandoned']}; live {st['bytes_live']} bytes; "
                 f"large blocks live {st['large_live_blocks']}")
    return "\n".join(lines)


def print_table(file: Optional[TextIO] = None) -> None:
    """Print :func:`format_table` to ``file`` (stderr by default)."""
    print(format_table(), file=sys.stderr if file is None else file)
