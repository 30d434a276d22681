"""Benchmarks of hakmem.containers against Python's own containers.

    python bench/bench_containers.py [--n 1000000] [--repeat 7] [--json]

Measures the issue's targets:
  * RecordVector.append of a 16-byte record ("id:i8 x:f8") vs list.append of a tuple
    (ns per append, and memory: vector nbytes vs list + tuples + their values);
  * RecordMap lookup m[k] vs dict lookup d[k] for 10**6 int keys (shuffled order, so
    neither side gets sequential-key cache luck), and memory vs a dict of tuples;
  * the same two operations in a hot loop (1000 records, reused container);
  * np.asarray(vec) on 10**3 and 10**6 records (same address, time per call).
Timings are the best of --repeat rounds, the contenders interleaved within each round so
that a noisy machine hurts both alike. This is a benchmark, not a test: nothing is asserted.
Also usable under pytest-benchmark: ``pytest bench/bench_containers.py``.
"""
import argparse
import gc
import json
import random
import time
import tracemalloc

import numpy as np

import hakmem
from hakmem.containers import RecordMap, RecordVector

SPEC = "id:i8 x:f8"          # 16 bytes


def _best(fns, repeat):
    """{name: best seconds} over `repeat` interleaved rounds of every fn."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _traced(build):
    """Bytes Python's allocator holds for what build() returns (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    obj = build()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return obj, size


def bench_append(n, repeat):
    data = [(i, float(i)) for i in range(n)]

    def list_append():
        out = []
        ap = out.append
        for t in data:
            ap(t)

    def vec_append():
        v = RecordVector(SPEC)
        ap = v.append
        for t in data:
            ap(t)
        v.close()

    def list_append_new_tuple():
        out = []
        ap = out.append
        for i in range(n):
            ap((i, 0.5))

    def vec_append_new_tuple():
        v = RecordVector(SPEC)
        ap = v.append
        for i in range(n):
            ap((i, 0.5))
        v.close()

    t = _best({"list.append": list_append, "RecordVector.append": vec_append,
               "list.append((i, 0.5))": list_append_new_tuple,
               "RecordVector.append((i, 0.5))": vec_append_new_tuple}, repeat)
    lst, list_bytes = _traced(lambda: [(i, float(i)) for i in range(n)])
    del lst
    v = RecordVector(SPEC)
    for rec in data:
        v.append(rec)
    vec_bytes = v.nbytes
    v.shrink_to_fit()
    out = {
        "n": n,
        "list_append_ns": t["list.append"] / n * 1e9,
        "vector_append_ns": t["RecordVector.append"] / n * 1e9,
        "speed_ratio": t["list.append"] / t["RecordVector.append"],
        "list_append_new_tuple_ns": t["list.append((i, 0.5))"] / n * 1e9,
        "vector_append_new_tuple_ns": t["RecordVector.append((i, 0.5))"] / n * 1e9,
        "speed_ratio_new_tuple": t["list.append((i, 0.5))"] / t["RecordVector.append((i, 0.5))"],
        "list_of_tuples_bytes": list_bytes,
        "vector_bytes": vec_bytes,
        "vector_bytes_after_shrink": v.nbytes,
        "memory_ratio": vec_bytes / list_bytes,
    }
    v.close()
    return out


def bench_map(n, repeat):
    keys = list(range(n))
    random.Random(1).shuffle(keys)
    d, dict_bytes = _traced(lambda: {k: (k, float(k)) for k in range(n)})
    m = RecordMap(SPEC)
    ka = np.arange(n, dtype=np.int64)
    vals = np.empty(n, m.dtype)
    vals["id"] = ka
    vals["x"] = ka
    m.set_many(ka, vals)

    def dict_get():
        for k in keys:
            d[k]

    def map_get():
        for k in keys:
            m[k]

    def map_contains():
        for k in keys:
            k in m

    def dict_contains():
        for k in keys:
            k in d

    kk = np.array(keys, dtype=np.int64)

    def map_get_many():
        m.get_many(kk)

    def dict_get_seq():
        for k in range(n):
            d[k]

    def map_get_seq():
        for k in range(n):
            m[k]

    t = _best({"dict[k]": dict_get, "RecordMap[k]": map_get, "k in dict": dict_contains,
               "k in RecordMap": map_contains, "get_many": map_get_many,
               "dict[k] seq": dict_get_seq, "RecordMap[k] seq": map_get_seq}, repeat)
    out = {
        "n": n,
        "dict_get_ns": t["dict[k]"] / n * 1e9,
        "map_get_ns": t["RecordMap[k]"] / n * 1e9,
        "speed_ratio": t["dict[k]"] / t["RecordMap[k]"],
        "dict_contains_ns": t["k in dict"] / n * 1e9,
        "map_contains_ns": t["k in RecordMap"] / n * 1e9,
        "map_get_many_ns": t["get_many"] / n * 1e9,
        "dict_get_seq_ns": t["dict[k] seq"] / n * 1e9,
        "map_get_seq_ns": t["RecordMap[k] seq"] / n * 1e9,
        "speed_ratio_seq": t["dict[k] seq"] / t["RecordMap[k] seq"],
        "dict_of_tuples_bytes": dict_bytes,
        "map_bytes": m.nbytes,
        "memory_ratio": m.nbytes / dict_bytes,
    }
    m.close()
    return out


def bench_hot(repeat, n=1000, rounds=200):
    """Steady state: the same 1000 records appended / looked up `rounds` times into a
    reused container (everything in cache; no growth, no page faults)."""
    data = [(i, float(i)) for i in range(n)]
    keys = list(range(n))
    lst, v = [], RecordVector(SPEC)
    v.reserve(n)
    d = {k: (k, float(k)) for k in keys}
    m = RecordMap(SPEC)
    for k in keys:
        m[k] = d[k]

    # one loop body for both sides of each comparison: only the container differs
    def appender(c):
        def run():
            for _ in range(rounds):
                c.clear()
                ap = c.append
                for t in data:
                    ap(t)
        return run

    def getter(c):
        def run():
            for _ in range(rounds):
                for k in keys:
                    c[k]
        return run

    t = _best({"list": appender(lst), "vec": appender(v), "dict": getter(d), "map": getter(m)},
              repeat)
    ops = n * rounds
    out = {"list_append_ns": t["list"] / ops * 1e9, "vector_append_ns": t["vec"] / ops * 1e9,
           "append_speed_ratio": t["list"] / t["vec"],
           "dict_get_ns": t["dict"] / ops * 1e9, "map_get_ns": t["map"] / ops * 1e9,
           "get_speed_ratio": t["dict"] / t["map"]}
    v.close()
    m.close()
    return out


def bench_asarray(repeat):
    out = {}
    for n in (10 ** 3, 10 ** 6):
        v = RecordVector(SPEC)
        v.extend(np.zeros(n, v.dtype))
        reps = 2000

        def many():
            for _ in range(reps):
                np.asarray(v)

        def many_view():
            for _ in range(reps):
                v.as_array()

        tt = _best({"asarray": many, "as_array": many_view}, repeat)
        t = tt["asarray"] / reps
        a = np.asarray(v)
        out[f"n={n}"] = {"us_per_call": t * 1e6, "as_array_us_per_call": tt["as_array"] / reps * 1e6,
                         "same_address": a.__array_interface__["data"][0] == v.address,
                         "owndata": bool(a.flags.owndata)}
        del a
        v.close()
    return out


def main(argv=None):
    """Run every benchmark and print a table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10 ** 6)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    allocs0 = hakmem.stats()["allocs"] + hakmem.stats()["large_allocs"]
    res = {"append": bench_append(args.n, args.repeat),
           "map": bench_map(args.n, args.repeat),
           "hot": bench_hot(args.repeat),
           "asarray": bench_asarray(args.repeat)}
    st = hakmem.stats()
    res["hakmem_allocs_during_bench"] = st["allocs"] + st["large_allocs"] - allocs0
    if args.json:
        print(json.dumps(res, indent=2))
        return
    a, m = res["append"], res["map"]
    print(f"append of a 16-byte record, n={a['n']}")
    print(f"  list.append(t)        {a['list_append_ns']:7.1f} ns   RecordVector.append(t) "
          f"{a['vector_append_ns']:7.1f} ns   speed ratio {a['speed_ratio']:.2f}x")
    print(f"  with tuple built      {a['list_append_new_tuple_ns']:7.1f} ns   "
          f"{a['vector_append_new_tuple_ns']:7.1f} ns   speed ratio {a['speed_ratio_new_tuple']:.2f}x")
    print(f"  memory: list of tuples {a['list_of_tuples_bytes'] / 2**20:.1f} MiB, vector "
          f"{a['vector_bytes'] / 2**20:.1f} MiB ({a['memory_ratio']:.3f}x; "
          f"{a['vector_bytes_after_shrink'] / 2**20:.1f} MiB after shrink_to_fit)")
    print(f"lookup by int key, n={m['n']} (shuffled keys)")
    print(f"  dict[k] {m['dict_get_ns']:7.1f} ns   RecordMap[k] {m['map_get_ns']:7.1f} ns   "
          f"speed ratio {m['speed_ratio']:.2f}x")
    print(f"  in key order: dict[k] {m['dict_get_seq_ns']:7.1f} ns   RecordMap[k] "
          f"{m['map_get_seq_ns']:7.1f} ns   speed ratio {m['speed_ratio_seq']:.2f}x")
    print(f"  k in dict {m['dict_contains_ns']:7.1f} ns   k in RecordMap {m['map_contains_ns']:7.1f} ns"
          f"   get_many {m['map_get_many_ns']:.1f} ns/key")
    print(f"  memory: dict of tuples {m['dict_of_tuples_bytes'] / 2**20:.1f} MiB, RecordMap "
          f"{m['map_bytes'] / 2**20:.1f} MiB ({m['memory_ratio']:.3f}x)")
    h = res["hot"]
    print("hot loop (1000 records, container reused, all in cache)")
    print(f"  list.append {h['list_append_ns']:6.1f} ns   RecordVector.append "
          f"{h['vector_append_ns']:6.1f} ns   speed ratio {h['append_speed_ratio']:.2f}x")
    print(f"  dict[k]     {h['dict_get_ns']:6.1f} ns   RecordMap[k]        "
          f"{h['map_get_ns']:6.1f} ns   speed ratio {h['get_speed_ratio']:.2f}x")
    for k, r in res["asarray"].items():
        print(f"np.asarray(vec) {k:>9}: {r['us_per_call']:.2f} us/call (vec.as_array() "
              f"{r['as_array_us_per_call']:.2f} us), same address {r['same_address']}, "
              f"owndata {r['owndata']}")
    print(f"hakmem allocations during the bench: {res['hakmem_allocs_during_bench']}")


# ---- pytest-benchmark entry points (pytest bench/bench_containers.py) ----------------
def test_vector_append(benchmark):
    data = [(i, float(i)) for i in range(10 ** 5)]

    def run():
        v = RecordVector(SPEC)
        ap = v.append
        for t in data:
            ap(t)
        v.close()
    benchmark(run)


def test_list_append(benchmark):
    data = [(i, float(i)) for i in range(10 ** 5)]

    def run():
        out = []
        ap = out.append
        for t in data:
            ap(t)
    benchmark(run)


def test_map_lookup(benchmark):
    m = RecordMap(SPEC)
    m.set_many(np.arange(10 ** 5), np.zeros(10 ** 5, m.dtype))
    keys = list(range(10 ** 5))
    random.Random(1).shuffle(keys)

    def run():
        for k in keys:
            m[k]
    benchmark(run)


def test_dict_lookup(benchmark):
    d = {k: (k, float(k)) for k in range(10 ** 5)}
    keys = list(range(10 ** 5))
    random.Random(1).shuffle(keys)

    def run():
        for k in keys:
            d[k]
    benchmark(run)


if __name__ == "__main__":
    main()
