"""Fuzzing: tools/fuzz.py's model-checked sections, driven two ways.

- hypothesis state machines (one per section, in process): each step picks an
  operation and the seed of its arguments, so a failure shrinks to a short list
  of calls;
- a short random run of tools/fuzz.py in a subprocess, where an interpreter crash
  shows up as a signal instead of killing pytest (the long run: ``tools/fuzz.py
  --calls 1000000``, or the ``slow`` test below).
"""
import importlib.util
import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import hakmem

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, os.pardir, "tools", "fuzz.py")
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hakmem.__file__)))

_spec = importlib.util.spec_from_file_location("hakmem_fuzz", FUZZ)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


def _machine(section_cls):
    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.sec = section_cls(random.Random(0))

        @rule(name=st.sampled_from(sorted(section_cls.OPS)), seed=st.integers(0, 2**32 - 1))
        def call(self, name, seed):
            self.sec.rng.seed(seed)
            self.sec.step(name)

        @invariant()
        def model_holds(self):
            self.sec.check()

        def teardown(self):
            self.sec.close()

    Machine.__name__ = f"{section_cls.__name__}Machine"
    Machine.TestCase.settings = settings(max_examples=int(os.environ.get("HAKMEM_FUZZ_EXAMPLES", "40")),
                                         stateful_step_count=60, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
    return Machine


for _name, _cls in fuzz.SECTIONS.items():
    globals()[f"Test{_cls.__name__}"] = _machine(_cls).TestCase


def _run_fuzz(calls, seed):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, FUZZ, "--calls", str(calls), "--seed", str(seed),
                           "--quiet"], env=env, capture_output=True, text=True, timeout=1800)


def test_fuzz_short_run_in_subprocess():
    """Every section, 10,000 calls each, one child process per section."""
    proc = _run_fuzz(10_000 * len(fuzz.SECTIONS), 12345)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in fuzz.SECTIONS:
        assert f"10000 calls survived (seed 12345, sections {name}," in proc.stdout
    assert f"{10_000 * len(fuzz.SECTIONS)} calls survived in all" in proc.stdout


def test_fuzz_pool_model_catches_a_lost_free(monkeypatch):
    """The pool section's model check can fail too: a free the model does not record."""
    class Broken(fuzz.PoolSection):
        def op_free(self):
            h = self._pick()
            if h is not None:
                self.pool.free(h)               # freed, but the model still has it
    monkeypatch.setitem(fuzz.SECTIONS, "broken", Broken)
    with pytest.raises(fuzz.ModelError):
        fuzz.run(2000, 1, ["broken"])


def test_fuzz_vector_model_catches_a_lost_write(monkeypatch):
    """... and the vector's: a write through the export that the model misses."""
    class Broken(fuzz.VectorSection):
        def op_setitem(self):
            if self.model:
                self.v[0] = (1, 2.0, 3, b"zz") if self.model[0] != (1, 2.0, 3, b"zz") \
                    else (4, 5.0, 6, b"yy")
    monkeypatch.setitem(fuzz.SECTIONS, "broken", Broken)
    with pytest.raises(fuzz.ModelError):
        fuzz.run(2000, 1, ["broken"])


def test_fuzz_reports_model_mismatch(monkeypatch):
    """The harness can fail: a section whose model disagrees is caught."""
    class Broken(fuzz.BlockSection):
        def op_free(self):
            a = self._pick_live()
            if a is not None:
                hakmem.free(a)                  # freed, but the model still has it
    monkeypatch.setitem(fuzz.SECTIONS, "broken", Broken)
    with pytest.raises(fuzz.ModelError):
        fuzz.run(5000, 1, ["broken"])
    hakmem.trim()


@pytest.mark.slow
def test_fuzz_long_run():
    proc = _run_fuzz(1_000_000, 2026)
    assert proc.returncode == 0, proc.stdout + proc.stderr
