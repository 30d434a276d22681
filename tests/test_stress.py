"""Multi-thread stress, fork under load and thread churn (allocator core).

The workload runs in nogil C (hakmem_testing, built by conftest.py): 8 pthreads allocate random sizes
(tiny and large), fill each block with a cookie carrying a unique id, hand a share
to other threads through atomic transfer slots, verify and free. Afterwards every
block must be accounted for: per-thread counts and id checksums balance, hakmem's
own stats moved by exactly the workload's counts, and trim() returns the memory.

Scale with HAKMEM_STRESS_SCALE (default 1; e.g. 20 for a long run).
"""
import os
import signal
import time

import pytest

import hakmem
import hakmem_testing as _testing

SCALE = float(os.environ.get("HAKMEM_STRESS_SCALE", "1"))
OPS = max(1000, int(250_000 * SCALE))          # per thread


def _counters():
    st = hakmem.stats()
    return {k: st[k] for k in ("allocs", "frees", "live_blocks", "large_allocs",
                               "large_frees", "large_live_blocks", "large_live_bytes",
                               "bytes_mapped", "slabs_active", "slabs_abandoned")}


def _assert_accounted(res, before, after, extra_tiny=0):
    """Every block the workload created was freed exactly once, and hakmem agrees
    (``extra_tiny``: blocks the test itself allocated and freed meanwhile)."""
    assert res["errors"] == 0, f"cookie/contents errors (thread, addr, id): {res['bad']}"
    assert res["oom"] == 0
    assert res["allocs_tiny"] == res["frees_tiny"]
    assert res["allocs_large"] == res["frees_large"]
    # Ids are unique per block: a block handed out twice, freed twice or lost
    # would unbalance these sums of mixed ids.
    assert res["sum_alloc"] == res["sum_free"]
    assert res["handed"] == res["received"]          # nothing lost in the transfer slots
    assert after["allocs"] - before["allocs"] == res["allocs_tiny"] + extra_tiny
    assert after["frees"] - before["frees"] == res["frees_tiny"] + extra_tiny
    assert after["live_blocks"] == before["live_blocks"]
    assert after["large_allocs"] - before["large_allocs"] == res["allocs_large"]
    assert after["large_frees"] - before["large_frees"] == res["frees_large"]
    assert after["large_live_bytes"] == before["large_live_bytes"]


@pytest.fixture
def trimmed():
    """Start from a trimmed allocator; restore the default configuration after."""
    hakmem.trim()
    cfg = hakmem.config()
    yield _counters()
    hakmem.configure(heap_v2=cfg["heap_v2"], mag_cap=cfg["mag_cap"],
                     mag_classes=cfg["mag_classes"])
    hakmem.trim()


@pytest.mark.parametrize("heap_v2", [True, False], ids=["magazine", "sll-only"])
def test_stress_8_threads(trimmed, heap_v2):
    hakmem.configure(heap_v2=heap_v2)
    before = trimmed
    res = _testing.stress(threads=8, ops=OPS, seed=11 + heap_v2)
    after = _counters()
    assert res["ops_done"] == 8 * OPS
    assert res["handed"] > 8 * OPS // 20           # the cross-thread path really ran
    assert res["allocs_large"] > 0 and res["reallocs"] > 0
    _assert_accounted(res, before, after)
    # The workers exited (their caches went back at thread exit) and every block is
    # free, so trim() must give back every region the run mapped.
    hakmem.trim()
    end = _counters()
    assert end["bytes_mapped"] <= before["bytes_mapped"]
    assert end["slabs_abandoned"] == 0


def test_stress_small_live_sets_heavy_transfer(trimmed):
    """Few live blocks and many hand-overs: most frees are remote frees."""
    before = trimmed
    res = _testing.stress(threads=8, ops=OPS // 2, seed=5, live=8, slots=16,
                          transfer_pct=70, realloc_pct=5, large_permille=5)
    _assert_accounted(res, before, _counters())
    st = hakmem.stats()
    assert st["remote_frees"] > 0


def _wait(pid, timeout):
    """waitpid with a deadline: a child stuck on a lock is a deadlock, not a pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return status
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} hung for {timeout} s (deadlock after fork?)")


def _child_work():
    """In the child: allocate and free at once, from this thread and a new one."""
    import threading
    blocks = [hakmem.malloc(n) for n in (16, 24, 64, 100, 512, 1024, 5000) for _ in range(50)]
    for a in blocks:
        hakmem.free(a)
    res = _testing.stress(threads=2, ops=2000, seed=3)
    ok = res["errors"] == 0 and res["sum_alloc"] == res["sum_free"]
    out = []
    t = threading.Thread(target=lambda: out.append(hakmem.free(hakmem.malloc(48)) is None))
    t.start()
    t.join()
    return ok and out == [True]


FORKS = max(5, int(40 * SCALE))


# GCC 12's AddressSanitizer does not lock its own heap across fork(): a child can
# hang in ASan's malloc if a parent thread held its lock (google/sanitizers#774).
# Under ASan the parent's workers therefore stay on the tiny path (no system malloc);
# hakmem's own fork handling is exercised just the same.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def test_fork_while_threads_allocate(trimmed):
    before = trimmed
    run = _testing.StressRun(threads=4, ops=0, seed=17, live=64,
                             large_permille=0 if UNDER_ASAN else 20)
    try:
        time.sleep(0.05)                        # let the workers get going
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:                        # child: never return into pytest
                code = 1
                try:
                    code = 0 if _child_work() else 3
                finally:
                    os._exit(code)
            status = _wait(pid, 30)
            assert os.WIFEXITED(status), f"child died: status {status:#x}"
            assert os.WEXITSTATUS(status) == 0, "child saw wrong results"
            time.sleep(0.005)
    finally:
        run.stop()
        res = run.join()
    assert res["ops_done"] > 0
    _assert_accounted(res, before, _counters())


def test_thread_churn_1000_pthreads(trimmed):
    """1,000 threads allocate, cache and exit (leaving a few blocks to the caller);
    memory mapped stays bounded and comes back after trim()."""
    before = trimmed
    errors, peak, per_wave = _testing.churn(nthreads=1000, wave=8, nblocks=200, keep=4)
    assert errors == 0
    # 8 threads x 200 blocks of <= 1 KiB each need a few MiB; a leak of thread
    # caches would grow this by a region every few waves.
    assert peak <= before["bytes_mapped"] + 16 * 2**20, per_wave
    assert max(per_wave[-20:]) <= max(per_wave[:20]) + 4 * 2**20, per_wave
    after = _counters()
    assert after["live_blocks"] == before["live_blocks"]
    assert after["allocs"] - before["allocs"] == 1000 * 200
    hakmem.trim()
    assert _counters()["bytes_mapped"] <= before["bytes_mapped"]


def test_dead_threads_heap_never_matches_the_next_thread():
    """The PEP 445 hook caches the last caller's heap and trusts it when heap.tid is the
    caller's id. Thread caches are reused, never freed, and a dead thread's id is
    cleared, so a new thread that gets the dead one's thread pointer (glibc reuses
    stacks) never matches a stale heap that is not its own."""
    reused, bad = _testing.stale_heap_rounds(100)
    assert bad == 0
    assert reused > 0, "the scenario never happened: no thread pointer was reused"


def test_thread_churn_python_threads(trimmed):
    """The same through Python threads and the Python API (thread-exit path of
    interpreter threads)."""
    import threading
    before = trimmed
    kept = []
    lock = threading.Lock()
    peak = 0

    def work(seed):
        mine = [hakmem.malloc(16 + (seed * 37 + i * 11) % 1000) for i in range(100)]
        for a in mine[2:]:
            hakmem.free(a)
        with lock:
            kept.extend(mine[:2])

    n = 1000 if SCALE >= 1 else 200
    for w in range(0, n, 8):
        ts = [threading.Thread(target=work, args=(w + i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for a in kept:
            hakmem.free(a)
        kept.clear()
        peak = max(peak, hakmem.stats()["bytes_mapped"])
    assert peak <= before["bytes_mapped"] + 16 * 2**20
    after = _counters()
    assert after["live_blocks"] == before["live_blocks"]
    assert after["allocs"] - before["allocs"] == n * 100


@pytest.mark.slow
def test_stress_long(trimmed):
    """The long form: 8 threads x 4M ops (times HAKMEM_STRESS_SCALE)."""
    before = trimmed
    res = _testing.stress(threads=8, ops=int(4_000_000 * SCALE), seed=99)
    _assert_accounted(res, before, _counters())


def test_stats_snapshots_never_shrink_during_thread_churn(trimmed):
    """Counters only grow: stats read while threads exit must never go backwards
    (an exiting thread's counts move from its cache to the retired totals)."""
    import threading
    out = []
    watcher = threading.Thread(target=lambda: out.append(_testing.watch_stats(1.5)))
    watcher.start()
    errors, _, _ = _testing.churn(nthreads=1500 if SCALE >= 0.5 else 300, wave=8,
                                  nblocks=20, keep=0)
    watcher.join()
    reads, drops = out[0]
    assert errors == 0 and reads > 1000
    assert drops == 0, f"{drops} of {reads} snapshots went backwards"


def test_trim_and_stats_while_threads_allocate(trimmed):
    """trim() (decommitting pooled slabs, unmapping empty regions, reclaiming
    abandoned slabs) and stats() run concurrently with the workload."""
    before = trimmed
    run = _testing.StressRun(threads=4, ops=0, seed=23, live=32, transfer_pct=40)
    trims = 0
    try:
        end = time.monotonic() + 2.0 * max(0.25, min(SCALE, 5))
        while time.monotonic() < end:
            a = hakmem.malloc(64)
            hakmem.trim()
            hakmem.stats()
            hakmem.free(a)
            trims += 1
    finally:
        run.stop()
        res = run.join()
    assert trims >= 3
    _assert_accounted(res, before, _counters(), extra_tiny=trims)
    hakmem.trim()
    assert _counters()["bytes_mapped"] <= before["bytes_mapped"]
