"""hakmem.bench.goals — the project's speed and memory goals, as comparisons.

Each goal compares hakmem with a baseline in one run's results, e.g.
``hakmem vs mimalloc on fixed16_ws60: 0.98x (goal ≥ 1.25x)``. They are printed only
with ``--goals`` or ``--full``; a missed goal is information, not an error (the exit
status stays 0).
"""
from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["SPEED_GOALS", "evaluate", "format_goals"]

# (workload or workload prefix, baseline, hakmem / baseline at least)
SPEED_GOALS = [
    ("fixed16_ws60", "mimalloc", 1.25),
    ("fixed256_ws50", "mimalloc", 1.25),
    ("mixed16-1024_ws256", "mimalloc", 1.2),
    ("fixed16_ws60", "pymalloc", 1.15),
    ("fixed256_ws50", "pymalloc", 1.15),
    ("xthread64", "mimalloc", 1.0),
    ("glibc-simple_n", "mimalloc", 1.0),
    ("xmalloc-test-", "mimalloc", 1.0),
]


def _goal(what: str, value: float, goal: float, lower_is_better: bool = False,
          value_cpu: Any = None) -> Dict[str, Any]:
    met = value <= goal if lower_is_better else value >= goal
    sign = "≤" if lower_is_better else "≥"
    # a third digit where two would round a miss onto the goal (0.998 shown as 1.00)
    digits = 3 if abs(value - goal) < 0.005 else 2
    return {"what": what, "value": value, "goal": goal, "met": met,
            "lower_is_better": lower_is_better, "value_cpu": value_cpu,
            "text": f"{what}: {value:.{digits}f}x (goal {sign} {goal:.2f}x)"}


def evaluate(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The goals that ``res`` (a results dict of hakmem.bench.runner.run) can judge."""
    out = []
    for r in res["ratios"]:
        for wl, base, goal in SPEED_GOALS:
            if r["baseline"] == base and (r["workload"] == wl or
                                          (wl.endswith(("_n", "-")) and r["workload"].startswith(wl))):
                out.append(_goal(f"hakmem vs {base} on {r['workload']}", r["ratio"], goal,
                                 value_cpu=r["ratio_cpu"]))
    mem = {m["allocator"]: m for m in res["memory"]}
    if "hakmem" in mem and "mimalloc" in mem:
        out.append(_goal("hakmem vs mimalloc, bytes per live mixed block",
                         mem["hakmem"]["bytes_per_block"] / mem["mimalloc"]["bytes_per_block"],
                         1.0, lower_is_better=True))
    for s in res["scaling"]:
        if s["allocator"] == "hakmem" and s["threads"] == 2:
            out.append(_goal(f"hakmem on 2 threads vs 1 thread on {s['workload']}",
                             s["speedup"], 1.8))
    cp = res.get("callpath")
    if cp:
        out.append(_goal("hakmem called through cimport vs the in-module loop",
                         cp["cimport_over_in_module"], 0.9))
        for name, c in (("fixed16_ws60", cp), ("fixed256_ws50", cp["fixed256_ws50"])):
            out.append(_goal(f"hakmem inline API vs the in-module loop on {name}",
                             c["inline_over_in_module"], 0.95))
            if c.get("inline_over_mimalloc") is not None:
                out.append(_goal(f"hakmem inline API vs mimalloc on {name}",
                                 c["inline_over_mimalloc"], 1.4))
    return out


def format_goals(goals: List[Dict[str, Any]]) -> List[str]:
    """One line per goal: the comparison, and whether this run meets it."""
    lines = ["goals (wall-clock medians; per CPU-second in brackets where measured)"]
    for g in goals:
        cpu = f" [{g['value_cpu']:.2f}x per CPU-s]" if g.get("value_cpu") else ""
        lines.append(f"  {g['text']}{cpu}  {'met' if g['met'] else 'not met'}")
    return lines
