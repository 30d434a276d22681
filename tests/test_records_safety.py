"""Regression tests for issue 11: every entry point of the records layer either
completes or raises a clear error with its container intact, whatever user code runs
inside it (re-entrant conversions, lying values, other threads, crafted pickles,
hand-built specs). Run under the debug build too (boundscheck on)."""
import copy
import importlib.util
import os
import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import hakmem
from hakmem import (FieldError, Record, RecordDeque, RecordMap, RecordPool, RecordVector,
                    SpecError, StaleHandleError)
from hakmem.records.pool import restore_pool
from hakmem.spec import Field, RecordSpec, parse_spec

_spec = importlib.util.spec_from_file_location(
    "hakmem_fuzz", os.path.join(os.path.dirname(__file__), os.pardir, "tools", "fuzz.py"))
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

SPEC = "x:f8 n:i4 s:S4"
OK = (ValueError, IndexError, KeyError, TypeError, OverflowError, BufferError, RuntimeError)


# Trap(act, value): a value whose __float__ / __index__ runs act() once, then converts
# to value; TrapArray(act, arr): an array-like whose __array__ runs act() first.
Fights, ArrayFights = fuzz.Trap, fuzz.TrapArray


def intact(c):
    """The container is closed, or every record reads back and len agrees."""
    if getattr(c, "closed", False):
        return
    if isinstance(c, RecordPool):
        assert len(c.handles()) == len(c)
        for h in c.handles().tolist():
            c.read(h)
        return
    rows = c.tolist() if not isinstance(c, RecordMap) else c.to_numpy().tolist()
    assert len(rows) == len(c)


def fill(c, n=5):
    for i in range(n):
        if isinstance(c, RecordMap):
            c[i] = (float(i), i, b"r")
        else:
            c.append((float(i), i, b"r"))
    return c


def actions(c):
    """Ways user code fights back against container c."""
    def grow():
        for i in range(60):
            if isinstance(c, RecordMap):
                c[1000 + i] = (0.0, 0, b"")
            else:
                c.append((0.0, 0, b""))
    return {"close": c.close, "clear": c.clear, "grow": grow}


CONTAINERS = {"vector": lambda: fill(RecordVector(SPEC)), "deque": lambda: fill(RecordDeque(SPEC)),
              "map": lambda: fill(RecordMap(SPEC))}

# method name -> call(c, fighter) for each container kind
VECTOR_CALLS = {
    "append": lambda c, f: c.append((f, 1, b"a")),
    "append_kw": lambda c, f: c.append(x=f),
    "extend_gen": lambda c, f: c.extend((r for r in [(1.0, 1, b""), (f, 2, b"")])),
    "insert_val": lambda c, f: c.insert(1, (f, 1, b"")),
    "insert_idx": lambda c, f: c.insert(f, (1.0, 1, b"")),
    "setitem_val": lambda c, f: c.__setitem__(2, (f, 1, b"")),
    "setitem_idx": lambda c, f: c.__setitem__(f, (1.0, 1, b"")),
    "setitem_slice": lambda c, f: c.__setitem__(slice(f, 4), [(1.0, 1, b"")] * 3),
    "setitem_slice_val": lambda c, f: c.__setitem__(slice(1, 4), [(f, 1, b"")]),
    "getitem_idx": lambda c, f: c[f].x,
    "getitem_slice": lambda c, f: c[f:4],
    "delitem_idx": lambda c, f: c.__delitem__(f),
    "delitem_slice": lambda c, f: c.__delitem__(slice(0, f)),
    "pop": lambda c, f: c.pop(f),
    "view_set": lambda c, f: setattr(c[1], "x", f),
    "view_field_index": lambda c, f: c[1][f],
    "list_record": lambda c, f: c.append([f, 1, b""]),
}
DEQUE_CALLS = {k: v for k, v in VECTOR_CALLS.items()
               if k not in ("getitem_slice", "setitem_slice", "setitem_slice_val", "delitem_slice",
                            "append_kw", "pop")}
DEQUE_CALLS.update({
    "appendleft": lambda c, f: c.appendleft((f, 1, b"")),
    "extendleft_gen": lambda c, f: c.extendleft((r for r in [(f, 2, b"")])),
})
MAP_CALLS = {
    "setitem_val": lambda c, f: c.__setitem__(3, (f, 1, b"")),
    "setitem_key": lambda c, f: c.__setitem__(f, (1.0, 1, b"")),
    "getitem_key": lambda c, f: c[f].x,
    "get": lambda c, f: c.get(f),
    "contains": lambda c, f: f in c,
    "delitem": lambda c, f: c.__delitem__(f),
    "pop": lambda c, f: c.pop(f),
    "setdefault": lambda c, f: c.setdefault(77, (f, 1, b"")),
    "update_dict": lambda c, f: c.update({50: (f, 1, b""), 51: (2.0, 2, b"")}),
    "update_pairs": lambda c, f: c.update([(f, (1.0, 1, b""))]),
    "view_set": lambda c, f: setattr(c[1], "x", f),
}


def _cases(kind, calls):
    return [(kind, m, a) for m in sorted(calls) for a in ("close", "clear", "grow")]


@pytest.mark.parametrize("kind,method,action",
                         _cases("vector", VECTOR_CALLS) + _cases("deque", DEQUE_CALLS)
                         + _cases("map", MAP_CALLS))
def test_reentrant_conversions_cannot_corrupt(kind, method, action):
    calls = {"vector": VECTOR_CALLS, "deque": DEQUE_CALLS, "map": MAP_CALLS}[kind]
    for _ in range(3):                       # the freed memory gets reused in between
        c = CONTAINERS[kind]()
        f = Fights(actions(c)[action], 1)
        try:
            calls[method](c, f)
        except OK:
            pass
        intact(c)
        junk = [hakmem.malloc(64) for _ in range(50)]      # reuse what may have been freed
        for a in junk:
            hakmem.free(a)
        intact(c)


def test_map_bulk_reentrant_arrays():
    for action in ("close", "clear", "grow"):
        m = fill(RecordMap(SPEC))
        vals = np.zeros(3, m.dtype)
        with pytest.raises(OK) if action == "close" else _nothing():
            m.set_many(ArrayFights(actions(m)[action], np.arange(3)), vals)
        intact(m)
        m = fill(RecordMap(SPEC))
        with pytest.raises(OK) if action == "close" else _nothing():
            m.set_many(np.arange(3), ArrayFights(actions(m)[action], vals))
        intact(m)
        m = fill(RecordMap(SPEC))
        try:
            m.get_many(ArrayFights(actions(m)[action], np.arange(3)), missing="mask")
        except OK:
            pass
        intact(m)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_vector_extend_array_reentrant():
    for action in ("close", "clear", "grow"):
        v = fill(RecordVector(SPEC))
        arr = np.zeros(4, v.dtype)
        try:
            v.extend(ArrayFights(actions(v)[action], arr))
        except OK:
            pass
        intact(v)


def test_vector_append_that_grows_lands_in_the_new_buffer():
    v = RecordVector(SPEC)
    v.append((0.0, 0, b""))
    v.shrink_to_fit()
    f = Fights(lambda: [v.append((9.0, 9, b"z")) for _ in range(50)], 5.0)
    v.append((f, 1, b"a"))
    assert len(v) == 52 and v[51].as_tuple() == (5.0, 1, b"a")


def test_vector_pop_index_that_clears():
    v = fill(RecordVector(SPEC))
    with pytest.raises(IndexError):
        v.pop(Fights(v.clear, 0))
    assert len(v) == 0


def test_deque_setitem_value_that_empties():
    q = fill(RecordDeque(SPEC))
    with pytest.raises(IndexError):
        q[3] = (Fights(q.clear, 1.0), 1, b"")
    assert len(q) == 0
    q = fill(RecordDeque(SPEC))
    q.insert(4, (Fights(q.clear, 1.0), 1, b""))      # clamped to the deque as it is now
    assert q.tolist() == [(1.0, 1, b"")]


def test_map_update_value_that_closes():
    m = fill(RecordMap(SPEC))
    with pytest.raises(ValueError, match="closed"):
        m.update({10: (Fights(m.close, 1.0), 1, b"")})
    assert m.closed


def test_view_index_that_closes():
    v = fill(RecordVector(SPEC))
    r = v[1]
    with pytest.raises(ValueError, match="closed"):
        r[Fights(v.close, 0)]


def test_iterators_after_clear():
    m = fill(RecordMap(SPEC))
    it = m.items()
    next(it)
    m.clear()
    with pytest.raises(RuntimeError):
        next(it)
    assert not hasattr(m, "_items_raw")


# ---- the pool -------------------------------------------------------------------
POOL_CALLS = {
    "alloc": lambda p, h, f: p.alloc(f, 1, b""),
    "alloc_kw": lambda p, h, f: p.alloc(n=f),
    "set": lambda p, h, f: p.set(h, "x", f),
    "update": lambda p, h, f: p.update(h, x=f, n=2),
    "view_set": lambda p, h, f: setattr(p[h], "n", f),
    "alloc_many": lambda p, h, f: p.alloc_many(3, x=np.array([f, 1.0, 2.0], dtype=object)),
    "scatter": lambda p, h, f: p.scatter("n", [h], np.array([f], dtype=object)),
    "free_idx": lambda p, h, f: p.free(f),
    "get_idx": lambda p, h, f: p.get(f, "x"),
}


@pytest.mark.parametrize("method", sorted(POOL_CALLS))
@pytest.mark.parametrize("action", ["close", "clear", "free_all", "grow"])
def test_pool_reentrant_conversions(method, action):
    p = RecordPool(SPEC)
    hs = p.alloc_many(5, x=1.0)
    h = int(hs[2])
    act = {"close": p.close, "clear": p.clear, "free_all": lambda: p.free_many(p.handles()),
           "grow": lambda: p.alloc_many(500)}[action]
    try:
        POOL_CALLS[method](p, h, Fights(act, h if method.endswith("_idx") else 1))
    except OK:
        pass
    intact(p)


def test_bulk_handle_array_changed_by_another_thread():
    """free_many / scatter read a copy of the handles: flipping the caller's array from
    another thread meanwhile cannot make them act on unchecked handles."""
    p = RecordPool(SPEC)
    stop = threading.Event()
    for _ in range(30):
        hs = p.alloc_many(2000, n=7)
        arr = hs.copy()
        bogus = np.full_like(arr, (1 << 62) - 12345)

        def flip():
            while not stop.is_set():
                arr[:] = bogus
                arr[:] = hs

        t = threading.Thread(target=flip)
        t.start()
        try:
            try:
                p.scatter("n", arr, 9)
            except StaleHandleError:
                pass
            try:
                p.free_many(arr)
            except StaleHandleError:
                p.free_many(hs)
        finally:
            stop.set()
            t.join()
            stop.clear()
        assert len(p) == 0 and p.stats()["live"] == 0
    p.close()


# ---- lying values -----------------------------------------------------------------
class LyingBytes(bytes):
    def __len__(self):
        return 1


class YesInt(int):
    def __lt__(self, o):
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def __eq__(self, o):
        return True

    __hash__ = int.__hash__


def test_lying_values_are_judged_by_their_c_value():
    v, p, q = RecordVector(SPEC), RecordPool(SPEC), RecordDeque(SPEC)
    with pytest.raises(OverflowError):
        v.append((0.0, 0, LyingBytes(b"x" * 100)))
    with pytest.raises(OverflowError):
        p.alloc(s=LyingBytes(b"x" * 100))
    v.append((0.0, 0, LyingBytes(b"ab")))
    assert v[0].s == b"ab" and p.read(p.alloc(s=LyingBytes(b"ab")))[2] == b"ab"
    for store in (lambda x: v.append((0.0, x, b"")), lambda x: p.alloc(n=x),
                  lambda x: q.append((0.0, x, b"")), lambda x: p.alloc_many(1, n=[x])):
        with pytest.raises(OverflowError):
            store(YesInt(1 << 40))
    b = RecordPool("ok:bool")
    with pytest.raises(OverflowError):
        b.alloc(ok=YesInt(5))


def test_object_column_converted_once():
    seen = []

    class Once:
        def __index__(self):
            seen.append(1)
            return 3 if len(seen) == 1 else 1 << 40

    p = RecordPool(SPEC)
    hs = p.alloc_many(2, n=np.array([Once(), 4], dtype=object))
    assert p.gather("n", hs).tolist() == [3, 4] and len(seen) == 1


# ---- hand-built specs and spec errors ---------------------------------------------------
def test_hand_built_spec_is_rederived_from_its_dtype():
    honest = parse_spec(SPEC)
    bad = RecordSpec(honest.dtype, tuple(Field(f.name, f.dtype, 10_000, 4096)
                                          for f in honest.fields), dict(honest.index))
    for make in (RecordPool, RecordVector, RecordDeque, RecordMap):
        c = make(bad)
        assert c.spec.fields == honest.fields
    p = RecordPool(bad)
    assert p.read(p.alloc(1.0, 2, b"ab")) == (1.0, 2, b"ab")
    v = RecordVector(SPEC)                  # an honest user of the same dtype: not poisoned
    v.append((1.0, 2, b"ab"))
    assert v.tolist() == [(1.0, 2, b"ab")]


@pytest.mark.parametrize("spec", [
    "h:f2", "x:f16", [("é", "f8")], "x:c8",
    np.dtype({"names": ["a", "b"], "formats": ["i4", "i4"], "offsets": [0, 2]}),
    np.dtype({"names": ["a", "b"], "formats": ["i8", "u1"], "offsets": [0, 7]}),
])
def test_bad_specs_are_spec_errors_everywhere(spec):
    for make in (RecordPool, RecordVector, RecordDeque, RecordMap):
        with pytest.raises(SpecError):
            make(spec)
    assert hakmem.SpecError is SpecError


def test_unknown_field_is_one_error_everywhere():
    p, v = RecordPool(SPEC), RecordVector(SPEC)
    h = p.alloc()
    v.append((0.0, 0, b""))
    calls = [lambda: p.alloc(z=1), lambda: p.get(h, "z"), lambda: p.set(h, "z", 1),
             lambda: p.update(h, z=1), lambda: p[h].z, lambda: setattr(p[h], "z", 1),
             lambda: p.gather("z", [h]), lambda: p.alloc_many(1, z=1),
             lambda: v.append(z=1), lambda: v[0].z, lambda: v[0]["z"],
             lambda: setattr(v[0], "z", 1), lambda: v.sort("z"), lambda: p.column("z")]
    for call in calls:
        with pytest.raises(FieldError, match="'z'"):
            call()
    assert issubclass(FieldError, AttributeError) and issubclass(FieldError, KeyError)


# ---- pickles -------------------------------------------------------------------------
def test_pickles_carry_no_bytes_of_dead_records():
    p = RecordPool("a:u1")                  # itemsize 1 < stride 4: the link bytes too
    hs = p.alloc_many(100, a=0xAB)
    p.free_many(hs[::2])
    state = p.__reduce__()[1][1]
    recs = np.frombuffer(state["recs"], np.uint8).reshape(-1, 4)
    gens = np.frombuffer(state["gens"], np.uint16)
    live = (gens & 1) == 1
    assert (recs[~live] == 0).all() and (recs[live, 1:] == 0).all()
    assert (recs[live, 0] == 0xAB).all()
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert q.gather("a", hs[1::2]).tolist() == [0xAB] * 50      # old handles valid
        new = q.alloc()                                           # a tag of its own:
        assert new not in p and q.read(new) == (0,)               # the original refuses it
        assert (new >> 48) != (int(hs[1]) >> 48)


def _state():
    p = RecordPool(SPEC)
    hs = p.alloc_many(300, x=1.5, n=np.arange(300))
    p.free_many(hs[:100])
    p.trim()
    p.free_many(hs[100:120])
    return p.__reduce__()[1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_crafted_pool_pickles_are_refused_or_consistent(data):
    dtype, state = _state()
    state = dict(state)
    key = data.draw(st.sampled_from(sorted(state)))
    kind = data.draw(st.sampled_from(["type", "bytes", "int"]))
    if kind == "type":
        state[key] = data.draw(st.sampled_from([None, 1.5, "x", [1], bytearray(b"ab"),
                                                np.int64(1), True]))
    elif kind == "bytes" and isinstance(state[key], bytes):
        b = bytearray(state[key])
        if b and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255))
        else:
            b = b[:data.draw(st.integers(0, len(b)))] + data.draw(st.binary(max_size=8))
        state[key] = bytes(b)
    else:
        state[key] = data.draw(st.integers(-(1 << 65), 1 << 65))
    try:
        q = restore_pool(dtype, state)
    except (TypeError, ValueError):
        return
    intact(q)                               # loaded: it must be a consistent pool
    hs = q.handles()
    q.gather("n", hs)
    q.free_many(hs)
    assert len(q) == 0
    q.alloc_many(500)
    q.close()


def test_pickles_made_by_0_1_0_still_load():
    """tests/data/records-0.1.0.pickle was written by hakmem 0.1.0 (before hakmem.records):
    (pool, live handles, freed handles, vector, deque(maxlen=5), u4 map, a view, a popped record)."""
    import os
    path = os.path.join(os.path.dirname(__file__), "data", "records-0.1.0.pickle")
    with open(path, "rb") as f:
        p, live, dead, v, q, m, r, popped = pickle.load(f)
    assert len(p) == 30 and [p.read(h) for h in live[:2]] == [(10.0, 10, b"ab"), (11.0, 11, b"ab")]
    for h in dead:
        with pytest.raises(StaleHandleError):
            p.read(h)
    assert v.tolist() == [(1.5, 2, b"v"), (2.5, 3, b"w")]
    assert q.tolist() == [(1.0, 1, b"q")] and q.maxlen == 5
    assert m.key_dtype == np.uint32 and m[7].as_tuple() == (7.0, 7, b"m")
    assert r == (1.5, 2, b"v") and popped == (3.5, 4, b"x") and isinstance(r, Record)


def test_old_pickle_names_still_resolve():
    import hakmem.containers as C
    import hakmem.pool as P
    assert P.RecordPool is RecordPool and C.RecordVector is RecordVector and P.RecordView is Record
    assert C.RecordDeque is RecordDeque and C.RecordMap is RecordMap and C.Record is Record
    for name in ("_vector_from_bytes", "_map_from_arrays", "_record_from_bytes", "_codec_for"):
        assert callable(getattr(C, name))
    assert callable(P._restore)
    with pytest.raises(TypeError):
        C._vector_from_bytes(RecordVector(SPEC).dtype, None)


_JUNK = st.one_of(st.none(), st.integers(-(1 << 70), 1 << 70), st.floats(), st.text(max_size=4),
                  st.binary(max_size=40), st.lists(st.integers(-5, 5), max_size=4),
                  st.sampled_from([np.zeros(2, "i8"), np.zeros(3, parse_spec(SPEC).dtype),
                                   parse_spec(SPEC).dtype, "i8", "u1", "x:f8", object()]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["vector", "deque", "map", "record"]), args=st.lists(_JUNK, max_size=4))
def test_crafted_container_pickles_are_refused_or_consistent(which, args):
    """What a container pickle calls, fed junk: a clear error or a consistent container."""
    import hakmem.containers as C
    dtype = parse_spec(SPEC).dtype
    fn = {"vector": C._vector_from_bytes, "deque": RecordDeque, "map": C._map_from_arrays,
          "record": C._record_from_bytes}[which]
    try:
        obj = fn(dtype, *args)
    except (TypeError, ValueError, OverflowError, KeyError, SpecError):
        return
    if which == "record":
        assert len(obj.as_tuple()) == 3
    else:
        intact(obj)


@pytest.mark.parametrize("cls", [Record, RecordVector, RecordDeque, RecordMap])
def test_objects_made_by_new_alone_refuse_use(cls):
    """cls.__new__(cls) skips __init__: every use is a clear error, nothing dereferences
    a missing codec."""
    o = cls.__new__(cls)
    uses = [lambda: o.x, lambda: len(o), lambda: repr(o), lambda: o == (1,), lambda: o[0],
            lambda: list(o), lambda: pickle.dumps(o), lambda: dir(o), lambda: o.dtype,
            lambda: o.append((1.0,)), lambda: o.__setitem__(0, (1,)), lambda: o.sort(),
            lambda: o.copy(), lambda: o.tolist(), lambda: o.update({1: (1,)}),
            lambda: o.set_many([1], np.zeros(1, "u1")), lambda: memoryview(o),
            lambda: o.insert(0, (1,)), lambda: o.setdefault(1), lambda: setattr(o, "x", 1)]
    for use in uses:
        try:
            use()
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, BufferError,
                OverflowError):
            pass
    if cls is not Record:
        assert o.closed
        o.__init__(SPEC)                  # a late __init__ makes it a working container
        assert len(o) == 0 and not o.closed


class _Idx:
    def __index__(self):
        return 7


@pytest.mark.parametrize("field,value", [
    ("n", 5), ("n", True), ("n", 2**31), ("n", -2**31 - 1), ("n", 1.5), ("n", "3"), ("n", None),
    ("n", np.int64(4)), ("n", np.uint8(4)), ("n", _Idx()), ("n", YesInt(1 << 40)),
    ("x", 1), ("x", 2.5), ("x", "1.0"), ("x", b"1"), ("x", np.float32(1.5)), ("x", 10**400),
    ("x", _Idx()), ("s", b"ab"), ("s", bytearray(b"ab")), ("s", b"abcde"), ("s", "ab"),
    ("s", LyingBytes(b"abcdef")), ("s", memoryview(b"a")), ("z", 1)])
def test_pool_and_containers_agree_on_values(field, value):
    """One codec: the same value is stored the same way, or refused with the same error,
    by the pool, the three containers and a record view."""
    outcomes = []

    def attempt(store, read):
        try:
            store()
        except Exception as e:               # the exception type is what is compared
            outcomes.append(type(e))
        else:
            outcomes.append(read())

    p, v, q, m = RecordPool(SPEC), RecordVector(SPEC), RecordDeque(SPEC), RecordMap(SPEC)
    box = []
    attempt(lambda: box.append(p.alloc(**{field: value})), lambda: p.read(box[-1]))
    attempt(lambda: v.append(**{field: value}), lambda: v[-1].as_tuple())
    attempt(lambda: q.append(**{field: value}), lambda: q[-1].as_tuple())
    attempt(lambda: m.__setitem__(1, {field: value}), lambda: m[1].as_tuple())
    v.append((0.0, 0, b""))
    attempt(lambda: setattr(v[-1], field, value), lambda: v[-1].as_tuple())
    assert len(set(map(repr, outcomes))) == 1, outcomes
