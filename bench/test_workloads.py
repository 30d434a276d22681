"""The bench's workloads as pytest-benchmark benchmarks: workload x allocator.

Each round is one call of the nogil C loop (``--bench-ops`` ops), so pytest-benchmark's
times are per loop; ``extra_info`` holds Mops/s and, for hakmem, the magazine hit rate
and the proof that hakmem's counters moved by the ops run. Track regressions with
``--benchmark-autosave`` and ``--benchmark-compare``.
"""
import pytest

import hakmem
from hakmem.bench import loops as B
from hakmem.bench import records as R
from hakmem.bench import runner as BR


def _allocators():
    out = [("hakmem", True), ("hakmem-nomag", False), ("libc", None), ("pymalloc", None)]
    try:
        B.dl_allocator(BR.MIMALLOC, "mimalloc", "mi_malloc", "mi_free")
        out.append(("mimalloc", None))
    except OSError:
        pass
    return out


ALLOCS = _allocators()


def _make(name):
    if name.startswith("hakmem"):
        return B.hakmem_allocator(name)
    if name == "libc":
        return B.libc_allocator()
    if name == "pymalloc":
        return B.pymalloc_allocator()
    return B.dl_allocator(BR.MIMALLOC, "mimalloc", "mi_malloc", "mi_free")


def _counts():
    s = hakmem.stats()
    return s["allocs"], s["frees"], s["mag_hits"], s["mag_misses"]


@pytest.fixture
def restore_config():
    saved = hakmem.config()["heap_v2"]
    yield
    hakmem.configure(heap_v2=saved)


CASES = [(wl, None) for wl in BR.DEFAULT_WORKLOADS] + [("threads-2", f) for f in BR.FIXED]


@pytest.mark.parametrize("alloc,heap_v2", ALLOCS, ids=[a for a, _ in ALLOCS])
@pytest.mark.parametrize("workload,variant", CASES,
                         ids=[w if v is None else f"{w}:{v}" for w, v in CASES])
def test_workload(benchmark, bench_ops, restore_config, workload, variant, alloc, heap_v2):
    a = _make(alloc)
    if BR.workload_spec(workload)["kind"] in BR.MULTI and a.needs_gil:
        pytest.skip("pymalloc needs the GIL; not run on several threads")
    if heap_v2 is not None:
        hakmem.configure(heap_v2=heap_v2)
    inner = []       # (wall seconds, CPU seconds, blocks) per call
    before = _counts()
    benchmark.pedantic(lambda: inner.append(BR.run_once(workload, a, bench_ops, variant)),
                       rounds=5, warmup_rounds=1, iterations=1)
    after = _counts()
    calls = len(inner)
    best = min(t for t, _, _ in inner)
    blocks = inner[0][2]
    benchmark.extra_info["mops_best"] = blocks / best / 1e6
    benchmark.extra_info["pymalloc_gil_held"] = a.needs_gil
    if heap_v2 is not None:
        # proof that hakmem served every op of every call (warm-up included)
        assert after[0] - before[0] == calls * blocks, "hakmem did not serve the ops"
        assert after[1] - before[1] == calls * blocks
        looked = (after[2] - before[2]) + (after[3] - before[3])
        benchmark.extra_info["mag_hit_rate"] = (after[2] - before[2]) / looked if looked else None


@pytest.mark.parametrize("kind", R.kinds())
def test_records(benchmark, kind):
    n = 20_000
    benchmark.pedantic(lambda: R.run_ring(kind, n), rounds=5, warmup_rounds=1, iterations=1)
    benchmark.extra_info["ops_per_round"] = n
