"""``python -m hakmem run``: run a Python program with hakmem installed as its allocator.

    python -m hakmem run [--stats] [--domains obj,mem] script.py [args ...]
    python -m hakmem run [--stats] [--domains obj,mem] -m module [args ...]
    python -m hakmem run [--stats] [--domains obj,mem] -c code [args ...]

hakmem is installed (PEP 445, see :mod:`hakmem.pyalloc`) before the program's first
line runs; the program sees ``sys.argv`` and ``sys.path[0]`` as ``python script.py`` /
``python -m module`` / ``python -c code`` would set them, and its exit status is kept. ``--stats`` prints
hakmem's stats table and the hook's routing counters to stderr at exit.
"""
from __future__ import annotations

import argparse
import atexit
import os
import runpy
import sys
from typing import List, Optional

__all__ = ["add_run_parser", "main", "print_stats"]


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "run", help="run a script or module with hakmem as CPython's allocator",
        description="Run a Python script (or -m module) with hakmem installed as the "
                    "allocator of CPython's obj and mem domains (PEP 445).")
    p.add_argument("--stats", action="store_true",
                   help="print hakmem's stats and the hook's counters to stderr at exit")
    p.add_argument("--domains", default="obj,mem",
                   help="allocator domains to serve from hakmem (default: obj,mem)")
    # -m takes the rest of the line (module + its arguments), as python -m does.
    p.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [args]",
                   help="run a library module as a script (like python -m); "
                        "the rest of the command line is its arguments")
    p.add_argument("-c", dest="command", nargs=argparse.REMAINDER, metavar="CODE [args]",
                   help="run the program passed as a string (like python -c)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="script.py [args] | [args]",
                   help="the script and its arguments (or the module's arguments)")
    p.set_defaults(func=main)
    return p


def print_stats(file=None) -> None:
    """Print hakmem's stats table and the PEP 445 hook's counters (stderr by default)."""
    import hakmem
    from hakmem.pyalloc import format_hook_stats
    out = sys.stderr if file is None else file
    print(hakmem.stats_table(), file=out)
    print(format_hook_stats(), file=out)
    out.flush()


def main(args: argparse.Namespace) -> Optional[int]:
    """Run the program named by ``args`` (from :func:`add_run_parser`) under hakmem."""
    import hakmem
    from hakmem.pyalloc import parse_domains

    try:
        want = parse_domains(args.domains, "hakmem run --domains")
    except (ValueError, TypeError) as e:
        raise SystemExit(str(e)) from None
    argv: List[str] = list(args.argv)
    module = None
    command = None
    if args.command is not None:
        if not args.command:
            raise SystemExit("hakmem run: -c needs the code to run")
        command, argv = args.command[0], list(args.command[1:])
    if args.module is not None:
        if not args.module:
            raise SystemExit("hakmem run: -m needs a module name")
        module, argv = args.module[0], list(args.module[1:])
    if command is None and module is None and not argv:
        raise SystemExit("hakmem run: give a script, -m module or -c code")
    if argv and argv[0] == "--" and module is None and command is None:
        argv = argv[1:]
    if command is None and module is None and argv[0].startswith("-"):
        raise SystemExit(f"hakmem run: options go before the script; got {argv[0]!r} "
                         "where the script was expected")
    if module is not None:
        import importlib.util
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise SystemExit(f"hakmem run: no module named {module!r}")
    elif command is None and not os.path.exists(argv[0]):
        raise SystemExit(f"hakmem run: can't open file {argv[0]!r}: no such file")

    # Domains HAKMEM_INSTALL already installed at import are kept as they are.
    missing = [d for d in want if d not in hakmem.installed()]
    if missing:
        hakmem.install(missing)
    if args.stats:
        atexit.register(print_stats)   # registered first, so it runs after the program's own

    if command is not None:
        sys.argv = ["-c"] + argv
        sys.path[0] = ""                       # as python -c: the working directory
        code = compile(command, "<string>", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    elif module is not None:
        sys.argv = [module] + argv             # runpy puts the module's path in argv[0]
        # `python -m hakmem` already put the working directory first on sys.path.
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0
