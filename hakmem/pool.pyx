"""hakmem.pool — RecordPool, kept importable where it used to live (and for pickles
made by hakmem 0.1.0, which name hakmem.pool.RecordPool and hakmem.pool._restore).

The implementation is hakmem.records.pool (Python API) on hakmem.records.cpool (the C
pool); record views are hakmem.records.view.Record (``RecordView`` is its old name).
"""
from hakmem.records import pool as _impl, view as _view

__all__ = ["RecordPool", "RecordView", "StaleHandleError"]

# pool.pxd cimports RecordPool, so a plain import would bind the cimported name only:
# put the Python-level names into the module dict explicitly.
globals().update(RecordPool=_impl.RecordPool, StaleHandleError=_impl.StaleHandleError,
                 RecordView=_view.Record,
                 _restore=_impl.restore_pool)       # what 0.1.0 pickles call
