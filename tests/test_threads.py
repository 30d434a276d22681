"""Threads: GIL-free mixed ops with cross-thread frees, producer/consumer, exit, fork."""
import os
import threading

import pytest

import hakmem


def wait_for(pred, timeout=10.0):
    """Thread.join() returns before the OS thread runs its TLS destructors: poll."""
    import time
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def live():
    st = hakmem.stats()
    return st["allocs"] - st["frees"], st["large_live_blocks"]


def test_cimport_api(hakdown):
    assert hakdown.api_roundtrip()
    a = hakmem.malloc(64)
    assert hakdown.checked_free(a) == 0
    assert hakdown.checked_free(a) == -2          # HAK_EDOUBLE
    assert hakdown.checked_free(a + 16) in (-2, -3)
    b = hakmem.malloc(64)
    assert hakdown.checked_free(b + 16) == -3     # HAK_EINTERIOR
    hakmem.free(b)


def _run_workers(hakdown, worker, nthreads, nops, xfer_every):
    """Run worker(t, nops, xfer_every) on nthreads threads at once (each releases the
    GIL), then free what is left in the hand-off slots; returns (bad, allocs, frees)."""
    results = [None] * nthreads

    def run(t):
        results[t] = worker(t, nops, xfer_every)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    left = hakdown.drain_xfer()
    return (sum(r[0] for r in results), sum(r[1] for r in results),
            sum(r[2] for r in results) + left)


def test_four_threads_mixed_cross_thread(hakdown):
    before = live()
    nthreads, nops = 4, 1_000_000
    bad, allocs, frees = _run_workers(hakdown, hakdown.mixed_worker, nthreads, nops, 7)
    assert bad == 0, "a block was handed out twice or corrupted"
    assert allocs == nthreads * nops
    assert allocs == frees
    assert live() == before
    st = hakmem.stats()
    assert sum(c["remote_frees"] for c in st["classes"]) > 0


def test_producer_consumer_bounded(hakdown):
    hakmem.trim()
    n = 2_000_000 if os.environ.get("HAKMEM_DEBUG") else 10_000_000
    hakdown.pc_reset()
    out = {}
    c = threading.Thread(target=lambda: out.setdefault("bad", hakdown.consumer(n)))
    c.start()
    hakdown.producer(n, 64)
    c.join()
    assert out["bad"] == 0
    st = hakmem.stats()
    assert st["bytes_mapped"] < 64 * 2**20, st["bytes_mapped"]


def test_thread_exit_returns_caches():
    hakmem.trim()
    base_live = live()
    st0 = hakmem.stats()
    mapped0, active0 = st0["bytes_mapped"], st0["slabs_active"]

    def short():
        addrs = [hakmem.malloc(n) for n in (16, 32, 64, 128, 512, 1024) * 10]
        for a in addrs:
            hakmem.free(a)          # cached in this thread's magazine / free list

    def wave():
        ts = [threading.Thread(target=short) for _ in range(100)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def settled():
        # join() returns before TLS destructors run; wait for the caches to go
        assert wait_for(lambda: hakmem.stats()["slabs_active"] <= active0 + 20)
        return hakmem.stats()["bytes_mapped"]

    wave()
    # 100 concurrent threads each hold a slab per class (6 classes x 64 KiB) while
    # alive; after they exit everything is back in the pool, so further waves map
    # nothing new.
    after_first = settled()
    assert after_first <= mapped0 + 100 * 6 * 64 * 1024 * 2
    for _ in range(9):
        wave()
        assert settled() <= after_first + 8 * 2**20
    assert live() == base_live
    assert hakmem.stats()["slabs_abandoned"] <= st0["slabs_abandoned"]


def test_blocks_outliving_their_thread():
    keep = []
    hakmem.trim()
    ab0 = hakmem.stats()["slabs_abandoned"]

    def make():
        keep.extend(hakmem.malloc(48) for _ in range(1000))

    t = threading.Thread(target=make)
    t.start()
    t.join()
    assert wait_for(lambda: hakmem.stats()["slabs_abandoned"] >= ab0 + 1)
    for a in keep:
        hakmem.free(a)               # remote frees into abandoned slabs
    hakmem.trim()
    assert hakmem.stats()["slabs_abandoned"] <= ab0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_allocates(hakdown):
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            hakdown.ring_ops(20000, 60, 64)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                ok = 0
                try:
                    addrs = [hakmem.malloc(n) for n in (16, 64, 200, 1024, 5000) * 100]
                    for a in addrs:
                        hakmem.free(a)
                    hakdown.ring_ops(10000, 50, 256)
                    ok = 1
                finally:
                    os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        stop.set()
        t.join()


def test_inline_heap_api_threads_mixed(hakdown):
    """The inline API (hak_heap_malloc/free compiled into the downstream module) from
    four threads with the GIL released, mixed with hak_malloc/hak_free and with frees
    of other threads' blocks: no block lost or handed out twice, stats exact."""
    before = live()
    s0 = hakmem.stats()
    nthreads, nops = 4, 500_000
    bad, allocs, frees = _run_workers(hakdown, hakdown.inline_worker, nthreads, nops, 5)
    assert bad == 0, "a block was handed out twice or corrupted"
    assert allocs == nthreads * nops == frees
    assert live() == before
    s1 = hakmem.stats()
    tiny_large = s1["large_allocs"] - s0["large_allocs"]
    assert s1["allocs"] - s0["allocs"] + tiny_large == allocs
    assert s1["frees"] - s0["frees"] + (s1["large_frees"] - s0["large_frees"]) == frees
    assert s1["remote_frees"] > s0["remote_frees"]


def test_inline_heap_ring_counts_exactly(hakdown):
    s0 = hakmem.stats()
    hakdown.inline_ring(100_000, 60, 16)
    s1 = hakmem.stats()
    assert s1["allocs"] - s0["allocs"] == 100_000
    assert s1["frees"] - s0["frees"] == 100_000
    if not hakmem.build_info()["debug"]:   # the debug decoy sends every call out of line
        assert s1["mag_hits"] - s0["mag_hits"] >= 99_000
