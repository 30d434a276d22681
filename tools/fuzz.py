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

RecordPool and containers plug in as more sections: a class with ``__init__(rng)``,
``OPS`` (name -> weight), one ``op_<name>(self)`` method per entry, ``check()`` and
``close()``, added to ``SECTIONS``. tests/test_fuzz.py drives the same sections
with hypothesis (``step(name, draw)``) and runs a short random run through this
script.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import random
import signal
import subprocess
import sys
import time

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
        k = rng.randrange(10)
        if k == 9:
            hakmem.free(0)                       # free(NULL): a no-op, as in C
        elif k == 0:
            _expect(OverflowError, hakmem.malloc, -rng.randint(1, 1 << 70))
        elif k == 1:
            _expect(TypeError, hakmem.malloc, rng.choice((None, 1.5, "8", b"8")))
        elif k == 2:
            _expect(TypeError, hakmem.free, rng.choice((None, 1.0, "x", True, [live])))
        elif k == 3:
            _expect(ValueError, hakmem.free, rng.choice((-1, -(1 << 70), U64, U64 + 16)))
        elif k == 4:
            _expect((TypeError, OverflowError), hakmem.calloc, rng.choice((None, -1, 2.0)), 8)
        elif k == 5:
            _expect(TypeError, hakmem.realloc, rng.choice((None, 1.5, False)), 8)
        elif k == 6 and live is not None:
            _expect((TypeError, OverflowError), hakmem.realloc, live,
                    rng.choice((None, -5, 3.5)))
            self._verify(live)
        elif k == 7:
            _expect((TypeError, ValueError), hakmem.usable_size, rng.choice((None, -3, U64)))
        else:
            _expect((TypeError, ValueError), hakmem.is_live, rng.choice((None, -3, U64, 1.0)))

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


SECTIONS = {"block": BlockSection}


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
        o.step(name)
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
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--calls", str(a.calls),
           "--seed", str(seed)] + [x for s in sections for x in ("--section", s)]
    if a.quiet:
        cmd.append("--quiet")
    rc = subprocess.call(cmd)
    if rc < 0:
        print(f"fuzz: INTERPRETER CRASHED with {signal.Signals(-rc).name} "
              f"(replay: {' '.join(cmd[1:])})", flush=True)
        return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
