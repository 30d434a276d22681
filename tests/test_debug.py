"""The HAKMEM_DEBUG=1 build: misuse through the raw C API aborts with a message
naming the pointer and its class (each case runs in a subprocess).

Skipped on release builds, where the same calls are undefined behaviour. The
checked Python API must never abort, in either build (last tests).
"""
import ctypes
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

import hakmem
import hakmem_testing as _testing

DEBUG = hakmem.build_info()["debug"]
needs_debug = pytest.mark.skipif(not DEBUG, reason="needs a HAKMEM_DEBUG=1 build")
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hakmem.__file__)))


def _run(body, tmp_path):
    """Run `body` in a fresh interpreter that imports this same hakmem build."""
    code = textwrap.dedent("""
        import ctypes, sys, threading
        import hakmem
        import hakmem_testing as T
        def show(a):
            print(hex(a), flush=True)
    """) + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def _aborted(proc, what, cls=None, size=None):
    """The child died of SIGABRT after printing `what` about the pointer it showed."""
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stdout, proc.stderr)
    addr = proc.stdout.split()[-1]
    m = re.search(r"hakmem: (.+?): (?:block|pointer) (0x[0-9a-f]+)(?: \(class (\d+), (\d+) bytes\))?",
                  proc.stderr)
    assert m, proc.stderr
    assert m.group(1) == what, proc.stderr
    assert int(m.group(2), 16) == int(addr, 16), (addr, proc.stderr)
    if cls is not None:
        assert (int(m.group(3)), int(m.group(4))) == (cls, size), proc.stderr


CASES = {
    # name: (code, message, class, class size)
    "double_free": ("""
        a = T.raw_malloc(48); show(a)
        T.raw_free(a); T.raw_free(a)
        """, "double free", 2, 48),
    "double_free_remote": ("""
        a = T.raw_malloc(100); show(a)
        t = threading.Thread(target=T.raw_free, args=(a,)); t.start(); t.join()
        T.raw_free(a)
        """, "double free", 6, 112),
    "double_free_after_flush": ("""
        a = T.raw_malloc(300); show(a)
        keep = T.raw_malloc(300)          # keeps the slab active after the flush
        T.raw_free(a); T.raw_thread_flush()
        T.raw_free(a)
        """, "double free", 12, 320),
    "interior_free": ("""
        a = T.raw_malloc(64) + 16; show(a)
        T.raw_free(a)
        """, "free of an interior pointer", 3, 64),
    "foreign_free": ("""
        buf = ctypes.create_string_buffer(64); a = ctypes.addressof(buf); show(a)
        T.raw_free(a)
        """, "free of a pointer hakmem does not own", None, None),
    "overflow_into_canary": ("""
        a = T.raw_malloc(40); show(a)      # class 2: 48 usable bytes
        ctypes.memset(a, 0x41, 49)
        T.raw_free(a)
        """, "buffer overflow (canary overwritten)", 2, 48),
    "overflow_large_class": ("""
        a = T.raw_malloc(1000); show(a)
        ctypes.memset(a + 1024, 0, 1)
        t = threading.Thread(target=T.raw_free, args=(a,)); t.start(); t.join()
        """, "buffer overflow (canary overwritten)", 19, 1024),
    "write_after_free_poison": ("""
        a = T.raw_malloc(48); show(a)
        T.raw_free(a)
        ctypes.memset(a + 20, 0x41, 1)
        T.raw_malloc(48)
        """, "write after free (poison overwritten)", 2, 48),
    "write_after_free_remote": ("""
        a = T.raw_malloc(100); show(a)
        t = threading.Thread(target=T.raw_free, args=(a,)); t.start(); t.join()
        ctypes.memset(a + 100, 0x41, 4)
        for _ in range(2000): T.raw_malloc(100)
        """, "write after free (poison overwritten)", 6, 112),
    "write_after_free_magazine_word0": ("""
        a = T.raw_malloc(32); show(a)      # class 1: the free goes into the magazine
        T.raw_free(a)
        ctypes.memset(a, 0x41, 1)
        T.raw_malloc(32)
        """, "write after free (poison overwritten)", 1, 32),
    "write_after_free_tag_16": ("""
        a = T.raw_malloc(16); show(a)      # no poisoned bytes in a 16-byte block
        T.raw_free(a)
        ctypes.memset(a + 8, 0x41, 8)
        T.raw_malloc(16)
        """, "write after free (free tag overwritten)", 0, 16),
    "write_after_free_link": ("""
        hakmem.configure(mag_classes=4)    # class 12 outside the magazine: a free goes
        a = T.raw_malloc(300); show(a)     # straight back onto its slab's list; a later
        T.raw_free(a)                      # refill takes that list whole, and popping a
        ctypes.memset(a, 0x41, 8)          # finds its link overwritten
        for _ in range(100): T.raw_malloc(300)
        """, "write after free (free-list link overwritten)", 12, 320),
    "write_after_free_link_in_slab": ("""
        keep = T.raw_malloc(300)
        a = T.raw_malloc(300); show(a)
        T.raw_free(a); T.raw_thread_flush()     # a is now on its slab's free list
        ctypes.memset(a, 0x41, 8)
        for _ in range(400): T.raw_malloc(300)
        """, "write after free (free-list link overwritten)", 12, 320),
}


@needs_debug
@pytest.mark.parametrize("case", sorted(CASES))
def test_debug_build_aborts_with_message(case, tmp_path):
    code, what, cls, size = CASES[case]
    _aborted(_run(code, tmp_path), what, cls, size)


@needs_debug
def test_canaries_and_poison_survive_trim_and_reuse():
    """Slabs decommitted by trim() and reformatted for another class get fresh
    canaries; blocks written to their last byte free cleanly (no false report)."""
    pin = _testing.raw_malloc(16)          # keeps the region mapped, so slabs decommit
    try:
        for n in (300, 200, 1000, 48, 300):
            blocks = [_testing.raw_malloc(n) for _ in range(3000)]
            for a in blocks:
                ctypes.memset(a, 0x5A, hakmem.usable_size(a))
            for a in blocks:
                _testing.raw_free(a)
            hakmem.trim()
        assert hakmem.stats()["slabs_decommitted"] > 0
    finally:
        _testing.raw_free(pin)


def test_checked_api_never_aborts():
    """The Python API checks first: the same misuse is a ValueError in every build."""
    a = hakmem.malloc(48)
    hakmem.free(a)
    with pytest.raises(ValueError, match="double free"):
        hakmem.free(a)
    b = hakmem.malloc(64)
    with pytest.raises(ValueError, match="inside a hakmem block"):
        hakmem.free(b + 16)
    buf = ctypes.create_string_buffer(64)
    with pytest.raises(ValueError, match="not a block allocated by hakmem"):
        hakmem.free(ctypes.addressof(buf))
    hakmem.free(b)


def test_build_info_reports_debug_layout():
    info = hakmem.build_info()
    assert info["canary"] == (16 if info["debug"] else 0)


@needs_debug
def test_debug_build_catches_a_heap_used_from_another_thread(hakdown, tmp_path):
    """The inline API: a heap is one thread's; the debug build aborts on misuse."""
    where = os.path.dirname(hakdown.__file__)
    body = f"""
        sys.path.insert(0, {where!r})
        import hakdown
        show(hakdown.heap_grab())
        t = threading.Thread(target=hakdown.heap_use_shared, args=(32,)); t.start(); t.join()
    """
    _aborted(_run(body, tmp_path), "heap used from another thread (or after its thread exited)")
