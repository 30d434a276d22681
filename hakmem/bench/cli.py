"""hakmem.bench.cli — ``hakmem bench``: options, the report, --json, --plot, --instructions.

:func:`add_bench_parser` wires the ``bench`` subcommand into the top-level parser
of ``hakmem/__main__.py``; the measuring is done by :mod:`hakmem.bench.runner` (and
:mod:`hakmem.bench.callgrind` for ``--instructions``).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from typing import Any, Dict, List, Optional, TextIO

__all__ = ["add_bench_parser", "main", "static_tls_tunable"]

PROG = "hakmem bench"
QUICK = {"ops": 100_000, "runs": 5, "mem_blocks": 20_000, "record_ops": 20_000,
         "live_records": 100_000}
FULL = {"ops": 2_000_000, "runs": 7, "mem_blocks": 100_000, "record_ops": 200_000,
        "live_records": 1_000_000}
TLS_TUNABLE = "glibc.rtld.optional_static_tls"
TLS_DEFAULT = 512          # glibc's default for that tunable (bytes)
TLS_UNKNOWN = 4096         # what to allow for a library whose TLS size cannot be read
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu", "/usr/local/lib", "/usr/lib64", "/usr/lib", "/lib")

EPILOG = """\
workloads (nogil C loops, the same machine code for every allocator; one op = malloc + free):
  fixed16_ws60, fixed256_ws50   ring of 60 (50) slots: free the oldest block, malloc 16 (256) B
  mixed16-1024_ws256            256 slots, random slot and size 16..1024 (fixed xorshift seed)
  xthread64                     one thread mallocs 64 B blocks, another frees them
  glibc-simple                  malloc n blocks (16/32/64 B by round), then free them all;
                                rows glibc-simple_n25, _n100, _n400, _n1600 (any _nN works)
  xmalloc-test-N                N threads only malloc 64 B, N threads only free (batches of 64)
  with --full also: threads-N (N threads of the fixed rings), memory (bytes per live block),
  callpath, records (Python-level records), python (Python programs under hakmem vs pymalloc),
  arena (hakmem.arena.Pool vs cymem's Pool; builds a small extension, needs Cython)

allocators: hakmem, hakmem-nomag (magazine off), libc, pymalloc (GIL held, one-thread
workloads only), mimalloc (if libmimalloc.so.2 loads), and each --vs library.
--instructions: the same loops under valgrind's callgrind, instructions per op (machine load
does not move them). Exit status: 0 done, 1 a run failed, 2 bad arguments. Methods and the
JSON keys: docs/bench.md in hakmem's source distribution.
"""


def _count(text: str) -> int:
    """argparse type: a positive integer (accepts 1_000_000 and 1e6)."""
    try:
        v = float(text.replace("_", "")) if ("e" in text.lower()) else int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != int(v) or int(v) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return int(v)


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``subparsers``; it runs :func:`main`."""
    p = subparsers.add_parser(
        "bench", prog=PROG, help="benchmark hakmem against libc, pymalloc and mimalloc",
        description="Run the allocator workloads and print Mops/s and hakmem's ratio to\n"
                    "each other allocator (one screen); --full for everything else.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help="every workload and every table (ranges, per CPU-second, threads, "
                        "memory, call path, records, Python programs, goals)")
    p.add_argument("--goals", action="store_true",
                   help="also print the project's goals as comparisons (implied by --full)")
    p.add_argument("--instructions", action="store_true",
                   help="instead of timing, count instructions per op under valgrind's "
                        "callgrind for the one-thread workloads (needs valgrind)")
    p.add_argument("--workloads", metavar="A,B",
                   help="comma-separated workloads to run (default: the short set; see below)")
    p.add_argument("--ops", type=_count, help=f"ops per run, per thread (default {FULL['ops']:,}; "
                                              f"--quick {QUICK['ops']:,})")
    p.add_argument("--runs", type=_count,
                   help="measured runs per cell, after one warm-up (default 7; --quick 5)")
    p.add_argument("--quick", action="store_true", help="a few-second run (fewer ops per run)")
    p.add_argument("--vs", action="append", default=[], metavar="PATH",
                   help="also compare a shared library exporting malloc/free (repeatable)")
    p.add_argument("--no-mimalloc", action="store_true", help="do not look for libmimalloc.so.2")
    p.add_argument("--mem-blocks", type=_count, metavar="N",
                   help=f"live blocks for bytes per block (default {FULL['mem_blocks']:,})")
    p.add_argument("--live-records", type=_count, metavar="N",
                   help=f"records alive for bytes per record (default {FULL['live_records']:,})")
    p.add_argument("--record-ops", type=_count, metavar="N",
                   help=f"ops per run of the Python record ring (default {FULL['record_ops']:,})")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also draw the results as one figure of panels (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=main)
    return p


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, else a line per step."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last_step = None
        self.width = 0

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            line = msg[:119]
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.stream.flush()
        else:
            step = msg.split("]", 1)[0]
            if step != self.last_step:
                self.last_step = step
                self.stream.write("bench " + msg + "\n")
                self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _fail(msg: str, code: int = 2) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return code


def _tls_bytes(path: str) -> Optional[int]:
    """The size of a shared library's static TLS segment (PT_TLS), rounded up to its
    alignment; 0 if it has none, None if it is not a 64-bit little-endian ELF file
    (or a bare name not found in the usual library directories)."""
    if "/" not in path:
        found = [os.path.join(d, path) for d in LIB_DIRS if os.path.exists(os.path.join(d, path))]
        if not found:
            return None
        path = found[0]
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", hdr, 32)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return None
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 7:                                   # PT_TLS
            memsz, align = struct.unpack_from("<QQ", table, i * phentsize + 40)
            align = max(align, 1)
            return (memsz + align - 1) // align * align
    return 0


def static_tls_tunable(paths: List[str]) -> str:
    """The GLIBC_TUNABLES entry that leaves room for ``paths``' initial-exec TLS.

    A library built with initial-exec TLS (jemalloc, tcmalloc) can only be dlopen()ed
    if its TLS fits the static TLS surplus glibc reserved at start-up (512 bytes by
    default, shared with anything loaded before). The tunable must be set before the
    process starts; this gives the sum of the libraries' TLS segments on top of the
    default, rounded up to a KiB.
    """
    sizes = [_tls_bytes(p) for p in paths]
    need = TLS_DEFAULT + sum(TLS_UNKNOWN if n is None else n for n in sizes)
    return f"{TLS_TUNABLE}={(need + 1023) // 1024 * 1024}"


def _reexec_for_tls(paths: List[str]) -> Optional[str]:
    """Re-execute this command with room for static TLS, if that can help; else return
    the error to print (nothing returns when the exec succeeds)."""
    current = os.environ.get("GLIBC_TUNABLES", "")
    entry = static_tls_tunable(paths)
    why = (f"a --vs library uses initial-exec TLS and the static TLS block glibc reserved at "
           f"start-up is too small for it; run with GLIBC_TUNABLES={entry}")
    # only a process that *is* the hakmem command may re-execute itself (never, say,
    # a test runner started as `python -m pytest`, whose argv[0] is also __main__.py)
    started_as_command = (os.path.basename(sys.argv[0]) == "hakmem"
                          or sys.argv[0].endswith(os.path.join("hakmem", "__main__.py")))
    if TLS_TUNABLE in current or not started_as_command or not getattr(sys, "orig_argv", None):
        return why
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = f"{current}:{entry}" if current else entry
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)
    except OSError:
        return why
    return None  # pragma: no cover (execve does not return)


def _check_vs(paths: List[str]) -> Optional[str]:
    """Load each --vs library once, before anything runs: None if all load, else the
    one-line error (after re-executing with a static TLS tunable where that helps)."""
    from hakmem.bench import loops, runner
    for path in paths:
        try:
            runner.check_vs_path(path)
        except runner.BenchError as e:
            return str(e)
        try:
            loops.dl_allocator(path, "check")
        except OSError as e:
            if "static TLS" in str(e):
                return f"--vs {path}: " + (_reexec_for_tls(paths) or str(e))
            return f"--vs {path}: {e}"
    return None


def main(args: argparse.Namespace) -> int:
    """Run the bench for parsed ``args``; print the report; return the exit code."""
    from hakmem.bench import runner

    try:
        workloads = runner.parse_workloads(args.workloads, full=args.full)
    except runner.BenchError as e:
        return _fail(str(e))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib (pip install 'hakmem[plot]' or matplotlib)")
        if args.instructions:
            return _fail("--plot draws timed runs; it cannot be combined with --instructions")
    for path in filter(None, (args.json, args.plot)):
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d) or not os.access(d, os.W_OK):
            return _fail(f"cannot write {path}: directory {d} is missing or not writable")
    err = _check_vs(list(args.vs))
    if err:
        return _fail(err)
    base = QUICK if args.quick else FULL
    pick = lambda v, k: v if v is not None else base[k]  # noqa: E731
    prog = _Progress(sys.stderr, not args.quiet)
    opts = runner.Options(workloads=workloads, ops=pick(args.ops, "ops"),
                          runs=pick(args.runs, "runs"), vs=list(args.vs),
                          mimalloc=not args.no_mimalloc, quick=args.quick,
                          mem_blocks=pick(args.mem_blocks, "mem_blocks"),
                          record_ops=pick(args.record_ops, "record_ops"),
                          live_records=pick(args.live_records, "live_records"), progress=prog)
    try:
        if args.instructions:
            res = _instructions(args, opts, prog)
        else:
            res = runner.run(opts)
    except runner.BenchError as e:
        prog.done()
        return _fail(str(e))
    except (RuntimeError, MemoryError, OSError) as e:
        prog.done()
        return _fail(str(e), 1)
    prog.done()
    from hakmem.bench import report
    if args.instructions:
        print(report.format_instructions(res))
    else:
        print(report.format_report(res, full=args.full, goals=args.goals))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    if args.plot:
        from hakmem.bench import plot
        plot.write_plot(res, args.plot)
    return 0


def _instructions(args: argparse.Namespace, opts: Any, prog: Any) -> Dict[str, Any]:
    from hakmem.bench import callgrind, runner
    chosen = None
    if args.workloads is not None:
        chosen = [w for w in opts.workloads if w not in runner.EXTRAS]
    allocs, skipped = runner.make_allocators(opts)
    prog(f"[1/1] callgrind: {len(allocs)} allocators, one child each")
    res = callgrind.instructions(allocs, chosen)
    res["schema"] = runner.SCHEMA
    res["notes"] = skipped + res["notes"]
    return res
