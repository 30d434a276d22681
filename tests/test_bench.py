"""The benchmark runs end to end (``--quick``), its JSON has the documented keys,
bad arguments fail with one line, and every hakmem run is proven by hakmem's own
counters. No speed is asserted here (speed lives in bench/)."""
import ctypes.util
import shutil
import json
import os
import re
import subprocess
import sys

import pytest

import hakmem
from hakmem.bench import child, cli, goals, loops as B, plot, programs, records as R
from hakmem.bench import report, runner as BR, threads as T

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
    """``--full``: every workload and table (a few seconds with TINY counts)."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "r.json"
    r = _cli(["bench", "--quick", "--full", "--json", str(out)] + TINY, tmp)
    return r, out


def test_full_run_prints_every_table(quick_run):
    r, _ = quick_run
    assert r.returncode == 0, r.stderr
    for wl in ("fixed16_ws60", "fixed256_ws50", "mixed16-1024_ws256", "xthread64",
               "threads-2:fixed16_ws60", "glibc-simple_n25", "glibc-simple_n1600",
               "xmalloc-test-1", "xmalloc-test-2"):
        assert re.search(rf"^{re.escape(wl)}\s+\d", r.stdout, re.M), wl
    assert "hakmem ÷ baseline" in r.stdout and "per CPU-second" in r.stdout
    assert "Python programs with hakmem installed" in r.stdout and "geomean" in r.stdout
    assert "bytes per live block" in r.stdout and "threads-N" in r.stdout
    assert re.search(r"^goals", r.stdout, re.M)
    assert re.search(r"hakmem vs \S+ on fixed16_ws60: \d+\.\d\dx \(goal ≥ \d", r.stdout)
    assert "n/a" in r.stdout and "hold the GIL" in r.stdout
    assert not re.search(r"issue", r.stdout, re.I)


def test_default_run_fits_a_screen(tmp_path):
    """The default report: main table and ratios, nothing else, no issue numbers."""
    r = _cli(["bench", "--quick", "-q"] + TINY, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) <= 40, r.stdout
    assert max(len(x) for x in lines) <= 132
    assert "hakmem ÷ baseline" in r.stdout and "glibc-simple_n100" in r.stdout
    body = r.stdout.lower()
    for word in ("issue", "goal ≥", "threads-2", "bytes per live block", "per cpu-second",
                 "call path", "python programs", "records"):
        assert word not in body, word
    r2 = _cli(["bench", "--quick", "-q", "--goals", "--workloads", "fixed16_ws60"] + TINY,
              tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert "goals" in r2.stdout and ("hakmem vs pymalloc on fixed16_ws60: " in r2.stdout)


def test_a_workload_named_prints_its_table_without_full(tmp_path):
    r = _cli(["bench", "--quick", "-q", "--workloads", "threads-2,memory"] + TINY, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "threads-N" in r.stdout and "bytes per live block" in r.stdout
    assert "per CPU-second of the running thread" not in r.stdout


def test_help_names_no_missing_file_and_errors_share_a_prefix(tmp_path):
    r = _cli(["bench", "--help"], tmp_path)
    assert r.returncode == 0
    assert "glibc-simple" in r.stdout and "xmalloc-test-N" in r.stdout
    assert "source distribution" in r.stdout          # not a path that is not installed
    for args in (["--workloads", "nope"], ["--ops", "x"]):
        r = _cli(["bench"] + args, tmp_path)
        assert r.stderr.startswith("hakmem bench: error: "), r.stderr


def test_json_has_the_documented_keys(quick_run):
    r, out = quick_run
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["schema"] == BR.SCHEMA
    top = {"schema", "hakmem_version", "build", "python", "platform", "cpu_count", "settings",
           "allocators", "notes", "results", "skipped", "ratios", "scaling",
           "scaling_reference", "memory", "records", "callpath", "goals", "cpu_share",
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
    ring_keys = {"hakmem_vtable", "hakmem_direct", "hakmem_inline", "hakmem_in_module",
                 "libc_vtable", "libc_direct", "hakmem_vtable_over_direct",
                 "libc_vtable_over_direct", "cimport_over_in_module", "inline_over_in_module",
                 "inline_over_mimalloc"}
    assert ring_keys | {"note", "fixed256_ws50"} <= set(cp)
    assert ring_keys <= set(cp["fixed256_ws50"])
    assert res["goals"]
    for g in res["goals"]:
        assert set(g) == {"what", "value", "goal", "met", "value_cpu", "lower_is_better", "text"}
        assert g["met"] == ((g["value"] <= g["goal"]) if g["lower_is_better"]
                            else (g["value"] >= g["goal"]))
    xm = [r for r in res["results"] if r["workload"] == "xmalloc-test-2"]
    assert xm and all(r["threads"] == 4 for r in xm)


def test_docs_name_every_json_key(quick_run):
    """docs/bench.md documents each top-level and per-row key the JSON has."""
    _, out = quick_run
    res = json.loads(out.read_text())
    with open(DOCS) as f:
        doc = f.read()
    keys = set(res)
    for section in ("results", "memory", "records", "goals", "ratios", "scaling",
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
        r = _cli(["bench", "--workloads", "fixed16_ws60,xthread64,threads-2,memory", "--plot",
                  str(tmp_path / "p.png")] + TINY,
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
                lambda: B.run_mixed(a, 256, 5000), lambda: T.run_xthread(a, 64, 5000),
                lambda: T.run_threads(a, 3, 16, 60, 5000 // 3 * 1)):
        a0, f0 = _counts()
        run()
        a1, f1 = _counts()
        assert a1 - a0 == f1 - f0 > 0


def test_threads_and_xthread_lose_no_block():
    """Several threads (GIL released) allocate and free; every block comes back once."""
    a = B.hakmem_allocator()
    live0 = hakmem.stats()["live_blocks"]
    a0, f0 = _counts()
    T.run_threads(a, 4, 16, 60, 20000)
    T.run_xthread(a, 64, 20000)
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
        T.run_threads(B.pymalloc_allocator(), 2, 16, 60, 10)
    with pytest.raises(ValueError, match="GIL"):
        T.run_xthread(B.pymalloc_allocator(), 64, 10)


def test_proof_fails_loudly_when_counts_do_not_match():
    p = BR.CountCheck()
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
        T.run_threads(a, 0, 16, 60, 10)
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
    res = programs.time_in_child(False, ["string_ops"], 1, 1)
    assert set(res) == {"string_ops"} and res["string_ops"]["best"] > 0


# ---- the standard workloads: glibc-simple and xmalloc-test ------------------------
def test_glibc_simple_moves_hakmem_counters_exactly():
    a = B.hakmem_allocator()
    live0 = hakmem.stats()["live_blocks"]
    for n in (25, 100, 400, 1600):
        a0, f0 = _counts()
        B.run_simple(a, n, 7)
        a1, f1 = _counts()
        assert a1 - a0 == f1 - f0 == 7 * n
    assert hakmem.stats()["live_blocks"] == live0
    with pytest.raises(ValueError):
        B.run_simple(a, 0, 1)
    with pytest.raises(ValueError):
        B.run_simple(a, 5000, 1)


def test_glibc_simple_runs_on_every_allocator_and_leaves_hakmem_alone():
    before = _counts()
    for a in (B.libc_allocator(), B.pymalloc_allocator()):
        assert B.run_simple(a, 100, 30) >= 0
    assert _counts() == before


@pytest.mark.parametrize("n", [1, 2, 3])
def test_xmalloc_test_hands_every_block_to_a_freeing_thread(n):
    """N malloc-only threads, N free-only threads (GIL released): every block allocated
    is freed exactly once, none is lost, and most frees are remote."""
    a = B.hakmem_allocator()
    s0 = hakmem.stats()
    T.run_xmalloc(a, n, 64, 30001)          # not a multiple of the batch size
    s1 = hakmem.stats()
    assert s1["allocs"] - s0["allocs"] == n * 30001
    assert s1["frees"] - s0["frees"] == n * 30001
    assert s1["live_blocks"] == s0["live_blocks"]


def test_xmalloc_test_refuses_pymalloc_and_bad_counts():
    with pytest.raises(ValueError, match="GIL"):
        T.run_xmalloc(B.pymalloc_allocator(), 1, 64, 10)
    with pytest.raises(ValueError, match="threads"):
        T.run_xmalloc(B.libc_allocator(), 0, 64, 10)
    assert T.run_xmalloc(B.libc_allocator(), 2, 64, 0) >= 0


def test_runner_checks_the_new_workloads_counts():
    """The runner's exact-count check covers glibc-simple (ops rounded to whole rounds)
    and xmalloc-test (N x ops blocks)."""
    opts = BR.Options(workloads=["glibc-simple_n400", "xmalloc-test-2"], ops=10_000, runs=2,
                      mimalloc=False)
    res = BR.run(opts)
    by = {(r["workload"], r["allocator"]): r for r in res["results"]}
    simple = by[("glibc-simple_n400", "hakmem")]["hakmem_check"]
    assert simple["verified"] and simple["allocs"] == simple["frees"] == 2 * (10_000 // 400 * 400)
    xm = by[("xmalloc-test-2", "hakmem-nomag")]["hakmem_check"]
    assert xm["verified"] and xm["allocs"] == xm["frees"] == 2 * 2 * 10_000
    assert ("xmalloc-test-2", "pymalloc") not in by
    assert by[("glibc-simple_n400", "pymalloc")]["mops"]["median"] > 0


def test_workload_names():
    assert BR.parse_workloads("glibc-simple") == [f"glibc-simple_n{n}" for n in (25, 100, 400, 1600)]
    assert BR.parse_workloads("xmalloc-test-03,glibc-simple_n7") == ["xmalloc-test-3",
                                                                     "glibc-simple_n7"]
    assert set(BR.DEFAULT_WORKLOADS) < set(BR.FULL_WORKLOADS)
    assert "memory" in BR.FULL_WORKLOADS and "memory" not in BR.DEFAULT_WORKLOADS
    for bad in ("xmalloc-test-0", "glibc-simple_n0", "glibc-simple_nx", "xmalloc-test-99"):
        with pytest.raises(BR.BenchError):
            BR.parse_workloads(bad)


# ---- the child helper ---------------------------------------------------------------
def test_child_call_returns_json_and_reports_failures():
    assert child.call("hakmem.bench.records:kinds", what="kinds") == R.kinds()
    with pytest.raises(RuntimeError, match="record test: the child process failed"):
        child.call("hakmem.bench.records:hold_records", "nope", 1, what="record test")
    with pytest.raises(RuntimeError, match="private"):
        child.call("hakmem.bench.records:_has_pool", what="private")


# ---- goals and the plot ---------------------------------------------------------------
def _fake_results():
    allocs = ["hakmem", "hakmem-nomag", "libc", "pymalloc", "mimalloc"]
    rows, ratios = [], []
    for wl, thr in (("fixed16_ws60", 1), ("xthread64", 2), ("glibc-simple_n25", 1)):
        for a in allocs:
            if thr > 1 and a == "pymalloc":
                continue
            m = {"median": 10.0 + len(a), "min": 9.0, "max": 20.0, "runs": [10.0]}
            rows.append({"workload": wl, "allocator": a, "threads": thr, "mops": m,
                         "mops_cpu": m if thr == 1 else None, "ops_per_run": 100,
                         "hakmem_check": None})
            if a != "hakmem":
                ratios.append({"workload": wl, "baseline": a, "ratio": 16.0 / (10.0 + len(a)),
                               "ratio_cpu": None})
    return {"hakmem_version": "0", "cpu_count": 2, "python": "3", "build": {"debug": False},
            "settings": {"runs": 1, "ops": 100}, "elapsed_s": 1.0,
            "allocators": [{"name": a, "note": "", "gil_held": a == "pymalloc"} for a in allocs],
            "notes": [], "results": rows, "ratios": ratios,
            "skipped": [{"workload": "xthread64", "allocator": "pymalloc", "reason": "GIL"}],
            "scaling": [{"workload": "fixed16_ws60", "allocator": a, "threads": 2,
                         "mops": 1.0, "speedup": 1.5} for a in ("hakmem", "libc")],
            "scaling_reference": [{"workload": "fixed16_ws60", "threads": 2, "speedup": 1.9,
                                   "speedups": [1.9]}],
            "memory": [{"allocator": a, "bytes_per_block": 600.0 + i, "mean_request": 520.0,
                        "overhead_bytes": 80.0, "blocks": 10} for i, a in enumerate(allocs)],
            "records": [], "callpath": None, "python_programs": None}


def test_goals_are_comparisons():
    res = _fake_results()
    g = goals.evaluate(res)
    texts = [x["text"] for x in g]
    assert "hakmem vs mimalloc on fixed16_ws60: 0.89x (goal ≥ 1.25x)" in texts
    assert "hakmem vs mimalloc on glibc-simple_n25: 0.89x (goal ≥ 1.00x)" in texts
    mem = [x for x in g if "bytes" in x["what"]][0]
    assert mem["lower_is_better"] and mem["met"] == (mem["value"] <= 1.0)
    res["goals"] = g
    full = report.format_report(res, full=True)
    assert "not met" in full and "n/a" in full
    assert "goals (" not in report.format_report(res)


def test_plot_draws_panels_with_na_cells(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    plot.write_plot(_fake_results(), str(path))
    assert path.stat().st_size > 10_000
    import matplotlib.image
    h, w = matplotlib.image.imread(str(path)).shape[:2]
    assert h > w / 2          # three panels stacked


# ---- static TLS (jemalloc and friends) --------------------------------------------------
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_static_tls_tunable_leaves_room_for_the_library():
    entry = cli.static_tls_tunable([JEMALLOC] if os.path.exists(JEMALLOC) else [])
    name, value = entry.split("=")
    assert name == "glibc.rtld.optional_static_tls" and int(value) % 1024 == 0
    assert int(value) >= 512


@pytest.mark.skipif(not os.path.exists(JEMALLOC), reason="libjemalloc2 not installed")
def test_vs_jemalloc_reexecutes_with_room_for_static_tls(tmp_path):
    # a bare soname, as dlopen takes it, works as well as a path
    r = _cli(["bench", "-q", "--vs", os.path.basename(JEMALLOC), "--workloads", "fixed16_ws60", "--ops", "5000",
              "--runs", "1", "--no-mimalloc"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^fixed16_ws60\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", r.stdout, re.M)
    assert "optional_static_tls" in r.stdout
    # when the user's own setting is too small, say why and what helps
    env_small = dict(os.environ, GLIBC_TUNABLES="glibc.rtld.optional_static_tls=512")
    env_small["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env_small.get("PYTHONPATH", "")] if p)
    r = subprocess.run([sys.executable, "-m", "hakmem", "bench", "--vs", JEMALLOC], env=env_small,
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("hakmem bench: error: ") and len(r.stderr.splitlines()) == 1
    assert "static TLS" in r.stderr and "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=" in r.stderr


# ---- --instructions -----------------------------------------------------------------------
needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None or "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="no valgrind (or running under ASan, which valgrind cannot host)")


@needs_valgrind
def test_instructions_are_deterministic_and_checked():
    """Two callgrind children with the same allocator give the same figures."""
    from hakmem.bench import callgrind
    twins = [BR.Alloc(name, B.hakmem_allocator(name), heap_v2=True, spec="hakmem")
             for name in ("hakmem", "hakmem-again")]
    r = callgrind.instructions(twins, ["fixed16_ws60", "glibc-simple_n25"], ops=(4800, 14400))
    for wl in ("fixed16_ws60", "glibc-simple_n25"):
        assert r["per_op"][wl]["hakmem"] == r["per_op"][wl]["hakmem-again"]
        assert 10 < r["per_op"][wl]["hakmem"] < 1000, r
    out = report.format_instructions(r)
    assert re.search(r"^fixed16_ws60\s+\d+\.\d\s+\d+\.\d$", out, re.M), out
    with pytest.raises(BR.BenchError, match="one-thread"):
        callgrind.instructions(twins, ["xthread64"])


@needs_valgrind
@pytest.mark.slow
def test_instructions_cli(tmp_path):
    out = tmp_path / "i.json"
    r = _cli(["bench", "--instructions", "-q", "--workloads", "fixed16_ws60", "--json", str(out)],
             tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^fixed16_ws60(\s+\d+\.\d){4,}", r.stdout, re.M), r.stdout
    res = json.loads(out.read_text())
    assert set(res["per_op"]["fixed16_ws60"]) == set(res["allocators"])
    with open(DOCS) as f:
        doc = f.read()
    missing = sorted(k for k in res if f"`{k}`" not in doc)
    assert not missing, missing


def test_instructions_without_valgrind_is_one_clear_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH", "")] if p)
    r = subprocess.run([sys.executable, "-m", "hakmem", "bench", "--instructions", "-q"],
                       env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("hakmem bench: error: --instructions needs valgrind")
    assert len(r.stderr.splitlines()) == 1


# ---- tools/pyperf_compare.py (pyperformance under pymalloc vs hakmem) --------------
def _tool(name):
    """tools/<name>.py, loaded as a module (tools/ is not a package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "tools", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pyperf_compare():
    return _tool("pyperf_compare")


def test_pyperf_compare_summary_ratios_and_peak_rss(tmp_path):
    pyperf = pytest.importorskip("pyperf")
    pc = _pyperf_compare()

    def suite(side, times, rss_mib):
        benches = [pyperf.Benchmark([pyperf.Run([t, t * 1.01], metadata={
            "name": name, "loops": 1, "mem_max_rss": rss_mib[name] << 20},
            collect_metadata=False)]) for name, t in times.items()]
        pyperf.BenchmarkSuite(benches).dump(str(tmp_path / (side + ".json")))

    suite("pymalloc", {"fast": 0.002, "slow": 0.001}, {"fast": 100, "slow": 40})
    suite("hakmem", {"fast": 0.001, "slow": 0.00125}, {"fast": 105, "slow": 40})
    rows = {line.split()[0]: line.split() for line in pc.summarize(str(tmp_path)).splitlines()}
    assert rows["fast"][3] == "2.000x" and rows["fast"][4] == "1.050x"
    assert rows["slow"][3] == "0.800x" and rows["slow"][4] == "1.000x"
    assert rows["geometric"][2:4] == ["1.265x", "1.025x"]   # sqrt(2.0 * 0.8), sqrt(1.05)
    assert "slowest: 0.800x; largest peak RSS: 1.050x" in pc.summarize(str(tmp_path))


def test_pyperf_compare_refuses_unknown_benchmarks(capsys):
    pytest.importorskip("pyperformance")
    pc = _pyperf_compare()
    with pytest.raises(SystemExit):
        pc.main(["-b", "json_dumps,no_such_benchmark"])
    assert "no_such_benchmark" in capsys.readouterr().err


def test_alloc_share_counts_allocator_samples():
    """pymalloc's and hakmem's functions are the small-object allocator; glibc's malloc
    family joins them in the whole allocator; the rest of the program (the kernel,
    look-alike names) is neither."""
    pytest.importorskip("pyperf")
    tool = _tool("alloc_share")
    report = ("# Samples: 1K of event 'cpu-clock'\n"
              "#\n"
              "   600  [.] _PyEval_EvalFrameDefault\n"
              "   100  [.] _PyObject_Malloc\n"
              "    50  [.] _PyObject_Free\n"
              "    20  [.] _int_malloc\n"
              "    10  [.] free\n"
              "    40  [.] __pyx_f_6hakmem_7pyalloc__hook_malloc\n"
              "    30  [k] exc_page_fault\n"
              "    50  [.] list_dealloc\n"
              "   100  [.] malloc_look_alike_not_ours\n")
    samples = tool.parse_report(report)
    assert samples["_PyObject_Malloc"] == 100 and samples["exc_page_fault"] == 30
    assert tool.share(samples) == (190, 220, 1000)


def test_python_programs_compare_reports_speed_and_peak_rss():
    res = programs.compare(["gc_cycles"], scale=1, repeat=1, rounds=1)
    r = res["gc_cycles"]
    assert set(r) == {"pymalloc", "hakmem", "ratio", "pymalloc_rss_mib", "hakmem_rss_mib",
                      "rss_ratio"}
    assert r["ratio"] == pytest.approx(r["pymalloc"] / r["hakmem"])
    assert r["rss_ratio"] == pytest.approx(r["hakmem_rss_mib"] / r["pymalloc_rss_mib"])
    assert r["pymalloc_rss_mib"] > 5 and r["hakmem_rss_mib"] > 5      # MiB (not KiB or bytes)
    table = programs.format_compare(res)
    assert "peak RSS" in table and table.splitlines()[-2].startswith("geomean")


def test_python_programs_pymalloc_side_never_imports_hakmem():
    import subprocess as sp
    code = ("import runpy, sys; sys.argv = ['programs.py', '--repeat', '1', 'string_ops']; "
            f"runpy.run_path({programs.__file__!r}, run_name='__main__'); "
            "assert 'hakmem' not in sys.modules, sorted(m for m in sys.modules if 'hakmem' in m)")
    r = sp.run([sys.executable, "-c", code], capture_output=True, text=True,
               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]


# ---- tools/hook_instructions.py (callgrind: the hook against pymalloc, per call) -----
def _hook_instructions():
    return _tool("hook_instructions")


def test_hook_instructions_parses_callgrind_self_costs_and_calls(tmp_path):
    """Self cost lines count for their function; the line after calls= is a call's
    inclusive cost and does not; names given once are reused by id."""
    hi = _hook_instructions()
    f = tmp_path / "cg.out"
    f.write_text("events: Ir\n"
                 "fn=(1) main\n"
                 "10 100\n"
                 "cfn=(2) __pyx_f_6hakmem_7pyalloc__hook_malloc\n"
                 "calls=4 0\n"
                 "11 80\n"
                 "+1 5\n"
                 "cfn=(2)\n"
                 "calls=1 0\n"
                 "12 20\n"
                 "fn=(2)\n"
                 "0 76\n"
                 "cfn=(3) __pyx_f_6hakmem_7pyalloc__hook_malloc_slow\n"
                 "calls=1 0\n"
                 "5 24\n"
                 "fn=(3)\n"
                 "0 24\n"
                 "totals: 205\n")
    prof = hi.parse(str(f))
    ir, calls, total = prof
    assert ir["main"] == 105 and ir["__pyx_f_6hakmem_7pyalloc__hook_malloc"] == 76
    assert calls["__pyx_f_6hakmem_7pyalloc__hook_malloc"] == 5 and total == 205
    row = hi.per_call(prof, hi.HAKMEM)["malloc"]
    assert row == (5, (76 + 24) / 5)         # the slow path's own cost counts in its row


@needs_valgrind
def test_hook_instructions_runs_both_allocators(capsys):
    hi = _hook_instructions()
    assert hi.main(["--rounds", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out if line.startswith(("pymalloc", "hakmem"))}
    for name in ("pymalloc", "hakmem"):
        r = rows[name][-5:]          # mallocs, instr, frees, instr, program total
        assert int(r[0]) > 10_000 and int(r[2]) > 10_000
        assert 5 < float(r[1]) < 200 and 5 < float(r[3]) < 200
