"""Type stubs for hakmem.records.codec."""
from typing import Any

import numpy as np

from hakmem.spec import RecordSpec

__all__ = ["Codec", "codec_of"]


class Codec:
    """Python values <-> the bytes of one record (one per dtype, immutable)."""

    spec: RecordSpec
    dtype: np.dtype[Any]
    itemsize: int
    nfields: int
    index: dict[str, int]
    names: tuple[str, ...]

    def __init__(self, rs: RecordSpec) -> None: ...


def codec_of(spec: Any) -> Codec: ...
