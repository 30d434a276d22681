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



def _ext_modules():
    """Cythonize, unless the C generated last time is current.

    Cython's own dependency check also looks at Cython's bundled .pxd files, and pip's
    build isolation installs a fresh Cython for every build, so every `pip install .`
    would regenerate and recompile everything. The C is reused instead when a stamp
    (Cython version, directives, build switches) matches the last run and every .c
    is newer than every hakmem .pyx/.pxd; a changed switch forces a full regeneration
    (setuptools itself never notices changed compiler flags).
    """
    import json
    import Cython
    config = {"cython": Cython.__version__, "directives": directives,
              "debug": DEBUG, "sanitize": SANITIZE}
    stamp = os.path.join(HERE, "build", "hakmem-cython-config.json")
    try:
        with open(stamp) as f:
            same = json.load(f) == config
    except (OSError, ValueError):
        same = False
    inputs = [p for ext in ("pyx", "pxd")
              for p in glob.glob(os.path.join(HERE, "hakmem", "**", "*." + ext), recursive=True)]
    newest = max(os.path.getmtime(p) for p in inputs)

    def current(pyx):
        c = os.path.join(HERE, os.path.splitext(pyx)[0] + ".c")
        return os.path.exists(c) and os.path.getmtime(c) >= newest

    if same and all(current(ext.sources[0]) for ext in extensions):
        for ext in extensions:
            ext.sources = [os.path.splitext(ext.sources[0])[0] + ".c"]
        return extensions
    modules = cythonize(extensions, compiler_directives=directives, force=not same,
                        nthreads=os.cpu_count() or 1)
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w") as f:
        json.dump(config, f)
    return modules


setup(
    ext_modules=_ext_modules(),
    **license_kw,
)
