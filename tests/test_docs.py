"""Docs are code: every ```python block of README.md and docs/*.md runs as written.

Each file runs in a fresh interpreter (one namespace per file, blocks in file order),
so examples that install hakmem as CPython's allocator or reconfigure it cannot leak
into other tests. Blocks are split into top-level statements with ``ast``; a statement
that is expected to raise ends with a comment ``# raises ExcName`` or
``# raises ExcName: text``, and must raise exactly that class (by name), with ``text``
in its message when given; every other statement must not raise. Line numbers in
errors are the Markdown file's.

Blocks that are files of a recipe start with ``# file: NAME`` and are not run here:
``test_cimport_recipe`` writes docs/cimport.md's files to a directory and runs its
```bash blocks that follow them (build, then import), which is the recipe a user runs.
Other languages (bash, cython, text) are not run.

Run by hand: ``python tests/test_docs.py docs/records.md``.
"""
import ast
import glob
import json
import os
import re
import subprocess
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
RAISES = re.compile(r"#\s*raises\s+([A-Za-z_][\w.]*)(?::\s*(.*?))?\s*$")
FILE = re.compile(r"#\s*file:\s*(\S+)\s*$")


def blocks(path):
    """(language, first line number, source) of every fenced block of a Markdown file."""
    out, lang, start, body = [], None, 0, []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            stripped = line.strip()
            if lang is None and stripped.startswith("```"):
                lang, start, body = stripped[3:].strip().split(" ")[0] or "text", n + 1, []
            elif lang is not None and stripped == "```":
                out.append((lang, start, "".join(body)))
                lang = None
            elif lang is not None:
                body.append(line)
    assert lang is None, f"{path}: unclosed ``` block from line {start - 1}"
    return out


def recipe_file(source):
    """The file name if the block is a ``# file: NAME`` recipe file, else None."""
    first = source.lstrip().split("\n", 1)[0]
    m = FILE.match(first)
    return m.group(1) if m else None


def run_file(path):
    """Run the python blocks of path in one namespace; return a list of failures."""
    ns = {"__name__": "__docs__"}
    failures = []
    for lang, start, source in blocks(path):
        if lang != "python" or recipe_file(source):
            continue
        lines = source.splitlines()
        try:
            tree = ast.parse(source)
        except SyntaxError as e:
            failures.append(f"{path}:{start + (e.lineno or 1) - 1}: syntax error: {e.msg}")
            continue
        for stmt in tree.body:
            m = RAISES.search(lines[stmt.end_lineno - 1])
            where = f"{os.path.relpath(path, ROOT)}:{stmt.lineno + start - 1}"
            mod = ast.Module([stmt], type_ignores=[])
            ast.increment_lineno(mod, start - 1)
            try:
                exec(compile(mod, path, "exec"), ns)
            except BaseException as e:      # noqa: BLE001 - every outcome is reported
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                if m is None:
                    failures.append(f"{where}: raised {type(e).__name__}: {e}\n"
                                    + "".join(traceback.format_exception(e)[-3:]))
                elif type(e).__name__ != m.group(1).split(".")[-1]:
                    failures.append(f"{where}: expected {m.group(1)}, got {type(e).__name__}: {e}")
                elif m.group(2) and m.group(2) not in str(e):
                    failures.append(f"{where}: {type(e).__name__} message {str(e)!r} "
                                    f"does not contain {m.group(2)!r}")
            else:
                if m is not None:
                    failures.append(f"{where}: expected {m.group(1)}, nothing was raised")
    return failures


def _run_in_child(path, tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), path], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines, f"runner crashed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[-1])


def _ids(paths):
    return [os.path.relpath(p, ROOT) for p in paths]


import pytest  # noqa: E402  (the child run above needs no pytest)


def test_docs_are_found():
    assert len(DOCS) >= 5, DOCS
    for path in DOCS:
        blocks(path)            # every fence is closed


@pytest.mark.parametrize("path", DOCS, ids=_ids(DOCS))
def test_doc_python_blocks_run(path, tmp_path):
    if not any(lang == "python" and not recipe_file(src) for lang, _, src in blocks(path)):
        pytest.skip("no python blocks")
    failures = _run_in_child(path, tmp_path)
    assert not failures, "\n".join(failures)


def test_runner_checks_raises_markers(tmp_path):
    """The runner itself: a marked statement must raise exactly that class."""
    md = tmp_path / "x.md"
    md.write_text("```python\nx = 1\n1 / 0       # raises ZeroDivisionError: division\n"
                  "int('a')    # raises ValueError\n```\n\n```python\ny = x + 1\n"
                  "[][0]       # raises KeyError\n{}[1]       # raises LookupError\n"
                  "z = 2       # raises ValueError\n"
                  "int('b')    # raises ValueError: nonsense\n"
                  "undefined_name\n```\n")
    fails = _run_in_child(str(md), tmp_path)
    assert len(fails) == 5, fails
    assert "x.md:9: expected KeyError, got IndexError" in fails[0]
    assert "x.md:10: expected LookupError, got KeyError" in fails[1]   # exactly that class
    assert "x.md:11: expected ValueError, nothing was raised" in fails[2]
    assert "x.md:12: ValueError message" in fails[3]
    assert "x.md:13: raised NameError" in fails[4]


def test_cimport_recipe(tmp_path):
    """docs/cimport.md's recipe, as a user runs it: write its files, run its commands."""
    path = os.path.join(ROOT, "docs", "cimport.md")
    files, commands = {}, []
    for lang, _, source in blocks(path):
        name = recipe_file(source)
        if name:
            files[name] = source
        elif lang == "bash" and files:
            commands.append(source)
    assert "setup.py" in files and any(n.endswith(".pyx") for n in files), files
    assert commands, "no command block after the recipe's files"
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    bindir = tmp_path / "bin"           # `python` in the recipe: the interpreter under test
    bindir.mkdir()
    # a wrapper, not a symlink: a symlinked venv interpreter would lose its venv
    (bindir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bindir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    for cmd in commands:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


if __name__ == "__main__":
    print(json.dumps(run_file(os.path.abspath(sys.argv[1]))))
