"""``python -m hakmem <command>``: the command-line entry point.

Commands: ``run`` (a program with hakmem as CPython's allocator, :mod:`hakmem.run_cli`).
"""
import argparse
import sys

from hakmem import run_cli


def main(argv=None):
    """Parse the command line and dispatch to the chosen subcommand."""
    parser = argparse.ArgumentParser(prog="python -m hakmem")
    sub = parser.add_subparsers(dest="command", metavar="command")
    run_cli.add_run_parser(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
