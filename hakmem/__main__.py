"""``python -m hakmem <command>`` (or the ``hakmem`` script): dispatch to the subcommands.

``--version`` prints the version and build flavour. A bad ``HAKMEM_*`` value stops
the command with one line on stderr (``hakmem/__init__.py`` does that at import).

Commands: ``bench`` (:mod:`hakmem.bench.cli`), ``run`` (a program with hakmem as
CPython's allocator, :mod:`hakmem.run_cli`).

Each subcommand lives in its own module with an ``add_<name>_parser(subparsers)``
function that sets ``func``; this file only wires them together.
"""
import argparse
import os
import sys


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    """Parse ``argv`` and run the chosen subcommand; return its exit status."""
    import hakmem
    parser = _OneLineParser(prog="python -m hakmem",
                            description="hakmem: a tiny-object allocator for Python and Cython",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    flavour = "debug" if hakmem.build_info()["debug"] else "release"
    parser.add_argument("--version", action="version",
                        version=f"hakmem {hakmem.__version__} ({flavour} build, "
                                f"{os.path.dirname(os.path.abspath(hakmem.__file__))})")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_OneLineParser)
    words = sys.argv[1:] if argv is None else list(argv)
    if next((w for w in words if not w.startswith("-")), None) != "run":
        # `hakmem run` skips the bench's imports: a program's start-up stays close to
        # plain `python`'s
        from hakmem.bench.cli import add_bench_parser
        add_bench_parser(sub)
    from hakmem.run_cli import add_run_parser
    add_run_parser(sub)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
