"""Out of memory: the C API returns NULL, the Python API raises MemoryError, nothing
held is damaged, and the allocator works again once memory is available.

Two ways to run out: the backend's map-limit test hook (in process), and a real
RLIMIT_AS on the address space (in a subprocess, so the limit cannot hurt pytest).
"""
import ctypes
import json
import os
import subprocess
import sys
import textwrap

import pytest

import hakmem
import hakmem_testing as _testing
from hakmem import slab

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hakmem.__file__)))


@pytest.fixture
def map_limit():
    """Refuse any new region from now on; lifted (and memory trimmed) afterwards."""
    hakmem.trim()
    pin = hakmem.malloc(16)            # one region mapped: its free slabs are all there is
    slab._set_map_limit(hakmem.stats()["bytes_mapped"])
    yield
    slab._set_map_limit(0)
    hakmem.free(pin)
    hakmem.trim()


def test_map_limit_tiny_path(map_limit):
    fails = hakmem.stats()["mmap_failures"]
    hoard = _testing.Hoard(1_000_000)
    got, null = hoard.fill(1024)
    assert null and got > 0, "the C API never returned NULL"
    assert hakmem.stats()["mmap_failures"] > fails
    # C API: NULL (0), again and again; Python API: MemoryError, for every entry point.
    assert _testing.raw_malloc(1024) == 0
    assert _testing.raw_calloc(1, 1000) == 0
    with pytest.raises(MemoryError):
        hakmem.malloc(1000)
    with pytest.raises(MemoryError):
        hakmem.calloc(10, 100)
    # A live block that cannot grow stays live and unchanged.
    assert got > 0 and hoard.pop() != 0
    small = hakmem.malloc(1000)                       # reuses the block just freed
    ctypes.memset(small, 0x77, 1000)
    # a 16-byte class has room only if its slab had free blocks; exhaust it too
    got16, null16 = hoard.fill(16)
    assert null16
    with pytest.raises(MemoryError):
        hakmem.realloc(small, 16)                     # needs a new 16-byte block
    assert hakmem.is_live(small)
    assert ctypes.string_at(small, 1000) == b"\x77" * 1000
    # Freed memory is usable again while the limit still holds.
    hoard.pop()
    a = hakmem.malloc(16)
    hakmem.free(a)
    # Lift the limit: every class works again.
    slab._set_map_limit(0)
    blocks = [hakmem.malloc(n) for n in range(0, 1025, 8) for _ in range(20)]
    for b in blocks:
        hakmem.free(b)
    hakmem.free(small)
    assert hoard.release() == got + got16 - 2
    st = hakmem.stats()
    assert st["allocs"] == st["frees"] + st["live_blocks"]


def test_map_limit_other_threads(map_limit):
    """Threads that start while memory is exhausted get NULL, not a crash, and the
    stress workload counts them as out-of-memory and stays consistent."""
    hoard = _testing.Hoard(1_000_000)
    for n in (16, 64, 128, 256, 512, 1024):
        hoard.fill(n)
    res = _testing.stress(threads=4, ops=2000, seed=2, large_permille=0)
    assert res["oom"] > 0
    assert res["errors"] == 0 and res["sum_alloc"] == res["sum_free"]
    hoard.release()


RLIMIT_CHILD = """
import json, resource, sys
import hakmem
import hakmem_testing as T

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

out = {}
# The block API loads on first use: load it while the address space still has room
# (what is tested below is the allocator running out, not an import doing so).
hakmem.malloc, hakmem.calloc, hakmem.free, hakmem.stats
tiny = T.Hoard(2_000_000)
large = T.Hoard(100_000)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 48 * 2**20, hard))
try:
    out["tiny"] = tiny.fill(512)           # until hak_malloc returns NULL
    out["large"] = large.fill(200_000)     # until the system malloc does
    out["c_null"] = T.raw_malloc(512) == 0 and T.raw_malloc(300_000) == 0
    errs = []
    for fn, args in ((hakmem.malloc, (512,)), (hakmem.malloc, (300_000,)),
                     (hakmem.calloc, (512, 1))):
        try:
            fn(*args)
            errs.append("no error")
        except MemoryError:
            errs.append("MemoryError")
    out["py"] = errs
finally:
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
# Memory is available again: all sizes work, everything frees.
blocks = [hakmem.malloc(n) for n in (16, 512, 1024, 5000, 300_000) for _ in range(200)]
for b in blocks:
    hakmem.free(b)
out["released"] = tiny.release() + large.release()
out["after"] = T.stress(threads=4, ops=20_000, seed=4)["errors"]
st = hakmem.stats()
out["balanced"] = st["live_blocks"] == 0 and st["large_live_blocks"] == 0
out["mmap_failures"] = st["mmap_failures"]
print(json.dumps(out))
"""


def test_rlimit_as_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RLIMIT_CHILD)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    n_tiny, tiny_null = out["tiny"]
    n_large, large_null = out["large"]
    assert tiny_null and n_tiny > 0
    assert large_null
    assert out["c_null"]
    assert out["py"] == ["MemoryError"] * 3
    assert out["mmap_failures"] > 0
    assert out["released"] == n_tiny + n_large
    assert out["after"] == 0 and out["balanced"]
