"""Type stubs for the hakmem package: the names it re-exports, and its own functions."""
from typing import Any, Dict

from hakmem.options import ConfigError as ConfigError, ConfigWarning as ConfigWarning
from hakmem.blocks import (
    malloc as malloc,
    calloc as calloc,
    realloc as realloc,
    free as free,
    usable_size as usable_size,
    is_live as is_live,
    trim as trim,
    thread_flush as thread_flush,
)
from hakmem.stats import stats as stats
from hakmem.pyalloc import install as install, uninstall as uninstall, installed as installed
from hakmem.spec import FieldError as FieldError, SpecError as SpecError
from hakmem.records.pool import RecordPool as RecordPool, StaleHandleError as StaleHandleError
from hakmem.records.view import Record as Record, Record as RecordView
from hakmem.records.vector import RecordVector as RecordVector
from hakmem.records.deque import RecordDeque as RecordDeque
from hakmem.records.map import RecordMap as RecordMap

__version__: str

def stats_table(st: Dict[str, Any] | None = ...) -> str: ...
def config() -> Dict[str, Any]: ...
def configure(**overrides: Any) -> Dict[str, Any]: ...
def build_info() -> Dict[str, Any]: ...
def get_include() -> str: ...
