"""hakmem.containers: RecordVector / RecordDeque / RecordMap against list / deque / dict.

Model-based (hypothesis state machines with random operation sequences, bad input
included: every refused operation must leave the container unchanged), plus buffer
export pinning, pickling, memory from hakmem, and a downstream Cython extension that
uses the cdef API without the GIL (built at test time).
"""
import collections
import gc
import importlib.util
import os
import pickle
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import hakmem
from hakmem.containers import Record, RecordDeque, RecordMap, RecordVector

SPEC = "a:i2 b:f8 c:S3 d:bool"
A_MIN, A_MAX = -2 ** 15, 2 ** 15 - 1

# ---------------------------------------------------------------- strategies
floats = st.floats(allow_nan=False, width=64)
good_rec = st.tuples(st.integers(A_MIN, A_MAX), floats,
                     st.binary(max_size=3).map(lambda b: b.rstrip(b"\0")), st.booleans())
# (record, the exception it must raise)
bad_rec = st.one_of(
    st.tuples(st.integers(A_MAX + 1, 2 ** 70), floats, st.just(b""), st.booleans())
      .map(lambda r: (r, OverflowError)),
    st.tuples(st.integers(-2 ** 70, A_MIN - 1), floats, st.just(b""), st.booleans())
      .map(lambda r: (r, OverflowError)),
    st.tuples(st.integers(A_MIN, A_MAX), st.text(max_size=2), st.just(b""), st.booleans())
      .map(lambda r: (r, TypeError)),
    st.tuples(st.integers(A_MIN, A_MAX), floats, st.binary(min_size=4, max_size=6),
              st.booleans()).map(lambda r: (r, OverflowError)),
    st.tuples(st.floats(0.5, 9.5), floats, st.just(b""), st.booleans())
      .map(lambda r: (r, TypeError)),
    st.tuples(st.integers(A_MIN, A_MAX), floats).map(lambda r: (r, TypeError)),
    st.tuples(st.integers(A_MIN, A_MAX), floats, st.just(b""), st.integers(2, 9))
      .map(lambda r: (r, OverflowError)),
)
index = st.integers(-12, 12)
FIELDS = ["a", "b", "c", "d"]

STATEFUL = settings(max_examples=40, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])


def _raises(exc_type, fn, *args, **kw):
    """Call fn; return the exception type it raised (None if none)."""
    try:
        fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - the caller checks the type
        assert isinstance(e, exc_type), f"expected {exc_type.__name__}, got {e!r}"
        return type(e)
    return None


def _mirror(model_op, op, exc=IndexError):
    """Run model_op, then op; where the model raises exc, op must raise exc too.

    Returns (model result, op result), or None when both raised.
    """
    try:
        want = model_op()
    except exc:
        with pytest.raises(exc):
            op()
        return None
    return want, op()


# ================================================================ RecordVector
class VectorMachine(RuleBasedStateMachine):
    """RecordVector against a list of tuples."""

    def __init__(self):
        super().__init__()
        self.v = RecordVector(SPEC)
        self.model = []

    @rule(rec=good_rec)
    def append(self, rec):
        self.v.append(rec)
        self.model.append(rec)

    @rule(rec=good_rec)
    def append_kw(self, rec):
        self.v.append(**dict(zip(FIELDS, rec)))
        self.model.append(rec)

    @rule(bad=bad_rec)
    def append_bad(self, bad):
        rec, exc = bad
        with pytest.raises(exc):
            self.v.append(rec)

    @rule(recs=st.lists(good_rec, max_size=6), bad=st.none() | bad_rec,
          where=st.integers(0, 6))
    def extend(self, recs, bad, where):
        if bad is None:
            src = recs if where % 2 else np.array(recs, dtype=self.v.dtype)
            self.v.extend(src)
            self.model.extend(recs)
        else:
            with pytest.raises(bad[1]):
                self.v.extend(recs[:where] + [bad[0]] + recs[where:])

    @rule(i=index, rec=good_rec)
    def insert(self, i, rec):
        self.v.insert(i, rec)
        self.model.insert(i, rec)

    @rule(i=index)
    def pop(self, i):
        both = _mirror(lambda: self.model.pop(i), lambda: self.v.pop(i))
        if both is not None:
            want, got = both
            assert got == want and got.as_tuple() == want

    @rule(i=index, rec=good_rec | bad_rec)
    def setitem(self, i, rec):
        exc = None
        if isinstance(rec[1], type):
            rec, exc = rec
        if not -len(self.model) <= i < len(self.model):
            with pytest.raises(IndexError):
                self.v[i] = rec if exc is None else (0, 0.0, b"", False)
            return
        if exc is not None:
            with pytest.raises(exc):
                self.v[i] = rec
        else:
            self.v[i] = rec
            self.model[i] = rec

    @rule(i=index)
    def getitem(self, i):
        both = _mirror(lambda: self.model[i], lambda: self.v[i])
        if both is not None:
            want, r = both
            assert r.as_tuple() == want
            assert (r.a, r.b, r.c, r.d) == want

    @rule(i=index)
    def delitem(self, i):
        _mirror(lambda: self.model.__delitem__(i), lambda: self.v.__delitem__(i))

    @rule(s=st.slices(10))
    def getslice(self, s):
        assert self.v[s].tolist() == self.model[s]

    @rule(s=st.slices(10))
    def delslice(self, s):
        del self.model[s]
        del self.v[s]

    @rule(s=st.slices(10), recs=st.lists(good_rec, max_size=4))
    def setslice(self, s, recs):
        _mirror(lambda: self.model.__setitem__(s, recs), lambda: self.v.__setitem__(s, recs),
                ValueError)

    @rule(field=st.sampled_from(FIELDS + [None]), reverse=st.booleans())
    def sort(self, field, reverse):
        key = (lambda r: r) if field is None else (lambda r: r[FIELDS.index(field)])
        self.model.sort(key=key, reverse=reverse)
        self.v.sort(field, reverse=reverse)

    @rule(n=st.integers(0, 40))
    def reserve(self, n):
        self.v.reserve(n)
        assert self.v.capacity >= n

    @rule()
    def shrink(self):
        self.v.shrink_to_fit()
        assert self.v.capacity == len(self.model)

    @rule()
    def clear(self):
        self.v.clear()
        self.model.clear()

    @rule()
    def roundtrip(self):
        assert pickle.loads(pickle.dumps(self.v)).tolist() == self.model
        assert [r.as_tuple() for r in self.v] == self.model

    @invariant()
    def same(self):
        assert len(self.v) == len(self.model)
        assert self.v.tolist() == self.model
        assert self.v.nbytes == self.v.capacity * self.v.itemsize

    def teardown(self):
        self.v.close()


TestVectorModel = VectorMachine.TestCase
TestVectorModel.settings = STATEFUL


# ================================================================ RecordDeque
class DequeMachine(RuleBasedStateMachine):
    """RecordDeque against collections.deque (maxlen included)."""

    @initialize(maxlen=st.none() | st.integers(0, 70))
    def start(self, maxlen):
        self.d = RecordDeque(SPEC, maxlen=maxlen)
        self.model = collections.deque(maxlen=maxlen)
        self.views = []          # (view, model position) of records seen by index

    @rule(rec=good_rec, left=st.booleans())
    def push(self, rec, left):
        (self.d.appendleft if left else self.d.append)(rec)
        (self.model.appendleft if left else self.model.append)(rec)

    @rule(bad=bad_rec, left=st.booleans())
    def push_bad(self, bad, left):
        with pytest.raises(bad[1]):
            (self.d.appendleft if left else self.d.append)(bad[0])

    @rule(recs=st.lists(good_rec, max_size=80), left=st.booleans())
    def extend(self, recs, left):
        (self.d.extendleft if left else self.d.extend)(recs)
        (self.model.extendleft if left else self.model.extend)(recs)

    @rule(recs=st.lists(good_rec, max_size=5), bad=bad_rec)
    def extend_bad(self, recs, bad):
        with pytest.raises(bad[1]):
            self.d.extend(recs + [bad[0]])

    @rule(left=st.booleans())
    def pop(self, left):
        if not self.model:
            with pytest.raises(IndexError):
                self.d.popleft() if left else self.d.pop()
            return
        want = self.model.popleft() if left else self.model.pop()
        got = self.d.popleft() if left else self.d.pop()
        assert got == want

    @rule(i=index, rec=good_rec)
    def insert(self, i, rec):
        _mirror(lambda: self.model.insert(i, rec), lambda: self.d.insert(i, rec))

    @rule(k=st.integers(-200, 200))
    def rotate(self, k):
        self.model.rotate(k)
        self.d.rotate(k)

    @rule(i=index)
    def getitem(self, i):
        both = _mirror(lambda: self.model[i], lambda: self.d[i])
        if both is not None:
            want, r = both
            assert r == want

    @rule(i=index, rec=good_rec)
    def setitem(self, i, rec):
        _mirror(lambda: self.model.__setitem__(i, rec), lambda: self.d.__setitem__(i, rec))

    @rule(i=index)
    def delitem(self, i):
        _mirror(lambda: self.model.__delitem__(i), lambda: self.d.__delitem__(i))

    @rule()
    def clear(self):
        self.d.clear()
        self.model.clear()

    @rule()
    def roundtrip(self):
        d2 = pickle.loads(pickle.dumps(self.d))
        assert d2.tolist() == list(self.model) and d2.maxlen == self.model.maxlen
        assert list(reversed(self.d)) == list(reversed(self.model))

    @invariant()
    def same(self):
        assert len(self.d) == len(self.model)
        assert self.d.tolist() == list(self.model)
        assert [r.as_tuple() for r in self.d] == list(self.model)

    def teardown(self):
        self.d.close()


TestDequeModel = DequeMachine.TestCase
TestDequeModel.settings = STATEFUL


# ================================================================ RecordMap
keys = st.integers(-6, 6) | st.integers(-2 ** 63, 2 ** 63 - 1)
far_keys = st.integers(2 ** 63, 2 ** 80) | st.integers(-2 ** 80, -2 ** 63 - 1)


class MapMachine(RuleBasedStateMachine):
    """RecordMap against a dict of tuples (insertion order included)."""

    def __init__(self):
        super().__init__()
        self.m = RecordMap(SPEC)
        self.model = {}

    @rule(k=keys, rec=good_rec)
    def set(self, k, rec):
        self.m[k] = rec
        self.model[k] = rec

    @rule(k=keys, rec=good_rec)
    def set_dict(self, k, rec):
        self.m[k] = dict(zip(FIELDS, rec))
        self.model[k] = rec

    @rule(k=keys, bad=bad_rec)
    def set_bad(self, k, bad):
        with pytest.raises(bad[1]):
            self.m[k] = bad[0]

    @rule(k=far_keys, rec=good_rec)
    def set_far(self, k, rec):
        with pytest.raises(OverflowError, match="key"):
            self.m[k] = rec
        with pytest.raises(KeyError):
            self.m[k]
        assert k not in self.m and self.m.get(k, 1) == 1

    @rule(k=keys)
    def get(self, k):
        if k in self.model:
            assert self.m[k] == self.model[k]
            assert self.m.get(k).as_tuple() == self.model[k]
            assert k in self.m
        else:
            with pytest.raises(KeyError):
                self.m[k]
            assert self.m.get(k) is None and k not in self.m

    @rule(k=keys)
    def delete(self, k):
        if k in self.model:
            del self.model[k]
            del self.m[k]
        else:
            with pytest.raises(KeyError):
                del self.m[k]

    @rule(k=keys)
    def pop(self, k):
        if k in self.model:
            assert self.m.pop(k) == self.model.pop(k)
        else:
            with pytest.raises(KeyError):
                self.m.pop(k)
            assert self.m.pop(k, "x") == "x"

    @rule()
    def popitem(self):
        if not self.model:
            with pytest.raises(KeyError):
                self.m.popitem()
        else:
            k, r = self.m.popitem()
            assert (k, r.as_tuple()) == self.model.popitem()

    @rule(pairs=st.lists(st.tuples(keys, good_rec), max_size=6), bad=st.none() | bad_rec)
    def update(self, pairs, bad):
        if bad is None:
            self.m.update(pairs)
            self.model.update(pairs)
        else:
            with pytest.raises(bad[1]):
                self.m.update(pairs + [(0, bad[0])])

    @rule(pairs=st.lists(st.tuples(keys, good_rec), max_size=6))
    def set_many(self, pairs):
        ks = np.array([k for k, _ in pairs], dtype=np.int64)
        vs = np.array([r for _, r in pairs], dtype=self.m.dtype)
        self.m.set_many(ks, vs)
        self.model.update(pairs)

    @rule(ks=st.lists(keys, max_size=6))
    def get_many(self, ks):
        arr = np.array(ks, dtype=np.int64)
        recs, found = self.m.get_many(arr, missing="mask")
        assert list(found) == [k in self.model for k in ks]
        for k, r, f in zip(ks, recs.tolist(), found):
            if f:
                assert r == self.model[k]
        if all(k in self.model for k in ks):
            assert self.m.get_many(arr).tolist() == [self.model[k] for k in ks]
        else:
            with pytest.raises(KeyError):
                self.m.get_many(arr)

    @rule()
    def clear(self):
        self.m.clear()
        self.model.clear()

    @rule()
    def roundtrip(self):
        m2 = pickle.loads(pickle.dumps(self.m))
        assert [(k, v.as_tuple()) for k, v in m2.items()] == list(self.model.items())

    @invariant()
    def same(self):
        assert len(self.m) == len(self.model)
        assert list(self.m) == list(self.model)
        assert [v.as_tuple() for v in self.m.values()] == list(self.model.values())

    def teardown(self):
        self.m.close()


TestMapModel = MapMachine.TestCase
TestMapModel.settings = STATEFUL


# ================================================================ unit tests
def test_vector_basics_and_views():
    v = RecordVector("x:f8 y:f8 id:i4")
    v.append((1.0, 2.0, 7))
    v.append(x=3.0, id=9)                     # missing fields are zero
    v.append({"y": 5.0})
    assert v.tolist() == [(1.0, 2.0, 7), (3.0, 0.0, 9), (0.0, 5.0, 0)]
    r = v[1]
    assert isinstance(r, Record) and r.x == 3.0 and r["id"] == 9 and r[0] == 3.0
    r.y = 4.5
    assert v[1].as_dict() == {"x": 3.0, "y": 4.5, "id": 9}
    assert repr(v[0]) == "Record(x=1.0, y=2.0, id=7)"
    with pytest.raises(AttributeError, match="no field 'z'"):
        r.z = 1
    with pytest.raises(TypeError, match="field 'id'"):
        r.id = "x"
    assert v[1].id == 9                       # refused write changed nothing
    # views re-resolve: a view past the end raises instead of dangling
    last = v[2]
    v.pop()
    with pytest.raises(IndexError):
        last.x
    # negative index views refer to the position at creation time
    assert v[-1] == (3.0, 4.5, 9)
    with pytest.raises(TypeError, match="integers or slices"):
        v["a"]
    with pytest.raises(IndexError):
        v[2]


def test_errors_name_the_field_and_leave_state_unchanged():
    v = RecordVector("a:u1 b:i8 c:f4 s:S2 ok:bool")
    v.append((1, 2, 3.0, b"x", True))
    before = v.tolist()
    cases = [((256, 0, 0.0, b"", False), OverflowError, "'a'"),
             ((-1, 0, 0.0, b"", False), OverflowError, "'a'"),
             ((0, 2 ** 63, 0.0, b"", False), OverflowError, "'b'"),
             ((0, 0, 1e39, b"", False), OverflowError, "'c'"),
             ((0, 0, 0.0, b"abc", False), OverflowError, "'s'"),
             ((0, 0, 0.0, "ab", False), TypeError, "'s'"),
             ((0, 1.5, 0.0, b"", False), TypeError, "'b'"),
             ((0, 0, "1", b"", False), TypeError, "'c'"),
             ((0, 0, 0.0, b"", 2), OverflowError, "'ok'"),
             ((0, 0, 0.0, b""), TypeError, "5 fields")]
    for rec, exc, text in cases:
        with pytest.raises(exc, match=text):
            v.append(rec)
        with pytest.raises(exc, match=text):
            v[0] = rec
        with pytest.raises(exc, match=text):
            v.insert(0, rec)
        assert v.tolist() == before
    with pytest.raises(hakmem.FieldError, match="no field 'zz'"):
        v.append(zz=1)
    with pytest.raises(TypeError, match="not both"):
        v.append((1, 2, 3.0, b"", True), a=1)
    with pytest.raises(TypeError, match="at most 1 positional"):
        v.append((1,), (2,))
    assert v.tolist() == before
    # numpy scalars and Records are accepted
    v.append((np.uint8(3), np.int64(-4), np.float32(0.5), bytearray(b"ab"), np.True_))
    v.append(v[0])
    assert v.tolist()[1:] == [(3, -4, 0.5, b"ab", True), before[0]]


def test_vector_extend_sources_and_slices():
    dt = np.dtype([("id", "i8"), ("x", "f8")])
    v = RecordVector(dt, [(i, i / 2) for i in range(5)])
    v.extend(np.array([(9, 9.5)], dtype=dt))
    v.extend(v)                               # self-extend copies first
    assert len(v) == 12 and v[6] == (0, 0.0)
    v.extend(np.array([(1, 2)], dtype=[("x", "f4"), ("id", "i2")]))   # same names, cast
    assert v[-1] == (2, 1.0)
    with pytest.raises(OverflowError, match="'id'"):
        RecordVector("id:i1 x:f8").extend(np.array([(300, 0.0)], dtype=dt))
    with pytest.raises(OverflowError, match="'x'"):
        RecordVector("id:i8 x:f4").extend(np.array([(0, 1e300)], dtype=dt))
    with pytest.raises(TypeError, match="'id'"):
        RecordVector("id:i8 x:f8").extend(np.array([(0.5, 1.0)], dtype=[("id", "f8"), ("x", "f8")]))
    with pytest.raises(TypeError, match="fields do not match"):
        v.extend(np.array([(1,)], dtype=[("id", "i8")]))
    with pytest.raises(TypeError, match="specs differ"):
        v.extend(RecordVector("id:i4 x:f8"))
    d = RecordDeque(dt, data=[(1, 1.0), (2, 2.0)])
    v2 = RecordVector(dt, d)
    assert v2.tolist() == [(1, 1.0), (2, 2.0)]
    s = v[2:9:3]
    assert isinstance(s, RecordVector) and s.tolist() == v.tolist()[2:9:3]


def test_vector_sort_by_fields():
    v = RecordVector("k:i4 x:f8", [(3, 1.0), (1, 2.0), (3, 0.5), (2, 9.0)])
    v.sort("k")
    assert v.tolist() == [(1, 2.0), (2, 9.0), (3, 1.0), (3, 0.5)]
    v.sort(["k", "x"], reverse=True)
    assert v.tolist() == [(3, 1.0), (3, 0.5), (2, 9.0), (1, 2.0)]
    with pytest.raises(hakmem.FieldError, match="no field 'q'"):
        v.sort("q")


def test_buffer_export_is_zero_copy_and_pins_the_buffer():
    v = RecordVector("id:i8 x:f8")
    v.extend(np.zeros(10, v.dtype))
    a = np.asarray(v)
    assert a.dtype == v.dtype and a.shape == (10,)
    assert a.__array_interface__["data"][0] == v.address
    assert hakmem.is_live(v.address)                 # hakmem memory
    a["x"][3] = 7.5                                  # writes go to the vector
    assert v[3].x == 7.5
    m = memoryview(v)
    assert m.format == "T{q:id:d:x:}" or m.itemsize == 16
    assert m.nbytes == 160 and m.shape == (10,)
    assert v.exports == 2
    before = (v.address, v.capacity, v.tolist())
    while len(v) < v.capacity:                       # fills in place: allowed
        v.append((1, 1.0))
    filled = v.tolist()
    with pytest.raises(BufferError):
        v.append((2, 2.0))
    with pytest.raises(BufferError):
        v.extend([(2, 2.0)] * 3)
    with pytest.raises(BufferError):
        v.insert(0, (2, 2.0))
    with pytest.raises(BufferError):
        v.reserve(v.capacity + 1)
    v.pop()
    with pytest.raises(BufferError):
        v.shrink_to_fit()
    with pytest.raises(BufferError):
        v.close()
    assert v.address == before[0] and v.tolist() == filled[:-1]
    m.release()
    del a
    gc.collect()
    assert v.exports == 0
    v.append((3, 3.0))
    v.reserve(10 ** 5)
    assert v.address != 0
    v.close()
    assert v.closed
    with pytest.raises(ValueError, match="closed"):
        v.append((1, 1.0))
    with pytest.raises(ValueError, match="closed"):
        memoryview(v)


def test_asarray_large_is_constant_time_and_same_address():
    v = RecordVector("id:i8 x:f8")
    v.extend(np.zeros(10 ** 6, v.dtype))
    a = np.asarray(v)
    assert a.__array_interface__["data"][0] == v.address and len(a) == 10 ** 6
    assert not a.flags.owndata
    del a


def test_as_array_is_a_pinning_view():
    v = RecordVector("id:i8 x:f8", [(1, 1.0), (2, 2.0)])
    v.shrink_to_fit()
    a = v.as_array()
    assert a.dtype == v.dtype and a.__array_interface__["data"][0] == v.address
    assert v.exports == 1 and a.flags.writeable
    a["x"][1] = 5.0
    assert v[1].x == 5.0
    v.shrink_to_fit()                                # already tight: nothing moves
    with pytest.raises(BufferError):
        v.reserve(100)
    del a
    gc.collect()
    v.reserve(100)


def test_empty_vector_exports():
    v = RecordVector("x:f8")
    a = np.asarray(v)
    assert a.shape == (0,) and a.dtype == v.dtype
    del a
    assert len(v.as_array()) == 0
    assert bytes(memoryview(v)) == b""


def test_context_manager_and_nbytes():
    with RecordVector("x:f8 y:f8") as v:
        v.reserve(100)
        assert v.nbytes == 1600
    assert v.closed and v.nbytes == 0
    with RecordDeque("x:f8 y:f8") as d:
        d.extend([(1.0, 2.0)] * 100)
        assert d.nbytes >= 1600
    assert d.closed
    with RecordMap("x:f8 y:f8") as m:
        m[1] = (1.0, 2.0)
        assert m.nbytes > 0
    assert m.closed and m.nbytes == 0
    for c in (v, d, m):
        with pytest.raises(ValueError, match="closed"):
            c.clear()


def test_storage_comes_from_hakmem():
    before = hakmem.stats()
    vs = [RecordVector("x:f8 y:f8", [(1.0, 2.0)] * 4) for _ in range(50)]
    mid = hakmem.stats()
    assert mid["allocs"] - before["allocs"] >= 50
    assert all(hakmem.is_live(v.address) for v in vs)
    big = RecordVector("x:f8 y:f8")
    big.reserve(10 ** 4)                             # 160 kB: hakmem's large path
    assert hakmem.stats()["large_live_bytes"] >= 160000
    big.close()
    for v in vs:
        v.close()


def test_deque_views_follow_records_and_maxlen():
    d = RecordDeque("id:i8", maxlen=3)
    d.extend([(1,), (2,), (3,)])
    mid = d[1]
    assert mid.id == 2
    d.appendleft((0,))                               # drops 3 from the right
    assert mid.id == 2 and d.tolist() == [(0,), (1,), (2,)]
    d.append((4,))                                   # drops 0
    d.append((5,))                                   # drops 1
    assert mid.id == 2
    d.append((6,))                                   # drops 2: the view's record is gone
    with pytest.raises(IndexError):
        mid.id
    with pytest.raises(TypeError):
        d[0:1]
    with pytest.raises(RuntimeError, match="mutated"):
        for _ in d:
            d.append((9,))
    assert RecordDeque("id:i8", maxlen=0).maxlen == 0
    with pytest.raises(ValueError):
        RecordDeque("id:i8", maxlen=-1)


def test_deque_chunks_many():
    d = RecordDeque("id:i8 x:f8")
    model = collections.deque()
    for i in range(5000):
        d.append((i, 0.5))
        model.append((i, 0.5))
        if i % 3 == 0:
            d.appendleft((-i, 1.5))
            model.appendleft((-i, 1.5))
    for _ in range(3000):
        assert d.popleft() == model.popleft()
    assert d.tolist() == list(model)
    assert np.array_equal(d.to_numpy(), np.array(list(model), dtype=d.dtype))
    assert d[1234] == model[1234]


def test_map_basics():
    m = RecordMap("x:f8 y:f8", key="u4")
    m[7] = (1.0, 2.0)
    m[2 ** 32 - 1] = {"x": 3.0}
    assert m[2 ** 32 - 1].as_tuple() == (3.0, 0.0)
    with pytest.raises(OverflowError, match="key -1"):
        m[-1] = (0.0, 0.0)
    with pytest.raises(OverflowError, match="key"):
        m[2 ** 32] = (0.0, 0.0)
    with pytest.raises(TypeError, match="integers"):
        m["a"]
    with pytest.raises(TypeError, match="integers"):
        m[1.0] = (0.0, 0.0)
    with pytest.raises(KeyError):
        m[8]
    view = m[7]
    view.x = 5.0
    assert m[7].x == 5.0
    del m[7]
    with pytest.raises(KeyError):
        view.x
    m[7] = (6.0, 6.0)
    assert view.x == 6.0                             # views resolve by key
    assert m.keys_array().dtype == np.dtype("u4")
    m2 = RecordMap("x:f8 y:f8", key="u8")
    m2[2 ** 64 - 1] = (1.0, 1.0)
    assert list(m2) == [2 ** 64 - 1]
    assert m2.get_many(np.array([2 ** 64 - 1], dtype=np.uint64)).tolist() == [(1.0, 1.0)]
    with pytest.raises(TypeError):
        RecordMap("x:f8", key="f8")


def test_map_grows_and_compacts():
    m = RecordMap("v:i8")
    n = 20000
    keys = np.arange(n, dtype=np.int64) * 1024            # strided keys
    m.set_many(keys, np.array([(int(k),) for k in keys], dtype=m.dtype))
    assert len(m) == n
    assert m.get_many(keys)["v"].tolist() == keys.tolist()
    for k in keys[::2].tolist():
        del m[k]
    for k in range(-1, -3 * n, -1):                       # churn: dummies compacted
        m[k] = (k,)
        del m[k]
    assert len(m) == n // 2 and list(m) == keys[1::2].tolist()
    assert m.nbytes < 40 * 4 * n


def test_pickle_all_and_records():
    v = RecordVector("x:f8 s:S4", [(1.0, b"ab")])
    d = RecordDeque("x:f8 s:S4", maxlen=5, data=[(2.0, b"cd")])
    m = RecordMap("x:f8 s:S4", key="i4", data={-3: (3.0, b"ef")})
    v2, d2, m2 = pickle.loads(pickle.dumps((v, d, m)))
    assert v2.tolist() == v.tolist() and d2.tolist() == d.tolist() and d2.maxlen == 5
    assert m2[-3] == (3.0, b"ef") and m2.key_dtype == np.dtype("i4")
    r = pickle.loads(pickle.dumps(v[0]))
    assert r == (1.0, b"ab") and r.s == b"ab"
    r.x = 9.0                                        # a detached record is its own copy
    assert v[0].x == 1.0
    with pytest.raises(TypeError):
        Record()


def test_package_exports_and_reinit_guard():
    assert hakmem.RecordVector is RecordVector and hakmem.RecordMap is RecordMap
    assert hakmem.RecordDeque is RecordDeque and hakmem.Record is Record
    v = RecordVector("x:f8", [(1.0,)])
    with pytest.raises(TypeError, match="already initialised"):
        v.__init__("y:i1")
    assert v.tolist() == [(1.0,)] and v.dtype.names == ("x",)
    m = RecordMap("x:f8")
    with pytest.raises(TypeError, match="already initialised"):
        m.__init__("x:f8")


# ================================================================ downstream Cython
DOWNSTREAM = r'''
# cython: language_level=3
from libc.stdint cimport int64_t
from hakmem.containers cimport (RecordVector, RecordDeque, RecordMap, HAK_C_OK,
                                HAK_C_EXPORTED, HAK_C_EMPTY, HAK_C_MISSING)

cdef struct rec_t:
    int64_t id
    double x

def fill_vector(RecordVector v, Py_ssize_t n, int64_t base):
    """Append n records without the GIL; returns the first non-OK code (or 0)."""
    cdef rec_t r
    cdef Py_ssize_t i
    cdef int rc = HAK_C_OK
    with nogil:
        for i in range(n):
            r.id = base + i
            r.x = i * 0.5
            rc = v.append_raw(&r)
            if rc != HAK_C_OK:
                break
    return rc

def sum_ids(RecordVector v):
    cdef int64_t s = 0
    cdef Py_ssize_t i
    with nogil:
        for i in range(v.n):
            s += (<rec_t*>v.ptr_at(i)).id
    return s

def emplace_pop(RecordVector v):
    cdef rec_t out
    cdef rec_t* p
    cdef int rc
    with nogil:
        p = <rec_t*>v.emplace_raw()
        p.id = 42
        p.x = 4.5
        rc = v.pop_raw(&out)
    return rc, out.id, out.x

def deque_churn(RecordDeque d, Py_ssize_t n):
    """Push n on the right, pop n // 2 on the left, nogil; sum of popped ids."""
    cdef rec_t r
    cdef Py_ssize_t i
    cdef int64_t s = 0
    with nogil:
        for i in range(n):
            r.id = i
            r.x = 0
            d.append_raw(&r)
        for i in range(n // 2):
            d.popleft_raw(&r)
            s += r.id
        r.id = -1
        d.appendleft_raw(&r)
    return s

def map_fill(RecordMap m, Py_ssize_t n, int64_t base):
    """Insert n keys, delete every other one, nogil; returns (found, missing codes)."""
    cdef rec_t r
    cdef Py_ssize_t i
    cdef int bad = 0
    cdef Py_ssize_t found = 0
    with nogil:
        for i in range(n):
            r.id = base + i
            r.x = i
            if m.set_raw(base + i, &r) != HAK_C_OK:
                bad += 1
        for i in range(0, n, 2):
            if m.remove_raw(base + i, NULL) != HAK_C_OK:
                bad += 1
        for i in range(n):
            if m.find_raw(base + i) != NULL:
                found += 1
        if m.remove_raw(base, NULL) != HAK_C_MISSING:
            bad += 1
    return found, bad
'''


@pytest.fixture(scope="module")
def downstream(tmp_path_factory):
    pytest.importorskip("Cython")
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    d = tmp_path_factory.mktemp("downstream")
    src = d / "hk_downstream.pyx"
    src.write_text(DOWNSTREAM)
    exts = cythonize([Extension("hk_downstream", [str(src)])],
                     include_path=[hakmem.get_include()], quiet=True,
                     compiler_directives={"language_level": 3})
    dist = Distribution({"ext_modules": exts})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(d)
    cmd.build_temp = str(d / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    path = cmd.get_ext_fullpath("hk_downstream")
    spec = importlib.util.spec_from_file_location("hk_downstream", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_downstream_cdef_api_without_gil(downstream):
    v = RecordVector("id:i8 x:f8")
    assert downstream.fill_vector(v, 1000, 0) == 0
    assert len(v) == 1000 and downstream.sum_ids(v) == sum(range(1000))
    assert np.asarray(v)["x"][10] == 5.0
    assert downstream.emplace_pop(v) == (0, 42, 4.5) and len(v) == 1000
    # an export pins the buffer: append_raw refuses to move it and changes nothing
    a = np.asarray(v)
    room = v.capacity - len(v)
    assert downstream.fill_vector(v, room + 1, 0) == -1      # HAK_C_EXPORTED
    assert len(v) == 1000 + room and a.__array_interface__["data"][0] == v.address
    del a
    v.close()
    assert downstream.fill_vector(v, 1, 0) == -3             # HAK_C_CLOSED

    d = RecordDeque("id:i8 x:f8")
    assert downstream.deque_churn(d, 5000) == sum(range(2500))
    assert len(d) == 2501 and d[0].id == -1 and d[1].id == 2500 and d[-1].id == 4999

    m = RecordMap("id:i8 x:f8")
    assert downstream.map_fill(m, 4000, 10 ** 12) == (2000, 0)
    assert len(m) == 2000 and m[10 ** 12 + 1].id == 10 ** 12 + 1


def test_downstream_threads_each_with_own_containers(downstream):
    """The allocator under the containers is thread-safe: threads filling their own
    containers with the GIL released lose no record and share no block."""
    nthreads, n = 4, 20000
    vecs = [RecordVector("id:i8 x:f8") for _ in range(nthreads)]
    maps = [RecordMap("id:i8 x:f8") for _ in range(nthreads)]
    errors = []

    def work(t):
        try:
            for _ in range(3):
                vecs[t].clear()
                vecs[t].shrink_to_fit()
                assert downstream.fill_vector(vecs[t], n, t * n) == 0
                maps[t].clear()
                assert downstream.map_fill(maps[t], n, t * n) == (n // 2, 0)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    addrs = [v.address for v in vecs]
    assert len(set(addrs)) == nthreads
    for t, v in enumerate(vecs):
        ids = np.asarray(v)["id"]
        assert np.array_equal(ids, np.arange(t * n, (t + 1) * n))
        assert list(maps[t].keys_array()) == list(range(t * n + 1, (t + 1) * n, 2))


def test_fields_named_like_parameters():
    """Fields called ``rec`` or ``index`` go through as keywords (append/insert take the
    record and the index positional-only; insert(0, index=1) used to be refused)."""
    v = RecordVector("rec:i4 index:i4")
    v.append(rec=5, index=1)
    v.insert(0, rec=6, index=2)
    assert v.tolist() == [(6, 2), (5, 1)]
    q = RecordDeque("rec:i4 index:i4")
    q.append(rec=1, index=2)
    q.appendleft(rec=3, index=4)
    q.insert(1, rec=5, index=6)
    assert q.tolist() == [(3, 4), (5, 6), (1, 2)]
