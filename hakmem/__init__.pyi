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
from hakmem.pool import (
    RecordPool as RecordPool,
    RecordView as RecordView,
    StaleHandleError as StaleHandleError,
)
from hakmem.containers import (
    Record as Record,
    RecordDeque as RecordDeque,
    RecordMap as RecordMap,
    RecordVector as RecordVector,
)

__version__: str

def stats_table(st: Dict[str, Any] | None = ...) -> str: ...
def config() -> Dict[str, Any]: ...
def configure(**overrides: Any) -> Dict[str, Any]: ...
def build_info() -> Dict[str, Any]: ...
def get_include() -> str: ...
