"""hakmem.spec — record specs: parse and check them once, as a numpy structured dtype.

A spec is any of
  * a list of ``(name, type)`` pairs: ``[("x", "f8"), ("y", "f8"), ("id", "i4")]``
  * a numpy dtype (structured, no object fields): ``np.dtype([...])``
  * a compact string: ``"x:f8 y:f8 id:i4"`` (commas also separate fields)
Types: ``i1 i2 i4 i8 u1 u2 u4 u8 f4 f8 bool`` (also numpy's names such as
``int32`` or ``float64``) and fixed-length bytes ``S<n>``. The layout follows C
alignment (numpy's ``align=True``) unless ``packed=True``, so a record equals a C
struct and a numpy view of records is zero-copy.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

__all__ = ["FieldError", "RecordSpec", "SpecError", "parse_spec"]

_KINDS = {"i", "u", "f", "b", "S"}
MAX_RECORD = 1 << 20


class SpecError(ValueError):
    """A record spec that makes no sense (names the offending field)."""


class FieldError(AttributeError, KeyError):
    """A field name the record does not have. Raised the same way by pools,
    containers and record views, whether the field was named as an attribute
    (``rec.z``), a key (``rec["z"]``) or a keyword (``alloc(z=1)``)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Field:
    """One field: name, numpy dtype, byte offset and size within the record."""

    name: str
    dtype: np.dtype
    offset: int
    size: int


@dataclass(frozen=True)
class RecordSpec:
    """A checked record layout: ``dtype`` (numpy, structured) and its ``fields``."""

    dtype: np.dtype
    fields: Tuple[Field, ...]
    index: Dict[str, int]

    @property
    def itemsize(self) -> int:
        """Bytes per record, padding included."""
        return self.dtype.itemsize

    @property
    def names(self) -> Tuple[str, ...]:
        """Field names in declaration order."""
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        """The field called ``name``; FieldError naming the known fields if none."""
        try:
            return self.fields[self.index[name]]
        except (KeyError, TypeError):
            raise FieldError(
                f"record has no field {name!r} (fields: {', '.join(self.names)})") from None

    def __reduce__(self):
        return (parse_spec, (self.dtype,))


def _one_type(name: str, t: Any) -> np.dtype:
    try:
        dt = np.dtype(t)
    except TypeError as e:
        raise SpecError(f"field {name!r}: unknown type {t!r} ({e})") from None
    if dt.names is not None or dt.subdtype is not None:
        raise SpecError(f"field {name!r}: nested or array types are not supported ({t!r})")
    if dt.kind not in _KINDS:
        raise SpecError(f"field {name!r}: type {t!r} ({dt}) is not supported; use "
                        "i1..i8, u1..u8, f4, f8, bool or S<n>")
    if dt.itemsize == 0:
        raise SpecError(f"field {name!r}: zero-size type {t!r}")
    if (dt.kind == "f" and dt.itemsize not in (4, 8)) or (dt.kind in "iu" and
                                                          dt.itemsize not in (1, 2, 4, 8)):
        raise SpecError(f"field {name!r}: type {t!r} ({dt}) is not supported; use "
                        "i1..i8, u1..u8, f4, f8, bool or S<n>")
    if dt.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        raise SpecError(f"field {name!r}: non-native byte order {t!r}")
    return dt.newbyteorder("=") if dt.byteorder != "|" else dt


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise SpecError(f"field name must be a str, not {type(name).__name__} ({name!r})")
    if not name.isascii() or not name.isidentifier() or keyword.iskeyword(name):
        raise SpecError(f"field name {name!r} is not an ASCII Python identifier")
    if name.startswith("_"):
        raise SpecError(f"field name {name!r} may not start with an underscore")
    return name


def parse_spec(spec: Any, packed: bool = False) -> RecordSpec:
    """Turn any accepted spec form into a :class:`RecordSpec` (SpecError if it is bad).

    A RecordSpec is re-derived from its dtype (its other attributes are not trusted:
    they may have been built by hand)."""
    if isinstance(spec, RecordSpec):
        spec = spec.dtype
        if not isinstance(spec, np.dtype):
            raise SpecError(f"RecordSpec.dtype must be a numpy dtype, not {type(spec).__name__}")
    pairs = []
    if isinstance(spec, str):
        parts = spec.replace(",", " ").split()
        if not parts:
            raise SpecError("empty record spec")
        for part in parts:
            if part.count(":") != 1:
                raise SpecError(f"spec item {part!r}: expected 'name:type'")
            n, t = part.split(":")
            pairs.append((n.strip(), t.strip()))
    elif isinstance(spec, np.dtype):
        if spec.names is None:
            raise SpecError(f"numpy dtype {spec} is not structured (it has no fields)")
        if spec.hasobject:
            raise SpecError("numpy dtype with object fields cannot live in hakmem memory")
        # Keep the dtype's own offsets and itemsize: views of existing arrays must match.
        for n in spec.names:
            _check_name(n)
            _one_type(n, spec.fields[n][0])
        fields = tuple(Field(n, spec.fields[n][0], spec.fields[n][1], spec.fields[n][0].itemsize)
                       for n in spec.names)
        return _finish(spec, fields)
    else:
        try:
            items = list(spec)
        except TypeError:
            raise SpecError(f"a record spec must be a list of (name, type) pairs, a numpy "
                            f"dtype or a 'name:type ...' string, not {type(spec).__name__}") from None
        for it in items:
            if not isinstance(it, (tuple, list)) or len(it) != 2:
                raise SpecError(f"spec item {it!r}: expected a (name, type) pair")
            pairs.append((it[0], it[1]))
        if not pairs:
            raise SpecError("empty record spec")
    seen = set()
    names, types = [], []
    for n, t in pairs:
        _check_name(n)
        if n in seen:
            raise SpecError(f"field {n!r} appears twice")
        seen.add(n)
        names.append(n)
        types.append(_one_type(n, t))
    dt = np.dtype({"names": names, "formats": types}, align=not packed)
    fields = tuple(Field(n, dt.fields[n][0], dt.fields[n][1], dt.fields[n][0].itemsize)
                   for n in names)
    return _finish(dt, fields)


def _finish(dt: np.dtype, fields: Tuple[Field, ...]) -> RecordSpec:
    if dt.itemsize == 0 or not fields:
        raise SpecError("record spec has no bytes")
    if dt.itemsize > MAX_RECORD:
        raise SpecError(f"record of {dt.itemsize} bytes is larger than {MAX_RECORD}")
    # Every field inside the record and no two sharing a byte: codecs copy fields
    # by offset and size, so a layout numpy accepts may still be one we cannot store.
    spans = sorted((f.offset, f.offset + f.size, f.name) for f in fields)
    end, prev = 0, None
    for lo, hi, name in spans:
        if lo < 0 or hi > dt.itemsize:
            raise SpecError(f"field {name!r} (bytes {lo}..{hi}) lies outside the "
                            f"{dt.itemsize}-byte record")
        if lo < end:
            raise SpecError(f"fields {prev!r} and {name!r} overlap")
        end, prev = hi, name
    return RecordSpec(dt, fields, {f.name: i for i, f in enumerate(fields)})
