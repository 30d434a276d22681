"""Type stubs for hakmem.arena (Pool, Address, NotInPoolError)."""
from typing import Any, Dict, List

class NotInPoolError(KeyError, ValueError):
    """An address that is not a live block of this pool (freed, foreign, or interior)."""

class Pool:
    """Memory that lives as long as this object (cymem's Pool interface).

    ``shared=True`` puts every method behind a mutex so that threads may share the pool
    in any mix of GIL-holding and nogil calls.
    """
    size: int        # read-only: bytes requested by the blocks held
    refs: List[Any]  # read-only: objects kept alive by own_pyref()
    shared: bool     # read-only
    def __init__(self, *, shared: bool = ...) -> None: ...
    def alloc(self, number: int, elem_size: int) -> int:
        """Address of number * elem_size zeroed bytes (16-byte aligned)."""
    def free(self, addr: int) -> None:
        """Free a block of this pool; NotInPoolError (nothing changed) otherwise."""
    def realloc(self, addr: int, n: int) -> int:
        """Grow a block to n bytes (n must exceed its size); the new address."""
    def own_pyref(self, py_ref: Any) -> None:
        """Keep py_ref alive as long as the pool."""
    @property
    def addresses(self) -> Dict[int, int]:
        """{address: requested bytes} of the blocks held (a new dict)."""
    def __len__(self) -> int: ...
    def __contains__(self, addr: object) -> bool: ...

class Address:
    """number * elem_size zeroed bytes owned by this object."""
    def __init__(self, number: int, elem_size: int) -> None: ...
    @property
    def addr(self) -> int: ...
