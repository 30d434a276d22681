"""Build script: every hakmem/*.pyx, hakmem/bench/*.pyx and hakmem/records/*.pyx becomes one extension module.

Build switches (environment, read at build time):
  HAKMEM_DEBUG=1   assertions, poisoning, canaries; -O1 -g instead of -O3.
  HAKMEM_SANITIZE=address,undefined   add -fsanitize=... (implies -O1 -g).
"""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("HAKMEM_DEBUG", "0").lower() in ("1", "true", "yes", "on")
SANITIZE = os.environ.get("HAKMEM_SANITIZE", "").strip()

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

extensions = [
    Extension(
        os.path.splitext(path)[0].replace(os.sep, "."),
        [path],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
        libraries=["dl", "pthread"],
    )
    for path in sorted(glob.glob("hakmem/*.pyx") + glob.glob("hakmem/bench/*.pyx")
                       + glob.glob("hakmem/records/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        nthreads=os.cpu_count() or 1,
    ),
)
