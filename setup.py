"""Build script: every ``hakmem/**/*.pyx`` becomes one extension module, named by its
dotted path (``hakmem/records/codec.pyx`` -> ``hakmem.records.codec``).

Build switches (environment, read at build time; listed with the run-time switches in
hakmem/options.py and docs/config.md):
  HAKMEM_DEBUG=1   assertions, poisoning, canaries; -O1 -g instead of -O3.
  HAKMEM_SANITIZE=address,undefined   add -fsanitize=... (implies -O1 -g).

The sdist carries the .pyx sources, never generated C (MANIFEST.in); the wheel carries
compiled modules, .pxd files and stubs only (exclude-package-data in pyproject.toml).
"""
import glob
import importlib.util
import os
import sys

import setuptools
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_options():
    """hakmem/options.py (pure Python) loaded by path: the package is not built yet."""
    spec = importlib.util.spec_from_file_location(
        "_hakmem_build_options", os.path.join(HERE, "hakmem", "options.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


_options = _load_options()
try:
    _build = _options.read(when="build")
except _options.ConfigError as e:
    raise SystemExit(f"setup.py: {e}") from None
DEBUG = _build["debug"]
SANITIZE = _build["sanitize"]

cflags = ["-std=gnu11", "-fno-strict-aliasing", "-Wno-unused-function",
          "-Wno-sign-compare", "-Wno-unused-const-variable"]
ldflags = []
macros = []
if DEBUG or SANITIZE:
    cflags += ["-O1", "-g", "-fno-omit-frame-pointer"]
else:
    cflags += ["-O3", "-fomit-frame-pointer"]
if DEBUG:
    macros += [("HAKMEM_DEBUG", "1")]
else:
    macros += [("NDEBUG", "1")]
if SANITIZE:
    cflags += [f"-fsanitize={SANITIZE}", "-fno-sanitize-recover=undefined"]
    ldflags += [f"-fsanitize={SANITIZE}"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}


def _module_name(path):
    """hakmem/records/codec.pyx -> hakmem.records.codec"""
    return os.path.splitext(path)[0].replace(os.sep, ".")


sources = sorted(os.path.relpath(p, HERE)
                 for p in glob.glob(os.path.join(HERE, "hakmem", "**", "*.pyx"), recursive=True))
if not sources:
    raise SystemExit("setup.py: no hakmem/**/*.pyx found; run it from a source checkout or sdist")

extensions = [
    Extension(
        _module_name(path),
        [path],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
        libraries=["dl", "pthread"],
    )
    for path in sources
]

# The license is declared here (pyproject lists it as dynamic) so that both a modern
# setuptools (>= 77: an SPDX expression, as PEP 639 wants) and the older setuptools an
# offline in-place build may have (which rejects `license = "MIT"` in pyproject.toml)
# can read the project.
if int(setuptools.__version__.split(".")[0]) >= 77:
    license_kw = {"license_expression": "MIT", "license_files": ["LICENSE"]}
else:
    license_kw = {"license": "MIT"}

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        nthreads=os.cpu_count() or 1,
    ),
    **license_kw,
)
