"""The benchmark runs end to end (``--quick``), its JSON has the documented keys,
bad arguments fail with one line, and every hakmem run is proven by hakmem's own
counters. No speed is asserted here (speed lives in bench/)."""
import ctypes.util
import json
import os
import re
import subprocess
import sys

import pytest

import hakmem
from hakmem import bench as B
from hakmem import bench_records as R
from hakmem import bench_runner as BR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hakmem.__file__)))
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "bench.md")
TINY = ["--ops", "20000", "--runs", "5", "--mem-blocks", "4000", "--record-ops", "3000",
        "--live-records", "20000"]


def _cli(args, tmp_path, timeout=120):
    """Run ``python -m hakmem`` on this copy of hakmem, away from the source tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH", "")] if p)
    return subprocess.run([sys.executable, "-m", "hakmem"] + args, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(tmp_path))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "r.json"
    r = _cli(["bench", "--quick", "--json", str(out)] + TINY, tmp)
    return r, out


def test_quick_run_prints_the_tables(quick_run):
    r, _ = quick_run
    assert r.returncode == 0, r.stderr
    for wl in ("fixed16_ws60", "fixed256_ws50", "mixed16-1024_ws256", "xthread64",
               "threads-2:fixed16_ws60"):
        assert re.search(rf"^{re.escape(wl)}\s+\d", r.stdout, re.M), wl
    assert "hakmem / baseline" in r.stdout
    assert "Python programs with hakmem installed" in r.stdout and "geomean" in r.stdout
    assert "bytes per live block" in r.stdout
    assert "targets (issue 4)" in r.stdout
    assert "n/a (GIL)" in r.stdout          # pymalloc is not run on several threads
    assert "hold the GIL" in r.stdout


def test_json_has_the_documented_keys(quick_run):
    r, out = quick_run
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["schema"] == BR.SCHEMA
    top = {"schema", "hakmem_version", "build", "python", "platform", "cpu_count", "settings",
           "allocators", "notes", "results", "skipped", "ratios", "scaling",
           "scaling_reference", "memory", "records", "callpath", "targets", "cpu_share",
           "elapsed_s", "python_programs"}
    assert top <= set(res)
    names = [a["name"] for a in res["allocators"]]
    assert names[:4] == ["hakmem", "hakmem-nomag", "libc", "pymalloc"]
    row_keys = {"workload", "base_workload", "threads", "allocator", "ops_per_run", "mops",
                "mops_cpu", "gil_held", "hakmem_check"}
    for row in res["results"]:
        assert row_keys <= set(row)
        m = row["mops"]
        assert len(m["runs"]) == 5 and m["min"] <= m["median"] <= m["max"]
        # CPU-time figures exactly for the one-thread loops
        one = row["threads"] == 1 and not row["workload"].startswith("threads-")
        assert (row["mops_cpu"] is not None) == one, row
        if row["allocator"].startswith("hakmem"):
            chk = row["hakmem_check"]
            assert chk["verified"] and chk["allocs"] == chk["frees"] == chk["expected_ops"] > 0
        else:
            assert row["hakmem_check"] is None
    # pymalloc never appears on a multi-thread workload, and the skip is recorded
    assert not [r for r in res["results"] if r["allocator"] == "pymalloc" and r["threads"] > 1]
    assert any(s["allocator"] == "pymalloc" for s in res["skipped"])
    fixed = [r for r in res["results"] if r["workload"] == "fixed16_ws60" and r["allocator"] == "hakmem"]
    assert fixed and fixed[0]["hakmem_check"]["hit_rate"] is not None
    for x in res["ratios"]:
        assert set(x) == {"workload", "baseline", "ratio", "ratio_cpu"} and x["ratio"] > 0
    for x in res["memory"]:
        assert {"allocator", "blocks", "mean_request", "bytes_per_block", "overhead_bytes",
                "rss_delta", "requested_bytes"} <= set(x)
        assert 16 <= x["mean_request"] <= 1024
    for x in res["records"]:
        assert {"kind", "mops", "bytes_per_record", "live_records", "ops_per_run",
                "storage_bytes_per_record"} <= set(x)
    assert [x["kind"] for x in res["records"]] == R.kinds()
    cp = res["callpath"]
    assert {"hakmem_vtable", "hakmem_direct", "hakmem_in_module", "libc_vtable", "libc_direct",
            "hakmem_vtable_over_direct", "libc_vtable_over_direct", "cimport_over_in_module",
            "note"} <= set(cp)
    for t in res["targets"]:
        assert {"target", "value", "goal", "met"} <= set(t)
        keys_t = set(t)
        assert keys_t <= {"target", "value", "goal", "met", "value_cpu", "lower_is_better", "note"}


def test_docs_name_every_json_key(quick_run):
    """docs/bench.md documents each top-level and per-row key the JSON has."""
    _, out = quick_run
    res = json.loads(out.read_text())
    with open(DOCS) as f:
        doc = f.read()
    keys = set(res)
    for section in ("results", "memory", "records", "targets", "ratios", "scaling",
                    "scaling_reference", "allocators", "skipped"):
        for row in res[section]:
            keys |= set(row)
    keys |= set(res["callpath"]) | set(res["settings"])
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"keys not documented in docs/bench.md: {missing}"


@pytest.mark.parametrize("args, words", [
    (["--workloads", "fixed17"], "unknown workload"),
    (["--workloads", "threads-0"], "threads-N"),
    (["--ops", "-5"], "positive"),
    (["--runs", "0"], "positive"),
    (["--ops", "many"], "not a number"),
    (["--vs", "/nonexistent/libnothing.so"], "cannot read"),
])
def test_bad_arguments_exit_nonzero_with_one_line(args, words, tmp_path):
    r = _cli(["bench"] + args, tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert words in lines[0]
    assert r.stdout == ""


def test_vs_a_file_that_is_not_a_library(tmp_path):
    bad = tmp_path / "libfake.so"
    bad.write_bytes(b"not an ELF file")
    r = _cli(["bench", "--vs", str(bad), "--quick"], tmp_path)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot load" in r.stderr


def test_vs_library_without_its_own_malloc_is_refused():
    z = ctypes.util.find_library("z")
    if z is None:
        pytest.skip("no libz to try")
    with pytest.raises(OSError, match="does not define malloc/free itself"):
        B.dl_allocator(z, "z")


def test_plot_without_matplotlib_is_one_line(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        r = _cli(["bench", "--quick", "--plot", str(tmp_path / "p.png")], tmp_path)
        assert r.returncode != 0 and "matplotlib" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    else:
        r = _cli(["bench", "--workloads", "fixed16_ws60", "--plot", str(tmp_path / "p.png")] + TINY,
                 tmp_path)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "p.png").stat().st_size > 1000


def test_no_command_is_an_error(tmp_path):
    r = _cli([], tmp_path)
    assert r.returncode != 0


# ---- in-process: the loops and the proof -----------------------------------------
def _counts():
    s = hakmem.stats()
    return s["allocs"], s["frees"]


def test_hakmem_loops_move_hakmem_counters_exactly():
    a = B.hakmem_allocator()
    for run in (lambda: B.run_ring(a, 16, 60, 5000), lambda: B.run_ring(a, 256, 50, 5000),
                lambda: B.run_mixed(a, 256, 5000), lambda: B.run_xthread(a, 64, 5000),
                lambda: B.run_threads(a, 3, 16, 60, 5000 // 3 * 1)):
        a0, f0 = _counts()
        run()
        a1, f1 = _counts()
        assert a1 - a0 == f1 - f0 > 0


def test_threads_and_xthread_lose_no_block():
    """Several threads (GIL released) allocate and free; every block comes back once."""
    a = B.hakmem_allocator()
    live0 = hakmem.stats()["live_blocks"]
    a0, f0 = _counts()
    B.run_threads(a, 4, 16, 60, 20000)
    B.run_xthread(a, 64, 20000)
    a1, f1 = _counts()
    assert a1 - a0 == 4 * 20000 + 20000
    assert f1 - f0 == a1 - a0
    assert hakmem.stats()["live_blocks"] == live0


def test_other_allocators_do_not_touch_hakmem():
    before = _counts()
    for a in (B.libc_allocator(), B.pymalloc_allocator()):
        B.run_ring(a, 16, 60, 2000)
        B.run_mixed(a, 256, 2000)
    assert _counts() == before


def test_pymalloc_refuses_threads():
    with pytest.raises(ValueError, match="GIL"):
        B.run_threads(B.pymalloc_allocator(), 2, 16, 60, 10)
    with pytest.raises(ValueError, match="GIL"):
        B.run_xthread(B.pymalloc_allocator(), 64, 10)


def test_proof_fails_loudly_when_counts_do_not_match():
    p = BR._Proof()
    c = dict(allocs=0, frees=0, mag_hits=0, mag_misses=0, bytes_mapped=0, large_allocs=0,
             large_frees=0)
    after = dict(c, allocs=99, frees=100)
    with pytest.raises(RuntimeError, match="did not go through hakmem"):
        p.add(c, after, 100, "x")
    p.add(c, dict(c, allocs=100, frees=100, mag_hits=90, mag_misses=10), 100, "x")
    assert p.as_dict()["hit_rate"] == pytest.approx(0.9)


def test_mixed_sizes_are_fixed_and_in_range():
    s = B.mixed_sizes(20000)
    assert s == B.mixed_sizes(20000)
    assert min(s) == 16 and max(s) == 1024
    assert 480 < sum(s) / len(s) < 560


def test_bad_loop_arguments():
    a = B.libc_allocator()
    with pytest.raises(ValueError):
        B.run_ring(a, 16, 0, 10)
    with pytest.raises(ValueError):
        B.run_ring(a, 16, 100000, 10)
    with pytest.raises(ValueError):
        B.run_threads(a, 0, 16, 60, 10)
    with pytest.raises(OverflowError):
        B.run_ring(a, 16, 60, -1)


def test_live_blocks_hold_and_release():
    a = B.hakmem_allocator()
    live0 = hakmem.stats()["live_blocks"]
    h = B.LiveBlocks(a, 1000)
    assert len(h) == 1000 and h.requested == sum(B.mixed_sizes(1000))
    assert hakmem.stats()["live_blocks"] == live0 + 1000
    h.release()
    h.release()
    assert hakmem.stats()["live_blocks"] == live0


def test_parse_workloads():
    assert BR.parse_workloads(None) == BR.DEFAULT_WORKLOADS
    assert BR.parse_workloads("threads-3") == ["threads-1", "threads-3"]
    with pytest.raises(BR.BenchError):
        BR.parse_workloads("nope")
    with pytest.raises(BR.BenchError):
        BR.parse_workloads(",")


def test_record_kinds_run():
    for k in R.kinds():
        assert R.run_ring(k, 500) > 0
    with pytest.raises(ValueError):
        R.run_ring("list", 10)


def test_record_pool_is_used_when_present(monkeypatch):
    """With a RecordPool in hakmem, the records workload drives it (alloc/free per op)."""
    calls = {"alloc": 0, "free": 0, "closed": False}

    class FakePool:
        def __init__(self, spec):
            assert spec == "x:f8 y:f8"
            self.live = {}
            self.nbytes = 0

        def alloc(self, x, y):
            calls["alloc"] += 1
            h = len(self.live) + calls["alloc"] * 1000
            self.live[h] = (x, y)
            return h

        def free(self, h):
            calls["free"] += 1
            del self.live[h]

        def close(self):
            calls["closed"] = True

    monkeypatch.setattr(hakmem, "RecordPool", FakePool, raising=False)
    assert R.kinds()[-1] == "RecordPool"
    R.run_ring("RecordPool", 1000)
    assert calls["alloc"] == calls["free"] == 1000 and calls["closed"]


def test_python_programs_child_ignores_the_callers_directory(tmp_path, monkeypatch):
    # From a source checkout, `python -m` would import the uncompiled sources in the
    # working directory; the workload children must start where this hakmem lives.
    shadow = tmp_path / "hakmem"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('shadowed by the working directory')\n")
    monkeypatch.chdir(tmp_path)
    from hakmem import pyworkloads
    res = pyworkloads._child(False, ["string_ops"], 1, 1)
    assert set(res) == {"string_ops"} and res["string_ops"]["best"] > 0
