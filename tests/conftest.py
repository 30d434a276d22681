"""Shared fixtures: the downstream extension that cimports hakmem, built once."""
import glob
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def build_extension(tmpdir, pyx_path, name, language="c"):
    """Build a Cython extension from pyx_path against the installed hakmem; import it.

    language="c++" builds it as C++ (as preshed and spaCy build their cymem users).
    """
    import hakmem

    src = os.path.join(tmpdir, name + ".pyx")
    with open(pyx_path) as f, open(src, "w") as g:
        g.write(f.read())
    for pxd in glob.glob(os.path.join(os.path.dirname(pyx_path), "*.pxd")):
        shutil.copy(pxd, tmpdir)         # helpers the extension cimports (testkit.pxd)
    setup_py = os.path.join(tmpdir, "setup.py")
    with open(setup_py, "w") as g:
        g.write(textwrap.dedent(f"""
            from setuptools import setup, Extension
            from Cython.Build import cythonize
            setup(ext_modules=cythonize(
                [Extension({name!r}, [{name + '.pyx'!r}], extra_compile_args=["-O2"],
                           language={language!r})],
                include_path=[{hakmem.get_include()!r}],
                compiler_directives={{"language_level": 3}}))
        """))
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmpdir,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("downstream build failed:\n" + r.stdout[-3000:] + r.stderr[-3000:])
    sys.path.insert(0, tmpdir)
    try:
        return __import__(name)
    finally:
        sys.path.remove(tmpdir)


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
