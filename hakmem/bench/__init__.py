"""hakmem.bench — the allocator benchmark (``hakmem bench``).

Modules, one layer each:

  loops      nogil C loops of the one-thread workloads, and the allocators (vtables)
  threads    nogil C loops that run on several threads (threads-N, xthread, xmalloc-test)
  runner     picks allocators, interleaves runs, proves hakmem served every op, derives ratios
  child      starts a child interpreter and reads the JSON it prints (the one place that does)
  records    the Python-level record workload
  programs   Python programs timed with hakmem installed as CPython's allocator vs pymalloc
  callgrind  instructions per op under valgrind's callgrind (``--instructions``)
  goals      the project's goals, as comparisons (``--goals``)
  report     the printed tables; plot: the ``--plot`` figure; cli: the command line

Nothing is imported here, so ``import hakmem.bench.cli`` stays cheap.
"""
