"""Allocator core: classes, alignment, sizes, calloc/realloc, magazine, stats, bad frees."""
import ctypes
import json
import os
import subprocess
import tempfile
import sys
import textwrap

import pytest

import hakmem
from hakmem import classes

SIZES = hakmem.build_info()["block_sizes"]


def run_py(code, env):
    """Run code in a fresh interpreter outside the source tree (so the installed hakmem is used)."""
    import tempfile
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=tempfile.gettempdir())


def write(addr, data):
    ctypes.memmove(addr, data, len(data))


def read(addr, n):
    return ctypes.string_at(addr, n)


def totals():
    st = hakmem.stats()
    return {k: st[k] for k in ("allocs", "frees", "live_blocks", "live_bytes",
                                "large_live_blocks", "large_allocs", "large_frees")}


def test_class_table():
    assert SIZES[0] == 16 and SIZES[-1] == 1024 == classes.TINY_MAX
    assert all(b % 16 == 0 for b in SIZES)
    assert SIZES == sorted(set(SIZES))
    for n in range(0, 1025):
        c = classes.size_class(n)
        assert SIZES[c] >= n and (c == 0 or SIZES[c - 1] < n)
    with pytest.raises(ValueError):
        classes.size_class(1025)
    classes.self_check()


@pytest.mark.parametrize("n", [0, 1, 8, 15, 16, 17, 33, 48, 64, 65, 100, 128, 129,
                               255, 256, 500, 512, 700, 1000, 1024, 1025, 4096, 100000])
def test_alignment_and_usable_size(n):
    addrs = [hakmem.malloc(n) for _ in range(50)]
    assert len(set(addrs)) == 50
    for a in addrs:
        assert a % 16 == 0
        u = hakmem.usable_size(a)
        assert u >= n
        if n <= 1024:
            assert u == SIZES[classes.size_class(n)]
        write(a, b"\xab" * max(n, 1) if n else b"")
    for a in addrs:
        hakmem.free(a)


def test_every_class_aligned():
    for size in SIZES:
        a = hakmem.malloc(size)
        b = hakmem.malloc(size)
        assert a % 16 == 0 and b % 16 == 0 and abs(a - b) >= size
        hakmem.free(a)
        hakmem.free(b)


def test_calloc_zeroes_recycled_memory():
    for n in (16, 40, 200, 1024, 3000):
        a = hakmem.malloc(n)
        write(a, b"\xff" * n)
        hakmem.free(a)
        b = hakmem.calloc(1, n)       # same class: likely the block just freed
        assert read(b, n) == b"\0" * n
        hakmem.free(b)
    with pytest.raises(MemoryError):
        hakmem.calloc(1 << 62, 1 << 8)   # overflow is refused, not wrapped


@pytest.mark.parametrize("steps", [[16, 64, 300, 1024, 5000, 100, 16],
                                   [1000, 20000, 24, 2000, 1024]])
def test_realloc_keeps_contents(steps):
    a = hakmem.malloc(steps[0])
    pattern = bytes(range(256)) * 100
    write(a, pattern[:steps[0]])
    prev = steps[0]
    for n in steps[1:]:
        a = hakmem.realloc(a, n)
        keep = min(prev, n)
        assert read(a, keep) == pattern[:keep]
        write(a, pattern[:n])
        prev = n
        assert hakmem.usable_size(a) >= n
    hakmem.free(a)


@pytest.mark.parametrize("have,n,stays", [
    (160, 160, True), (160, 121, True),    # fits, wastes at most a quarter: stays
    (160, 120, False), (160, 96, False),   # a string CPython over-allocated, shrunk
    (512, 385, True), (512, 384, False), (1024, 16, False), (16, 1, True)])
def test_realloc_shrinks_like_pymalloc(have, n, stays):
    """A shrink that would waste more than a quarter of the block moves to a smaller one
    (pymalloc's rule); anything else keeps the block. Contents survive either way."""
    a = hakmem.malloc(have)
    assert hakmem.usable_size(a) == have
    data = (bytes(range(256)) * 4)[:have]
    write(a, data)
    b = hakmem.realloc(a, n)
    assert (b == a) == stays
    assert read(b, n) == data[:n]
    assert hakmem.usable_size(b) >= n
    if not stays:
        assert hakmem.usable_size(b) < have
        assert not hakmem.is_live(a) or a == b
    hakmem.free(b)


def test_realloc_null_and_bad():
    a = hakmem.realloc(0, 40)
    assert hakmem.is_live(a)
    hakmem.free(a)
    with pytest.raises(ValueError, match="already free"):
        hakmem.realloc(a, 80)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda: hakmem.malloc(-1), ValueError, "hakmem.malloc(size): size must be a non-negative int, got -1"),
    (lambda: hakmem.malloc(2**70), OverflowError, "hakmem.malloc(size): size must be below 2**64, got 1180591620717411303424"),
    (lambda: hakmem.malloc(1.5), TypeError, "hakmem.malloc(size): size must be a non-negative int, not float"),
    (lambda: hakmem.malloc(True), TypeError, "hakmem.malloc(size): size must be a non-negative int, not bool"),
    (lambda: hakmem.calloc(-2, 8), ValueError, "hakmem.calloc(n, size): n must be a non-negative int, got -2"),
    (lambda: hakmem.calloc(2, "8"), TypeError, "hakmem.calloc(n, size): size must be a non-negative int, not str"),
    (lambda: hakmem.free("x"), TypeError, "hakmem.free(addr): addr must be a non-negative int address, not str"),
    (lambda: hakmem.free(-1), ValueError, "hakmem.free(addr): addr must be a non-negative int address, got -1"),
    (lambda: hakmem.realloc(0, -1), ValueError, "hakmem.realloc(addr, size): size must be a non-negative int, got -1"),
    (lambda: hakmem.realloc(None, 8), TypeError, "hakmem.realloc(addr, size): addr must be a non-negative int address, not NoneType"),
    (lambda: hakmem.usable_size(2**64), OverflowError, "hakmem.usable_size(addr): addr must be below 2**64"),
    (lambda: hakmem.is_live(-5), ValueError, "hakmem.is_live(addr): addr must be a non-negative int address, got -5"),
    (lambda: hakmem.realloc(12345, 8), ValueError, "hakmem.realloc(addr, size): address 0x3039 is not a block allocated by hakmem"),
])
def test_block_api_errors_name_function_and_argument(call, exc, msg):
    before = totals()
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(msg)
    assert totals() == before


def test_block_api_takes_index_ints():
    import numpy as np
    a = hakmem.malloc(np.int64(40))
    assert hakmem.usable_size(np.uint64(a)) == 48
    hakmem.free(np.uint64(a))


def test_large_double_free_is_reported_even_after_reuse():
    a = hakmem.malloc(5000)
    hakmem.free(a)
    for call in (hakmem.free, hakmem.usable_size, lambda x: hakmem.realloc(x, 10)):
        with pytest.raises(ValueError, match=r"already free \(double free\)"):
            call(a)
    assert not hakmem.is_live(a)
    # the system malloc hands the same address out again: it is a live block once more
    # (glibc reuses a just-freed chunk of the same size; ASan's quarantine does not)
    blocks = [hakmem.malloc(5000) for _ in range(4)]
    if a not in blocks:
        # glibc usually hands the chunk back at once, but need not (ASan never does):
        # take a fresh block for the rest of the test
        blocks[0] = a = hakmem.malloc(5000)
    assert hakmem.is_live(a) and hakmem.usable_size(a) >= 5000
    b = hakmem.realloc(a, 200_000)         # moves: a is freed by realloc
    blocks[blocks.index(a)] = b
    if b != a:
        with pytest.raises(ValueError, match="double free"):
            hakmem.free(a)
    for x in blocks:
        hakmem.free(x)
    with pytest.raises(ValueError, match="double free"):
        hakmem.free(blocks[0])


def test_bad_frees_raise_and_change_nothing():
    keep = hakmem.malloc(32)        # the thread cache exists
    a = hakmem.malloc(48)
    big = hakmem.malloc(4000)
    hakmem.free(a)
    hakmem.free(big)
    before = totals()
    buf = ctypes.create_string_buffer(64)
    cases = [
        (a, "already free"),
        (big, r"already free \(double free\)"),
        (ctypes.addressof(buf), "not a block allocated by hakmem"),
        (keep + 16, "inside a hakmem block"),
        (keep + 1, "inside a hakmem block"),
        (12345, "not a block allocated by hakmem"),
    ]
    for addr, msg in cases:
        with pytest.raises(ValueError, match=msg):
            hakmem.free(addr)
        assert totals() == before
    with pytest.raises(TypeError):
        hakmem.free("x")
    with pytest.raises(ValueError):
        hakmem.free(-1)
    # the allocator still works and the good block frees normally
    c = hakmem.malloc(48)
    hakmem.free(c)
    hakmem.free(keep)


def test_free_none_address_zero_is_noop():
    before = totals()
    hakmem.free(0)
    assert totals() == before


def test_stats_balance_and_live_bytes():
    before = totals()
    addrs = [hakmem.malloc(n) for n in (16, 100, 1000, 2000)]
    mid = totals()
    assert mid["allocs"] - before["allocs"] == 3
    assert mid["live_bytes"] - before["live_bytes"] == 16 + 112 + 1024
    assert mid["large_live_blocks"] - before["large_live_blocks"] == 1
    for a in addrs:
        hakmem.free(a)
    after = totals()
    assert after["live_bytes"] == before["live_bytes"]
    assert after["allocs"] - after["frees"] == before["allocs"] - before["frees"]


def ring(n, ws, size):
    slots = [0] * ws
    for i in range(n):
        k = i % ws
        if slots[k]:
            hakmem.free(slots[k])
        slots[k] = hakmem.malloc(size)
    for a in slots:
        hakmem.free(a)


def class_row(size):
    return hakmem.stats()["classes"][classes.size_class(size)]


def test_magazine_hit_rate_on_fixed_ring():
    hakmem.configure(heap_v2=True)
    r0 = class_row(16)
    ring(20000, 60, 16)
    r1 = class_row(16)
    hits = r1["mag_hits"] - r0["mag_hits"]
    misses = r1["mag_misses"] - r0["mag_misses"]
    assert hits + misses >= 20000
    assert hits / (hits + misses) > 0.70


def test_magazine_off_serves_from_sll():
    try:
        hakmem.configure(heap_v2=False)
        r0 = class_row(16)
        ring(5000, 60, 16)
        r1 = class_row(16)
        assert r1["mag_hits"] == r0["mag_hits"]
        assert r1["sll_pops"] - r0["sll_pops"] >= 5000
    finally:
        hakmem.configure(heap_v2=True)


@pytest.mark.parametrize("heap_v2", [True, False])
def test_magazine_on_off_same_results(heap_v2):
    import random
    try:
        hakmem.configure(heap_v2=heap_v2)
        rnd = random.Random(7)
        live = {}
        for i in range(20000):
            if live and rnd.random() < 0.5:
                a = rnd.choice(list(live))
                assert read(a, 8) == live.pop(a)
                hakmem.free(a)
            else:
                a = hakmem.malloc(rnd.choice((16, 24, 40, 64, 100, 2000)))
                assert a not in live
                tag = i.to_bytes(8, "little")
                write(a, tag)
                live[a] = tag
        for a, tag in live.items():
            assert read(a, 8) == tag
            hakmem.free(a)
    finally:
        hakmem.configure(heap_v2=True)


def test_config_and_configure():
    cfg = hakmem.config()
    assert cfg["mag_cap"] == 64 and cfg["mag_classes"] == 20
    try:
        assert hakmem.configure(mag_cap=8)["mag_cap"] == 8
        ring(2000, 60, 16)
    finally:
        hakmem.configure(mag_cap=cfg["mag_cap"])
    with pytest.raises(hakmem.ConfigError, match="unknown setting"):
        hakmem.configure(bogus=1)
    with pytest.raises(hakmem.ConfigError, match="HAKMEM_TINY_MAG_CAP"):
        hakmem.configure(mag_cap=1000)
    assert cfg["hook_max"] == 512
    for bad in (0, 1025):
        with pytest.raises(hakmem.ConfigError, match="HAKMEM_HOOK_MAX"):
            hakmem.configure(hook_max=bad)
    assert hakmem.config() == cfg


@pytest.mark.parametrize("env,msg", [
    ({"HAKMEM_TINY_MAG_CAP": "-3"}, "HAKMEM_TINY_MAG_CAP='-3': must be between 1 and 64"),
    ({"HAKMEM_TINY_MAG_CAP": "abc"}, "not an integer"),
    ({"HAKMEM_TINY_HEAP_V2": "maybe"}, "HAKMEM_TINY_HEAP_V2"),
])
def test_bad_env_fails_at_import(env, msg):
    r = run_py("import hakmem", env)
    assert r.returncode != 0
    assert "ConfigError" in r.stderr and msg in r.stderr


def test_env_switches_take_effect():
    code = ("import hakmem, json; print(json.dumps(hakmem.config()))")
    env = {"HAKMEM_TINY_HEAP_V2": "off", "HAKMEM_TINY_MAG_CAP": "32",
           "HAKMEM_TINY_REFILL_BATCH": "1k"}
    r = run_py(code, env)
    assert r.returncode == 0, r.stderr
    import json
    cfg = json.loads(r.stdout)
    assert cfg["heap_v2"] is False and cfg["mag_cap"] == 32 and cfg["refill_batch"] == 1024


def test_stats_at_exit_table():
    r = run_py("import hakmem; hakmem.free(hakmem.malloc(16))", {"HAKMEM_STATS": "1"})
    assert r.returncode == 0
    assert "hakmem stats" in r.stderr and "hit_rate" in r.stderr and "mag_hits" in r.stderr


def test_trim_returns_memory():
    hakmem.trim()
    base = hakmem.stats()["bytes_mapped"]
    addrs = [hakmem.malloc(512) for _ in range(40000)]     # ~20 MiB
    grown = hakmem.stats()["bytes_mapped"]
    assert grown >= base + 16 * 2**20
    for a in addrs:
        hakmem.free(a)
    released = hakmem.trim()
    st = hakmem.stats()
    assert released > 0
    assert st["bytes_mapped"] <= base + 8 * 2**20
    # and the allocator works after trimming
    a = hakmem.malloc(512)
    write(a, b"x" * 512)
    hakmem.free(a)


def test_map_limit_gives_memory_error_then_recovers():
    from hakmem import slab
    hakmem.trim()
    mapped = hakmem.stats()["bytes_mapped"]
    addrs = []
    try:
        slab._set_map_limit(mapped + 4 * 2**20)
        with pytest.raises(MemoryError):
            for _ in range(200000):
                addrs.append(hakmem.malloc(1024))
        assert hakmem.stats()["mmap_failures"] >= 1
    finally:
        slab._set_map_limit(0)
    addrs.append(hakmem.malloc(1024))       # works again once memory is available
    for a in addrs:
        hakmem.free(a)


def test_version_and_include():
    assert hakmem.__version__
    inc = hakmem.get_include()
    assert os.path.exists(os.path.join(inc, "hakmem", "front.pxd"))
    assert os.path.exists(os.path.join(inc, "hakmem", "__init__.pxd"))


def test_docs_config_table_matches_switches():
    from hakmem import options
    doc = os.path.join(os.path.dirname(__file__), "..", "docs", "config.md")
    if not os.path.exists(doc):
        pytest.skip("docs not present")
    with open(doc) as f:
        text = f.read()
    assert options.describe() in text, "docs/config.md is out of date with hakmem/options.py"


def test_large_blocks_from_several_threads_are_never_reported_freed():
    """The recently-freed ring must forget an address the moment the system malloc
    hands it out again, from any thread (the GIL is released in malloc/free)."""
    import random
    import threading
    errors = []

    def work(seed):
        rng = random.Random(seed)
        live = []
        try:
            for _ in range(3000):
                if live and rng.random() < 0.5:
                    a = live.pop(rng.randrange(len(live)))
                    if rng.random() < 0.3:
                        a = hakmem.realloc(a, rng.choice((1500, 3000, 9000)))
                    hakmem.free(a)
                else:
                    a = hakmem.malloc(rng.choice((1500, 3000, 9000)))
                    assert hakmem.is_live(a)
                    live.append(a)
            for a in live:
                hakmem.free(a)
        except Exception as e:       # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_options_class_count_matches_the_table():
    from hakmem import classes, options
    assert options.NCLASSES == classes.NCLASSES == len(classes.block_sizes())


def test_stats_counters_come_from_one_list():
    """The dict keys, the C field list and the printed table agree (no renaming)."""
    import importlib
    stats = importlib.import_module("hakmem.stats")    # hakmem.stats is also the function
    names = stats.stat_names()
    assert len(names) == len(set(names)) == len(stats.stat_docs())
    row = hakmem.stats()["classes"][0]
    assert set(names) <= set(row)
    table = hakmem.stats_table()
    for n in names:
        assert n in table


def test_empty_slabs_go_back_without_trim():
    """The purge policy: past 2 * purge_keep empty resident slabs, the pool gives the
    coldest back to the OS and unmaps empty regions, with no trim() call."""
    cfg = hakmem.config()
    try:
        hakmem.configure(purge_keep=2)
        s0 = hakmem.stats()
        blocks = [hakmem.malloc(512) for _ in range(40_000)]    # ~20 MiB, ~320 slabs
        mapped_full = hakmem.stats()["bytes_mapped"]
        for a in blocks:
            hakmem.free(a)
        hakmem.thread_flush()
        s1 = hakmem.stats()
        assert s1["purges"] > s0["purges"]
        assert s1["bytes_purged"] > s0["bytes_purged"]
        assert s1["bytes_mapped"] < mapped_full            # empty regions were unmapped
        assert s1["bytes_trimmed"] == s0["bytes_trimmed"]  # trim() was never called
        assert s1["allocs"] - s0["allocs"] == s1["frees"] - s0["frees"] == 40_000
        # and the memory is usable again afterwards
        again = [hakmem.malloc(512) for _ in range(1000)]
        for a in again:
            hakmem.free(a)
    finally:
        hakmem.configure(purge_keep=cfg["purge_keep"])


def resident_pages(addr, length):
    """Pages of [addr, addr + length) resident in memory (mincore(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    npages = length // 4096
    vec = (ctypes.c_ubyte * npages)()
    rc = libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(length), vec)
    assert rc == 0, os.strerror(ctypes.get_errno())
    return sum(v & 1 for v in vec)


REGION, SLAB = 4 << 20, 64 << 10


def test_a_new_region_costs_pages_only_for_the_slabs_in_use():
    """Mapping a region writes no slab header: its 63 slabs stay cold (not resident)
    until a class takes one, so a small program pays for the pages it uses."""
    code = textwrap.dedent(f"""
        import ctypes, hakmem, json, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_core import resident_pages
        a = hakmem.malloc(16)
        st = hakmem.stats()
        region = a & ~({REGION} - 1)
        print(json.dumps([st["regions"], resident_pages(region, {REGION})]))
    """)
    r = run_py(code, {})
    assert r.returncode == 0, r.stderr
    regions, pages = json.loads(r.stdout)
    # the region header, the slab header (which holds the first blocks), one carve;
    # a debug build writes canaries over the whole slab it formats (16 pages)
    assert regions == 1 and pages <= (17 if hakmem.build_info()["debug"] else 4), pages


def test_a_purged_slab_gives_back_every_page_header_included():
    """trim() and the purge return a whole empty slab; the region stays mapped while
    any of its slabs is in use, and its purged slabs come back formatted afresh."""
    keep = hakmem.malloc(512)
    blocks = [hakmem.malloc(512) for _ in range(2000)]    # ~1 MiB: 16 slabs
    slabs = {b & ~(SLAB - 1) for b in blocks} - {keep & ~(SLAB - 1)}
    assert len(slabs) >= 10
    assert all(resident_pages(sl, SLAB) > 1 for sl in slabs)
    for b in blocks:
        hakmem.free(b)
    hakmem.trim()
    mapped = {sl for sl in slabs if is_mapped(sl)}
    assert mapped, "the slabs' regions were unmapped: the live block should keep one"
    assert all(resident_pages(sl, SLAB) == 0 for sl in mapped), \
        [resident_pages(sl, SLAB) for sl in mapped]
    st = hakmem.stats()
    assert st["slabs_decommitted"] >= len(mapped)
    again = [hakmem.malloc(512) for _ in range(2000)]    # cold slabs are taken again
    write(again[0], b"x" * 512)
    assert hakmem.stats()["slabs_decommitted"] < st["slabs_decommitted"]
    for b in again:
        assert hakmem.is_live(b)
        hakmem.free(b)
    hakmem.free(keep)


def test_an_emptied_slab_hands_out_blocks_in_address_order_again():
    """A slab that empties is formatted afresh when a class takes it again: its blocks
    come out in address order, not in the order they were freed, so objects allocated
    together lie together (as in a pool pymalloc re-initialises)."""
    import random
    hakmem.thread_flush()
    blocks = [hakmem.malloc(256) for _ in range(2000)]        # ~8 slabs of one class
    random.Random(7).shuffle(blocks)
    for b in blocks:
        hakmem.free(b)
    hakmem.thread_flush()                                     # the slabs empty
    again = [hakmem.malloc(256) for _ in range(1500)]
    steps = [(a, b) for a, b in zip(again, again[1:]) if a & ~(SLAB - 1) == b & ~(SLAB - 1)]
    assert len(steps) > 1000
    stride = 256 + hakmem.build_info()["canary"]             # debug builds: + canary
    ascending = sum(b == a + stride for a, b in steps)
    assert ascending > 0.95 * len(steps), (ascending, len(steps))
    for b in again:
        hakmem.free(b)


def is_mapped(addr):
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


def test_purge_off_keeps_empty_slabs_until_trim():
    cfg = hakmem.config()
    try:
        hakmem.configure(purge_keep=0)
        s0 = hakmem.stats()
        blocks = [hakmem.malloc(512) for _ in range(20_000)]
        for a in blocks:
            hakmem.free(a)
        hakmem.thread_flush()
        assert hakmem.stats()["purges"] == s0["purges"]
        assert hakmem.trim() > 0
    finally:
        hakmem.configure(purge_keep=cfg["purge_keep"])


def test_import_loads_no_typing_machinery():
    """`import hakmem; hakmem.install()` loads neither `__future__` nor `typing` (nor
    numpy, below): a program that never imports them would carry their objects into
    every full collection, and their resident memory."""
    code = ("import sys; before = set(sys.modules); import hakmem; hakmem.install(); "
            "print(sorted({'__future__', 'typing', 'dataclasses'} "
            "& (set(sys.modules) - before)))")
    r = run_py(code, {})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_import_and_run_load_no_numpy():
    """The allocator needs no numpy: `import hakmem` and `python -m hakmem run` leave
    it unloaded; the records layer loads it on first use."""
    code = ("import sys, hakmem; assert 'numpy' not in sys.modules, 'import hakmem'; "
            "hakmem.free(hakmem.malloc(16)); assert 'numpy' not in sys.modules; "
            "hakmem.RecordPool('x:f8'); assert 'numpy' in sys.modules; print('ok')")
    r = run_py(code, {})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "hakmem", "run", "-c",
                        "import sys; print('numpy' in sys.modules)"],
                       capture_output=True, text=True, cwd=tempfile.gettempdir())
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
