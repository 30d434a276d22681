"""hakmem.bench.child — run a fresh interpreter and read the JSON it prints.

Memory figures (bytes per live block, bytes per record), the Python programs and
the callgrind runs each need a process of their own. They all start it here:

  run_json(args)       ``python <args>``; the last line of its stdout is JSON.
  call("mod:fn", ...)  ``fn(*args)`` in a fresh interpreter, through this module's
                       ``python -m hakmem.bench.child mod:fn '[args]'`` entry point.

A child starts in the directory that holds this copy of hakmem, with that directory
first on PYTHONPATH, so ``-m`` finds this build and not an uncompiled source checkout
in the caller's working directory.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["KEPT_ENV", "package_root", "run_json", "call", "main"]


def package_root() -> str:
    """The directory holding this copy of the hakmem package."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# what a child started with inherit_env=False still gets from this process
KEPT_ENV = ("PATH", "LD_LIBRARY_PATH", "GLIBC_TUNABLES", "TMPDIR", "LANG", "LC_ALL")


def run_json(args: Sequence[str], what: str, *, timeout: float = 300.0,
             env: Optional[Dict[str, Optional[str]]] = None,
             prefix: Sequence[str] = (), inherit_env: bool = True) -> Any:
    """Run ``[*prefix, python, *args]``; return the JSON value on its last stdout line.

    ``env`` changes the inherited environment (a value of None removes the variable);
    with ``inherit_env=False`` the child gets only ``KEPT_ENV`` and the ``HAKMEM_*``
    switches, so what it does cannot depend on the caller's other variables.
    ``prefix`` goes before the interpreter (e.g. a valgrind command line). Raises
    RuntimeError naming ``what`` and the child's last line of stderr if it fails.
    """
    root = package_root()
    full_env = {k: v for k, v in os.environ.items()
                if inherit_env or k in KEPT_ENV or k.startswith("HAKMEM_")}
    for k, v in (env or {}).items():
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = v
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in [root, full_env.get("PYTHONPATH", "")] if p)
    cmd: List[str] = list(prefix) + [sys.executable] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=full_env, cwd=root)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: the child process took more than {timeout:.0f} s") from None
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what}: the child process failed: {last}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise RuntimeError(f"{what}: the child process printed no JSON result") from None


def call(func: str, *args: Any, what: str, timeout: float = 300.0,
         env: Optional[Dict[str, Optional[str]]] = None, prefix: Sequence[str] = (),
         inherit_env: bool = True) -> Any:
    """Call the public function ``"module:name"`` with JSON-able ``args`` in a fresh
    interpreter; return its (JSON-able) result. Options and errors as :func:`run_json`."""
    return run_json(["-m", "hakmem.bench.child", func, json.dumps(list(args))], what,
                    timeout=timeout, env=env, prefix=prefix, inherit_env=inherit_env)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Child side: ``mod:fn '[args]'`` -> print ``json.dumps(fn(*args))`` on one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or ":" not in argv[0]:
        print("usage: python -m hakmem.bench.child module:function '[json args]'",
              file=sys.stderr)
        return 2
    mod, name = argv[0].split(":", 1)
    if name.startswith("_"):
        print(f"hakmem.bench.child: {name} is private", file=sys.stderr)
        return 2
    fn = getattr(importlib.import_module(mod), name)
    print(json.dumps(fn(*json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
