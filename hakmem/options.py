"""hakmem.options — every environment switch of hakmem, with its default, in one table.

Each switch says when it is read: ``run`` switches when :mod:`hakmem` is imported
(``read()``; a bad value raises :class:`ConfigError` at import instead of being
ignored), ``build`` switches by setup.py when hakmem is compiled, ``test`` switches by
the tests and tools. ``unknown()`` finds ``HAKMEM_*`` variables that are none of these
(a typo would otherwise be ignored silently). ``docs/config.md`` shows the same table.
"""
import os

# No typing/dataclasses/__future__ imports: this module runs in every `import hakmem`
# and every `python -m hakmem run`, so it stays cheap (the annotations that name typing
# generics are strings, never evaluated). Every object it makes is one more for each
# full collection of the program's heap to visit.

__all__ = ["ConfigError", "ConfigWarning", "Switch", "SWITCHES", "read", "unknown",
           "describe"]


class ConfigError(ValueError):
    """An environment switch has a value hakmem cannot use."""


class ConfigWarning(UserWarning):
    """An environment switch hakmem does not know, or one that has no effect now."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


def _int_parser(lo: int, hi: int) -> "Callable[[str, str], int]":
    def parse(name: str, raw: str) -> int:
        v = raw.strip().lower()
        mult = 1
        # size suffixes, as mimalloc accepts them
        for suf, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
            if v.endswith(suf):
                v, mult = v[:-1], m
                break
        try:
            n = int(v, 10) * mult
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: not an integer") from None
        if not lo <= n <= hi:
            raise ConfigError(f"{name}={raw!r}: must be between {lo} and {hi}")
        return n

    return parse


class Switch:
    """One environment switch: env name, key in ``config()``, default, meaning, and
    when it is read (``run``: at import, parsed by ``parse``; ``build``: by setup.py;
    ``test``: by the tests and tools). Only ``run`` switches have a key and a parser."""

    __slots__ = ("env", "key", "default", "parse", "doc", "when")

    def __init__(self, env: str, key: "Optional[str]", default: "Any",
                 parse: "Optional[Callable[[str, str], Any]]", doc: str, when: str = "run"):
        for name, value in zip(self.__slots__, (env, key, default, parse, doc, when)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("Switch is read-only")

    def __repr__(self) -> str:
        return f"Switch({self.env!r}, key={self.key!r}, default={self.default!r}, when={self.when!r})"


def _parse_domains(name: str, raw: str) -> tuple:
    v = raw.strip().lower()
    if v in _FALSE:
        return ()
    if v in _TRUE:
        return ("obj", "mem")
    parts = tuple(dict.fromkeys(v.replace(",", " ").split()))
    if any(p not in ("obj", "mem") for p in parts):
        raise ConfigError(f"{name}={raw!r}: expected 1/0 or a list of domains from obj,mem")
    return parts


# The class count, needed before the compiled modules load; a test checks that it
# equals hakmem.classes.NCLASSES.
NCLASSES = 20

# Defaults chosen by measurement; see docs/config.md for the figures.
SWITCHES = (
    Switch("HAKMEM_TINY_HEAP_V2", "heap_v2", True, _parse_bool,
           "TinyHeapV2 L0 magazine in front of the TLS free list (on/off)."),
    Switch("HAKMEM_TINY_MAG_CAP", "mag_cap", 64, _int_parser(1, 64),
           "Slots per magazine (per thread, per covered class)."),
    Switch("HAKMEM_TINY_MAG_CLASSES", "mag_classes", NCLASSES, _int_parser(0, NCLASSES),
           "How many classes, from C0 up, the magazine covers (20 = all; 4 = C0..C3 = 16..64 bytes)."),
    Switch("HAKMEM_TINY_REFILL_BATCH", "refill_batch", 64, _int_parser(1, 1024),
           "Most fresh blocks a refill carves for a thread (a slab's free list is always taken whole)."),
    Switch("HAKMEM_TINY_SLL_CAP", "sll_cap", 2048, _int_parser(0, 1 << 20),
           "Most blocks a thread's free list keeps per class (and at most 128 KiB worth); past it, frees go straight back to their slabs."),
    Switch("HAKMEM_PURGE_KEEP", "purge_keep", 64, _int_parser(0, 1 << 20),
           "Empty 64 KiB slabs kept resident; past twice this many, the coldest go back to the OS and empty regions are unmapped (0 = only trim() does)."),
    Switch("HAKMEM_HOOK_MAX", "hook_max", 512, _int_parser(1, 1024),
           "Largest request the PEP 445 hook serves from hakmem (512 = pymalloc's own limit); larger ones go to the previous allocator."),
    Switch("HAKMEM_STATS", "stats_at_exit", False, _parse_bool,
           "Print the stats table to stderr at interpreter exit."),
    Switch("HAKMEM_INSTALL", "install_at_import", (), _parse_domains,
           "Install hakmem as CPython's allocator (PEP 445) when hakmem is imported: 1 = obj,mem; or a list like obj,mem."),
    Switch("HAKMEM_DEBUG", "debug", False, _parse_bool,
           "Debug build (setup.py): assertions, poisoning, canaries, aborting checked frees; see docs/debug.md.",
           "build"),
    Switch("HAKMEM_SANITIZE", "sanitize", "", lambda name, raw: raw.strip(),
           "Build with -fsanitize=... (setup.py), e.g. address,undefined; tools/sanitize.sh sets it.",
           "build"),
    Switch("HAKMEM_STRESS_SCALE", None, "1", None,
           "Tests: multiplies the stress tests' operation counts (tools set 0.02..0.2).", "test"),
    Switch("HAKMEM_FUZZ_EXAMPLES", None, "40", None,
           "Tests: hypothesis examples per fuzz state machine.", "test"),
    Switch("HAKMEM_CI_VENV", None, "/tmp/hakmem-ci-venv", None,
           "CI: where .ci/run creates its throw-away virtualenvs.", "test"),
)


def read(environ: "Optional[Mapping[str, str]]" = None, when: str = "run") -> "Dict[str, Any]":
    """Parse the ``when`` switches (``run``: import time; ``build``: setup.py) from
    ``environ`` (default ``os.environ``) into a dict keyed by their keys.

    Raises :class:`ConfigError` naming the switch on the first bad value.
    """
    env = os.environ if environ is None else environ
    out: Dict[str, Any] = {}
    for sw in SWITCHES:
        if sw.when != when:
            continue
        raw = env.get(sw.env)
        out[sw.key] = sw.default if raw is None else sw.parse(sw.env, raw)
    return out


def unknown(environ: "Optional[Mapping[str, str]]" = None) -> "List[Tuple[str, Optional[str]]]":
    """``HAKMEM_*`` variables in ``environ`` that no switch reads, each with the
    closest known name (or None)."""
    env = os.environ if environ is None else environ
    known = {sw.env[len("HAKMEM_"):]: sw.env for sw in SWITCHES}
    out = []
    for name in sorted(env):
        if name.startswith("HAKMEM_") and name[len("HAKMEM_"):] not in known:
            import difflib     # only when there is a typo to explain
            # compare without the common prefix, which would make every name "close"
            close = difflib.get_close_matches(name[len("HAKMEM_"):], known, n=1, cutoff=0.6)
            out.append((name, known[close[0]] if close else None))
    return out


def describe() -> str:
    """A Markdown table of the switches (used to keep docs/config.md honest)."""
    rows = ["| variable | key | default | read | meaning |", "|---|---|---|---|---|"]
    for sw in SWITCHES:
        key = f"`{sw.key}`" if sw.key else ""
        when = {"run": "import", "build": "build", "test": "tests"}[sw.when]
        default = f"`{sw.default}`" if sw.default != "" else "(unset)"
        rows.append(f"| `{sw.env}` | {key} | {default} | {when} | {sw.doc} |")
    return "\n".join(rows)
