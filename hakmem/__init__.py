"""hakmem: a tiny-object allocator for Python and Cython.

Blocks up to 1 KiB come from per-thread free lists (the TLS SLL) with an L0
magazine (TinyHeapV2) in front, refilled in batches from 64 KiB slabs; larger
requests go to the system allocator. Cython code uses the nogil C API in
``hakmem/front.pxd`` (``cimport hakmem`` works too); Python code uses the block API
below, :class:`RecordPool` and the containers.
"""
import atexit as _atexit
import importlib.util as _importlib_util
import os as _os
import sys as _sys
import warnings as _warnings

from hakmem import options as _config
from hakmem.options import ConfigError, ConfigWarning


def _started_as_cli():
    """True when this process is ``python -m hakmem ...`` or the ``hakmem`` script."""
    argv = list(getattr(_sys, "orig_argv", ()))[1:]
    while argv:
        a = argv.pop(0)
        if a in ("-X", "-W", "--check-hash-based-pycs"):
            argv[:1] = []                  # options that take a value
        elif a == "-m":
            return argv[:1] == ["hakmem"]
        elif a.startswith("-m"):
            return a == "-mhakmem"
        elif not a.startswith("-") or a in ("-c", "-"):
            break
    return bool(_sys.argv) and _os.path.basename(_sys.argv[0]) == "hakmem"


# Running from a source checkout that was never built in place: the directory named
# hakmem/ shadows the installed package and holds no compiled module.
if _importlib_util.find_spec("hakmem.classes") is None:
    raise ImportError(
        f"hakmem is being imported from {_os.path.dirname(_os.path.abspath(__file__))}, "
        "a source checkout without compiled modules: build them there with "
        "`python setup.py build_ext --inplace`, or run from another directory so that "
        "the installed hakmem is imported")

try:
    _CONFIG = _config.read()   # bad env values fail here, at import
except ConfigError as _e:
    if _started_as_cli():      # a command line gets one line, not a traceback
        print(f"hakmem: error: {_e}", file=_sys.stderr)
        raise SystemExit(2) from None
    raise ConfigError(str(_e)) from None

from hakmem import classes as _classes  # noqa: E402  (self-checks the size table)
from hakmem import front as _front      # noqa: E402
from hakmem import slab as _slab        # noqa: E402
from hakmem import pyalloc as _pyalloc  # noqa: E402
from hakmem.pyalloc import install, uninstall, installed  # noqa: E402
# The records layer needs numpy; the allocator does not. Its names load on first use
# (PEP 562), so `import hakmem` and `python -m hakmem run` cost no numpy import. The
# block API and the stats load on first use too: a program run under the PEP 445 hook
# needs neither, and each extension module costs ~0.1 MiB of resident memory.
_LAZY = {
    **{name: ("hakmem.blocks", name) for name in
       ("malloc", "calloc", "realloc", "free", "usable_size", "is_live", "trim",
        "thread_flush")},
    "stats": ("hakmem.stats", "stats"),
    "stats_table": ("hakmem.stats", "format_table"),
    "SpecError": ("hakmem.spec", "SpecError"),
    "FieldError": ("hakmem.spec", "FieldError"),
    "RecordPool": ("hakmem.records.pool", "RecordPool"),
    "StaleHandleError": ("hakmem.records.pool", "StaleHandleError"),
    "Record": ("hakmem.records.view", "Record"),
    "RecordView": ("hakmem.records.view", "Record"),   # the pool view's old name
    "RecordVector": ("hakmem.records.vector", "RecordVector"),
    "RecordDeque": ("hakmem.records.deque", "RecordDeque"),
    "RecordMap": ("hakmem.records.map", "RecordMap"),
}


def __getattr__(name):
    """Load a lazy name (a records-layer one loads numpy) the first time it is used."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'hakmem' has no attribute {name!r}") from None
    import importlib
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.5.0"

__all__ = [
    "__version__", "ConfigError", "ConfigWarning", "build_info", "config", "configure", "get_include", "stats",
    "stats_table", "malloc", "calloc", "realloc", "free", "usable_size", "is_live",
    "trim", "thread_flush", "install", "uninstall", "installed",
    "RecordPool", "RecordView", "StaleHandleError", "SpecError", "FieldError",
    "Record", "RecordVector", "RecordDeque", "RecordMap",
]


def _importer_stacklevel():
    """The stacklevel that makes a warning point at the code importing hakmem (not at
    hakmem itself; warnings.warn skips the import machinery's frames by itself)."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    f, level = _sys._getframe(1), 1
    while f is not None and f.f_code.co_filename.startswith(here):
        f, level = f.f_back, level + 1
    return level


def _warn_environment():
    """Warn (once, at import) about HAKMEM_* variables that would be silently ignored."""
    level = _importer_stacklevel()
    for name, close in _config.unknown():
        hint = f"; did you mean {close}?" if close else ""
        _warnings.warn(f"hakmem: unknown environment variable {name}{hint} "
                       "(ignored; the switches are listed in docs/config.md)",
                       ConfigWarning, stacklevel=level)
    try:
        debug_asked = _config.read(when="build")["debug"]
    except ConfigError:         # not a boolean: whatever was meant, it has no effect now
        debug_asked = True
    if debug_asked and not _classes.DEBUG:
        _warnings.warn(f"hakmem: HAKMEM_DEBUG={_os.environ['HAKMEM_DEBUG']} has no effect "
                       "at run time: it is read when hakmem is built, and this copy is a "
                       "release build (for the debug build: `HAKMEM_DEBUG=1 pip install .`)",
                       ConfigWarning, stacklevel=level)


def _apply(cfg):
    _front.configure_caches(cfg["mag_classes"] if cfg["heap_v2"] else 0, cfg["mag_cap"],
                      cfg["refill_batch"], cfg["sll_cap"])
    _slab.set_purge(cfg["purge_keep"])
    _pyalloc.set_limit(cfg["hook_max"])


_apply(_CONFIG)
_warn_environment()


# Settings configure() may change; the rest act at import only.
_RUNTIME_KEYS = ("heap_v2", "mag_cap", "mag_classes", "refill_batch", "sll_cap", "purge_keep", "hook_max")


def config():
    """The effective configuration (after env switches and :func:`configure`)."""
    return dict(_CONFIG)


def configure(**overrides):
    """Change cache settings at run time, e.g. ``configure(heap_v2=False)``.

    Keys are those of :func:`config`. The calling thread switches at once; other
    threads switch at their next refill; new threads start with the new values.
    Values are checked as the env switches are (ConfigError on a bad one).
    """
    env = {}
    by_key = {sw.key: sw for sw in _config.SWITCHES if sw.key in _RUNTIME_KEYS}
    for k, v in overrides.items():
        if k not in by_key:
            raise ConfigError(f"unknown setting {k!r}; settable at run time: "
                              f"{', '.join(sorted(by_key))}")
        env[by_key[k].env] = str(int(v)) if isinstance(v, bool) else str(v)
    new = dict(_CONFIG)
    for sw in _config.SWITCHES:
        if sw.env in env:
            new[sw.key] = sw.parse(sw.env, env[sw.env])
    _CONFIG.update(new)
    _apply(_CONFIG)
    return config()


def build_info():
    """How this copy was built: ``debug`` (HAKMEM_DEBUG=1 build), canary bytes, classes."""
    return {"debug": _classes.DEBUG, "canary": _classes.CANARY,
            "block_sizes": _classes.block_sizes(), "tiny_max": _classes.TINY_MAX}


def get_include():
    """Directory holding hakmem's ``.pxd`` files (add it to a Cython include path)."""
    return _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))


if _CONFIG["stats_at_exit"]:
    _atexit.register(lambda: print(__getattr__("stats_table")(), file=_sys.stderr))

if _CONFIG["install_at_import"]:   # HAKMEM_INSTALL: see docs/install.md
    install(_CONFIG["install_at_import"])
