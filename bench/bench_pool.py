"""RecordPool benchmarks: the three figures of issue 5, against plain Python.

    python bench/bench_pool.py [--n 1000000] [--ops 500000] [--json]

1. memory: bytes per live 16-byte record ("x:f8 y:f8") with n records alive, against
   a tuple of two floats (tracemalloc) — pool.nbytes and hakmem's own counters.
2. alloc + free of one record per op against creating and dropping a tuple of two
   floats, (a) from existing floats ``(x, y)`` and (b) from fresh floats ``(x*1.0, y*1.0)``.
3. gather of one field over n handles against a Python loop of ``pool.get``.

Times are the best of several runs of CPU time (time.process_time), so other load on
the machine inflates them less. Not a test: nothing is asserted.
"""
import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # idle BLAS threads spin otherwise

import numpy as np  # noqa: E402

import hakmem  # noqa: E402


def best(fn, n, repeat=7):
    """Best CPU seconds per op of fn(n) over `repeat` runs."""
    out = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn(n)
        out.append(time.process_time() - t0)
    return min(out) / n


def memory(n):
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tups = [(float(i), float(-i)) for i in range(n)]     # a tuple and its two floats
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tuple_per = (cur - base - sys.getsizeof(tups)) / n    # minus the list's pointers
    del tups

    hk0 = hakmem.stats()
    pool = hakmem.RecordPool("x:f8 y:f8")
    hs = pool.alloc_many(n, x=np.arange(n, dtype=np.float64), y=0.5)
    hk1 = hakmem.stats()
    st = pool.stats()
    res = dict(
        n=n, tuple_bytes_per_record=tuple_per,
        pool_nbytes_per_record=pool.nbytes / len(pool),
        pool_live_bytes_per_record=(hk1["bytes_live"] - hk0["bytes_live"]) / len(pool),
        pool_mapped_bytes_per_record=(hk1["bytes_mapped"] - hk0["bytes_mapped"]) / len(pool),
        handle_array_bytes_per_record=hs.itemsize,
        pool_capacity=st["capacity"], pool_chunks=st["chunks"],
    )
    pool.close()
    return res


def alloc_free(ops):
    pool = hakmem.RecordPool("x:f8 y:f8")

    def tuple_existing(n, x=1.5, y=2.5):
        for _ in range(n):
            t = (x, y)
            del t

    def tuple_fresh(n, x=1.5, y=2.5):
        for _ in range(n):
            t = (x * 1.0, y * 1.0)
            del t

    def pool_kw(n, a=pool.alloc, f=pool.free, x=1.5, y=2.5):
        for _ in range(n):
            f(a(x=x, y=y))

    def pool_pos(n, a=pool.alloc, f=pool.free, x=1.5, y=2.5):
        for _ in range(n):
            f(a(x, y))

    def pool_method(n, p=pool, x=1.5, y=2.5):
        for _ in range(n):
            p.free(p.alloc(x=x, y=y))

    def empty(n):
        for _ in range(n):
            pass

    res = {}
    for fn in (empty, tuple_existing, tuple_fresh, pool_kw, pool_pos, pool_method):
        res[fn.__name__ + "_ns"] = best(fn, ops) * 1e9
    st = pool.stats()
    res["pool_allocs_seen"] = st["allocs"]          # proves the pool did the work
    for k in ("pool_kw", "pool_pos", "pool_method"):
        res[f"{k}_vs_tuple_existing"] = res["tuple_existing_ns"] / res[k + "_ns"]
        res[f"{k}_vs_tuple_fresh"] = res["tuple_fresh_ns"] / res[k + "_ns"]
    pool.close()
    return res


def gather(n):
    pool = hakmem.RecordPool("x:f8 y:f8")
    hs = pool.alloc_many(n, x=np.arange(n, dtype=np.float64))
    rng = np.random.default_rng(0)
    shuffled = hs[rng.permutation(n)]
    hl = hs.tolist()

    def vec(_n):
        pool.gather("x", hs)

    def vec_random(_n):
        pool.gather("x", shuffled)

    def loop(_n, get=pool.get):
        [get(h, "x") for h in hl]

    hl_random = shuffled.tolist()

    def loop_random(_n, get=pool.get):
        [get(h, "x") for h in hl_random]

    t_vec = best(vec, 1, 5)
    t_rand = best(vec_random, 1, 5)
    t_loop = best(loop, 1, 3)
    t_loop_rand = best(loop_random, 1, 3)
    pool.close()
    return dict(n=n, gather_ms=t_vec * 1e3, gather_random_order_ms=t_rand * 1e3,
                python_loop_ms=t_loop * 1e3, python_loop_random_order_ms=t_loop_rand * 1e3,
                speedup=t_loop / t_vec, speedup_random_order=t_loop_rand / t_rand)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="records alive / gathered")
    ap.add_argument("--ops", type=int, default=500_000, help="alloc+free ops per run")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = ap.parse_args(argv)
    res = dict(memory=memory(a.n), alloc_free=alloc_free(a.ops), gather=gather(a.n),
               build=hakmem.build_info()["debug"] and "debug" or "release")
    if a.json:
        print(json.dumps(res, indent=2))
        return
    for sect, d in res.items():
        if not isinstance(d, dict):
            print(f"{sect}: {d}")
            continue
        print(f"[{sect}]")
        for k, v in d.items():
            print(f"  {k:34s} {v:12.2f}" if isinstance(v, float) else f"  {k:34s} {v:>12}")


if __name__ == "__main__":
    main()
