"""hakmem.bench.records — the Python-level record workload of the benchmark.

Records of 16 bytes (two float64 fields ``x``, ``y``) held in a ring of 60 slots;
each op drops the record in slot ``i mod 60`` and creates a new one there. The
kinds compared: ``tuple``, a ``__slots__`` class, ``dataclass(slots=True)``, a numpy
structured array with a Python free list, and ``hakmem.RecordPool`` when this copy
of hakmem has it. Every kind gets the same inputs (two new floats per op).

Bytes per live record: a fresh interpreter creates N records, keeps references to
them in a list allocated beforehand, and reports the growth of its resident set
(``/proc/self/statm``) divided by N. That counts what a user really pays
(objects, pymalloc/arena rounding, handle objects for the pool), not a size estimate.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from hakmem.bench import child

__all__ = ["RING", "kinds", "run_ring", "bytes_per_record", "hold_records", "rss_bytes",
           "pool_available"]

RING = 60  # slots in the ring (the seed's fixed16_ws60 working set)


class SlotsRecord:
    """A two-float record as a plain class with ``__slots__``."""

    __slots__ = ("x", "y")

    def __init__(self, x: float, y: float) -> None:
        self.x = x
        self.y = y


@dataclass(slots=True)
class DataRecord:
    """A two-float record as ``dataclass(slots=True)``."""

    x: float
    y: float


def _has_pool() -> bool:
    import hakmem
    return hasattr(hakmem, "RecordPool")


def kinds() -> List[str]:
    """The record kinds this copy can run, in table order."""
    out = ["tuple", "slots", "dataclass", "numpy"]
    if _has_pool():
        out.append("RecordPool")
    return out


def _ring_objects(make: Callable, nops: int) -> float:
    ring: list = [None] * RING
    j = 0
    t0 = time.perf_counter()
    for i in range(nops):
        x = i * 0.5
        ring[j] = make(x, x + 1.0)
        j += 1
        if j == RING:
            j = 0
    t1 = time.perf_counter()
    return t1 - t0


def _ring_numpy(nops: int) -> float:
    import numpy as np
    arr = np.zeros(RING + 1, dtype=[("x", "f8"), ("y", "f8")])
    free = list(range(RING + 1))
    ring = [-1] * RING
    j = 0
    t0 = time.perf_counter()
    for i in range(nops):
        x = i * 0.5
        k = ring[j]
        if k >= 0:
            free.append(k)
        k = free.pop()
        arr[k] = (x, x + 1.0)
        ring[j] = k
        j += 1
        if j == RING:
            j = 0
    t1 = time.perf_counter()
    return t1 - t0


def _ring_pool(nops: int) -> float:
    import hakmem
    pool = hakmem.RecordPool("x:f8 y:f8")
    ring: list = [None] * RING
    alloc, free = pool.alloc, pool.free
    j = 0
    try:
        t0 = time.perf_counter()
        for i in range(nops):
            x = i * 0.5
            h = ring[j]
            if h is not None:
                free(h)
            ring[j] = alloc(x=x, y=x + 1.0)
            j += 1
            if j == RING:
                j = 0
        t1 = time.perf_counter()
    finally:
        for h in ring:
            if h is not None:
                free(h)
        close = getattr(pool, "close", None)
        if close is not None:
            close()
    return t1 - t0


def run_ring(kind: str, nops: int) -> float:
    """Run the record ring for ``kind`` once; return the elapsed seconds."""
    if kind == "tuple":
        return _ring_objects(lambda x, y: (x, y), nops)
    if kind == "slots":
        return _ring_objects(SlotsRecord, nops)
    if kind == "dataclass":
        return _ring_objects(DataRecord, nops)
    if kind == "numpy":
        return _ring_numpy(nops)
    if kind == "RecordPool":
        if not _has_pool():
            raise ValueError("this hakmem has no RecordPool")
        return _ring_pool(nops)
    raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(kinds())}")


def rss_bytes() -> int:
    """Resident set size of this process (bytes), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hold_records(kind: str, n: int) -> Dict[str, object]:
    """Create n live records of ``kind`` here and report this process's RSS growth.

    Meant for a fresh interpreter (:func:`bytes_per_record` starts one); the records
    stay alive until the function returns.
    """
    extra: Dict[str, object] = {}
    keep: list = [None] * n           # the reference list is not counted
    if kind == "numpy":
        import numpy as np
    elif kind == "RecordPool":
        import hakmem
        pool = hakmem.RecordPool("x:f8 y:f8")
    import gc
    gc.collect()
    before = rss_bytes()
    if kind == "tuple":
        for i in range(n):
            x = i * 0.5
            keep[i] = (x, x + 1.0)
    elif kind == "slots":
        for i in range(n):
            x = i * 0.5
            keep[i] = SlotsRecord(x, x + 1.0)
    elif kind == "dataclass":
        for i in range(n):
            x = i * 0.5
            keep[i] = DataRecord(x, x + 1.0)
    elif kind == "numpy":
        # the array grows by doubling as a user's would; the free list is empty
        arr = np.zeros(1024, dtype=[("x", "f8"), ("y", "f8")])
        for i in range(n):
            if i == len(arr):
                arr = np.concatenate([arr, np.zeros(len(arr), dtype=arr.dtype)])
            x = i * 0.5
            arr[i] = (x, x + 1.0)
            keep[i] = i
        extra["storage_bytes"] = int(arr.nbytes)
    elif kind == "RecordPool":
        alloc = pool.alloc
        for i in range(n):
            x = i * 0.5
            keep[i] = alloc(x=x, y=x + 1.0)
        extra["storage_bytes"] = int(pool.nbytes)
    else:
        raise ValueError(f"unknown record kind {kind!r}")
    after = rss_bytes()
    out = {"kind": kind, "records": n, "rss_delta": after - before,
           "bytes_per_record": (after - before) / n}
    out.update(extra)
    return out


def bytes_per_record(kind: str, n: int, timeout: float = 120.0) -> Dict[str, object]:
    """Bytes per live record with ``n`` records alive, measured in a fresh interpreter.

    Returns a dict: kind, records, rss_delta, bytes_per_record and, for numpy and
    RecordPool, storage_bytes (the array's / pool's own ``nbytes``).
    """
    if kind not in kinds():
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(kinds())}")
    if n <= 0:
        raise ValueError(f"records must be positive, got {n}")
    return child.call("hakmem.bench.records:hold_records", kind, int(n),
                      what=f"bytes per record ({kind})", timeout=timeout)


def pool_available() -> Optional[str]:
    """None if RecordPool exists, else the reason it is not in the table."""
    return None if _has_pool() else "hakmem.RecordPool not in this build"
