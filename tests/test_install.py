"""hakmem as CPython's allocator (PEP 445): hakmem.install / uninstall, `python -m hakmem run`.

The `inproc` tests install the hook into the interpreter that runs them. They run in a
child pytest (test_in_process_tests_in_a_fresh_interpreter), not in the main session:
objects allocated while hakmem was installed outlive the tests and are freed later
(through the pass-through hook, by design), which would add hakmem frees to other test
files' stats. The other tests start their own interpreters (start-up, env switch,
tracemalloc, fork, the CLI, CPython's test suite).
"""
import ctypes
import gc
import json
import os
import queue
import re
import subprocess
import tempfile
import sys
import textwrap
import threading
import time

import pytest

import hakmem
from hakmem import pyalloc
from hakmem.bench.programs import run_workload

PY = sys.executable
CHILD = os.environ.get("_HAKMEM_INSTALL_TESTS_CHILD") == "1"
inproc = pytest.mark.skipif(not CHILD, reason="runs in the child pytest (see module doc)")
parent = pytest.mark.skipif(CHILD, reason="runs in the main pytest session")
ENV = dict(os.environ)
ENV.pop("HAKMEM_INSTALL", None)
ENV.pop("HAKMEM_STATS", None)
# Subprocesses must import the same hakmem as this test run (in-place build or installed).
ENV["PYTHONPATH"] = os.pathsep.join(
    [hakmem.get_include()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

# The C API, called with the GIL held (ctypes.pythonapi keeps it), as CPython code would.
_api = ctypes.pythonapi
for _dom in ("PyMem", "PyObject"):
    getattr(_api, _dom + "_Malloc").restype = ctypes.c_void_p
    getattr(_api, _dom + "_Malloc").argtypes = [ctypes.c_size_t]
    getattr(_api, _dom + "_Calloc").restype = ctypes.c_void_p
    getattr(_api, _dom + "_Calloc").argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    getattr(_api, _dom + "_Realloc").restype = ctypes.c_void_p
    getattr(_api, _dom + "_Realloc").argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    getattr(_api, _dom + "_Free").restype = None
    getattr(_api, _dom + "_Free").argtypes = [ctypes.c_void_p]


def api(dom, op):
    return getattr(_api, f"{dom}_{op}")


def run(args, timeout=120, **kw):
    """Run a Python subprocess with this test run's hakmem on the path.

    It starts outside the source tree by default, so `-c`/`-m` import the installed
    package rather than the uncompiled sources.
    """
    kw.setdefault("cwd", tempfile.gettempdir())
    return subprocess.run([PY] + args, capture_output=True, text=True, env=kw.pop("env", ENV),
                          timeout=timeout, **kw)


@pytest.fixture
def installed():
    """hakmem installed for obj and mem for the duration of one test."""
    assert hakmem.installed() == (), "a previous test left hakmem installed"
    hakmem.install()
    try:
        yield
    finally:
        if hakmem.installed():
            hakmem.uninstall()


def hook_total(key):
    return sum(d[key] for d in pyalloc.hook_stats().values())


def ours(addr):
    """True if addr is a live block of hakmem's tiny heap."""
    return addr != 0 and hakmem.is_live(addr) and hakmem.usable_size(addr) <= 1024


def mixed_workload():
    """dicts, lists, strings, json and re; returns a deterministic summary."""
    words = ["w%d%s" % (i, "xyz"[i % 3]) for i in range(3000)]
    d = {w: [len(w), w.upper(), (i, float(i) / 3)] for i, w in enumerate(words)}
    s = json.dumps(d, sort_keys=True)
    back = json.loads(s)
    found = re.findall(r'"(w\d+)y"', s)
    sets = {frozenset(w[1:3]) for w in words}
    joined = "-".join(sorted(back)[:100])
    return (len(s), sum(v[0] for v in back.values()), len(found), len(sets), joined,
            back["w42x"], [run_workload(n) for n in ("json_roundtrip", "regex_scan")])


# ---- install() / uninstall() ----------------------------------------------------------
@parent
def test_in_process_tests_in_a_fresh_interpreter():
    """Run the @inproc tests of this file in a child pytest (see the module doc)."""
    r = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             os.path.abspath(__file__)], env=dict(ENV, _HAKMEM_INSTALL_TESTS_CHILD="1"),
            timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    m = re.search(r"(\d+) passed", r.stdout)
    assert m and int(m.group(1)) == N_INPROC, r.stdout[-2000:]


@inproc
def test_workload_same_results_and_served_by_hakmem(installed):
    hakmem.uninstall()
    expected = mixed_workload()
    before = hakmem.stats()["allocs"]
    hook_before = hook_total("tiny_allocs")
    hakmem.install()
    got = mixed_workload()
    hakmem.uninstall()
    assert got == expected
    # Proof that hakmem served the program, not pymalloc: the workload makes ~10^5
    # small allocations and hakmem's own counters saw them.
    assert hakmem.stats()["allocs"] - before > 100_000
    served = hook_total("tiny_allocs") - hook_before
    assert served > 100_000
    hakmem.install()


@inproc
def test_objects_live_in_hakmem_then_freed_after_uninstall(installed):
    # str and int objects have no free lists, so their blocks come and go straight
    # through the allocator (floats, tuples, lists, dicts keep some in free lists).
    strs = ["s%07d" % i for i in range(20000)]
    ints = [10 ** 9 + i for i in range(20000)]
    addrs = [id(x) for x in strs] + [id(x) for x in ints]
    assert all(ours(a) for a in addrs)
    frees0 = pyalloc.hook_stats()["obj"]["tiny_frees"]
    hakmem.uninstall()
    new = ["n%07d" % i for i in range(1000)]
    assert not any(ours(id(x)) for x in new), "uninstalled, yet hakmem served new objects"
    assert sum(ints) == 20000 * 10 ** 9 + sum(range(20000))
    del strs, ints
    gc.collect()
    # The pass-through hook gave every block back to hakmem.
    assert [a for a in addrs if hakmem.is_live(a)] == []
    assert pyalloc.hook_stats()["obj"]["tiny_frees"] - frees0 >= 40000
    del new


@inproc
def test_blocks_from_before_install_are_freed_by_the_old_allocator():
    pre = [[i, str(i)] for i in range(5000)]        # allocated by pymalloc
    pre_list = list(range(100))                     # its item array will be realloc'd
    assert not any(hakmem.is_live(id(x)) for x in pre[:100])
    hakmem.install()
    try:
        old0 = hook_total("old_frees")
        re0 = hook_total("old_reallocs")
        pre_list.extend(range(100, 100000))         # realloc of a pymalloc block
        del pre
        gc.collect()
        assert hook_total("old_frees") - old0 >= 10000
        assert hook_total("old_reallocs") - re0 >= 1
        assert pre_list == list(range(100000))
    finally:
        hakmem.uninstall()


@pytest.mark.parametrize("lim", [512, 1024])
@pytest.mark.parametrize("dom", ["PyMem", "PyObject"])
@inproc
def test_c_api_sizes_realloc_across_the_boundary(installed, dom, lim):
    """HAKMEM_HOOK_MAX (hook_max) decides which requests hakmem serves: at most lim."""
    malloc, realloc, free = api(dom, "Malloc"), api(dom, "Realloc"), api(dom, "Free")
    sizes = [0, 1, 15, 16, 100, 512, 513, 1000, 1024, 1025, 4096, 100_000]
    default = hakmem.config()["hook_max"]
    hakmem.configure(hook_max=lim)
    try:
        _sizes_across(malloc, realloc, free, sizes, lim)
    finally:
        hakmem.configure(hook_max=default)


def _sizes_across(malloc, realloc, free, sizes, lim):
    for n in sizes:
        for m in sizes:
            p = malloc(n)
            assert p, (n, "NULL")
            assert ours(p) == (n <= lim), (n, m)
            ctypes.memset(p, 0xAB, n)
            if n:
                ctypes.memset(p, 0x11, 1)
            q = realloc(p, m)
            assert q, (n, m, "realloc NULL")
            k = min(n, m)
            data = ctypes.string_at(q, k)
            assert data == (b"\x11" + b"\xab" * (k - 1) if k else b""), (n, m)
            # tiny -> tiny stays in hakmem, tiny -> big moves to the old allocator,
            # a block of the old allocator stays there (its size is unknown to us).
            assert ours(q) == (n <= lim and m <= lim), (n, m)
            free(q)


@inproc
def test_shrunk_strings_move_to_their_own_class(installed):
    """CPython builds many strings in an over-allocated buffer and shrinks it with
    realloc (str % args, reprs, joins of few parts). Under the hook they must end in
    the class of their final size, as under pymalloc, not in the buffer's."""
    before = hook_total("tiny_reallocs")
    strs = ["(%r, %r, %r)" % ("string", (i, 2), [3, 4]) for i in range(2000)]
    assert hook_total("tiny_reallocs") > before
    sizes = [hakmem.usable_size(id(s)) for s in strs if ours(id(s))]
    assert len(sizes) > 1900
    need = sys.getsizeof(strs[0])
    assert max(sizes) - need < 16, (need, sorted(set(sizes)))


@pytest.mark.parametrize("dom", ["PyMem", "PyObject"])
@inproc
def test_zero_size_and_null(installed, dom):
    malloc, calloc, realloc, free = (api(dom, x) for x in ("Malloc", "Calloc", "Realloc", "Free"))
    ps = [malloc(0) for _ in range(100)]
    assert all(ps) and len(set(ps)) == 100                 # unique, non-NULL
    zs = [calloc(0, 0), calloc(0, 8), calloc(8, 0)]
    assert all(zs) and len(set(zs + ps)) == 103
    r = realloc(ps[0], 0)
    assert r and r not in ps[1:] and r not in zs            # still a unique live block
    ps[0] = r
    q = realloc(None, 0)                                    # realloc(NULL, 0) == malloc(0)
    assert q and q not in ps
    free(None)                                              # no-op
    for p in ps + zs + [q]:
        free(p)


@pytest.mark.parametrize("dom", ["PyMem", "PyObject"])
@inproc
def test_calloc_zeroed_and_overflow(installed, dom):
    calloc, malloc, free = api(dom, "Calloc"), api(dom, "Malloc"), api(dom, "Free")
    dirty = [malloc(1024) for _ in range(50)]
    for p in dirty:
        ctypes.memset(p, 0xFF, 1024)
    for p in dirty:
        free(p)
    lim = hakmem.config()["hook_max"]
    for nelem, size in [(1, 1024), (1, 512), (64, 8), (3, 100), (1, 5000), (10, 1000)]:
        p = calloc(nelem, size)
        assert p and ctypes.string_at(p, nelem * size) == bytes(nelem * size)
        assert ours(p) == (nelem * size <= lim)
        free(p)
    assert not calloc(2 ** 62, 16)                           # overflow -> NULL, no crash


@inproc
def test_uninstalled_hook_passes_through_and_moves_blocks_out():
    hakmem.install()
    p = api("PyMem", "Malloc")(100)
    ctypes.memset(p, 0x5A, 100)
    hakmem.uninstall()
    moved0 = hook_total("moved_out")
    q = api("PyMem", "Realloc")(p, 200)      # hakmem block, hook inactive: leaves hakmem
    assert q and not ours(q) and ctypes.string_at(q, 100) == b"\x5a" * 100
    assert hook_total("moved_out") == moved0 + 1
    assert not hakmem.is_live(p)
    api("PyMem", "Free")(q)


# ---- threads -----------------------------------------------------------------------
@inproc
def test_threads_under_install(installed):
    """Several threads allocate under the hook while others use hakmem without the GIL;
    objects cross threads (remote frees). No object is lost or handed out twice."""
    nthreads, per = 4, 3000
    q = queue.Queue()
    errors = []
    results = {}

    def producer(t):
        try:
            out = []
            for i in range(per):
                rec = {"t": t, "i": i, "name": "n%d_%d" % (t, i), "v": [float(i), str(i)]}
                out.append(rec)
                if i % 3 == 0:
                    q.put(rec)                         # freed by the consumer thread
            results[t] = out
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    def consumer():
        n = 0
        while True:
            rec = q.get()
            if rec is None:
                break
            assert rec["name"] == "n%d_%d" % (rec["t"], rec["i"])
            n += 1
        results["consumed"] = n

    def nogil_user():
        # hakmem.malloc/free release the GIL around the allocator call.
        addrs = [hakmem.malloc(48) for _ in range(5000)]
        assert len(set(addrs)) == len(addrs)
        for a in addrs:
            hakmem.free(a)

    c = threading.Thread(target=consumer)
    c.start()
    ts = [threading.Thread(target=producer, args=(t,)) for t in range(nthreads)]
    ts += [threading.Thread(target=nogil_user) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put(None)
    c.join()
    assert not errors
    assert results["consumed"] == nthreads * ((per + 2) // 3)
    live = [rec for t in range(nthreads) for rec in results[t]]
    for t in range(nthreads):
        assert [r["i"] for r in results[t]] == list(range(per))
        assert all(r["v"] == [float(r["i"]), str(r["i"])] for r in results[t])
    # No block was handed out twice: every live object has its own address.
    objs = live + [r["v"] for r in live] + [r["name"] for r in live]
    assert len({id(o) for o in objs}) == len(objs)
    assert all(ours(id(r["name"])) for r in live)
    del live, objs, results


@inproc
def test_short_lived_threads_reuse_caches_under_install(installed):
    """Waves of threads that start, allocate under the hook and exit: the hook's cached
    heap of a dead thread must never be used by the next thread (thread caches are
    reused, and a new thread often gets the dead one's thread pointer). Objects made
    by dead threads are checked and freed by the main thread afterwards."""
    kept = []
    errors = []

    def worker(w, t):
        try:
            mine = [("w%d_t%d_%d" % (w, t, i), [i, float(i)]) for i in range(2000)]
            addrs = [hakmem.malloc(32) for _ in range(200)]   # GIL released inside
            assert len(set(addrs)) == len(addrs)
            for a in addrs:
                hakmem.free(a)
            kept.append((w, t, mine[::7]))
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    for w in range(12):
        ts = [threading.Thread(target=worker, args=(w, t)) for t in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        garbage = [{"x": i} for i in range(500)]     # the main thread allocates between waves
        del garbage
    assert not errors
    assert len(kept) == 36
    objs = []
    for w, t, mine in kept:
        for name, v in mine:
            i = int(name.rsplit("_", 1)[1])
            assert name == "w%d_t%d_%d" % (w, t, i) and v == [i, float(i)]
            objs += [name, v]
    assert len({id(o) for o in objs}) == len(objs)
    kept.clear()


@inproc
def test_idle_empty_slabs_go_back_when_large_requests_follow(installed):
    """Small objects built and dropped leave empty slabs in the pool. When the program
    then makes only large requests (which the hook passes to the old allocator), those
    slabs' pages go back to the OS after a few MiB of them, as pymalloc frees its empty
    arenas; nobody calls trim()."""
    objs = [(i, "s%d" % i, [i]) for i in range(200_000)]
    del objs
    gc.collect()
    before = hakmem.stats()
    big = []
    for _ in range(3):
        big += [bytes(256 * 1024) for _ in range(20)]   # 15 MiB of large requests
    after = hakmem.stats()
    assert after["purges"] > before["purges"]
    assert after["bytes_purged"] - before["bytes_purged"] >= 32 * 60 * 1024
    del big


@inproc
def test_idle_purge_keeps_what_recent_rounds_needed(installed):
    """A program that alternates rounds of small objects with large ones keeps the empty
    slabs its rounds need: the idle purge gives back only what the busiest of the last
    two intervals did not use, even after an interval in which no slab was taken."""
    big = []

    def one_round():
        objs = [(i, "s%d" % i, [i]) for i in range(30_000)]
        del objs
        gc.collect()
        big.extend(bytes(256 * 1024) for _ in range(28))    # 7 MiB, kept: growth

    one_round()
    before = hakmem.stats()
    assert before["slabs_pooled"] > 8
    for _ in range(4):
        one_round()
    after = hakmem.stats()
    assert after["bytes_purged"] == before["bytes_purged"], "purged what the rounds need"
    del big


@inproc
def test_idle_purge_counts_growth_not_turnover(installed):
    """Large buffers dropped soon after they are made (a regex's backtracking stack, a
    scratch bytes) do not grow the old allocator, so 80 MiB of them, made and dropped
    one at a time, leave the empty slabs resident; nor does a list grown by realloc to
    2 MiB count as the sum of its reallocs."""
    objs = [(i, "s%d" % i, [i]) for i in range(200_000)]
    del objs
    gc.collect()
    before = hakmem.stats()
    assert before["slabs_pooled"] > 8
    for _ in range(10_000):
        b = bytes(8192)
        del b
    grown = []
    for _ in range(2_000_000 // 8):
        grown.append(None)              # 2 MiB of pointers; its reallocs sum to ~17 MiB
    after = hakmem.stats()
    assert after["purges"] == before["purges"], "transient large requests purged"
    assert after["slabs_pooled"] == before["slabs_pooled"]
    del grown


# ---- API errors ---------------------------------------------------------------------
@inproc
def test_double_install_and_uninstall_without_install():
    assert hakmem.installed() == ()
    with pytest.raises(RuntimeError, match="not installed"):
        hakmem.uninstall()
    hakmem.install("obj")
    try:
        with pytest.raises(RuntimeError, match="already installed for domain.*obj"):
            hakmem.install()
        assert hakmem.installed() == ("obj",)            # unchanged by the failed call
        with pytest.raises(RuntimeError, match="not installed for domain.*mem"):
            hakmem.uninstall("mem")
        assert hakmem.install("mem") == ("obj", "mem")
        assert hakmem.uninstall("obj") == ("mem",)
    finally:
        if hakmem.installed():
            hakmem.uninstall()
    assert hakmem.installed() == ()


@inproc
def test_bad_domains():
    for bad, exc, msg in [("raw", ValueError, "raw.*without the GIL"),
                          (("obj", "heap"), ValueError, "unknown domain 'heap'"),
                          ((), ValueError, "no domain"), (5, TypeError, "domains must be")]:
        with pytest.raises(exc, match=msg):
            hakmem.install(bad)
        assert hakmem.installed() == ()


@parent
def test_tracemalloc_interplay():
    code = textwrap.dedent("""
        import tracemalloc, hakmem
        tracemalloc.start()
        try:
            hakmem.install()
        except RuntimeError as e:
            print("refused:", "tracemalloc" in str(e))
        tracemalloc.stop()
        hakmem.install()
        tracemalloc.start()               # on top of hakmem: fine, stop() restores hakmem
        x = [str(i) * 3 for i in range(10000)]
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        y = ["%d!" % i for i in range(1000)]
        print("traced:", cur > 100000, "still:", hakmem.installed(),
              all(hakmem.is_live(id(v)) for v in y))
    """)
    r = run(["-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused:", "True", "traced:", "True", "still:",
                                "('obj',", "'mem')", "True"]


@parent
def test_fork_under_install():
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    code = textwrap.dedent("""
        import os, hakmem
        hakmem.install()
        keep = [str(i) for i in range(20000)]
        pid = os.fork()
        if pid == 0:
            more = [s + "!" for s in keep]
            del keep
            os._exit(0 if len(more) == 20000 and hakmem.is_live(id(more[5])) else 3)
        _, st = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(st), len(keep))
    """)
    r = run(["-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "20000"]


# ---- start-up: env switch and python -m hakmem run ------------------------------------
@parent
def test_env_switch_installs_at_import():
    env = dict(ENV, HAKMEM_INSTALL="obj")
    r = run(["-c", "import hakmem; print(hakmem.installed())"], env=env)
    assert r.returncode == 0 and r.stdout.strip() == "('obj',)", r.stderr
    env["HAKMEM_INSTALL"] = "1"
    r = run(["-c", "import hakmem; print(hakmem.installed())"], env=env)
    assert r.stdout.strip() == "('obj', 'mem')", r.stderr
    env["HAKMEM_INSTALL"] = "raw"
    r = run(["-c", "import hakmem"], env=env)
    assert r.returncode != 0 and "HAKMEM_INSTALL='raw'" in r.stderr


SCRIPT = """\
import json, re, sys, hakmem
d = {"k%d" % i: [i, str(i)] for i in range(20000)}
assert json.loads(json.dumps(d)) == d and len(re.findall(r"k1\\d", json.dumps(d))) > 100
print("argv=%s path0=%s name=%s installed=%s" % (
    sys.argv[1:], sys.path[0] == __file__.rsplit("/", 1)[0], __name__, hakmem.installed()))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
"""


@parent
def test_run_script(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    r = run(["-m", "hakmem", "run", str(script), "7", "--stats", "-x"], cwd=tmp_path)
    assert r.returncode == 7, r.stderr
    assert r.stdout.strip() == ("argv=['7', '--stats', '-x'] path0=True name=__main__ "
                                "installed=('obj', 'mem')")
    assert "hakmem stats" not in r.stderr        # --stats after the script is the script's


@parent
def test_run_stats_and_module(tmp_path):
    (tmp_path / "progmod.py").write_text(SCRIPT)
    r = run(["-m", "hakmem", "run", "--stats", "-m", "progmod", "a", "-b"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "argv=['a', '-b']" in r.stdout and "name=__main__" in r.stdout
    assert "hakmem stats" in r.stderr and "PEP 445 hook" in r.stderr
    m = re.search(r"^\s+obj\s+active\s+(\d+)", r.stderr, re.M)
    assert m and int(m.group(1)) > 20000            # the program's objects came from hakmem


@parent
def test_run_stdlib_module_and_errors(tmp_path):
    r = run(["-m", "hakmem", "run", "-m", "json.tool", "--sort-keys"],
            input='{"b": 1, "a": [1, 2]}')
    assert r.returncode == 0 and json.loads(r.stdout) == {"a": [1, 2], "b": 1}
    assert r.stdout.index('"a"') < r.stdout.index('"b"')
    for args, msg in [([], "give a script"), (["-m"], "needs a module"),
                      (["-m", "no_such_mod_xyz"], "no module named"),
                      (["missing.py"], "can't open file"),
                      (["--domains", "raw", "x.py"], "raw")]:
        r = run(["-m", "hakmem", "run"] + args, cwd=tmp_path)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)


# ---- an outside suite: CPython's own tests -------------------------------------------
def _have_cpython_tests():
    r = run(["-c", "import test.support, test.test_json, test.test_dict, test.test_list"])
    return r.returncode == 0


@parent
def test_cpython_suite_subset_under_hakmem(tmp_path):
    if not _have_cpython_tests():
        pytest.skip("CPython's test package (test.test_json ...) is not installed")
    t0 = time.perf_counter()
    r = run(["-m", "hakmem", "run", "--stats", "-m", "test", "test_json", "test_dict",
             "test_list"], cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Result: SUCCESS" in r.stdout
    m = re.search(r"^\s+obj\s+active\s+(\d+)", r.stderr, re.M)
    assert m and int(m.group(1)) > 1_000_000, r.stderr[-2000:]
    assert time.perf_counter() - t0 < 300


N_INPROC = 20   # @inproc test items (a parametrized test counts once per parameter)
