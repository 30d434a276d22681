"""pytest-benchmark suite over the bench's workloads (``pytest bench/ --benchmark-only``).

Not under ``testpaths``: a plain ``pytest`` never collects it (speed is measured
here, never asserted in tests/).
"""
import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-ops", type=int, default=200_000,
                     help="ops per call of a C workload loop (default 200,000)")


@pytest.fixture(scope="session")
def bench_ops(request):
    n = request.config.getoption("--bench-ops")
    if n <= 0:
        raise pytest.UsageError(f"--bench-ops must be positive, got {n}")
    return n
