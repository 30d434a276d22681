#!/usr/bin/env python3
"""Model-checked fuzzing of hakmem's Python API with random, partly invalid calls.

    python tools/fuzz.py --calls 1000000 [--seed N] [--section block ...]

The run happens in a child process (``--worker``), so a crash of the interpreter
(SIGSEGV, abort) is reported with its signal and the seed to replay, instead of
taking the driver down. Each *section* covers one API and keeps a model of what
the API must hold; every call's outcome is checked against it:

- ``block``: malloc / calloc / realloc / free / usable_size / is_live, fed live
  blocks, freed addresses, interior pointers, foreign ints, huge and negative
  sizes, None, floats and bools. Block contents are checked after every move.
- ``pool``: RecordPool("x:f8 n:i4 b:u1 s:S4") against a dict handle -> values:
  alloc (positional, keywords, numpy scalars; out-of-range, wrong-type and unknown
  fields), free / del of live, stale, foreign, flipped-bit, negative and non-int
  handles, get / set / update, ``pool[h]`` views (also after their record died),
  alloc_many / free_many (one bad or repeated handle: nothing freed), gather /
  scatter, clear, trim, iteration / handles() / column(), pickling, closed pools.
- ``vector``, ``deque``, ``map``: RecordVector, RecordDeque (maxlen sometimes) and
  RecordMap (key i4) on "id:i8 x:f8 a:i1 s:S3" against list, collections.deque
  and dict: every mutator with valid and invalid records (wrong count, type,
  range, unknown field), bad indices and keys, pops from empty, all-or-nothing
  extend / update / set_many, views that outlive their record, pickling / copy,
  and for the vector buffer exports (an alive ``np.asarray`` / ``as_array()``
  view: growth, reserve, shrink_to_fit and close raise BufferError, the contents
  still match, writes through the view reach the vector).

- ``reentry``: values, indices and array-likes whose conversions append to, clear,
  pop from, export or close a container (the one being written or another) at
  random, against every method of the containers, record views and the pool;
  every call completes or raises a clear error, and every container reads back
  whole afterwards (no record that was never written).

The record and container sections check the whole model after every call; the
block section's full check (hakmem's live counts) is an operation of its own.
The driver runs each section in its own child process with an equal share of
``--calls``: the block model is hakmem's process-wide live count, which records
and containers in the same process would move.

More sections plug in as classes with ``__init__(rng)``, ``OPS`` (name -> weight),
one ``op_<name>(self)`` method per entry, ``check()`` and ``close()``, added to
``SECTIONS``. tests/test_fuzz.py drives every section with hypothesis
(``step(name)``) and runs a short random run through this script.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np

import hakmem

TINY_MAX = hakmem.build_info()["tiny_max"]
U64 = 1 << 64


class ModelError(AssertionError):
    """The API did something its model says it must not."""


def _expect(exc, fn, *args):
    """Call fn(*args); it must raise exactly ``exc`` (a type or tuple)."""
    try:
        fn(*args)
    except exc:
        return
    except BaseException as e:  # noqa: BLE001 - anything else is a finding
        raise ModelError(f"{fn.__name__}{args!r} raised {type(e).__name__}: {e}; "
                         f"expected {exc}") from e
    raise ModelError(f"{fn.__name__}{args!r} did not raise; expected {exc}")


class BlockSection:
    """hakmem.malloc/calloc/realloc/free/usable_size/is_live against a model.

    Model: ``live`` maps address -> (requested size, fill byte); ``dead`` holds
    addresses freed and not handed out again. In this process only this section
    allocates from hakmem, so hakmem's live set must equal ``live`` exactly.
    """

    name = "block"
    OPS = {"malloc": 20, "calloc": 5, "realloc": 10, "free": 20, "usable_size": 5,
           "is_live": 8, "free_invalid": 12, "realloc_invalid": 5, "bad_args": 5,
           "huge": 3, "check": 1}
    MAX_LIVE = 300

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.live: dict[int, tuple[int, int]] = {}
        self.dead: list[int] = []
        self.calls = 0
        # Addresses that are certainly not hakmem blocks: Python objects and a
        # libc buffer (freeing one through hakmem must not touch libc's heap).
        self._keep = ctypes.create_string_buffer(4096)
        self.libc = ctypes.CDLL(None)
        self.libc.malloc.restype = ctypes.c_void_p
        self.libc.free.argtypes = [ctypes.c_void_p]
        self._libc_block = self.libc.malloc(64)
        st = hakmem.stats()
        self.base_tiny = st["live_blocks"]
        self.base_large = st["large_live_blocks"]

    # ---- helpers --------------------------------------------------------------
    def _size(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randint(0, 128)
        if r < 0.92:
            return self.rng.randint(0, TINY_MAX)
        return self.rng.randint(TINY_MAX + 1, 70000)

    def _fill(self, addr: int, size: int) -> None:
        b = self.rng.randrange(256)
        ctypes.memset(addr, b, size)
        self.live[addr] = (size, b)

    def _verify(self, addr: int, upto: int | None = None) -> None:
        size, b = self.live[addr]
        n = size if upto is None else min(size, upto)
        if n and ctypes.string_at(addr, n) != bytes([b]) * n:
            raise ModelError(f"block {addr:#x} ({size} bytes) lost its contents")

    def _new(self, addr: int, size: int) -> None:
        if addr in self.live:
            raise ModelError(f"{addr:#x} handed out twice")
        if addr % 16:
            raise ModelError(f"{addr:#x} is not 16-byte aligned")
        if hakmem.usable_size(addr) < size:
            raise ModelError(f"{addr:#x}: usable_size below the requested {size}")
        self._fill(addr, size)

    def _pick_live(self) -> int | None:
        if not self.live:
            return None
        return list(self.live)[self.rng.randrange(len(self.live))]

    def _invalid_addr(self) -> int:
        """An int that is not a live block: dead, interior, header, foreign, random."""
        rng = self.rng
        k = rng.randrange(7)
        if k == 0 and self.dead:
            a = rng.choice(self.dead)
        elif k == 1 and self.live:
            a = self._pick_live()
            a += rng.randint(1, max(1, self.live[a][0] + 32))
        elif k == 2 and self.live:
            a = self._pick_live() & ~((1 << 22) - 1)          # a region header
            a += rng.choice((0, 8, 64, 1 << 16, (1 << 22) - 16))
        elif k == 3:
            a = rng.choice((id(self), id(self.live), ctypes.addressof(self._keep),
                            self._libc_block, 16, 4096))
        elif k == 4:
            a = rng.randrange(1 << 48) & ~15
        elif k == 5:
            a = rng.randrange(U64)
        else:
            a = rng.choice((1, 8, 16, (1 << 48) - 16))
        return a if a not in self.live else a + 1   # (a live + 1 is interior: invalid)

    # ---- operations -----------------------------------------------------------
    def op_malloc(self) -> None:
        if len(self.live) >= self.MAX_LIVE:
            return self.op_free()
        size = self._size()
        addr = hakmem.malloc(size)
        self._new(addr, size)

    def op_calloc(self) -> None:
        if len(self.live) >= self.MAX_LIVE:
            return self.op_free()
        n = self.rng.randint(0, 40)
        m = self.rng.randint(0, 40) if self.rng.random() < 0.8 else self.rng.randint(0, 3000)
        addr = hakmem.calloc(n, m)
        if n * m and ctypes.string_at(addr, n * m) != bytes(n * m):
            raise ModelError(f"calloc({n}, {m}) at {addr:#x} is not zeroed")
        self._new(addr, n * m)

    def op_realloc(self) -> None:
        a = self._pick_live()
        if a is None or self.rng.random() < 0.05:
            size = self._size()
            return self._new(hakmem.realloc(0, size), size)
        old, b = self.live[a]
        self._verify(a)
        size = self._size()
        q = hakmem.realloc(a, size)
        del self.live[a]
        if q != a:
            self.dead.append(a)
            if hakmem.is_live(a):
                raise ModelError(f"realloc moved {a:#x} to {q:#x} but the old block is live")
        n = min(old, size)
        if n and ctypes.string_at(q, n) != bytes([b]) * n:
            raise ModelError(f"realloc({a:#x}, {size}) -> {q:#x} lost the first {n} bytes")
        self._new(q, size)

    def op_free(self) -> None:
        a = self._pick_live()
        if a is None:
            return self.op_malloc()
        self._verify(a)
        hakmem.free(a)
        del self.live[a]
        self.dead.append(a)
        if len(self.dead) > 1000:
            del self.dead[:500]
        if hakmem.is_live(a):
            raise ModelError(f"{a:#x} still live after free")

    def op_usable_size(self) -> None:
        a = self._pick_live()
        if a is None:
            return _expect(ValueError, hakmem.usable_size, self._invalid_addr())
        n = hakmem.usable_size(a)
        size = self.live[a][0]
        if n < size or (size <= TINY_MAX and n > TINY_MAX):
            raise ModelError(f"usable_size({a:#x}) = {n} for a {size}-byte request")

    def op_is_live(self) -> None:
        if self.live and self.rng.random() < 0.5:
            a = self._pick_live()
            if not hakmem.is_live(a):
                raise ModelError(f"live block {a:#x} reported not live")
        else:
            a = self._invalid_addr()
            if 0 <= a < U64 and hakmem.is_live(a):
                raise ModelError(f"{a:#x} reported live but the model has no such block")

    def op_free_invalid(self) -> None:
        a = self._invalid_addr()
        _expect(ValueError, hakmem.free, a)

    def op_realloc_invalid(self) -> None:
        a = self._invalid_addr()
        _expect(ValueError, hakmem.realloc, a, self._size())

    def op_bad_args(self) -> None:
        rng = self.rng
        live = self._pick_live()
        k = rng.randrange(11)
        if k == 9:
            hakmem.free(0)                       # free(NULL): a no-op, as in C
        elif k == 0:
            _expect(ValueError, hakmem.malloc, -rng.randint(1, 1 << 70))   # negative
        elif k == 8:
            _expect(OverflowError, hakmem.malloc, rng.randint(U64, 1 << 70))  # past size_t
        elif k == 1:
            _expect(TypeError, hakmem.malloc, rng.choice((None, 1.5, "8", b"8")))
        elif k == 2:
            _expect(TypeError, hakmem.free, rng.choice((None, 1.0, "x", True, [live])))
        elif k == 3:
            bad = rng.choice((-1, -(1 << 70), U64, U64 + 16))
            _expect(ValueError if bad < 0 else OverflowError, hakmem.free, bad)
        elif k == 4:
            _expect((TypeError, ValueError), hakmem.calloc, rng.choice((None, -1, 2.0)), 8)
        elif k == 5:
            _expect(TypeError, hakmem.realloc, rng.choice((None, 1.5, False)), 8)
        elif k == 6 and live is not None:
            _expect((TypeError, ValueError), hakmem.realloc, live,
                    rng.choice((None, -5, 3.5)))
            self._verify(live)
        elif k == 7:
            _expect((TypeError, ValueError, OverflowError), hakmem.usable_size,
                    rng.choice((None, -3, U64)))
        else:
            _expect((TypeError, ValueError, OverflowError), hakmem.is_live,
                    rng.choice((None, -3, U64, 1.0)))

    def op_huge(self) -> None:
        rng = self.rng
        huge = rng.choice((1 << 62, U64 - 1, (1 << 48) + rng.randrange(1 << 40)))
        k = rng.randrange(3)
        if k == 0:
            _expect(MemoryError, hakmem.malloc, huge)
        elif k == 1:
            _expect(MemoryError, hakmem.calloc, rng.choice((huge, 1 << 33)), 1 << 32)
        else:
            a = self._pick_live()
            if a is None:
                return _expect(MemoryError, hakmem.malloc, huge)
            _expect(MemoryError, hakmem.realloc, a, huge)
            if not hakmem.is_live(a):
                raise ModelError(f"failed realloc freed {a:#x}")
            self._verify(a)                      # and left it as it was

    def op_check(self) -> None:
        self.check()

    # ---- whole-state checks ----------------------------------------------------
    def check(self) -> None:
        """hakmem's live counts equal the model's; every live block intact."""
        st = hakmem.stats()
        tiny = sum(1 for s, _ in self.live.values() if s <= TINY_MAX)
        large = len(self.live) - tiny
        if st["live_blocks"] - self.base_tiny != tiny:
            raise ModelError(f"stats say {st['live_blocks'] - self.base_tiny} live tiny "
                             f"blocks, the model {tiny}")
        if st["large_live_blocks"] - self.base_large != large:
            raise ModelError(f"stats say {st['large_live_blocks'] - self.base_large} live "
                             f"large blocks, the model {large}")
        for a in self.live:
            if not hakmem.is_live(a):
                raise ModelError(f"live block {a:#x} reported not live")
            self._verify(a)

    def close(self) -> None:
        """Free everything; the counts must return to where they started."""
        self.check()
        for a in list(self.live):
            hakmem.free(a)
        self.live.clear()
        self.check()
        self.libc.free(self._libc_block)

    def step(self, name: str) -> None:
        """Run one operation by name (the hypothesis state machine uses this)."""
        self.calls += 1
        getattr(self, "op_" + name)()


# ---- records and containers --------------------------------------------------------
POOL_SPEC = "x:f8 n:i4 b:u1 s:S4"
REC_SPEC = "id:i8 x:f8 a:i1 s:S3"        # containers' records: (int, float, int8, bytes)


def _rand_float(rng: random.Random) -> float:
    return rng.choice((0.0, -0.0, 1.5, -2.25, float("inf"), float("-inf"), 1e300,
                       rng.uniform(-1e6, 1e6)))


def _rand_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.choice(b"ab\x00z") for _ in range(rng.randint(0, n)))


class PoolSection:
    """hakmem.RecordPool against a dict handle -> values, with invalid calls mixed in.

    Model: ``live`` maps handle -> (x, n, b, s) as read back (``s`` without trailing
    NULs); ``dead`` holds handles freed (never valid again, whatever reuses the slot).
    Every failed call must leave the pool exactly as the model says.
    """

    name = "pool"
    FIELDS = ("x", "n", "b", "s")
    OPS = {"alloc": 20, "alloc_invalid": 8, "free": 14, "free_invalid": 8, "get": 8,
           "set": 8, "set_invalid": 6, "view": 6, "alloc_many": 3, "free_many": 3,
           "gather_scatter": 4, "clear": 1, "trim": 1, "iterate": 2, "pickle": 1,
           "closed_pool": 1, "check": 1}
    MAX_LIVE = 120

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.pool = hakmem.RecordPool(POOL_SPEC)
        self.other = hakmem.RecordPool(POOL_SPEC)            # source of foreign handles
        self.foreign = [self.other.alloc() for _ in range(4)]
        self.live: dict[int, tuple] = {}
        self.dead: list[int] = []
        self.calls = 0

    # ---- helpers ------------------------------------------------------------------
    def _values(self) -> tuple:
        rng = self.rng
        return (_rand_float(rng), rng.choice((0, -1, 7, -(1 << 31), (1 << 31) - 1,
                                              rng.randint(-1000, 1000))),
                rng.choice((0, 255, rng.randint(0, 255))), _rand_bytes(rng, 4))

    def _bad_value(self) -> tuple[str, object, type]:
        """(field, value, expected exception) for a value the field must refuse."""
        rng = self.rng
        return rng.choice((
            ("x", "1.0", TypeError), ("x", None, TypeError), ("x", b"1", TypeError),
            ("x", 1 << 2000, OverflowError),
            ("n", 1 << 31, OverflowError), ("n", -(1 << 31) - 1, OverflowError),
            ("n", 1.0, TypeError), ("n", "3", TypeError), ("n", None, TypeError),
            ("b", 256, OverflowError), ("b", -1, OverflowError), ("b", 1 << 70, OverflowError),
            ("s", "ab", TypeError), ("s", 5, TypeError), ("s", b"abcde", OverflowError),
        ))

    def _pick(self) -> int | None:
        if not self.live:
            return None
        return list(self.live)[self.rng.randrange(len(self.live))]

    def _bad_handle(self) -> int:
        """An int that is no live handle of this pool."""
        while True:
            h = self._bad_handle_try()
            if h not in self.live:      # (a flipped slot bit may land on a live record)
                return h

    def _bad_handle_try(self) -> int:
        rng = self.rng
        k = rng.randrange(6)
        if k == 0 and self.dead:
            return rng.choice(self.dead)
        if k == 1:
            return rng.choice(self.foreign)
        if k == 2 and self.live:
            h = self._pick()
            return h ^ rng.choice((1, 2, 1 << 16, 1 << 47, 1 << 50))   # other gen/slot/tag
        if k == 3:
            return rng.choice((0, -1, -(1 << 70), 1 << 62, U64 - 1, U64, 1 << 100))
        return rng.randrange(1 << 62)

    def _norm(self, vals: tuple) -> tuple:
        x, n, b, s = vals
        return (float(x), int(n), int(b), bytes(s).rstrip(b"\0"))

    def _expect_stale(self, fn, *args) -> None:
        _expect(hakmem.StaleHandleError, fn, *args)

    def _add(self, h: int, vals: tuple) -> None:
        if h in self.live:
            raise ModelError(f"handle {h:#x} handed out twice")
        if h in self.dead:
            raise ModelError(f"stale handle {h:#x} handed out again")
        if not (0 < h < 1 << 62):
            raise ModelError(f"handle {h:#x} outside (0, 2**62)")
        self.live[h] = self._norm(vals)

    def _kill(self, h: int) -> None:
        del self.live[h]
        self.dead.append(h)
        if len(self.dead) > 2000:
            del self.dead[:1000]

    # ---- operations ---------------------------------------------------------------
    def op_alloc(self) -> None:
        if len(self.live) >= self.MAX_LIVE:
            return self.op_free()
        rng = self.rng
        vals = self._values()
        k = rng.randrange(4)
        if k == 0:
            h = self.pool.alloc(*vals)
        elif k == 1:
            h = self.pool.alloc(**dict(zip(self.FIELDS, vals)))
        elif k == 2:                      # some fields only: the rest are zero
            keep = [f for f in self.FIELDS if rng.random() < 0.5]
            vals = tuple(v if f in keep else (0.0, 0, 0, b"")[i]
                         for i, (f, v) in enumerate(zip(self.FIELDS, vals)))
            h = self.pool.alloc(**{f: v for f, v in zip(self.FIELDS, vals) if f in keep})
        else:                             # numpy scalars and bools where they fit
            vals = (np.float32(0.5), np.int16(vals[1] % 30000), True, np.bytes_(vals[3]))
            h = self.pool.alloc(*vals)
        self._add(h, vals)

    def op_alloc_invalid(self) -> None:
        rng = self.rng
        k = rng.randrange(5)
        if k == 0:
            f, v, exc = self._bad_value()
            vals = dict(zip(self.FIELDS, self._values()))
            vals[f] = v
            if rng.random() < 0.5:
                _expect(exc, self.pool.alloc, *vals.values())
            else:
                _expect(exc, lambda: self.pool.alloc(**vals))
        elif k == 1:
            _expect(AttributeError, lambda: self.pool.alloc(x=1.0, zz=3))
        elif k == 2:
            _expect(TypeError, self.pool.alloc, 1.0, 2, 3, b"a", 5)
        elif k == 3:
            _expect(TypeError, lambda: self.pool.alloc(1.0, x=2.0))
        else:
            _expect(ValueError, self.pool.alloc_many, -rng.randint(1, 10))

    def op_free(self) -> None:
        h = self._pick()
        if h is None:
            return self.op_alloc()
        if self.rng.random() < 0.3:
            del self.pool[h]
        else:
            self.pool.free(h)
        self._kill(h)
        if h in self.pool or self.pool.is_live(h):
            raise ModelError(f"{h:#x} still live after free")

    def op_free_invalid(self) -> None:
        rng = self.rng
        if rng.random() < 0.25:
            bad = rng.choice((None, 1.5, "1", b"1", [1]))
            _expect(TypeError, self.pool.free, bad)
            if bad in self.pool if not isinstance(bad, list) else False:
                raise ModelError(f"{bad!r} in pool")
            return
        h = self._bad_handle()
        if rng.random() < 0.5:
            self._expect_stale(self.pool.free, h)
        else:
            self._expect_stale(self.pool.__delitem__, h)
        if self.pool.is_live(h) or h in self.pool:
            raise ModelError(f"invalid handle {h:#x} reported live")

    def op_get(self) -> None:
        h = self._pick()
        rng = self.rng
        if h is None or rng.random() < 0.2:
            return self._expect_stale(self.pool.get, self._bad_handle(),
                                      rng.choice(self.FIELDS))
        if rng.random() < 0.15:
            return _expect(AttributeError, self.pool.get, h, rng.choice(("zz", "", "X")))
        if rng.random() < 0.1:
            # a non-str name: docs/records.md does not say; the pool treats it as an
            # unknown field (AttributeError naming it)
            return _expect((TypeError, AttributeError), self.pool.get, h, 3)
        i = rng.randrange(4)
        got = self.pool.get(h, self.FIELDS[i])
        if got != self.live[h][i] or type(got) is not type(self.live[h][i]):
            raise ModelError(f"get({h:#x}, {self.FIELDS[i]!r}) = {got!r}, model "
                             f"{self.live[h][i]!r}")

    def op_set(self) -> None:
        h = self._pick()
        if h is None:
            return self.op_alloc()
        rng = self.rng
        vals = self._values()
        if rng.random() < 0.7:
            i = rng.randrange(4)
            self.pool.set(h, self.FIELDS[i], vals[i])
            new = list(self.live[h])
            new[i] = vals[i]
        else:
            keep = [i for i in range(4) if rng.random() < 0.6]
            self.pool.update(h, **{self.FIELDS[i]: vals[i] for i in keep})
            new = [vals[i] if i in keep else v for i, v in enumerate(self.live[h])]
        self.live[h] = self._norm(tuple(new))

    def op_set_invalid(self) -> None:
        h = self._pick()
        rng = self.rng
        k = rng.randrange(4)
        if h is None or k == 0:
            return self._expect_stale(self.pool.set, self._bad_handle(), "n", 1)
        if k == 1:
            return _expect(AttributeError, self.pool.set, h, "zz", 1)
        f, v, exc = self._bad_value()
        if k == 2:
            _expect(exc, self.pool.set, h, f, v)
        else:                             # one bad field among good ones: nothing written
            good = dict(zip(self.FIELDS, self._values()))
            good[f] = v
            _expect(exc, lambda: self.pool.update(h, **good))

    def op_view(self) -> None:
        h = self._pick()
        if h is None:
            return self.op_alloc()
        rng = self.rng
        rec = self.pool[h]
        if rec.handle != h or rec.as_tuple() != self.live[h] or rec != self.live[h]:
            raise ModelError(f"pool[{h:#x}] = {rec.as_tuple()!r}, model {self.live[h]!r}")
        if rec.as_dict() != dict(zip(self.FIELDS, self.live[h])):
            raise ModelError(f"pool[{h:#x}].as_dict() = {rec.as_dict()!r}")
        i = rng.randrange(4)
        f = self.FIELDS[i]
        if getattr(rec, f) != self.live[h][i]:
            raise ModelError(f"pool[{h:#x}].{f} = {getattr(rec, f)!r}")
        k = rng.randrange(4)
        if k == 0:
            v = self._values()[i]
            setattr(rec, f, v)
            new = list(self.live[h])
            new[i] = v
            self.live[h] = self._norm(tuple(new))
        elif k == 1:
            bf, bv, exc = self._bad_value()
            _expect(exc, setattr, rec, bf, bv)
        elif k == 2:
            _expect(AttributeError, getattr, rec, "zz")
        else:                             # the view outlives its record: stale, not a read
            self.pool.free(h)
            self._kill(h)
            self._expect_stale(getattr, rec, f)
            self._expect_stale(setattr, rec, f, self._values()[i])
            if rng.random() < 0.5 and len(self.live) < self.MAX_LIVE:
                self.op_alloc()           # likely reuses the slot: the view stays stale
                self._expect_stale(getattr, rec, f)

    def op_alloc_many(self) -> None:
        rng = self.rng
        n = rng.randint(0, 40)
        if len(self.live) + n > self.MAX_LIVE:
            return self.op_free_many()
        cols = {}
        base = [0.0, 0, 0, b""]
        per = [None] * 4
        for i, f in enumerate(self.FIELDS):
            r = rng.random()
            if r < 0.3:
                continue
            if r < 0.6:
                base[i] = self._values()[i]
                cols[f] = base[i]
            else:
                per[i] = [self._values()[i] for _ in range(n)]
                cols[f] = np.array(per[i], dtype=self.pool.dtype[f])
        if rng.random() < 0.2:            # one bad column: all or nothing
            bad = rng.choice((("zz", 1, (AttributeError, TypeError, ValueError)),
                              ("b", np.full(n, 300) if n else 300, OverflowError),
                              ("n", 2.5, TypeError),
                              ("x", [1.0] * (n + 1), ValueError)))
            cols2 = dict(cols)
            cols2[bad[0]] = bad[1]
            before = len(self.pool)
            _expect(bad[2], lambda: self.pool.alloc_many(n, **cols2))
            if len(self.pool) != before:
                raise ModelError("failed alloc_many changed the pool's length")
            return
        hs = self.pool.alloc_many(n, **cols)
        if hs.dtype != np.int64 or hs.shape != (n,):
            raise ModelError(f"alloc_many returned {hs.dtype} {hs.shape}")
        for j, h in enumerate(hs.tolist()):
            self._add(h, tuple(per[i][j] if per[i] is not None else base[i]
                               for i in range(4)))

    def op_free_many(self) -> None:
        rng = self.rng
        hs = [h for h in self.live if rng.random() < 0.3]
        k = rng.randrange(5)
        if k == 0 and hs:                 # a repeated handle: nothing freed
            bad = hs + [rng.choice(hs)]
        elif k == 1:
            bad = hs + [self._bad_handle()]
        else:
            bad = None
        if bad is not None:
            rng.shuffle(bad)
            if all(0 <= b < U64 for b in bad):
                arr = np.array(bad, dtype=np.uint64 if max(bad, default=0) >= 1 << 63
                               else np.int64)
            else:
                arr = bad                 # out of int64 range: numpy cannot take it
                return _expect((hakmem.StaleHandleError, OverflowError, TypeError,
                                ValueError), self.pool.free_many, arr)
            return self._expect_stale(self.pool.free_many, arr)
        self.pool.free_many(np.array(hs, dtype=np.int64) if rng.random() < 0.5 else hs)
        for h in hs:
            self._kill(h)

    def op_gather_scatter(self) -> None:
        rng = self.rng
        hs = [h for h in self.live if rng.random() < 0.5]
        i = rng.randrange(4)
        f = self.FIELDS[i]
        arr = np.array(hs, dtype=np.int64)
        if rng.random() < 0.2:
            bad = hs + [self._bad_handle() & ((1 << 63) - 1)]
            rng.shuffle(bad)
            bad = np.array(bad, dtype=np.int64)
            if rng.random() < 0.5:
                return self._expect_stale(self.pool.gather, f, bad)
            return self._expect_stale(self.pool.scatter, f, bad,
                                      np.zeros(len(bad), self.pool.dtype[f]))
        if rng.random() < 0.05:
            return _expect((AttributeError, KeyError, ValueError), self.pool.gather, "zz", arr)
        if rng.random() < 0.5:
            got = self.pool.gather(f, arr)
            want = [self.live[h][i] for h in hs]
            if got.shape != arr.shape or [self._norm_field(i, g) for g in got.tolist()] != want:
                raise ModelError(f"gather({f!r}) = {got!r}, model {want!r}")
            return
        vals = [self._values()[i] for _ in hs]
        self.pool.scatter(f, arr, np.array(vals, dtype=self.pool.dtype[f]))
        for h, v in zip(hs, vals):
            new = list(self.live[h])
            new[i] = v
            self.live[h] = self._norm(tuple(new))

    def _norm_field(self, i: int, v):
        return bytes(v).rstrip(b"\0") if i == 3 else v

    def op_clear(self) -> None:
        if self.rng.random() < 0.7:
            return self.op_alloc_many()
        self.pool.clear()
        for h in list(self.live):
            self._kill(h)

    def op_trim(self) -> None:
        self.pool.trim()

    def op_iterate(self) -> None:
        got = list(self.pool)
        if sorted(got) != sorted(self.live) or len(got) != len(set(got)):
            raise ModelError(f"iter(pool) gives {len(got)} handles, model {len(self.live)}")
        hs = self.pool.handles().tolist()
        if hs != got and sorted(hs) != sorted(got):
            raise ModelError("handles() and iter(pool) disagree")
        if bool(self.pool) != bool(self.live):
            raise ModelError("bool(pool) disagrees with the model")
        col = self.pool.column(self.FIELDS[1]).tolist()
        if col != [self.live[h][1] for h in hs]:
            raise ModelError("column('n') disagrees with handles() order / model")

    def op_pickle(self) -> None:
        new = pickle.loads(pickle.dumps(self.pool))
        old, self.pool = self.pool, new
        old.close()
        self._expect_closed(old)
        self.check()            # the old handles are valid in the copy...
        # ...which has a tag of its own: its handles() name the same slots and gens
        low = (1 << 48) - 1
        by_low = {h & low: h for h in self.pool.handles().tolist()}
        self.live = {by_low[h & low]: v for h, v in self.live.items()}

    def _expect_closed(self, p) -> None:
        h = self._pick()
        _expect(ValueError, p.alloc)
        if h is not None:
            _expect(ValueError, p.get, h, "x")
            _expect(ValueError, p.free, h)

    def op_closed_pool(self) -> None:
        p = hakmem.RecordPool(POOL_SPEC)
        h = p.alloc(1.0)
        p.close()
        if not p.closed:
            raise ModelError("closed pool not closed")
        _expect(ValueError, p.alloc)
        _expect(ValueError, p.get, h, "x")
        _expect(ValueError, p.free_many, [h])

    def op_check(self) -> None:
        self.check()

    def check(self) -> None:
        """len, every live handle's values, a sample of stale handles."""
        if len(self.pool) != len(self.live):
            raise ModelError(f"len(pool) = {len(self.pool)}, model {len(self.live)}")
        for h, vals in self.live.items():
            got = self.pool.read(h)
            if got != vals:
                raise ModelError(f"pool.read({h:#x}) = {got!r}, model {vals!r}")
        for h in self.dead[-3:]:
            self._expect_stale(self.pool.read, h)
            if h in self.pool:
                raise ModelError(f"stale {h:#x} in pool")

    def close(self) -> None:
        self.check()
        self.pool.close()
        self.other.close()

    def step(self, name: str) -> None:
        """Run one operation by name, then check the whole model."""
        self.calls += 1
        getattr(self, "op_" + name)()
        self.check()


def _rec(rng: random.Random) -> tuple:
    """A valid container record (id:i8 x:f8 a:i1 s:S3) as read back."""
    return (rng.choice((0, -1, (1 << 63) - 1, -(1 << 63), rng.randint(-10**6, 10**6))),
            _rand_float(rng), rng.randint(-128, 127), _rand_bytes(rng, 3).rstrip(b"\0"))


REC_FIELDS = ("id", "x", "a", "s")
REC_ZERO = (0, 0.0, 0, b"")


def _rec_arg(rng: random.Random, rec: tuple):
    """The same record in one of the accepted forms: tuple, list, dict, partial dict."""
    k = rng.randrange(4)
    if k == 0:
        return rec, rec
    if k == 1:
        return list(rec), rec
    if k == 2:
        return dict(zip(REC_FIELDS, rec)), rec
    keep = [i for i in range(4) if rng.random() < 0.5]
    return ({REC_FIELDS[i]: rec[i] for i in keep},
            tuple(rec[i] if i in keep else REC_ZERO[i] for i in range(4)))


def _bad_rec(rng: random.Random):
    """(record argument, expected exception) the containers must refuse (docs/containers.md)."""
    good = list(_rec(rng))
    k = rng.randrange(9)
    if k == 0:
        return tuple(good[:3]), TypeError                    # wrong number of fields
    if k == 1:
        return tuple(good) + (1,), TypeError
    if k == 2:
        good[0] = 0.5                                        # float for an int field
        return tuple(good), TypeError
    if k == 3:
        good[1] = "1.0"
        return tuple(good), TypeError
    if k == 4:
        good[2] = rng.choice((128, -129, 1 << 70))
        return tuple(good), OverflowError
    if k == 5:
        good[0] = rng.choice((1 << 63, -(1 << 63) - 1))
        return tuple(good), OverflowError
    if k == 6:
        good[3] = b"abcd"                                    # too long for S3
        return tuple(good), OverflowError
    if k == 7:
        return {"id": 1, "zz": 2}, hakmem.FieldError         # unknown field
    return rng.choice((5, 1.5, None if False else object())), TypeError


def _same(got, want: list, what: str) -> None:
    if got != want:
        raise ModelError(f"{what}: container {got!r}\n  model {want!r}")


class VectorSection:
    """hakmem.RecordVector against a list of tuples; buffer exports pin the storage."""

    name = "vector"
    OPS = {"append": 20, "append_invalid": 5, "extend": 5, "insert": 6, "pop": 10,
           "getitem": 8, "setitem": 6, "delitem": 5, "slice": 3, "sort": 1, "reserve": 2,
           "clear": 1, "export": 4, "pickle": 1, "check": 1}
    MAX_LEN = 150

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.v = hakmem.RecordVector(REC_SPEC)
        self.model: list[tuple] = []
        self.calls = 0

    def _idx(self, n: int, valid: bool) -> object:
        rng = self.rng
        if valid:
            return rng.randrange(-n, n)
        return rng.choice((n, -n - 1, n + rng.randint(1, 5), 1 << 70, -(1 << 70)))

    def op_append(self) -> None:
        if len(self.model) >= self.MAX_LEN:
            return self.op_pop()
        rec = _rec(self.rng)
        if self.rng.random() < 0.3:
            self.v.append(**dict(zip(REC_FIELDS, rec)))
        else:
            arg, rec = _rec_arg(self.rng, rec)
            self.v.append(arg)
        self.model.append(rec)

    def op_append_invalid(self) -> None:
        bad, exc = _bad_rec(self.rng)
        if self.rng.random() < 0.5:
            _expect(exc, self.v.append, bad)
        else:
            _expect(exc, self.v.insert, self.rng.randint(-3, len(self.model) + 3), bad)

    def op_extend(self) -> None:
        rng = self.rng
        if len(self.model) >= self.MAX_LEN:
            return self.op_delitem()
        recs = [_rec(rng) for _ in range(rng.randint(0, 8))]
        k = rng.randrange(4)
        if k == 0 and recs:                   # one bad record: all or nothing
            bad, exc = _bad_rec(rng)
            src = list(recs)
            src.insert(rng.randrange(len(src) + 1), bad)
            return _expect(exc, self.v.extend, src)
        if k == 1:
            self.v.extend(np.array(recs, dtype=self.v.dtype))
        elif k == 2:
            self.v.extend(hakmem.RecordVector(REC_SPEC, recs))
        else:
            self.v.extend(recs)
        self.model.extend(recs)

    def op_insert(self) -> None:
        if len(self.model) >= self.MAX_LEN:
            return self.op_pop()
        i = self.rng.randint(-len(self.model) - 3, len(self.model) + 3)
        arg, rec = _rec_arg(self.rng, _rec(self.rng))
        self.v.insert(i, arg)
        self.model.insert(i, rec)

    def op_pop(self) -> None:
        n = len(self.model)
        rng = self.rng
        if not n:
            return _expect(IndexError, self.v.pop)
        if rng.random() < 0.15:
            return _expect(IndexError, self.v.pop, self._idx(n, False))
        if rng.random() < 0.5:
            r = self.v.pop()
            want = self.model.pop()
        else:
            i = self._idx(n, True)
            view = self.v[n - 1]              # a view of the last position
            r = self.v.pop(i)
            want = self.model.pop(i)
            _expect(IndexError, getattr, view, "x")      # its position is gone now
        _same(r.as_tuple(), want, "pop()")

    def op_getitem(self) -> None:
        n = len(self.model)
        rng = self.rng
        if not n or rng.random() < 0.2:
            return _expect(IndexError, self.v.__getitem__, self._idx(n, False))
        if rng.random() < 0.05:
            return _expect(TypeError, self.v.__getitem__, rng.choice((1.0, "0", None)))
        i = self._idx(n, True)
        r = self.v[i]
        _same(r.as_tuple(), self.model[i], f"v[{i}]")
        f = rng.randrange(4)
        _same(getattr(r, REC_FIELDS[f]), self.model[i][f], f"v[{i}].{REC_FIELDS[f]}")
        if r[f] != self.model[i][f] or r != self.model[i]:
            raise ModelError(f"v[{i}][{f}] / == disagree with the model")
        _expect(AttributeError, getattr, r, "zz")

    def op_setitem(self) -> None:
        n = len(self.model)
        rng = self.rng
        if not n:
            return _expect(IndexError, self.v.__setitem__, 0, _rec(rng))
        i = self._idx(n, True)
        k = rng.randrange(4)
        if k == 0:
            bad, exc = _bad_rec(rng)
            return _expect(exc, self.v.__setitem__, i, bad)
        if k == 1:
            return _expect(IndexError, self.v.__setitem__, self._idx(n, False), _rec(rng))
        if k == 2:                            # through a view, one field
            f = rng.randrange(4)
            val = _rec(rng)[f]
            setattr(self.v[i], REC_FIELDS[f], val)
            new = list(self.model[i])
            new[f] = val
            self.model[i] = tuple(new)
            return
        arg, rec = _rec_arg(rng, _rec(rng))
        self.v[i] = arg
        self.model[i] = rec

    def op_delitem(self) -> None:
        n = len(self.model)
        rng = self.rng
        if rng.random() < 0.3:
            s = slice(rng.randint(-n - 2, n + 2), rng.randint(-n - 2, n + 2),
                      rng.choice((None, 1, 2, 3, -1, -2)))
            del self.v[s]
            del self.model[s]
            return
        if not n or rng.random() < 0.2:
            return _expect(IndexError, self.v.__delitem__, self._idx(n, False))
        i = self._idx(n, True)
        del self.v[i]
        del self.model[i]

    def op_slice(self) -> None:
        n = len(self.model)
        rng = self.rng
        s = slice(rng.randint(-n - 2, n + 2), rng.randint(-n - 2, n + 2),
                  rng.choice((None, 1, 2, -1, -3)))
        w = self.v[s]
        _same(w.tolist(), self.model[s], f"v[{s}]")
        w.close()

    def op_sort(self) -> None:
        rng = self.rng
        f = rng.choice(("id", "a", "s"))      # not x: NaN-free, but -0.0 == 0.0 ties
        rev = rng.random() < 0.5
        i = REC_FIELDS.index(f)
        self.v.sort(f, reverse=rev)
        got = self.v.tolist()
        keys = [r[i] for r in got]
        if keys != sorted((r[i] for r in self.model), reverse=rev) or \
                sorted(got, key=repr) != sorted(self.model, key=repr):
            raise ModelError(f"sort({f!r}, reverse={rev}) is not a sorted permutation")
        self.model = got

    def op_reserve(self) -> None:
        rng = self.rng
        k = rng.randrange(3)
        if k == 0:
            _expect(ValueError, self.v.reserve, -rng.randint(1, 5))
        elif k == 1:
            self.v.reserve(rng.randint(0, 400))
        else:
            self.v.shrink_to_fit()
            if self.v.capacity != len(self.model):
                raise ModelError(f"shrink_to_fit left capacity {self.v.capacity}")
        if self.v.capacity < len(self.model):
            raise ModelError("capacity below len")

    def op_clear(self) -> None:
        self.v.clear()
        self.model.clear()

    def op_export(self) -> None:
        """While a view of the buffer is alive, nothing may move it (BufferError)."""
        rng = self.rng
        a = np.asarray(self.v) if rng.random() < 0.3 else self.v.as_array()
        if a.__array_interface__["data"][0] != self.v.address and len(self.model):
            raise ModelError("np.asarray(vector) is not over the vector's memory")
        if self.v.exports < 1:
            raise ModelError(f"exports = {self.v.exports} with a live export")
        cap, n = self.v.capacity, len(self.model)
        k = rng.randrange(4)
        if k == 0:
            _expect(BufferError, self.v.reserve, cap + rng.randint(1, 100))
        elif k == 1 and cap > n:
            _expect(BufferError, self.v.shrink_to_fit)
        elif k == 2:
            _expect(BufferError, self.v.close)
        else:                                 # fill to capacity (allowed), then one more
            while len(self.model) < self.v.capacity and len(self.model) < 4 * self.MAX_LEN:
                rec = _rec(rng)
                self.v.append(rec)
                self.model.append(rec)
            if len(self.model) == self.v.capacity:
                rec = _rec(rng)
                op = rng.choice((lambda: self.v.append(rec), lambda: self.v.insert(0, rec),
                                 lambda: self.v.extend([rec, rec])))
                _expect(BufferError, op)
        if self.v.address != a.__array_interface__["data"][0] and n:
            raise ModelError("the exported buffer moved")
        if self.v.closed:
            raise ModelError("close() with an export alive closed the vector")
        if rng.random() < 0.5 and n:          # writes through the view reach the vector
            j = rng.randrange(n)
            val = rng.randint(-100, 100)
            a["id"][j] = val
            self.model[j] = (val,) + self.model[j][1:]
        _same([tuple(r) for r in a.tolist()][:n],
              [(r[0], r[1], r[2], r[3]) for r in self.model[:n]], "exported array")
        del a
        if self.v.exports != 0:
            raise ModelError(f"exports = {self.v.exports} after the export was dropped")
        if len(self.model) > self.MAX_LEN:
            del self.v[self.MAX_LEN:]
            del self.model[self.MAX_LEN:]

    def op_pickle(self) -> None:
        new = pickle.loads(pickle.dumps(self.v))
        _same(new.tolist(), self.model, "unpickled vector")
        self.v.close()
        if not self.v.closed:
            raise ModelError("close() did not close")
        _expect(ValueError, self.v.append, _rec(self.rng))
        self.v = new

    def op_check(self) -> None:
        self.check()

    def check(self) -> None:
        if len(self.v) != len(self.model):
            raise ModelError(f"len(vector) = {len(self.v)}, model {len(self.model)}")
        _same(self.v.tolist(), self.model, "vector")
        if self.rng.random() < 0.1:
            _same([r.as_tuple() for r in self.v], self.model, "iter(vector)")

    def close(self) -> None:
        self.check()
        self.v.close()

    def step(self, name: str) -> None:
        """Run one operation by name, then check the whole model."""
        self.calls += 1
        getattr(self, "op_" + name)()
        self.check()


class DequeSection:
    """hakmem.RecordDeque (sometimes with maxlen) against collections.deque."""

    name = "deque"
    OPS = {"push": 30, "push_invalid": 5, "extend": 5, "pop": 14, "insert": 4,
           "rotate": 3, "getitem": 8, "setitem": 5, "delitem": 4, "view": 4, "clear": 1,
           "renew": 1, "check": 1}
    MAX_LEN = 150

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.q = None
        self.op_renew()
        self.calls = 0

    def op_renew(self) -> None:
        """A fresh deque (maxlen None or small), from a copy or a pickle now and then."""
        rng = self.rng
        if self.q is not None and rng.random() < 0.7:
            return self.op_push()          # (rarer than its weight: the deque may grow)
        maxlen = rng.choice((None, None, None, 0, 1, 5, 40, 100))
        recs = [_rec(rng) for _ in range(rng.randint(0, 10))]
        new = hakmem.RecordDeque(REC_SPEC, maxlen=maxlen, data=recs)
        model = collections.deque(recs, maxlen=maxlen)
        if rng.random() < 0.3:
            new = pickle.loads(pickle.dumps(new)) if rng.random() < 0.5 else new.copy()
        if self.q is not None:
            self.q.close()
            _expect(ValueError, self.q.append, recs[0] if recs else REC_ZERO)
        self.q, self.model = new, model
        if self.q.maxlen != maxlen:
            raise ModelError(f"maxlen {self.q.maxlen}, asked {maxlen}")
        self.check()

    def op_push(self) -> None:
        if len(self.model) >= self.MAX_LEN:
            return self.op_pop()
        rng = self.rng
        arg, rec = _rec_arg(rng, _rec(rng))
        if rng.random() < 0.5:
            self.q.append(arg)
            self.model.append(rec)
        else:
            self.q.appendleft(arg)
            self.model.appendleft(rec)

    def op_push_invalid(self) -> None:
        bad, exc = _bad_rec(self.rng)
        fn = self.rng.choice((self.q.append, self.q.appendleft))
        _expect(exc, fn, bad)

    def op_extend(self) -> None:
        rng = self.rng
        if len(self.model) >= self.MAX_LEN:
            return self.op_pop()
        recs = [_rec(rng) for _ in range(rng.randint(0, 8))]
        left = rng.random() < 0.5
        fn = self.q.extendleft if left else self.q.extend
        if recs and rng.random() < 0.25:      # all or nothing (unlike collections.deque)
            bad, exc = _bad_rec(rng)
            src = list(recs)
            src.insert(rng.randrange(len(src) + 1), bad)
            return _expect(exc, fn, src)
        fn(np.array(recs, dtype=self.q.dtype) if rng.random() < 0.3 else recs)
        (self.model.extendleft if left else self.model.extend)(recs)

    def op_pop(self) -> None:
        left = self.rng.random() < 0.5
        if not self.model:
            return _expect(IndexError, self.q.popleft if left else self.q.pop)
        r = self.q.popleft() if left else self.q.pop()
        want = self.model.popleft() if left else self.model.pop()
        _same(r.as_tuple(), want, "pop")

    def op_insert(self) -> None:
        rng = self.rng
        i = rng.randint(-len(self.model) - 3, len(self.model) + 3)
        arg, rec = _rec_arg(rng, _rec(rng))
        if self.model.maxlen is not None and len(self.model) >= self.model.maxlen:
            _expect(IndexError, self.q.insert, i, arg)
            _expect(IndexError, self.model.insert, i, rec)
            return
        if len(self.model) >= self.MAX_LEN:
            return self.op_pop()
        self.q.insert(i, arg)
        self.model.insert(i, rec)

    def op_rotate(self) -> None:
        k = self.rng.choice((0, 1, -1, self.rng.randint(-400, 400)))
        self.q.rotate(k)
        self.model.rotate(k)

    def _idx(self, n: int, valid: bool) -> int:
        rng = self.rng
        if valid:
            return rng.randrange(-n, n)
        return rng.choice((n, -n - 1, n + 7, 1 << 70, -(1 << 70)))

    def op_getitem(self) -> None:
        n = len(self.model)
        if not n or self.rng.random() < 0.2:
            return _expect(IndexError, self.q.__getitem__, self._idx(n, False))
        if self.rng.random() < 0.05:
            return _expect(TypeError, self.q.__getitem__, self.rng.choice((1.0, "0", None)))
        i = self._idx(n, True)
        _same(self.q[i].as_tuple(), self.model[i], f"q[{i}]")

    def op_setitem(self) -> None:
        n = len(self.model)
        rng = self.rng
        if not n or rng.random() < 0.15:
            return _expect(IndexError, self.q.__setitem__, self._idx(n, False), _rec(rng))
        i = self._idx(n, True)
        if rng.random() < 0.3:
            bad, exc = _bad_rec(rng)
            return _expect(exc, self.q.__setitem__, i, bad)
        arg, rec = _rec_arg(rng, _rec(rng))
        self.q[i] = arg
        self.model[i] = rec

    def op_delitem(self) -> None:
        n = len(self.model)
        if not n or self.rng.random() < 0.2:
            return _expect(IndexError, self.q.__delitem__, self._idx(n, False))
        i = self._idx(n, True)
        del self.q[i]
        del self.model[i]

    def op_view(self) -> None:
        """A view follows its record as the ends move, and fails once it has left."""
        n = len(self.model)
        rng = self.rng
        if not n:
            return self.op_push()
        i = rng.randrange(n)
        view = self.q[i]
        rec = self.model[i]
        left_side = rng.random() < 0.5
        if rng.random() < 0.5 and len(self.model) < self.MAX_LEN and \
                self.model.maxlen != len(self.model):
            new = _rec(rng)
            (self.q.appendleft if left_side else self.q.append)(new)
            (self.model.appendleft if left_side else self.model.append)(new)
            _same(view.as_tuple(), rec, "view after a push")
        else:                                  # pop from the end it is nearest: it may go
            gone = (i == 0) if left_side else (i == n - 1)
            self.q.popleft() if left_side else self.q.pop()
            self.model.popleft() if left_side else self.model.pop()
            if gone:
                _expect(IndexError, view.as_tuple)
            else:
                _same(view.as_tuple(), rec, "view after a pop")

    def op_clear(self) -> None:
        if self.rng.random() < 0.7:
            return self.op_push()
        self.q.clear()
        self.model.clear()

    def op_check(self) -> None:
        self.check()

    def check(self) -> None:
        if len(self.q) != len(self.model):
            raise ModelError(f"len(deque) = {len(self.q)}, model {len(self.model)}")
        _same(self.q.tolist(), list(self.model), "deque")
        if self.rng.random() < 0.1:
            _same([r.as_tuple() for r in reversed(self.q)], list(reversed(self.model)),
                  "reversed(deque)")

    def close(self) -> None:
        self.check()
        self.q.close()

    def step(self, name: str) -> None:
        """Run one operation by name, then check the whole model."""
        self.calls += 1
        getattr(self, "op_" + name)()
        self.check()


class MapSection:
    """hakmem.RecordMap (key i4) against a dict, insertion order included."""

    name = "map"
    OPS = {"set": 30, "set_invalid": 6, "get": 12, "get_missing": 6, "delete": 6,
           "pop": 4, "popitem": 2, "setdefault": 3, "update": 6, "many": 4, "view": 3,
           "clear": 1, "pickle": 1, "check": 1}
    MAX_LEN = 150
    KMIN, KMAX = -(1 << 31), (1 << 31) - 1

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.m = hakmem.RecordMap(REC_SPEC, key="i4")
        self.model: dict[int, tuple] = {}
        self.calls = 0

    def _key(self) -> int:
        rng = self.rng
        if self.model and rng.random() < 0.3:
            return rng.choice(list(self.model))
        return rng.choice((0, -1, self.KMIN, self.KMAX, rng.randint(-3000, 3000),
                           rng.randint(self.KMIN, self.KMAX), rng.randint(self.KMIN, self.KMAX)))

    def _missing(self) -> object:
        rng = self.rng
        k = rng.choice((rng.randint(-300, 300), self.KMAX + 1, self.KMIN - 1, 1 << 80,
                        np.int64(5), True))
        return k if k not in self.model else None

    def op_set(self) -> None:
        k = self._key()
        if k not in self.model and len(self.model) >= self.MAX_LEN:
            return self.op_delete()
        arg, rec = _rec_arg(self.rng, _rec(self.rng))
        self.m[k] = arg
        self.model[k] = rec

    def op_set_invalid(self) -> None:
        rng = self.rng
        k = rng.randrange(3)
        if k == 0:
            bad, exc = _bad_rec(rng)
            return _expect(exc, self.m.__setitem__, self._key(), bad)
        if k == 1:
            return _expect(OverflowError, self.m.__setitem__,
                           rng.choice((self.KMAX + 1, self.KMIN - 1, 1 << 70)), _rec(rng))
        _expect(TypeError, self.m.__setitem__, rng.choice((1.0, "1", None, b"1")), _rec(rng))

    def op_get(self) -> None:
        if not self.model:
            return self.op_set()
        k = self.rng.choice(list(self.model))
        _same(self.m[k].as_tuple(), self.model[k], f"m[{k}]")
        if k not in self.m or self.m.get(k).as_tuple() != self.model[k]:
            raise ModelError(f"{k} in m / m.get({k}) disagree")

    def op_get_missing(self) -> None:
        k = self._missing()
        rng = self.rng
        if k is None:
            return
        if k in self.m:
            raise ModelError(f"missing key {k!r} in map")
        if self.m.get(k, "d") != "d":
            raise ModelError(f"m.get({k!r}, 'd') did not return the default")
        _expect(KeyError, self.m.__getitem__, k)
        if rng.random() < 0.3:
            _expect(KeyError, self.m.__delitem__, k)
        bad = rng.choice((1.5, "1", None))
        _expect(TypeError, self.m.__getitem__, bad)

    def op_delete(self) -> None:
        if not self.model or self.rng.random() < 0.1:
            k = self._missing()
            if k is not None:
                _expect(KeyError, self.m.__delitem__, k)
            return
        k = self.rng.choice(list(self.model))
        del self.m[k]
        del self.model[k]

    def op_pop(self) -> None:
        rng = self.rng
        if not self.model or rng.random() < 0.3:
            k = self._missing()
            if k is None:
                return
            if rng.random() < 0.5:
                return _expect(KeyError, self.m.pop, k)
            if self.m.pop(k, 7) != 7:
                raise ModelError("pop(missing, default) did not return the default")
            return
        k = rng.choice(list(self.model))
        _same(self.m.pop(k).as_tuple(), self.model.pop(k), f"pop({k})")

    def op_popitem(self) -> None:
        if not self.model:
            return _expect(KeyError, self.m.popitem)
        k, r = self.m.popitem()
        wk, wr = self.model.popitem()
        if k != wk or r.as_tuple() != wr:
            raise ModelError(f"popitem() = {k}, model {wk}")

    def op_setdefault(self) -> None:
        k = self._key()
        if k not in self.model and len(self.model) >= self.MAX_LEN:
            return self.op_delete()
        arg, rec = _rec_arg(self.rng, _rec(self.rng))
        got = self.m.setdefault(k, arg)
        want = self.model.setdefault(k, rec)
        _same(got.as_tuple(), want, f"setdefault({k})")

    def op_update(self) -> None:
        rng = self.rng
        if len(self.model) >= self.MAX_LEN:
            return self.op_delete()
        items = []
        for _ in range(rng.randint(0, 6)):
            arg, rec = _rec_arg(rng, _rec(rng))
            items.append((self._key(), arg, rec))
        if items and rng.random() < 0.3:      # one bad record or key: all or nothing
            src = [(k, a) for k, a, _ in items]
            if rng.random() < 0.5:
                bad, exc = _bad_rec(rng)
                src.insert(rng.randrange(len(src) + 1), (self._key(), bad))
            else:
                src.insert(rng.randrange(len(src) + 1), (self.KMAX + 1, _rec(rng)))
                exc = OverflowError
            unique = len({k for k, _ in src}) == len(src)   # dict(src) would drop one
            return _expect(exc, self.m.update, dict(src) if unique and rng.random() < 0.5
                           else src)
        src = [(k, a) for k, a, _ in items]
        self.m.update(dict(src) if rng.random() < 0.5 else src)
        for k, _, rec in items:
            self.model[k] = rec

    def op_many(self) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            keys = [self._key() for _ in range(rng.randint(0, 10))]
            miss = [k for k in keys if k not in self.model]
            arr = np.array(keys, dtype=np.int64)
            if miss:
                _expect(KeyError, self.m.get_many, arr)
            else:
                got = self.m.get_many(arr)
                _same([tuple(r) for r in got.tolist()],
                      [self.model[k] for k in keys], "get_many")
            recs, found = self.m.get_many(arr, missing="mask")
            if found.tolist() != [k in self.model for k in keys]:
                raise ModelError("get_many(missing='mask') found mask is wrong")
            return
        if len(self.model) >= self.MAX_LEN:
            return self.op_delete()
        keys = [self._key() for _ in range(rng.randint(0, 10))]
        recs = [_rec(rng) for _ in keys]
        vals = np.array(recs, dtype=self.m.dtype)
        if keys and rng.random() < 0.3:       # out-of-range key or wrong length: nothing
            if rng.random() < 0.5:
                bad = list(keys)
                bad[rng.randrange(len(bad))] = self.KMAX + 1
                return _expect(OverflowError, self.m.set_many, np.array(bad, np.int64), vals)
            return _expect(ValueError, self.m.set_many, np.array(keys, np.int64), vals[:-1])
        self.m.set_many(np.array(keys, dtype=np.int64), vals)
        for k, r in zip(keys, recs):
            self.model[k] = r

    def op_view(self) -> None:
        if not self.model:
            return self.op_set()
        k = self.rng.choice(list(self.model))
        view = self.m[k]
        del self.m[k]
        del self.model[k]
        _expect(KeyError, view.as_tuple)
        if self.rng.random() < 0.5:           # stored again: the view sees the new record
            rec = _rec(self.rng)
            self.m[k] = rec
            self.model[k] = rec
            _same(view.as_tuple(), rec, f"view of {k} after re-insert")

    def op_clear(self) -> None:
        if self.rng.random() < 0.7:
            return self.op_set()
        self.m.clear()
        self.model.clear()

    def op_pickle(self) -> None:
        new = pickle.loads(pickle.dumps(self.m)) if self.rng.random() < 0.5 else self.m.copy()
        self.m.close()
        _expect(ValueError, self.m.__setitem__, 1, REC_ZERO)
        self.m = new
        self.check()

    def op_check(self) -> None:
        self.check()

    def check(self) -> None:
        if len(self.m) != len(self.model):
            raise ModelError(f"len(map) = {len(self.m)}, model {len(self.model)}")
        if list(self.m) != list(self.model):
            raise ModelError(f"map keys (in order) {list(self.m)}, model {list(self.model)}")
        _same([(k, r.as_tuple()) for k, r in self.m.items()], list(self.model.items()),
              "map items")
        if self.m.keys_array().tolist() != list(self.model):
            raise ModelError("keys_array() disagrees with the model")

    def close(self) -> None:
        self.check()
        self.m.close()

    def step(self, name: str) -> None:
        """Run one operation by name, then check the whole model."""
        self.calls += 1
        getattr(self, "op_" + name)()
        self.check()


# ---------------------------------------------------------------------------- reentry
class Trap:
    """A field value or index whose conversion (``__float__`` / ``__index__``) first
    runs ``act`` (mutating or closing some container), then yields ``value``."""

    def __init__(self, act, value):
        self.act, self.value, self.fired = act, value, False

    def _fire(self):
        if not self.fired:
            self.fired = True
            self.act()

    def __float__(self):
        self._fire()
        return float(self.value)

    def __index__(self):
        self._fire()
        return int(self.value)

    __int__ = __index__

    def __repr__(self):
        return f"<trap {self.value!r}>"


class TrapArray:
    """An array-like whose ``__array__`` runs ``act`` first."""

    def __init__(self, act, arr):
        self.act, self.arr = act, arr

    def __array__(self, dtype=None, copy=None):
        self.act()
        return self.arr


class ReentrySection:
    """Re-entrancy: values and indices whose conversions append to, clear, pop from,
    export or close a container (the one being written, or another) at random, fed to
    every mutating and reading method of RecordVector, RecordDeque, RecordMap, record
    views and RecordPool.

    Model: records are built from a known universe of ids (1..999, 0 for zero records)
    and values; each call must complete or raise a clear exception (ValueError,
    IndexError, KeyError, TypeError, OverflowError, BufferError, RuntimeError), and
    afterwards every open container must read back whole (len agrees with its
    contents, every record is one that was written). A write into freed or foreign
    memory shows up as a record outside the universe, or as a crash of the child.
    """

    name = "reentry"
    CLEAR = (ValueError, IndexError, KeyError, TypeError, OverflowError, BufferError,
             RuntimeError, hakmem.StaleHandleError)
    OPS = {"vector": 6, "deque": 5, "map": 5, "view": 3, "pool": 5, "bulk": 2, "check": 1}
    XS = (0.0, 0.5, 1.5, -2.25, 1e300)

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.c = {}
        self.pins = []
        for kind in ("vector", "deque", "map", "pool"):
            self._fresh(kind)
        self.calls = 0

    # ---- helpers ------------------------------------------------------------------
    def _fresh(self, kind: str) -> None:
        if kind == "vector":
            self.c[kind] = hakmem.RecordVector(REC_SPEC, [self._plain() for _ in range(5)])
        elif kind == "deque":
            self.c[kind] = hakmem.RecordDeque(REC_SPEC, maxlen=self.rng.choice((None, 40)),
                                              data=[self._plain() for _ in range(5)])
        elif kind == "map":
            self.c[kind] = hakmem.RecordMap(REC_SPEC, key="i4",
                                            data={i: self._plain() for i in range(5)})
        else:
            p = hakmem.RecordPool(REC_SPEC)
            p.alloc_many(5, id=7)
            self.c[kind] = p

    def _plain(self) -> tuple:
        rng = self.rng
        return (rng.randint(1, 999), rng.choice(self.XS), rng.randint(-128, 127),
                rng.choice((b"", b"a", b"abc")))

    def _action(self):
        """A random way for user code to fight back (run inside a conversion)."""
        rng = self.rng
        kind = rng.choice(("vector", "deque", "map", "pool"))
        what = rng.choice(("grow", "grow", "clear", "shrink", "close", "export", "noop"))
        c = self.c[kind]

        def act():
            if getattr(c, "closed", False):
                return
            if what == "grow":
                for i in range(rng.choice((1, 8, 60))):
                    if kind == "map":
                        c[rng.randint(0, 2000)] = self._plain()
                    elif kind == "pool":
                        c.alloc(*self._plain())
                    else:
                        c.append(self._plain())
            elif what == "clear":
                c.clear()
            elif what == "shrink":
                if kind == "map":
                    for k in list(c)[:3]:
                        del c[k]
                elif kind == "pool":
                    hs = c.handles()
                    if len(hs):
                        c.free_many(hs[: len(hs) // 2])
                else:
                    for _ in range(min(3, len(c))):
                        c.pop()
            elif what == "close":
                try:
                    c.close()
                except BufferError:
                    pass
            elif what == "export" and kind == "vector":
                self.pins.append(np.asarray(c))      # pins the buffer until the next check
        return act

    def _val(self, value):
        """value, or a trap that converts to it."""
        return Trap(self._action(), value) if self.rng.random() < 0.5 else value

    def _rec(self):
        rec = self._plain()
        rng = self.rng
        i = rng.randrange(3)                 # id, x or a: fields with a conversion
        out = list(rec)
        out[i] = Trap(self._action(), rec[i])
        return tuple(out) if rng.random() < 0.7 else out

    def _call(self, fn, *args, **kw) -> None:
        try:
            fn(*args, **kw)
        except self.CLEAR:
            pass

    def _idx(self, n: int):
        return self._val(self.rng.randint(-n - 2, n + 2))

    # ---- operations ---------------------------------------------------------------
    def op_vector(self) -> None:
        v, rng = self.c["vector"], self.rng
        n = len(v)
        op = rng.randrange(11)
        if op == 0:
            self._call(v.append, self._rec())
        elif op == 1:
            self._call(v.extend, (self._rec() for _ in range(rng.randint(1, 4))))
        elif op == 2:
            self._call(v.insert, self._idx(n), self._rec())
        elif op == 3:
            self._call(v.__setitem__, self._idx(n), self._rec())
        elif op == 4:
            self._call(v.__setitem__, slice(self._idx(n), self._idx(n)),
                       [self._rec() for _ in range(rng.randint(0, 3))])
        elif op == 5:
            self._call(v.__delitem__, slice(self._idx(n), self._idx(n), rng.choice((1, 2, -1))))
        elif op == 6:
            self._call(v.__delitem__, self._idx(n))
        elif op == 7:
            self._call(v.pop, self._idx(n))
        elif op == 8:
            self._call(lambda: v[self._idx(n)].x)
        elif op == 9:
            self._call(lambda: v[self._idx(n):self._idx(n)])
        else:
            self._call(v.extend, TrapArray(self._action(), np.zeros(3, v.dtype)))

    def op_deque(self) -> None:
        q, rng = self.c["deque"], self.rng
        n = len(q)
        op = rng.randrange(8)
        if op == 0:
            self._call(q.append, self._rec())
        elif op == 1:
            self._call(q.appendleft, self._rec())
        elif op == 2:
            self._call(q.extendleft, (self._rec() for _ in range(rng.randint(1, 3))))
        elif op == 3:
            self._call(q.insert, self._idx(n), self._rec())
        elif op == 4:
            self._call(q.__setitem__, self._idx(n), self._rec())
        elif op == 5:
            self._call(q.__delitem__, self._idx(n))
        elif op == 6:
            self._call(lambda: q[self._idx(n)].id)
        else:
            self._call(q.extend, [self._rec() for _ in range(rng.randint(1, 3))])

    def op_map(self) -> None:
        m, rng = self.c["map"], self.rng
        op = rng.randrange(8)
        key = lambda: self._val(rng.randint(0, 30))
        if op == 0:
            self._call(m.__setitem__, key(), self._rec())
        elif op == 1:
            self._call(m.update, {rng.randint(0, 30): self._rec() for _ in range(3)})
        elif op == 2:
            self._call(m.update, [(key(), self._rec()) for _ in range(2)])
        elif op == 3:
            self._call(m.setdefault, key(), self._rec())
        elif op == 4:
            self._call(m.pop, key(), None)
        elif op == 5:
            self._call(m.__delitem__, key())
        elif op == 6:
            keys = np.arange(rng.randint(0, 5), dtype=np.int64)
            vals = np.zeros(len(keys), m.dtype)
            vals["id"] = 3
            self._call(m.set_many, TrapArray(self._action(), keys), vals)
        else:
            self._call(lambda: m.get(key()))

    def op_view(self) -> None:
        rng = self.rng
        kind = rng.choice(("vector", "deque", "map", "pool"))
        c = self.c[kind]
        try:
            if kind == "pool":
                hs = c.handles()
                r = c[int(hs[rng.randrange(len(hs))])] if len(hs) else None
            elif kind == "map":
                ks = list(c)
                r = c[rng.choice(ks)] if ks else None
            else:
                r = c[rng.randrange(len(c))] if len(c) else None
        except self.CLEAR:
            return
        if r is None:
            return
        op = rng.randrange(4)
        if op == 0:
            self._call(setattr, r, rng.choice(("id", "a")), self._val(rng.randint(1, 99)))
        elif op == 1:
            self._call(r.__getitem__, self._val(rng.randint(-4, 3)))
        elif op == 2:
            self._call(r.__setitem__, self._val(rng.randint(0, 2)), self._val(5))
        else:
            self._call(r.as_tuple)

    def op_pool(self) -> None:
        p, rng = self.c["pool"], self.rng
        hs = p.handles().tolist() if not p.closed else []
        h = rng.choice(hs) if hs else 1
        op = rng.randrange(6)
        if op == 0:
            self._call(p.alloc, *self._rec())
        elif op == 1:
            self._call(p.alloc, id=self._val(3), x=self._val(0.5))
        elif op == 2:
            self._call(p.set, h, rng.choice(("id", "x", "a")), self._val(9))
        elif op == 3:
            self._call(p.update, h, id=self._val(4), a=self._val(-3))
        elif op == 4:
            self._call(p.free, self._val(h))
        else:
            self._call(p.get, self._val(h), "id")

    def op_bulk(self) -> None:
        p, rng = self.c["pool"], self.rng
        hs = p.handles() if not p.closed else np.zeros(0, np.int64)
        op = rng.randrange(3)
        if op == 0:
            self._call(p.alloc_many, 3, id=np.array([self._val(5), 6, 7], dtype=object))
        elif op == 1:
            self._call(p.scatter, "id", hs[:4], np.array([self._val(8)] * len(hs[:4]),
                                                          dtype=object))
        else:
            self._call(p.free_many, TrapArray(self._action(), hs[:2]))

    def op_check(self) -> None:
        self.check()

    def check(self) -> None:
        """Every open container reads back whole, every record from the universe."""
        self.pins.clear()
        for kind, c in list(self.c.items()):
            if c.closed:
                self._fresh(kind)
                continue
            if kind == "pool":
                hs = c.handles().tolist()
                if len(hs) != len(c):
                    raise ModelError(f"pool: {len(hs)} handles, len {len(c)}")
                recs = [c.read(h) for h in hs]
            elif kind == "map":
                recs = [r.as_tuple() for r in c.values()]
                if len(recs) != len(c) or c.to_numpy().shape[0] != len(c):
                    raise ModelError(f"map: {len(recs)} records, len {len(c)}")
            else:
                recs = c.tolist()
                if len(recs) != len(c):
                    raise ModelError(f"{kind}: {len(recs)} records, len {len(c)}")
            for rec in recs:
                if not (0 <= rec[0] <= 999 and (rec[1] in self.XS or rec[1] in (5.0, 9.0, 0.0))
                        and -128 <= rec[2] <= 127 and rec[3] in (b"", b"a", b"abc")):
                    raise ModelError(f"{kind}: record {rec!r} was never written")
            if len(c) > 3000:
                self._fresh(kind)

    def close(self) -> None:
        self.check()
        for c in self.c.values():
            c.close()

    def step(self, name: str) -> None:
        """Run one operation by name, then check every container."""
        self.calls += 1
        getattr(self, "op_" + name)()
        self.check()


SECTIONS = {"block": BlockSection, "pool": PoolSection, "vector": VectorSection,
            "deque": DequeSection, "map": MapSection, "reentry": ReentrySection}


def run(calls: int, seed: int, sections: list[str], log_every: int = 0) -> dict:
    """``calls`` random operations spread over ``sections``; raises ModelError on a
    mismatch. Returns the counts per section and per operation."""
    rng = random.Random(seed)
    objs = [SECTIONS[s](random.Random(rng.random())) for s in sections]
    plans = []
    for o in objs:
        names = list(o.OPS)
        plans.append((o, names, [o.OPS[n] for n in names]))
    per_op: dict[str, int] = {}
    t0 = time.time()
    for i in range(calls):
        o, names, weights = plans[rng.randrange(len(plans))]
        name = rng.choices(names, weights)[0]
        try:
            o.step(name)
        except ModelError:
            raise
        except Exception as e:           # a valid call that failed is a finding too
            raise ModelError(f"{o.name}.{name} (call {i + 1}) raised "
                             f"{type(e).__name__}: {e}") from e
        key = f"{o.name}.{name}"
        per_op[key] = per_op.get(key, 0) + 1
        if log_every and (i + 1) % log_every == 0:
            print(f"  {i + 1} calls, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    for o in objs:
        o.close()
    return {"calls": calls, "seed": seed, "seconds": round(time.time() - t0, 1),
            "per_op": per_op}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000, help="API calls to make")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    ap.add_argument("--section", action="append", choices=sorted(SECTIONS),
                    help="API section(s) to fuzz (default: all)")
    ap.add_argument("--worker", action="store_true", help="run in this process (no crash guard)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int(time.time() * 1000) % (1 << 31)
    sections = a.section or sorted(SECTIONS)
    if a.worker:
        try:
            res = run(a.calls, seed, sections, 0 if a.quiet else 100_000)
        except ModelError as e:
            print(f"fuzz: MODEL MISMATCH (seed {seed}): {e}", flush=True)
            return 1
        print(f"fuzz: {res['calls']} calls survived (seed {seed}, sections "
              f"{','.join(sections)}, {res['seconds']} s); hakmem build "
              f"debug={hakmem.build_info()['debug']}", flush=True)
        if not a.quiet:
            for k, v in sorted(res["per_op"].items()):
                print(f"  {k:28} {v}")
        return 0
    # One child per section, --calls split evenly: the block section's model is hakmem's
    # own live counts, which records and containers in the same process would move.
    total, done = a.calls, []
    for i, sec in enumerate(sections):
        n = total // len(sections) + (1 if i < total % len(sections) else 0)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--calls", str(n),
               "--seed", str(seed), "--section", sec]
        if a.quiet:
            cmd.append("--quiet")
        sys.stdout.flush()
        rc = subprocess.call(cmd)
        if rc < 0:
            print(f"fuzz: INTERPRETER CRASHED with {signal.Signals(-rc).name} "
                  f"(replay: {' '.join(cmd[1:])})", flush=True)
            return 2
        if rc:
            return rc
        done.append(f"{sec} {n}")
    print(f"fuzz: {total} calls survived in all ({', '.join(done)}; seed {seed})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
