"""hakmem.containers — RecordVector, RecordDeque, RecordMap and Record, kept importable
where they used to live (and for pickles made by hakmem 0.1.0, which name these
classes and the functions below).

The implementations are hakmem.records.vector, .deque, .map and .view.
"""
from hakmem.records import codec as _codec, deque as _deque, map as _map
from hakmem.records import vector as _vector, view as _view

__all__ = ["Record", "RecordVector", "RecordDeque", "RecordMap"]

# containers.pxd cimports these classes, so a plain import would bind the cimported
# names only: put the Python-level names into the module dict explicitly.
globals().update(Record=_view.Record, RecordVector=_vector.RecordVector,
                 RecordDeque=_deque.RecordDeque, RecordMap=_map.RecordMap,
                 # what 0.1.0 pickles call
                 _vector_from_bytes=_vector.vector_from_bytes,
                 _map_from_arrays=_map.map_from_arrays,
                 _record_from_bytes=_view.record_from_bytes,
                 _codec_for=_codec.codec_of)
