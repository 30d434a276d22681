"""hakmem.bench.plot — ``hakmem bench --plot FILE.png``: one figure, one panel per question.

  1. hakmem ÷ each baseline per workload (a line at 1.0: above it hakmem is faster);
  2. threads-N speed-up over one thread, per allocator, with the machine's own
     speed-up for pure arithmetic as a reference (when threads-N ran);
  3. bytes per live block of the mixed distribution (when ``memory`` ran).

Cells that were not run (pymalloc on multi-thread workloads) are labelled n/a, never
drawn as zero. Legends sit beside the panels, not over the bars. Needs matplotlib
(the ``[plot]`` extra).
"""
from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["write_plot"]


def _ordered(rows: List[Dict[str, Any]], key: str) -> List[str]:
    out: List[str] = []
    for r in rows:
        if r[key] not in out:
            out.append(r[key])
    return out


def _colors(res: Dict[str, Any]) -> Dict[str, str]:
    """One colour per allocator, the same in every panel."""
    return {a["name"]: f"C{i % 10}" for i, a in enumerate(res["allocators"])}


def _ratio_panel(ax: Any, res: Dict[str, Any]) -> None:
    ratio = {(r["workload"], r["baseline"]): r["ratio"] for r in res["ratios"]}
    wls = [w for w in _ordered(res["results"], "workload") if not w.startswith("threads-")]
    bases = [a["name"] for a in res["allocators"] if a["name"] != "hakmem"]
    width = 0.8 / max(1, len(bases))
    top = max([1.0] + [v for v in ratio.values()])
    for i, b in enumerate(bases):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(wls))]
        ys = [ratio.get((wl, b)) for wl in wls]
        color = _colors(res)[b]
        ax.bar([x for x, y in zip(xs, ys) if y is not None],
               [y for y in ys if y is not None], width, label=f"÷ {b}", color=color)
        for x, y in zip(xs, ys):
            if y is None:
                ax.text(x, 0.02 * top, "n/a", rotation=90, ha="center", va="bottom",
                        fontsize=7, color=color)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(range(len(wls)))
    ax.set_xticklabels(wls, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("hakmem ÷ baseline (median Mops/s)")
    ax.set_title("hakmem relative to each allocator (above 1.0: hakmem faster)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _scaling_panel(ax: Any, res: Dict[str, Any]) -> None:
    keys = sorted({(s["workload"], s["threads"]) for s in res["scaling"] if s["threads"] > 1})
    names = _ordered(res["scaling"], "allocator")
    sc = {(s["workload"], s["threads"], s["allocator"]): s["speedup"] for s in res["scaling"]}
    ref = {(r["workload"], r["threads"]): r["speedup"] for r in res.get("scaling_reference", [])}
    width = 0.8 / max(1, len(names) + 1)
    for i, a in enumerate(names):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(keys))]
        ax.bar(xs, [sc.get((w, n, a), 0.0) for w, n in keys], width, label=a,
               color=_colors(res)[a])
    xs = [j - 0.4 + width * (len(names) + 0.5) for j in range(len(keys))]
    ax.bar(xs, [ref.get(k, 0.0) for k in keys], width, color="lightgray", hatch="//",
           label="cpu (arithmetic)")
    for j, (w, n) in enumerate(keys):
        ax.hlines(n, j - 0.45, j + 0.45, colors="black", linestyles="dotted", linewidth=1)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{w}\n{n} threads" for w, n in keys], fontsize=8)
    ax.set_ylabel("speed-up over 1 thread")
    ax.set_title("threads-N scaling (dotted: N, the ideal)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _memory_panel(ax: Any, res: Dict[str, Any]) -> None:
    mem = res["memory"]
    names = [m["allocator"] for m in mem]
    colors = _colors(res)
    ax.bar(range(len(mem)), [m["bytes_per_block"] for m in mem], 0.6,
           color=[colors.get(n, "gray") for n in names])
    ax.axhline(mem[0]["mean_request"], color="black", linewidth=1, linestyle="dashed",
               label=f"mean request ({mem[0]['mean_request']:.0f} B)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xticks(range(len(mem)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("bytes per live block (RSS)")
    ax.set_title("memory: mixed 16..1024 blocks held (lower is better)")


def write_plot(res: Dict[str, Any], path: str) -> None:
    """Draw the panels the results have data for into ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if res["ratios"]:
        panels.append(_ratio_panel)
    if any(s["threads"] > 1 for s in res["scaling"]):
        panels.append(_scaling_panel)
    if res["memory"]:
        panels.append(_memory_panel)
    if not panels:
        raise RuntimeError("--plot: nothing to draw (no workload with hakmem and a baseline ran)")
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for draw, ax in zip(panels, axes[:, 0]):
        draw(ax, res)
        ax.grid(axis="y", alpha=0.3)
    debug = " — DEBUG build" if res["build"]["debug"] else ""
    fig.suptitle(f"hakmem {res['hakmem_version']} bench, {res['cpu_count']} CPUs, "
                 f"Python {res['python']}{debug}")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
