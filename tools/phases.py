"""A program in phases, for the memory figures of docs/config.md: build ~2 M small
objects (700,000 tuples, strings and lists), drop them, then build 150 MB of 4 KiB
`bytes` (requests the PEP 445 hook passes to the previous allocator).

    python tools/phases.py          # pymalloc (hakmem not imported)
    python tools/phases.py hakmem   # hakmem.install() first

Prints RSS (MiB) when built, after the drop, after the bytes, and the peak.
"""
import gc
import resource
import sys


def rss_mib():
    """Resident set size of this process, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def main(argv):
    """Run the phases under pymalloc, or under hakmem with ``hakmem`` as argument."""
    side = argv[0] if argv else "pymalloc"
    if side not in ("pymalloc", "hakmem"):
        raise SystemExit("usage: python tools/phases.py [pymalloc|hakmem]")
    if side == "hakmem":
        import hakmem
        hakmem.install()
    objs = [(i, str(i), [i]) for i in range(700_000)]
    built = rss_mib()
    del objs
    gc.collect()
    dropped = rss_mib()
    big = [bytes(4096) for _ in range(150 * 256)]
    after = rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{side:<8} built {built:6.1f}  after drop {dropped:6.1f}  "
          f"after bytes {after:6.1f}  peak {peak:6.1f} MiB")
    del big


if __name__ == "__main__":
    main(sys.argv[1:])
