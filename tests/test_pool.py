"""RecordPool: behaviour, error paths, pickling, numpy round trips, a model-based state
machine and threads (Python threads in GIL-releasing bulk calls, and a Cython extension
that cimports hakmem.pool and runs the nogil C API from several threads)."""
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import hakmem
from hakmem import RecordPool, StaleHandleError
from hakmem.spec import SpecError

SPEC = "x:f8 y:f8 id:i4"


@pytest.fixture
def pool():
    p = RecordPool(SPEC)
    yield p
    p.close()


def snapshot(p):
    """Everything observable about a pool's records (to check 'unchanged')."""
    hs = p.handles()
    return (len(p), hs.tolist(), [p.column(f).tolist() for f in p.fields])


# ---- basics ----------------------------------------------------------------------
def test_alloc_signature():
    import inspect
    assert str(inspect.signature(RecordPool.alloc)) == "(self, /, *values, **fields)"
    assert "Allocate a record" in RecordPool.alloc.__doc__


def test_exports():
    assert issubclass(StaleHandleError, KeyError)
    for name in ("RecordPool", "StaleHandleError", "RecordView"):
        assert name in hakmem.__all__ and hasattr(hakmem, name)


@pytest.mark.parametrize("spec", [
    [("x", "f8"), ("y", "f8"), ("id", "i4")],
    np.dtype([("x", "f8"), ("y", "f8"), ("id", "i4")], align=True),
    "x:f8 y:f8 id:i4",
    "x:f8, y:f8, id:i4",
])
def test_spec_forms(spec):
    p = RecordPool(spec)
    assert p.fields == ("x", "y", "id")
    assert p.dtype == np.dtype([("x", "f8"), ("y", "f8"), ("id", "i4")], align=True)
    assert p.itemsize == 24
    h = p.alloc(x=1.5, y=-2.0, id=7)
    assert (p.get(h, "x"), p.get(h, "y"), p.get(h, "id")) == (1.5, -2.0, 7)
    p.close()


def test_packed_layout():
    p = RecordPool("a:u1 b:f8", packed=True)
    assert p.itemsize == 9 and p.dtype.fields["b"][1] == 1
    hs = [p.alloc(a=i, b=i / 3) for i in range(200)]
    assert [p.get(h, "b") for h in hs] == [i / 3 for i in range(200)]
    assert p.column("a").tolist() == list(range(200))


def test_bad_spec():
    with pytest.raises(SpecError):
        RecordPool("x:object")
    with pytest.raises(SpecError):
        RecordPool("")


def test_alloc_get_set_free(pool):
    h = pool.alloc(x=1.0, y=2.0, id=3)
    assert isinstance(h, int) and h > 0
    assert h in pool and pool.is_live(h) and len(pool) == 1
    pool.set(h, "y", 5)
    assert pool.get(h, "y") == 5.0 and isinstance(pool.get(h, "y"), float)
    pool.update(h, x=9.0, id=-4)
    assert pool.read(h) == (9.0, 5.0, -4)
    pool.free(h)
    assert h not in pool and len(pool) == 0


def test_positional_and_defaults(pool):
    h = pool.alloc(1.0, 2.0)
    assert pool.read(h) == (1.0, 2.0, 0)
    h2 = pool.alloc(3.0, id=9)
    assert pool.read(h2) == (3.0, 0.0, 9)
    assert pool.read(pool.alloc()) == (0.0, 0.0, 0)
    with pytest.raises(TypeError, match="3 fields, got 4"):
        pool.alloc(1.0, 2.0, 3, 4)
    with pytest.raises(TypeError, match="'x' given both"):
        pool.alloc(1.0, x=2.0)
    assert len(pool) == 3


def test_field_types_round_trip():
    p = RecordPool("a:i1 b:i2 c:i4 d:i8 e:u1 f:u2 g:u4 h:u8 i:f4 j:f8 k:bool l:S5")
    lims = dict(a=(-128, 127), b=(-2**15, 2**15 - 1), c=(-2**31, 2**31 - 1),
                d=(-2**63, 2**63 - 1), e=(0, 255), f=(0, 2**16 - 1), g=(0, 2**32 - 1),
                h=(0, 2**64 - 1))
    for which in (0, 1):
        vals = {k: v[which] for k, v in lims.items()}
        vals.update(i=0.5, j=-1e300, k=bool(which), l=b"ab\x00c")
        hnd = p.alloc(**vals)
        got = dict(zip(p.fields, p.read(hnd)))
        vals["l"] = b"ab\x00c"
        assert got == vals
        assert isinstance(got["k"], bool)
    # numpy scalars are accepted
    hnd = p.alloc(a=np.int8(-3), d=np.int64(5), h=np.uint64(2**64 - 1), j=np.float32(0.25),
                  k=np.bool_(True), l=np.bytes_(b"xy"))
    assert p.read(hnd)[0] == -3 and p.get(hnd, "h") == 2**64 - 1 and p.get(hnd, "k") is True
    p.close()


# ---- stale handles ----------------------------------------------------------------
def test_double_free_and_reuse(pool):
    h = pool.alloc(x=1.0)
    pool.free(h)
    before = snapshot(pool)
    with pytest.raises(StaleHandleError, match="was freed"):
        pool.free(h)
    h2 = pool.alloc(x=2.0)                 # reuses the slot ...
    assert h2 != h and (h2 >> 16) == (h >> 16)
    for op in (lambda: pool.free(h), lambda: pool.get(h, "x"),
               lambda: pool.set(h, "x", 3.0), lambda: pool[h], lambda: pool.read(h),
               lambda: pool.update(h, x=1.0)):
        with pytest.raises(StaleHandleError):
            op()
    assert pool.get(h2, "x") == 2.0        # ... and the old handle never touched it
    assert before[0] + 1 == len(pool)
    assert pool.stats()["stale_refused"] >= 7


def test_stale_is_keyerror_with_readable_message(pool):
    h = pool.alloc()
    pool.free(h)
    with pytest.raises(KeyError) as ei:
        pool.get(h, "x")
    assert "was freed" in str(ei.value) and not str(ei.value).startswith("'")


@pytest.mark.parametrize("bogus", [0, 1, -1, 2**64, 2**100, -2**70, True])
def test_bogus_handles(pool, bogus):
    pool.alloc()
    before = snapshot(pool)
    with pytest.raises(StaleHandleError):
        pool.free(bogus)
    with pytest.raises(StaleHandleError):
        pool.get(bogus, "x")
    assert bogus not in pool
    assert snapshot(pool) == before


def test_handle_type_errors(pool):
    h = pool.alloc()
    for bad in (float(h), str(h), None, [h]):
        with pytest.raises(TypeError, match="handle"):
            pool.free(bad)
        with pytest.raises(TypeError, match="handle"):
            pool.get(bad, "x")
    assert pool.get(np.int64(h), "x") == 0.0 and np.uint64(h) in pool


def test_foreign_pool_handle(pool):
    other = RecordPool(SPEC)
    ho = other.alloc(x=1.0)
    pool.alloc()
    with pytest.raises(StaleHandleError, match="not a handle of this pool"):
        pool.free(ho)
    assert other.get(ho, "x") == 1.0


def test_never_issued_slot(pool):
    h = pool.alloc()
    fake = h + (10**6 << 16)
    with pytest.raises(StaleHandleError, match="never handed out"):
        pool.get(fake, "x")


def test_generation_retirement_never_repeats_a_handle():
    p = RecordPool("v:u2")               # 4-byte slots, 256 per chunk
    first = p.alloc(v=1)
    p.free(first)
    seen = {first}
    n = 70_000                           # > 2 * 32767 reuses of one slot
    for i in range(n):
        h = p.alloc(v=i & 0xFFFF)
        assert h not in seen
        seen.add(h)
        p.free(h)
    st_ = p.stats()
    assert st_["retired_slots"] >= 2
    assert st_["allocs"] == n + 1 and st_["frees"] == n + 1 and len(p) == 0
    with pytest.raises(StaleHandleError):
        p.get(first, "v")
    p.close()


def test_fully_retired_chunk_is_released():
    p = RecordPool("v:S1024")            # one record per chunk
    h = p.alloc()
    p.free(h)
    for _ in range(32766):               # generations 1, 3, ... 0xFFFD: 32767 uses
        p.free(p.alloc())
    st_ = p.stats()
    assert st_["chunks_dead"] == 1 and st_["chunks_present"] == 0 and p.nbytes < 1024
    h2 = p.alloc(v=b"z")
    assert p.get(h2, "v") == b"z" and p.stats()["chunks"] == 2


# ---- field errors: named, and nothing half-written --------------------------------
def test_unknown_field(pool):
    h = pool.alloc()
    with pytest.raises(AttributeError, match="'z'"):
        pool.alloc(x=1.0, z=2)
    with pytest.raises(AttributeError, match="'z'"):
        pool.get(h, "z")
    with pytest.raises(AttributeError, match="'z'"):
        pool.set(h, "z", 1)
    with pytest.raises(AttributeError, match="'z'"):
        pool.gather("z", [h])
    with pytest.raises(AttributeError, match="'z'"):
        pool.alloc_many(2, z=1)
    assert len(pool) == 1


@pytest.mark.parametrize("field,value,exc", [
    ("id", 2**31, OverflowError), ("id", -2**31 - 1, OverflowError),
    ("id", 1.0, TypeError), ("id", "3", TypeError), ("id", None, TypeError),
    ("x", "1.0", TypeError), ("x", None, TypeError), ("x", 10**400, OverflowError),
    ("x", b"1", TypeError), ("x", 1j, TypeError),
])
def test_bad_values_name_the_field(pool, field, value, exc):
    h = pool.alloc(x=1.0, y=2.0, id=3)
    before = snapshot(pool)
    st0 = pool.stats()
    with pytest.raises(exc, match=repr(field)):
        pool.alloc(**{"x": 5.0, "y": 6.0, field: value})
    with pytest.raises(exc, match=repr(field)):
        pool.set(h, field, value)
    with pytest.raises(exc, match=repr(field)):
        pool.update(h, **{"y": 9.0, field: value})   # y must not be written either
    with pytest.raises(exc, match=repr(field)):
        pool.alloc_many(3, **{"y": 1.0, field: [0, value, 0] if exc is not TypeError else value})
    assert snapshot(pool) == before
    assert pool.stats()["allocs"] == st0["allocs"]


def test_small_types_ranges():
    p = RecordPool("a:u1 b:i1 c:f4 d:bool e:S3 f:u8")
    for f, v, exc in [("a", -1, OverflowError), ("a", 256, OverflowError),
                      ("b", 128, OverflowError), ("c", 1e39, OverflowError),
                      ("d", 2, OverflowError), ("d", 0.0, TypeError), ("e", b"abcd", OverflowError),
                      ("e", "ab", TypeError), ("f", -1, OverflowError), ("f", 2**64, OverflowError)]:
        with pytest.raises(exc, match=repr(f)):
            p.alloc(**{f: v})
        with pytest.raises(exc, match=repr(f)):
            p.alloc_many(2, **{f: [v, v] if not isinstance(v, bytes) else [v, b""]})
    assert len(p) == 0 and p.stats()["allocs"] == 0
    h = p.alloc(c=float("inf"), d=1, e=b"abc")
    assert p.get(h, "c") == float("inf") and p.get(h, "d") is True and p.get(h, "e") == b"abc"


# ---- record views -------------------------------------------------------------------
def test_record_view(pool):
    h = pool.alloc(x=1.0, y=2.0, id=3)
    r = pool[h]
    assert r.x == 1.0 and r.id == 3 and r.handle == h and r.pool is pool
    r.y = 7.5
    assert pool.get(h, "y") == 7.5
    assert r.as_tuple() == (1.0, 7.5, 3) and r.as_dict() == {"x": 1.0, "y": 7.5, "id": 3}
    assert r == (1.0, 7.5, 3) and r != (1.0, 7.5, 4)
    h2 = pool.alloc(1.0, 7.5, 3)
    assert r == pool[h2] and pool[h2] == r
    pool[h2].id = 4
    assert r != pool[h2]
    assert repr(r) == "Record(x=1.0, y=7.5, id=3)"
    assert "id" in dir(r)
    with pytest.raises(AttributeError, match="'nope'"):
        r.nope
    with pytest.raises(AttributeError, match="'nope'"):
        r.nope = 1
    with pytest.raises(TypeError, match="'id'"):
        r.id = "x"
    with pytest.raises(TypeError):
        hash(r)
    del pool[h]
    with pytest.raises(StaleHandleError):
        r.x
    with pytest.raises(StaleHandleError):
        r.x = 1.0
    assert "stale" in repr(r)
    with pytest.raises(StaleHandleError):
        pool[h]
    with pytest.raises(TypeError):
        hakmem.RecordView()


# ---- bulk -----------------------------------------------------------------------------
def test_alloc_many_gather_scatter(pool):
    n = 5000
    hs = pool.alloc_many(n, x=np.arange(n, dtype=np.float64), id=7)
    assert hs.dtype == np.int64 and hs.shape == (n,) and len(set(hs.tolist())) == n
    assert len(pool) == n
    np.testing.assert_array_equal(pool.gather("x", hs), np.arange(n))
    assert (pool.gather("id", hs) == 7).all() and pool.gather("id", hs).dtype == np.int32
    pool.scatter("y", hs, pool.gather("x", hs) * 2)
    np.testing.assert_array_equal(pool.gather("y", hs[::-1]), (np.arange(n) * 2)[::-1])
    pool.scatter("id", hs[:10], 1)
    assert pool.gather("id", hs[:11]).tolist() == [1] * 10 + [7]
    # shapes, lists and uint64 arrays of handles
    assert pool.gather("x", hs[:6].reshape(2, 3)).shape == (2, 3)
    assert pool.gather("x", hs[:3].tolist()).tolist() == [0.0, 1.0, 2.0]
    assert pool.gather("x", hs[:3].astype(np.uint64)).tolist() == [0.0, 1.0, 2.0]
    assert pool.gather("x", []).shape == (0,)
    assert pool.alloc_many(0).shape == (0,)
    # column / handles / iteration are in the same (slot) order
    order = pool.handles()
    assert sorted(order.tolist()) == sorted(hs.tolist())
    np.testing.assert_array_equal(pool.column("x"), pool.gather("x", order))
    assert list(pool) == order.tolist()
    pool.free_many(hs[::2])
    assert len(pool) == n // 2
    pool.free_many(hs[1::2].tolist())
    assert len(pool) == 0 and pool.column("x").shape == (0,)


def test_alloc_many_errors_allocate_nothing(pool):
    pool.alloc()
    before = snapshot(pool)
    with pytest.raises(ValueError, match="'x'"):
        pool.alloc_many(3, x=[1.0, 2.0])
    with pytest.raises(TypeError, match="'id'"):
        pool.alloc_many(3, id=[1.0, 2.0, 3.0])
    with pytest.raises(OverflowError, match="'id'"):
        pool.alloc_many(3, id=np.array([0, 2**40, 1]))
    with pytest.raises(TypeError, match="'x'"):
        pool.alloc_many(2, x=["a", "b"])
    with pytest.raises(TypeError, match="'x'"):
        pool.alloc_many(2, x=[1.0, None])
    with pytest.raises(ValueError):
        pool.alloc_many(-1)
    with pytest.raises(TypeError):
        pool.alloc_many(1.5)
    assert snapshot(pool) == before


def test_free_many_all_or_nothing(pool):
    hs = pool.alloc_many(10, id=np.arange(10))
    dead = pool.alloc()
    pool.free(dead)
    before = snapshot(pool)
    with pytest.raises(StaleHandleError, match="position 5.*nothing was freed"):
        pool.free_many(list(hs[:5]) + [dead] + list(hs[5:]))
    assert snapshot(pool) == before
    with pytest.raises(StaleHandleError, match="repeated"):
        pool.free_many([hs[0], hs[1], hs[0]])
    assert snapshot(pool) == before
    with pytest.raises(TypeError):
        pool.free_many([1.5, 2.5])
    assert snapshot(pool) == before
    pool.free_many(hs)
    assert len(pool) == 0


def test_gather_scatter_stale_change_nothing(pool):
    hs = pool.alloc_many(10, x=1.0)
    dead = pool.alloc()
    pool.free(dead)
    before = snapshot(pool)
    with pytest.raises(StaleHandleError, match="position 3"):
        pool.gather("x", np.r_[hs[:3], dead])
    with pytest.raises(StaleHandleError, match="position 10"):
        pool.scatter("x", np.r_[hs, dead], 5.0)
    with pytest.raises(ValueError, match="'x'"):
        pool.scatter("x", hs, [1.0, 2.0])
    with pytest.raises(OverflowError, match="'id'"):
        pool.scatter("id", hs, 2**33)
    assert snapshot(pool) == before


# ---- numpy dtype round trip ---------------------------------------------------------------
def test_numpy_dtype_round_trip():
    dt = np.dtype([("t", "f8"), ("px", "f4"), ("qty", "u4"), ("side", "i1"),
                   ("ok", "?"), ("sym", "S8")], align=True)
    src = np.zeros(1000, dtype=dt)
    rng = np.random.default_rng(1)
    src["t"] = rng.random(1000)
    src["px"] = rng.random(1000).astype("f4")
    src["qty"] = rng.integers(0, 2**32, 1000, dtype=np.uint64)
    src["side"] = rng.integers(-128, 128, 1000)
    src["ok"] = rng.random(1000) > 0.5
    src["sym"] = [b"S%d" % i for i in range(1000)]
    p = RecordPool(dt)
    assert p.dtype == dt
    hs = p.alloc_many(len(src), **{n: src[n] for n in dt.names})
    back = np.zeros(len(src), dtype=dt)
    for n in dt.names:
        back[n] = p.gather(n, hs)
    assert back.tobytes() == src.tobytes()
    h = int(hs[17])
    assert p.read(h) == tuple(src[17].tolist())
    p.close()


# ---- memory, trim, clear, close ------------------------------------------------------------
def test_memory_accounting_and_trim():
    p = RecordPool("x:f8 y:f8")
    assert p.nbytes == 0 and p.capacity == 0
    cls1024 = hakmem.stats()["classes"][19]["live_blocks"]
    hs = p.alloc_many(10_000)
    st_ = p.stats()
    assert p.capacity >= 10_000 and st_["records_per_chunk"] == 64
    assert hakmem.stats()["classes"][19]["live_blocks"] - cls1024 == st_["chunks_present"]
    assert p.nbytes / len(p) <= 20
    keep = hs[-5:]
    p.free_many(hs[:-5])
    before = p.nbytes
    released = p.trim()
    assert released == before - p.nbytes == (st_["chunks_present"] - 1) * (1024 + 128)
    assert p.stats()["chunks_present"] == 1 and p.stats()["chunks_trimmed"] == st_["chunks"] - 1
    assert p.gather("x", keep).tolist() == [0.0] * 5
    with pytest.raises(StaleHandleError):
        p.get(int(hs[0]), "x")           # its chunk was given back
    hs2 = p.alloc_many(10_000)             # repopulates trimmed chunks ...
    assert not set(hs2.tolist()) & set(hs.tolist())   # ... with fresh generations
    with pytest.raises(StaleHandleError):
        p.free_many(hs[:1])
    p.close()
    assert p.nbytes == 0


def test_clear(pool):
    hs = pool.alloc_many(300, x=1.0)
    cap = pool.capacity
    pool.clear()
    assert len(pool) == 0 and pool.capacity == cap
    with pytest.raises(StaleHandleError):
        pool.get(int(hs[0]), "x")
    h = pool.alloc(x=2.0)
    assert h not in set(hs.tolist()) and pool.get(h, "x") == 2.0


def test_close_and_context_manager():
    with RecordPool(SPEC) as p:
        h = p.alloc(x=1.0)
    assert p.closed and p.nbytes == 0 and p.capacity == 0
    for op in (lambda: p.alloc(), lambda: p.free(h), lambda: p.get(h, "x"),
               lambda: p.set(h, "x", 1.0), lambda: len(p), lambda: p.alloc_many(2),
               lambda: p.free_many([h]), lambda: p.gather("x", [h]), lambda: p.handles(),
               lambda: p.column("x"), lambda: p.trim(), lambda: p.clear(),
               lambda: pickle.dumps(p), lambda: p[h], lambda: p.scatter("x", [h], 1.0)):
        with pytest.raises(ValueError, match="closed"):
            op()
    p.close()                              # idempotent
    assert "closed" in repr(p) and p.stats()["closed"]
    with pytest.raises(ValueError, match="closed"):
        with p:
            pass


def test_dealloc_returns_memory():
    gc.collect()
    before = hakmem.stats()["classes"][19]["live_blocks"]
    p = RecordPool("x:f8 y:f8")
    p.alloc_many(6400)
    assert hakmem.stats()["classes"][19]["live_blocks"] - before == 100
    del p
    gc.collect()
    assert hakmem.stats()["classes"][19]["live_blocks"] == before


def test_big_records_use_large_path():
    p = RecordPool("blob:S3000 n:i8")
    hs = [p.alloc(blob=b"x" * i, n=i) for i in range(0, 3000, 300)]
    assert [p.get(h, "n") for h in hs] == list(range(0, 3000, 300))
    assert p.get(hs[3], "blob") == b"x" * 900
    assert p.stats()["records_per_chunk"] == 1
    p.free(hs[0])
    p.close()


# ---- pickling -------------------------------------------------------------------------------
def test_pickle_round_trip():
    p = RecordPool("x:f8 id:i4 name:S6")
    hs = p.alloc_many(1000, x=np.arange(1000.0), id=np.arange(1000), name=b"ab")
    p.free_many(hs[:300])
    p.trim()
    p.free_many(hs[300:310])
    q = pickle.loads(pickle.dumps(p))
    assert len(q) == len(p) == 690 and q.dtype == p.dtype
    np.testing.assert_array_equal(q.gather("x", hs[310:]), np.arange(310, 1000.0))
    low = (1 << 48) - 1                  # the copy has a tag of its own; slots and gens agree
    assert [h & low for h in q.handles().tolist()] == [h & low for h in p.handles().tolist()]
    assert not set(q.handles().tolist()) & set(p.handles().tolist())
    for dead in (hs[0], hs[305]):
        with pytest.raises(StaleHandleError):
            q.get(int(dead), "x")
    new = q.alloc_many(400)
    assert not set(new.tolist()) & set(hs.tolist())
    q.free_many(hs[310:])
    assert len(q) == 400 and len(p) == 690
    empty = pickle.loads(pickle.dumps(RecordPool("a:i1")))
    assert len(empty) == 0 and empty.read(empty.alloc(a=5)) == (5,)


# ---- a model-based state machine ---------------------------------------------------------------
VALUES = {
    "a": st.integers(-2**31, 2**31 - 1),
    "b": st.floats(allow_nan=False, width=64),
    "c": st.binary(max_size=3),
    "d": st.integers(0, 255),
}
BAD = {
    "a": st.one_of(st.integers(2**31, 2**40), st.floats(), st.text(max_size=2)),
    "b": st.one_of(st.text(max_size=2), st.none(), st.binary(max_size=2)),
    "c": st.one_of(st.binary(min_size=4, max_size=6), st.text(max_size=2), st.integers()),
    "d": st.one_of(st.integers(256, 1000), st.integers(-100, -1), st.floats()),
}
ZERO = {"a": 0, "b": 0.0, "c": b"", "d": 0}


def norm(field, v):
    return v.rstrip(b"\0") if field == "c" else v


class PoolMachine(RuleBasedStateMachine):
    """RecordPool against a dict-of-dicts model: handle -> {field: value}."""

    def __init__(self):
        super().__init__()
        self.pool = RecordPool("a:i4 b:f8 c:S3 d:u1")
        self.model = {}
        self.dead = []

    def teardown(self):
        self.pool.close()

    @rule(vals=st.fixed_dictionaries({}, optional=VALUES))
    def alloc(self, vals):
        h = self.pool.alloc(**vals)
        assert h not in self.model and h not in self.dead
        rec = dict(ZERO)
        rec.update({k: norm(k, v) for k, v in vals.items()})
        self.model[h] = rec

    @rule(data=st.data(), field=st.sampled_from(sorted(VALUES)))
    def alloc_bad(self, data, field):
        before = snapshot(self.pool)
        with pytest.raises((TypeError, OverflowError)):
            self.pool.alloc(**{field: data.draw(BAD[field])})
        assert snapshot(self.pool) == before

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data):
        h = data.draw(st.sampled_from(sorted(self.model)))
        self.pool.free(h)
        del self.model[h]
        self.dead.append(h)

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def use_dead(self, data):
        h = data.draw(st.sampled_from(self.dead))
        op = data.draw(st.sampled_from(["free", "get", "set", "view", "free_many", "gather"]))
        with pytest.raises(StaleHandleError):
            if op == "free":
                self.pool.free(h)
            elif op == "get":
                self.pool.get(h, "a")
            elif op == "set":
                self.pool.set(h, "a", 1)
            elif op == "view":
                self.pool[h]
            elif op == "free_many":
                self.pool.free_many(sorted(self.model)[:3] + [h])
            else:
                self.pool.gather("b", sorted(self.model)[:3] + [h])

    @precondition(lambda self: self.model)
    @rule(data=st.data(), field=st.sampled_from(sorted(VALUES)))
    def set(self, data, field):
        h = data.draw(st.sampled_from(sorted(self.model)))
        v = data.draw(VALUES[field])
        if data.draw(st.booleans()):
            self.pool.set(h, field, v)
        else:
            setattr(self.pool[h], field, v)
        self.model[h][field] = norm(field, v)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), field=st.sampled_from(sorted(VALUES)))
    def set_bad(self, data, field):
        h = data.draw(st.sampled_from(sorted(self.model)))
        with pytest.raises((TypeError, OverflowError)):
            self.pool.set(h, field, data.draw(BAD[field]))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get(self, data):
        h = data.draw(st.sampled_from(sorted(self.model)))
        assert self.pool[h].as_dict() == self.model[h]
        assert self.pool.get(h, "b") == self.model[h]["b"]

    @rule(n=st.integers(0, 150), a=VALUES["a"], d=st.lists(VALUES["d"], min_size=0, max_size=150))
    def alloc_many(self, n, a, d):
        cols = {"a": a}
        if len(d) == n:
            cols["d"] = d
        hs = self.pool.alloc_many(n, **cols).tolist()
        for i, h in enumerate(hs):
            assert h not in self.model and h not in self.dead
            rec = dict(ZERO, a=a)
            if "d" in cols:
                rec["d"] = d[i]
            self.model[h] = rec

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free_many(self, data):
        hs = data.draw(st.lists(st.sampled_from(sorted(self.model)), unique=True, min_size=1))
        self.pool.free_many(np.array(hs, dtype=np.int64))
        for h in hs:
            del self.model[h]
            self.dead.append(h)

    @precondition(lambda self: len(self.model) >= 1)
    @rule(data=st.data())
    def free_many_with_duplicate(self, data):
        hs = data.draw(st.lists(st.sampled_from(sorted(self.model)), unique=True, min_size=1))
        with pytest.raises(StaleHandleError):
            self.pool.free_many(hs + [hs[0]])

    @precondition(lambda self: self.model)
    @rule(data=st.data(), v=VALUES["b"])
    def scatter_gather(self, data, v):
        hs = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1))
        self.pool.scatter("b", hs, v)
        for h in hs:
            self.model[h]["b"] = v
        assert self.pool.gather("b", hs).tolist() == [v] * len(hs)
        assert self.pool.gather("a", hs).tolist() == [self.model[h]["a"] for h in hs]

    @rule()
    def clear(self):
        self.pool.clear()
        self.dead.extend(self.model)
        self.model.clear()

    @rule()
    def trim(self):
        self.pool.trim()

    @rule()
    def pickle_round_trip(self):
        old = self.pool
        self.pool = pickle.loads(pickle.dumps(old))
        old.close()
        # the copy has its own tag (old handles stay valid in it); use its handles now
        low = (1 << 48) - 1
        by_low = {h & low: h for h in self.pool.handles().tolist()}
        for h in list(self.model):
            assert self.pool.read(h) == tuple(self.model[h][f] for f in "abcd")
        self.model = {by_low[h & low]: v for h, v in self.model.items()}

    @invariant()
    def agrees_with_model(self):
        assert len(self.pool) == len(self.model)
        hs = self.pool.handles().tolist()
        assert sorted(hs) == sorted(self.model)
        assert self.pool.column("a").tolist() == [self.model[h]["a"] for h in hs]
        assert self.pool.column("c").tolist() == [self.model[h]["c"] for h in hs]


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


# ---- threads ----------------------------------------------------------------------------------
def test_python_threads_bulk_and_single():
    """Threads mixing GIL-releasing bulk calls with single alloc/free: no handle is
    handed out twice, nothing is lost, counts balance."""
    p = RecordPool("tid:i4 i:i4")
    nthreads, rounds, batch = 4, 30, 2000
    kept = [None] * nthreads
    errors = []

    def work(tid):
        try:
            mine = []
            for r in range(rounds):
                hs = p.alloc_many(batch, tid=tid, i=np.arange(batch, dtype=np.int32))
                singles = [p.alloc(tid=tid, i=-1) for _ in range(20)]
                assert (p.gather("tid", hs) == tid).all()
                assert (p.gather("i", hs) == np.arange(batch)).all()
                p.free_many(hs[1::2])
                for h in singles[1:]:
                    p.free(h)
                mine.extend(hs[0::2].tolist())
                mine.append(singles[0])
            kept[tid] = mine
        except Exception as e:        # pragma: no cover - reported below
            errors.append(e)

    stop = threading.Event()

    def churn():                       # trim / stats / snapshots while the others work
        try:
            while not stop.is_set():
                p.trim()
                p.stats()
                hs = p.handles()
                assert len(set(hs.tolist())) == len(hs)
        except Exception as e:        # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    side = threading.Thread(target=churn)
    side.start()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    side.join()
    assert not errors, errors
    allkept = [h for k in kept for h in k]
    assert len(set(allkept)) == len(allkept) == nthreads * rounds * (batch // 2 + 1)
    assert sorted(p.handles().tolist()) == sorted(allkept)
    st_ = p.stats()
    assert st_["allocs"] - st_["frees"] == len(p) == len(allkept)
    for tid in range(nthreads):
        assert (p.gather("tid", kept[tid]) == tid).all()
    p.close()


PROBE = textwrap.dedent("""
    # cython: language_level=3, boundscheck=False, wraparound=False
    from libc.stdint cimport uint64_t, int64_t
    from hakmem.pool cimport (RecordPool, hak_pool_t, hak_pool_of, hak_pool_alloc,
                              hak_pool_free, hak_pool_read, hak_pool_write, hak_pool_deref,
                              hak_pool_live, HAK_POOL_OK, HAK_POOL_ESTALE)

    def work(RecordPool pool, uint64_t[::1] out, int64_t tid, int rounds):
        '''nogil: allocate len(out) records, tag them, check them, free all but the
        odd-numbered ones of the last round. Returns the number of failed checks.'''
        cdef hak_pool_t* p = hak_pool_of(pool)
        cdef Py_ssize_t i, n = out.shape[0]
        cdef int r
        cdef long bad = 0
        cdef int64_t* rec
        cdef int64_t buf[2]
        with nogil:
            for r in range(rounds):
                for i in range(n):
                    rec = <int64_t*>hak_pool_alloc(p, &out[i])
                    if rec == NULL or rec[0] != 0 or rec[1] != 0:
                        bad += 1
                        continue
                    rec[0] = tid
                    rec[1] = i
                for i in range(n):
                    if hak_pool_read(p, out[i], buf) != HAK_POOL_OK or buf[0] != tid or buf[1] != i:
                        bad += 1
                    buf[1] = i * 10
                    if hak_pool_write(p, out[i], buf) != HAK_POOL_OK:
                        bad += 1
                    if (<int64_t*>hak_pool_deref(p, out[i]))[1] != i * 10:
                        bad += 1
                for i in range(n):
                    if r == rounds - 1 and i % 2 == 1:
                        continue
                    if hak_pool_free(p, out[i]) != HAK_POOL_OK:
                        bad += 1
                    if hak_pool_free(p, out[i]) != HAK_POOL_ESTALE:    # double free refused
                        bad += 1
                    if hak_pool_deref(p, out[i]) != NULL:
                        bad += 1
        return bad

    def live(RecordPool pool):
        return hak_pool_live(hak_pool_of(pool))
""")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Build a small extension that cimports hakmem.pool (the Cython user's view)."""
    d = tmp_path_factory.mktemp("pool_probe")
    (d / "pool_probe.pyx").write_text(PROBE)
    inc = hakmem.get_include()
    code = ("from setuptools import setup, Extension; from Cython.Build import cythonize; "
            f"setup(ext_modules=cythonize([Extension('pool_probe', ['pool_probe.pyx'], "
            f"extra_compile_args=['-O1'])], include_path=[{inc!r}], quiet=True), "
            "script_args=['build_ext', '--inplace', '-q'])")
    env = dict(os.environ, PYTHONPATH=inc + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    sys.path.insert(0, str(d))
    try:
        import pool_probe
    finally:
        sys.path.remove(str(d))
    return pool_probe


def test_nogil_api_threads(probe):
    """Several threads in nogil C loops allocating, writing, reading and freeing records
    of one pool: no handle is handed out twice, no record clobbered, counts balance."""
    p = RecordPool("tid:i8 i:i8")
    nthreads, n, rounds = 4, 3000, 6
    outs = [np.zeros(n, dtype=np.uint64) for _ in range(nthreads)]
    bad = [None] * nthreads

    def run(t):
        bad[t] = probe.work(p, outs[t], t, rounds)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert bad == [0] * nthreads
    kept = np.concatenate([o[1::2] for o in outs]).astype(np.int64)
    assert len(np.unique(kept)) == len(kept) == nthreads * (n // 2)
    assert probe.live(p) == len(p) == len(kept)
    assert sorted(p.handles().tolist()) == sorted(kept.tolist())
    st_ = p.stats()
    assert st_["allocs"] == nthreads * n * rounds and st_["frees"] == st_["allocs"] - len(kept)
    for t in range(nthreads):
        hs = outs[t][1::2].astype(np.int64)
        assert (p.gather("tid", hs) == t).all()
        assert (p.gather("i", hs) == np.arange(1, n, 2) * 10).all()
    p.close()
    assert probe.live(p) == 0


def test_fields_named_like_parameters():
    """A field called ``n`` or ``handle`` is a column / field like any other (found by
    tools/fuzz.py: alloc_many(n, **columns) refused a column named 'n')."""
    p = RecordPool("n:i4 handle:u2")
    hs = p.alloc_many(3, n=[1, 2, 3], handle=7)
    assert p.gather("n", hs).tolist() == [1, 2, 3]
    h = int(hs[0])
    p.update(h, n=5, handle=9)
    assert p.read(h) == (5, 9)
    with pytest.raises(TypeError):
        p.alloc_many(n=2)               # the count is positional only
    p.close()
