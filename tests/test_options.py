"""Environment switches and the command line: one-line errors, warnings for switches
that would be ignored, ``--version``, and the message for an unbuilt source checkout."""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import hakmem
from hakmem import options

PKG_DIR = os.path.dirname(os.path.abspath(hakmem.__file__))


def run(args, env=(), cwd=None):
    """Run the interpreter with args outside the source tree; env adds variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HAKMEM_")}
    full["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(PKG_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    full.update(env)
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, env=full,
                          cwd=cwd or tempfile.gettempdir(), timeout=120)


def test_unknown_switch_suggests_the_known_one():
    assert options.unknown({"HAKMEM_TINY_MAGCAP": "3", "HAKMEM_STATS": "1", "PATH": "/"}) == [
        ("HAKMEM_TINY_MAGCAP", "HAKMEM_TINY_MAG_CAP")]
    assert options.unknown({"HAKMEM_QQQQ": "1"}) == [("HAKMEM_QQQQ", None)]
    # build and test switches are known names too
    assert options.unknown({"HAKMEM_DEBUG": "1", "HAKMEM_STRESS_SCALE": "2"}) == []


def test_unknown_switch_warns_once_at_import():
    r = run(["-c", "import hakmem"],
            {"HAKMEM_TINY_MAGCAP": "3"})
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("ConfigWarning") == 1, r.stderr
    assert "HAKMEM_TINY_MAGCAP; did you mean HAKMEM_TINY_MAG_CAP?" in r.stderr
    assert r.stderr.startswith("<string>:1: ConfigWarning"), r.stderr   # points at the importer


def test_warnings_can_be_turned_into_errors():
    r = run(["-W", "error:hakmem:", "-c", "import hakmem"], {"HAKMEM_STAT": "1"})
    assert r.returncode != 0 and "did you mean HAKMEM_STATS?" in r.stderr


@pytest.mark.skipif(hakmem.build_info()["debug"], reason="a debug build uses HAKMEM_DEBUG")
def test_debug_switch_at_run_time_warns_on_a_release_build():
    r = run(["-c", "import hakmem"], {"HAKMEM_DEBUG": "1"})
    assert r.returncode == 0, r.stderr
    assert "HAKMEM_DEBUG=1 has no effect at run time" in r.stderr


def test_no_warning_for_known_switches():
    r = run(["-c", "import hakmem"], {"HAKMEM_STATS": "0", "HAKMEM_SANITIZE": "",
                                      "HAKMEM_STRESS_SCALE": "1"})
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("args", [["-m", "hakmem", "bench", "--quick"], ["-m", "hakmem", "run", "-c", "1"],
                                  ["-X", "utf8", "-m", "hakmem"], ["-mhakmem", "--version"]])
def test_bad_switch_on_the_command_line_is_one_line(args):
    r = run(args, {"HAKMEM_TINY_MAG_CAP": "abc"})
    assert r.returncode == 2
    assert r.stderr == "hakmem: error: HAKMEM_TINY_MAG_CAP='abc': not an integer\n"


def test_bad_switch_on_import_raises_config_error():
    r = run(["-c", "import hakmem"], {"HAKMEM_TINY_MAG_CAP": "abc"})
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "hakmem.options.ConfigError: HAKMEM_TINY_MAG_CAP='abc': not an integer")
    code = ("try:\n    import hakmem\nexcept ValueError as e:\n"
            "    print(type(e).__name__, isinstance(e, __import__('sys').modules['hakmem.options'].ConfigError), e)")
    r = run(["-c", code], {"HAKMEM_TINY_MAG_CAP": "abc"})
    assert r.stdout.startswith("ConfigError True HAKMEM_TINY_MAG_CAP"), r.stderr


def test_version():
    r = run(["-m", "hakmem", "--version"])
    assert r.returncode == 0, r.stderr
    flavour = "debug" if hakmem.build_info()["debug"] else "release"
    assert r.stdout.startswith(f"hakmem {hakmem.__version__} ({flavour} build, ")


def test_console_script_version():
    script = shutil.which("hakmem", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the hakmem script is not installed next to this interpreter")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, cwd=tempfile.gettempdir())
    assert r.returncode == 0 and r.stdout.startswith("hakmem "), r.stderr
    r = subprocess.run([script, "--version"], capture_output=True, text=True, cwd=tempfile.gettempdir(),
                       env=dict(os.environ, HAKMEM_STATS="maybe"))
    assert r.returncode == 2 and r.stderr.startswith("hakmem: error: HAKMEM_STATS='maybe'")


def test_unbuilt_source_checkout_says_what_to_do(tmp_path):
    """A hakmem/ directory with sources only (a checkout, never built) shadows the
    installed package when Python runs from its parent: say so, with the remedy."""
    shutil.copytree(PKG_DIR, tmp_path / "hakmem",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for args in (["-c", "import hakmem"], ["-m", "hakmem", "bench"]):
        r = subprocess.run([sys.executable] + args, capture_output=True, text=True, env=env,
                           cwd=tmp_path)
        assert r.returncode == 1
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError: hakmem is being imported from"), r.stderr
        assert "python setup.py build_ext --inplace" in last and "another directory" in last
