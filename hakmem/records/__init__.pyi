"""Type stubs for hakmem.records (a package of modules; see each module's stub)."""
