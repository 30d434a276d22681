"""hakmem.records.cpool has no Python API: it is the C pool behind RecordPool (cimport it)."""
