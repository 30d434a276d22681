"""Shared test set-up: extensions that cimport hakmem, built against the hakmem under test.

- ``hakmem_testing`` (tests/downstream/hakmem_testing.pyx): test-only nogil kernels
  (stress threads, churn, the raw C API). It is not part of the package, so wheels do
  not ship it; it is built here, once per hakmem build, into a cache directory that is
  put on ``sys.path`` and on ``PYTHONPATH`` (child interpreters import it too). The
  first run after a (re)build of hakmem compiles it (~15 s); later runs reuse it.
- ``hakdown`` (tests/downstream/hakdown.pyx): the downstream-user smoke extension.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

import hakmem

HERE = os.path.dirname(os.path.abspath(__file__))

# Variables a sanitizer run sets for the interpreter under test; a compiler run with
# libasan preloaded would report the compiler's own leaks.
_NOT_FOR_BUILDS = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONMALLOC")


def _extra_compile_args():
    """Compile test extensions like the core: optimised, and sanitized when it is."""
    args = ["-O2"]
    sanitize = os.environ.get("HAKMEM_SANITIZE", "").strip()
    if sanitize:
        args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    return args


def build_extension(tmpdir, pyx_path, name, do_import=True, language="c"):
    """Build a Cython extension from pyx_path against the installed hakmem; import it.

    language="c++" builds it as C++ (as preshed and spaCy build their cymem users).
    """
    src = os.path.join(tmpdir, name + ".pyx")
    shutil.copyfile(pyx_path, src)
    for pxd in glob.glob(os.path.join(os.path.dirname(pyx_path), "*.pxd")):
        shutil.copy(pxd, tmpdir)         # helpers the extension cimports (testkit.pxd)
    args = _extra_compile_args()
    with open(os.path.join(tmpdir, "setup.py"), "w") as g:
        g.write(textwrap.dedent(f"""
            from setuptools import setup, Extension
            from Cython.Build import cythonize
            setup(ext_modules=cythonize(
                [Extension({name!r}, [{name + '.pyx'!r}], extra_compile_args={args!r},
                           extra_link_args={[a for a in args if a.startswith('-fsanitize')]!r},
                           language={language!r})],
                include_path=[{hakmem.get_include()!r}],
                compiler_directives={{"language_level": 3}}))
        """))
    env = {k: v for k, v in os.environ.items() if k not in _NOT_FOR_BUILDS}
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmpdir,
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])
    if not do_import:
        return None
    sys.path.insert(0, tmpdir)
    try:
        return __import__(name)
    finally:
        sys.path.remove(tmpdir)


def _testing_dir():
    """The cache directory holding hakmem_testing for this hakmem build (built if missing)."""
    src = os.path.join(HERE, "downstream", "hakmem_testing.pyx")
    h = hashlib.sha256()
    for part in (sys.version, hakmem.__file__, repr(hakmem.build_info()), repr(_extra_compile_args())):
        h.update(part.encode())
    pkg = os.path.dirname(os.path.abspath(hakmem.__file__))
    for path in sorted([src] + [os.path.join(pkg, f) for f in os.listdir(pkg)
                                if f.endswith((".pxd", ".so"))]):
        with open(path, "rb") as f:
            h.update(f.read())
    root = os.path.join(os.path.dirname(HERE), "build", "test-extensions")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError:      # a read-only checkout
        root = os.path.join(tempfile.gettempdir(), f"hakmem-test-extensions-{os.getuid()}")
        os.makedirs(root, exist_ok=True)
    out = os.path.join(root, h.hexdigest()[:16])
    if not os.path.isdir(out):
        tmp = tempfile.mkdtemp(dir=root)
        build_extension(tmp, src, "hakmem_testing", do_import=False)
        try:
            os.rename(tmp, out)       # atomic: a concurrent run builds its own and loses the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        # keep the few most recent builds (sanitizer/valgrind runs each add one)
        old = sorted((os.path.join(root, d) for d in os.listdir(root)), key=os.path.getmtime)
        for d in old[:-6]:
            shutil.rmtree(d, ignore_errors=True)
    return out


_TESTING = _testing_dir()
sys.path.insert(0, _TESTING)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [_TESTING, os.environ.get("PYTHONPATH", "")] if p)


@pytest.fixture(scope="session")
def hakdown(tmp_path_factory):
    """The downstream test extension (tests/downstream/hakdown.pyx), built and imported."""
    d = tmp_path_factory.mktemp("hakdown")
    return build_extension(str(d), os.path.join(HERE, "downstream", "hakdown.pyx"), "hakdown")


@pytest.fixture(scope="session", params=["c", "c++"])
def arenadown(request, tmp_path_factory):
    """tests/downstream/arenadown.pyx (cimports hakmem.arena), built as C and as C++."""
    name = "arenadown_" + request.param.replace("+", "p")
    d = tmp_path_factory.mktemp(name)
    return build_extension(str(d), os.path.join(HERE, "downstream", "arenadown.pyx"), name,
                           language=request.param)
