"""Python-level workloads for timing CPython's allocator: hakmem (PEP 445 hook) vs pymalloc.

Each workload is ordinary Python code that allocates and drops many small objects
(dicts, lists, strings, floats, json and re results) and returns a digest of what it
computed, so a run under hakmem can be checked against a run under pymalloc.

    python -m hakmem.bench.programs [--json] [--scale S] [--repeat R] [name ...]
        times the workloads in this process, whatever allocator it has;
    compare()  runs that twice per round in fresh interpreters, once plain (pymalloc)
        and once under ``python -m hakmem run``, and reports the ratio
        (pymalloc time / hakmem time: above 1.0 means hakmem is faster).

Not a test: speed is measured here, correctness is asserted in tests/test_install.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional

from hakmem.bench import child

__all__ = ["WORKLOADS", "run_workload", "time_workloads", "time_in_child", "compare",
           "format_compare", "main"]


def _digest(obj) -> str:
    return hashlib.sha1(repr(obj).encode()).hexdigest()[:16]


def dict_churn(scale: int = 1) -> str:
    """Build and drop lists of small record dicts (str keys, int/float/str/list values)."""
    acc = 0
    for rnd in range(10 * scale):
        rows = [{"id": i, "name": "item%d" % i, "score": i * 0.5,
                 "tags": ["t%d" % (i % 7), "r%d" % rnd], "pos": (i, i + 1)}
                for i in range(5000)]
        by_tag: Dict[str, List[dict]] = {}
        for r in rows:
            by_tag.setdefault(r["tags"][0], []).append(r)
        acc += sum(len(v) for v in by_tag.values()) + int(sum(r["score"] for r in rows))
        del rows, by_tag
    return _digest(acc)


def json_roundtrip(scale: int = 1) -> str:
    """json.dumps / json.loads of nested dicts and lists of small values."""
    doc = {"users": [{"id": i, "name": "user%d" % i, "active": i % 3 == 0,
                      "ratio": i / 7.0, "groups": ["g%d" % (i % 5), "all"]}
                     for i in range(2000)]}
    out = None
    for _ in range(8 * scale):
        s = json.dumps(doc)
        out = json.loads(s)
    return _digest((len(s), out["users"][-1], sum(u["id"] for u in out["users"])))


def string_ops(scale: int = 1) -> str:
    """Formatting, split/join, replace, case changes, dict keyed by strings."""
    counts: Dict[str, int] = {}
    for rnd in range(6 * scale):
        words = ["w%d_%s" % (i, "abc"[i % 3]) for i in range(8000)]
        line = " ".join(words).upper().replace("_A", "-a")
        for w in line.split():
            k = w[:4].lower()
            counts[k] = counts.get(k, 0) + 1
        del words, line
    return _digest(sorted(counts.items())[:50])


_WORD = re.compile(r"([a-z]+)(\d+)")


def regex_scan(scale: int = 1) -> str:
    """re.findall / finditer / sub over generated text (many small match objects)."""
    text = " ".join("abc%d xy%d" % (i, i * 3) for i in range(4000))
    total = 0
    for _ in range(4 * scale):
        pairs = _WORD.findall(text)
        total += sum(int(n) for _, n in pairs)
        total += sum(len(m.group(1)) for m in _WORD.finditer(text))
        total += len(_WORD.sub(lambda m: m.group(2), text))
    return _digest(total)


class _Node:
    __slots__ = ("key", "val", "children")

    def __init__(self, key, val):
        self.key = key
        self.val = val
        self.children = []


def object_tree(scale: int = 1) -> str:
    """Trees of small __slots__ objects, tuples and floats, built and dropped."""
    acc = 0.0
    for _ in range(6 * scale):
        root = _Node(0, 0.0)
        level = [root]
        n = 1
        while n < 20000:
            nxt = []
            for node in level:
                for j in range(3):
                    c = _Node((node.key, j), node.val + j * 0.25)
                    node.children.append(c)
                    nxt.append(c)
                    n += 1
            level = nxt
        acc += sum(c.val for c in level)
        del root, level, nxt
    return _digest(acc)


WORKLOADS: Dict[str, Callable[[int], str]] = {
    "dict_churn": dict_churn,
    "json_roundtrip": json_roundtrip,
    "string_ops": string_ops,
    "regex_scan": regex_scan,
    "object_tree": object_tree,
}


def run_workload(name: str, scale: int = 1) -> str:
    """Run one workload by name; return its digest (KeyError names the known ones)."""
    try:
        fn = WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None
    return fn(scale)


def time_workloads(names: Optional[Iterable[str]] = None, scale: int = 1,
                   repeat: int = 3) -> Dict[str, Dict[str, object]]:
    """Time workloads in this process: ``{name: {"best": s, "times": [...], "digest": d}}``.

    Times are CPU seconds of this process (``time.process_time``), so that other load
    on the machine does not count; one untimed warm-up run comes first.
    """
    out: Dict[str, Dict[str, object]] = {}
    for name in (list(names) if names else list(WORKLOADS)):
        times = []
        digest = run_workload(name, scale)          # warm-up: caches, slabs, pools
        for _ in range(repeat):
            t0 = time.process_time()
            d = run_workload(name, scale)
            times.append(time.process_time() - t0)
            if d != digest:
                raise RuntimeError(f"workload {name}: digest changed between runs")
        out[name] = {"best": min(times), "times": times, "digest": digest}
    return out


def time_in_child(hakmem_on: bool, names: Iterable[str], scale: int = 1,
                  repeat: int = 3) -> Dict[str, Dict[str, object]]:
    """:func:`time_workloads` in a fresh interpreter: plain (pymalloc), or under
    ``python -m hakmem run`` when ``hakmem_on``."""
    args = ["-m", "hakmem", "run", "-m", "hakmem.bench.programs"] if hakmem_on else \
           ["-m", "hakmem.bench.programs"]
    args += ["--json", "--scale", str(scale), "--repeat", str(repeat)] + list(names)
    # the baseline must really be pymalloc
    return child.run_json(args, f"python programs ({'hakmem' if hakmem_on else 'pymalloc'})",
                          env={"HAKMEM_INSTALL": None})


def compare(names: Optional[Iterable[str]] = None, scale: int = 1, repeat: int = 3,
            rounds: int = 2) -> Dict[str, Dict[str, object]]:
    """Time each workload under pymalloc and under hakmem in fresh interpreters.

    Rounds alternate the order (plain first, then hakmem first, ...) so drift in the
    machine's load hits both sides. Returns ``{name: {"pymalloc": s, "hakmem": s,
    "ratio": pymalloc / hakmem}}`` with the best time of each side. RuntimeError if the
    two sides computed different digests.
    """
    names = list(names) if names else list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            raise KeyError(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}")
    best: Dict[str, Dict[str, float]] = {n: {"pymalloc": float("inf"), "hakmem": float("inf")}
                                         for n in names}
    digests: Dict[str, Dict[str, str]] = {n: {} for n in names}
    for rnd in range(rounds):
        order = (False, True) if rnd % 2 == 0 else (True, False)
        for on in order:
            side = "hakmem" if on else "pymalloc"
            res = time_in_child(on, names, scale, repeat)
            for n in names:
                best[n][side] = min(best[n][side], res[n]["best"])
                digests[n][side] = res[n]["digest"]
    out: Dict[str, Dict[str, object]] = {}
    for n in names:
        if digests[n]["pymalloc"] != digests[n]["hakmem"]:
            raise RuntimeError(f"workload {n}: results differ under hakmem "
                               f"({digests[n]['hakmem']} != {digests[n]['pymalloc']})")
        b = best[n]
        out[n] = {"pymalloc": b["pymalloc"], "hakmem": b["hakmem"],
                  "ratio": b["pymalloc"] / b["hakmem"]}
    return out


def format_compare(res: Dict[str, Dict[str, object]]) -> str:
    """A text table of :func:`compare`'s result, with the geometric mean ratio."""
    lines = [f"{'workload':<16} {'pymalloc s':>11} {'hakmem s':>11} {'ratio':>7}"]
    prod = 1.0
    for n, r in res.items():
        lines.append(f"{n:<16} {r['pymalloc']:>11.4f} {r['hakmem']:>11.4f} {r['ratio']:>6.2f}x")
        prod *= r["ratio"]
    if res:
        lines.append(f"{'geomean':<16} {'':>11} {'':>11} {prod ** (1 / len(res)):>6.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: time the workloads here, or ``--compare`` both allocators."""
    p = argparse.ArgumentParser(prog="python -m hakmem.bench.programs",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"workloads (default all: {', '.join(WORKLOADS)})")
    p.add_argument("--scale", type=int, default=1, help="work per run (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per workload; best is kept")
    p.add_argument("--rounds", type=int, default=2, help="--compare: interpreter pairs")
    p.add_argument("--compare", action="store_true",
                   help="run under pymalloc and under hakmem in subprocesses; print ratios")
    p.add_argument("--json", action="store_true", help="print JSON")
    a = p.parse_args(argv)
    for n in a.names:
        if n not in WORKLOADS:
            p.error(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}")
    if a.compare:
        res = compare(a.names, a.scale, a.repeat, a.rounds)
        print(json.dumps(res, indent=1) if a.json else format_compare(res))
    else:
        res = time_workloads(a.names, a.scale, a.repeat)
        if a.json:
            print(json.dumps(res))
        else:
            for n, r in res.items():
                print(f"{n:<16} {r['best']:.4f} s  digest {r['digest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
