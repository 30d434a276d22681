"""Type stubs for hakmem.pool (kept importable; see hakmem.records.pool)."""
from hakmem.records.pool import RecordPool as RecordPool, StaleHandleError as StaleHandleError
from hakmem.records.view import Record as RecordView

__all__ = ["RecordPool", "RecordView", "StaleHandleError"]
