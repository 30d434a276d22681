"""Type stubs for hakmem.containers (kept importable; see hakmem.records)."""
from hakmem.records.deque import RecordDeque as RecordDeque
from hakmem.records.map import RecordMap as RecordMap
from hakmem.records.vector import RecordVector as RecordVector
from hakmem.records.view import Record as Record

__all__ = ["Record", "RecordVector", "RecordDeque", "RecordMap"]
