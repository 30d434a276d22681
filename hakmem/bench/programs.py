"""Python-level workloads for timing CPython's allocator: hakmem (PEP 445 hook) vs pymalloc.

Each workload is ordinary Python code that allocates and drops many small objects
(dicts, lists, strings, floats, tuples, json, re, ast and xml results, reference
cycles) and returns a digest of what it computed, so a run under hakmem can be checked
against a run under pymalloc.

    python -m hakmem.bench.programs [--json] [--scale S] [--repeat R] [name ...]
        times the workloads in this process, whatever allocator it has;
    compare()  runs each workload in fresh interpreters, once plain (pymalloc, hakmem
        not even imported) and once under ``python -m hakmem run``, and reports the
        time ratio (pymalloc time / hakmem time: above 1.0 means hakmem is faster) and
        the peak RSS of each side.

Not a test: speed is measured here, correctness is asserted in tests/test_install.py.
This file imports nothing from hakmem at module level: the pymalloc side runs it by
path, so its interpreter never loads hakmem.
"""
from __future__ import annotations

import argparse
import ast
import copy
import gc
import hashlib
import heapq
import importlib.util
import json
import pprint
import re
import sys
import time
import xml.etree.ElementTree as ET
from typing import Callable, Dict, Iterable, List, Optional

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


_SOURCES: List[str] = []


def ast_parse(scale: int = 1) -> str:
    """ast.parse of large stdlib modules and a walk over every node."""
    if not _SOURCES:
        for mod in ("argparse", "inspect", "typing", "dataclasses"):
            with open(importlib.util.find_spec(mod).origin, encoding="utf-8") as f:
                _SOURCES.append(f.read())
    n = 0
    for _ in range(scale):
        for src in _SOURCES:
            n += sum(1 for _ in ast.walk(ast.parse(src)))
    return _digest(n)


def _lcg(x: int) -> int:
    return (x * 1103515245 + 12345) & 0x7FFFFFFF


def sort_tuples(scale: int = 1) -> str:
    """Build, sort (twice, by different keys) and group many small tuples."""
    acc = 0
    x = 12345
    for _ in range(scale):
        rows = []
        for i in range(30000):
            x = _lcg(x)
            rows.append((x % 1000, "k%d" % (x % 97), x / 7.0, i))
        by_all = sorted(rows)
        by_key = sorted(rows, key=lambda r: (r[1], -r[0]))
        groups: Dict[str, List[int]] = {}
        for r in by_key:
            groups.setdefault(r[1], []).append(r[3])
        acc += by_all[0][3] + by_all[-1][3] + len(groups) + max(map(len, groups.values()))
        del rows, by_all, by_key, groups
    return _digest(acc)


def _build_tree(depth: int, width: int, tag: int) -> dict:
    if depth == 0:
        return {"leaf": tag, "vals": [tag, tag * 2], "name": "n%d" % tag}
    return {"k%d" % j: _build_tree(depth - 1, width, tag * width + j) for j in range(width)}


def _walk_tree(node: dict) -> int:
    if "leaf" in node:
        return node["leaf"] + len(node["name"])
    return sum(_walk_tree(v) for v in node.values())


def dict_tree(scale: int = 1) -> str:
    """Build a tree of nested dicts (16k leaves), walk it, drop it."""
    acc = 0
    for _ in range(3 * scale):
        tree = _build_tree(7, 4, 1)
        acc += _walk_tree(tree)
        del tree
    return _digest(acc)


def graph_paths(scale: int = 1) -> str:
    """Shortest paths (Dijkstra with heapq) over a random sparse graph of dicts."""
    n, x = 3000, 7
    adj: Dict[int, Dict[int, int]] = {i: {} for i in range(n)}
    for i in range(n):
        for _ in range(4):
            x = _lcg(x)
            j, w = x % n, 1 + (x >> 8) % 20
            adj[i][j] = adj[j][i] = w
    total = 0
    for src in range(20 * scale):
        dist = {src: 0}
        heap = [(0, src)]
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist[u]:
                continue
            for v, w in adj[u].items():
                nd = d + w
                if nd < dist.get(v, 1 << 60):
                    dist[v] = nd
                    heapq.heappush(heap, (nd, v))
        total += sum(dist.values())
    return _digest(total)


def deepcopy_docs(scale: int = 1) -> str:
    """copy.deepcopy of nested dicts, lists and tuples."""
    doc = {"items": [{"id": i, "tags": ["a%d" % (i % 5), "b"], "pos": (i, i * 0.5),
                      "meta": {"k": str(i), "on": i % 2 == 0}} for i in range(2000)]}
    acc = 0
    for _ in range(3 * scale):
        c = copy.deepcopy(doc)
        acc += len(c["items"]) + c["items"][-1]["id"] + len(c["items"][7]["meta"]["k"])
    return _digest(acc)


def xml_etree(scale: int = 1) -> str:
    """xml.etree: build a document, serialize it, parse it back, iterate and query it."""
    acc = 0
    for _ in range(2 * scale):
        root = ET.Element("root")
        for i in range(3000):
            e = ET.SubElement(root, "item", id=str(i), kind="k%d" % (i % 7))
            ET.SubElement(e, "name").text = "name%d" % i
            ET.SubElement(e, "value").text = str(i * 0.5)
        data = ET.tostring(root)
        back = ET.fromstring(data)
        acc += (len(data) + sum(1 for _ in back.iter("name"))
                + len(back.findall(".//item[@kind='k3']")))
        del root, data, back
    return _digest(acc)


class _Link:
    __slots__ = ("next", "val")


def gc_cycles(scale: int = 1) -> str:
    """Rings of small objects (reference cycles) left to the cyclic GC."""
    made = 0
    for _ in range(4 * scale):
        for c in range(3000):
            first = node = _Link()
            first.val = c
            for i in range(10):
                nxt = _Link()
                nxt.val = i
                node.next = nxt
                node = nxt
                made += 1
            node.next = first
        del first, node, nxt
        gc.collect()
    return _digest(made)


def pprint_docs(scale: int = 1) -> str:
    """pprint.pformat of a nested document (many small strings joined)."""
    doc = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 9)] * 3,
            "nested": {"a": (i, i + 1), "b": [float(i)] * 2}} for i in range(1500)]
    n = 0
    for _ in range(scale):
        n += len(pprint.pformat(doc, width=60))
    return _digest(n)


WORKLOADS: Dict[str, Callable[[int], str]] = {
    "dict_churn": dict_churn,
    "json_roundtrip": json_roundtrip,
    "string_ops": string_ops,
    "regex_scan": regex_scan,
    "object_tree": object_tree,
    "ast_parse": ast_parse,
    "sort_tuples": sort_tuples,
    "dict_tree": dict_tree,
    "graph_paths": graph_paths,
    "deepcopy_docs": deepcopy_docs,
    "xml_etree": xml_etree,
    "gc_cycles": gc_cycles,
    "pprint_docs": pprint_docs,
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
    """:func:`time_workloads` in a fresh interpreter: plain (pymalloc; this file runs by
    path, so hakmem is not even imported), or under ``python -m hakmem run`` when
    ``hakmem_on``. Each result also has ``peak_rss_kib``, the child's peak RSS."""
    from hakmem.bench import child
    args = ["-m", "hakmem", "run", __file__] if hakmem_on else [__file__]
    args += ["--json", "--scale", str(scale), "--repeat", str(repeat)] + list(names)
    # the baseline must really be pymalloc
    return child.run_json(args, f"python programs ({'hakmem' if hakmem_on else 'pymalloc'})",
                          env={"HAKMEM_INSTALL": None})


def compare(names: Optional[Iterable[str]] = None, scale: int = 1, repeat: int = 3,
            rounds: int = 2) -> Dict[str, Dict[str, object]]:
    """Time each workload under pymalloc and under hakmem, each in its own fresh
    interpreter (so each has its own peak RSS).

    Rounds alternate the order (plain first, then hakmem first, ...) so drift in the
    machine's load hits both sides. Returns ``{name: {"pymalloc": s, "hakmem": s,
    "ratio": pymalloc / hakmem, "pymalloc_rss_mib": m, "hakmem_rss_mib": m,
    "rss_ratio": hakmem / pymalloc}}`` with the best time and the lowest peak RSS of
    each side over the rounds. RuntimeError if the two sides computed different digests.
    """
    names = list(names) if names else list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            raise KeyError(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}")
    sides = ("pymalloc", "hakmem")
    best = {n: {s: float("inf") for s in sides} for n in names}
    rss = {n: {s: float("inf") for s in sides} for n in names}
    digests: Dict[str, Dict[str, str]] = {n: {} for n in names}
    for rnd in range(rounds):
        for i, n in enumerate(names):
            order = (False, True) if (rnd + i) % 2 == 0 else (True, False)
            for on in order:
                side = sides[on]
                r = time_in_child(on, [n], scale, repeat)[n]
                best[n][side] = min(best[n][side], r["best"])
                rss[n][side] = min(rss[n][side], r["peak_rss_kib"] / 1024)
                digests[n][side] = r["digest"]
    out: Dict[str, Dict[str, object]] = {}
    for n in names:
        if digests[n]["pymalloc"] != digests[n]["hakmem"]:
            raise RuntimeError(f"workload {n}: results differ under hakmem "
                               f"({digests[n]['hakmem']} != {digests[n]['pymalloc']})")
        b, m = best[n], rss[n]
        out[n] = {"pymalloc": b["pymalloc"], "hakmem": b["hakmem"],
                  "ratio": b["pymalloc"] / b["hakmem"],
                  "pymalloc_rss_mib": m["pymalloc"], "hakmem_rss_mib": m["hakmem"],
                  "rss_ratio": m["hakmem"] / m["pymalloc"]}
    return out


def _geomean(xs: List[float]) -> float:
    prod = 1.0
    for x in xs:
        prod *= x
    return prod ** (1 / len(xs))


def format_compare(res: Dict[str, Dict[str, object]]) -> str:
    """A text table of :func:`compare`'s result, with the geometric means."""
    lines = [f"{'workload':<16} {'pymalloc s':>10} {'hakmem s':>9} {'speed':>6}  "
             f"{'peak RSS MiB: pymalloc':>22} {'hakmem':>7} {'ratio':>6}"]
    for n, r in res.items():
        lines.append(f"{n:<16} {r['pymalloc']:>10.4f} {r['hakmem']:>9.4f} {r['ratio']:>5.2f}x  "
                     f"{r['pymalloc_rss_mib']:>22.1f} {r['hakmem_rss_mib']:>7.1f} "
                     f"{r['rss_ratio']:>5.2f}x")
    if res:
        g = _geomean([r["ratio"] for r in res.values()])
        gm = _geomean([r["rss_ratio"] for r in res.values()])
        lines.append(f"{'geomean':<16} {'':>10} {'':>9} {g:>5.2f}x  {'':>22} {'':>7} {gm:>5.2f}x")
        lines.append("speed = pymalloc time / hakmem time (CPU seconds, best of runs; above 1 "
                     "means hakmem is faster); RSS ratio = hakmem / pymalloc")
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
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
        for r in res.values():
            r["peak_rss_kib"] = peak
        if a.json:
            print(json.dumps(res))
        else:
            for n, r in res.items():
                print(f"{n:<16} {r['best']:.4f} s  digest {r['digest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
