#!/usr/bin/env python3
"""Instructions per call of CPython's object allocator: pymalloc against hakmem's hook.

    python tools/hook_instructions.py                 # json.loads loop, 20,000 rounds
    python tools/hook_instructions.py --rounds 2000 --workload json_dumps

Runs one small Python loop under callgrind twice: once as is (pymalloc) and once with
hakmem installed by a `sitecustomize.py` on PYTHONPATH. From each profile it takes the
calls to, and the instructions spent in, the allocator's malloc and free functions
(pymalloc's `_PyObject_Malloc`/`_PyObject_Free`, the hook's `_hook_malloc`/
`_hook_free` plus their slow paths), and prints instructions per call and the whole
program's total. Callgrind counts instructions, not time, so the figures do not move
with the machine's load. Needs valgrind (`apt-get install valgrind`).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import childenv  # noqa: E402  (tools/ is not a package)

# The loops: pyperformance's json benchmarks in miniature (the same kind of documents).
WORKLOADS = {
    "json_loads": (
        "import json\n"
        "doc = {'id': 302935349, 'name': 'collinwinter', 'tags': list('abcdefg'),\n"
        "       'flags': 412317970704, 'country': 'BR', 'ratio': 0.25,\n"
        "       'nested': [{'k%d' % i: i} for i in range(8)]}\n"
        "objs = [json.dumps(doc), json.dumps([list(range(20)), 60])]\n"
        "for _ in range(ROUNDS):\n"
        "    for o in objs:\n"
        "        json.loads(o)\n"),
    "json_dumps": (
        "import json\n"
        "doc = {'id': 302935349, 'name': 'collinwinter', 'tags': list('abcdefg'),\n"
        "       'nested': [{'k%d' % i: i} for i in range(8)]}\n"
        "for _ in range(ROUNDS):\n"
        "    json.dumps(doc)\n"),
}

# row -> (functions whose calls count, functions whose own instructions count): the
# entry point, plus for the hook the out-of-line slow paths it tail-calls.
PYMALLOC = {"malloc": (("_PyObject_Malloc",), ("_PyObject_Malloc",)),
            "free": (("_PyObject_Free",), ("_PyObject_Free",))}
HAKMEM = {"malloc": (("pyalloc__hook_malloc",),
                     ("pyalloc__hook_malloc", "pyalloc__hook_malloc_slow")),
          "free": (("pyalloc__hook_free",), ("pyalloc__hook_free",))}


def profile(script, site, out):
    """Run script under callgrind (with hakmem's sitecustomize if site); the out file."""
    env = childenv.env(site)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           sys.executable, script]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"hook_instructions: callgrind failed:\n{r.stderr[-2000:]}")
    return out


def parse(path):
    """(self instructions by function name, calls by function name, program total)."""
    names, self_ir, calls = {}, collections.Counter(), collections.Counter()
    fn = cfn = None
    total = 0
    in_call = False
    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                fn, in_call = m.group(1), False
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.strip())
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                cfn = m.group(1)
            elif line.startswith("calls="):
                calls[cfn] += int(line.split()[0][6:])
                in_call = True        # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and not in_call:
                    self_ir[fn] += int(parts[1])
                in_call = False
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
    by_name = collections.Counter()
    calls_by_name = collections.Counter()
    for k, v in self_ir.items():
        by_name[names.get(k, k)] += v
    for k, v in calls.items():
        calls_by_name[names.get(k, k)] += v
    return by_name, calls_by_name, total


def per_call(prof, rows):
    """{row: (calls, own instructions per call)} for the function names in rows."""
    ir, calls, _ = prof
    out = {}
    for row, (entry, counted) in rows.items():
        n = sum(v for k, v in calls.items() if k.endswith(entry))
        i = sum(v for k, v in ir.items() if k.endswith(counted))
        out[row] = (n, i / n if n else float("nan"))
    return out


def main(argv=None):
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="json_loads")
    p.add_argument("--rounds", type=int, default=20000)
    p.add_argument("--keep", help="directory to keep the callgrind files in")
    a = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("hook_instructions: needs valgrind (apt-get install valgrind)")
    d = a.keep or tempfile.mkdtemp(prefix="hakmem-hookinstr-")
    os.makedirs(d, exist_ok=True)
    script = os.path.join(d, "loop.py")
    with open(script, "w") as f:
        f.write(WORKLOADS[a.workload].replace("ROUNDS", str(a.rounds)))
    site = childenv.write_site(d)
    py = parse(profile(script, None, os.path.join(d, "pymalloc.cg")))
    hk = parse(profile(script, site, os.path.join(d, "hakmem.cg")))
    rows = [("pymalloc", per_call(py, PYMALLOC), py[2]),
            ("hakmem hook", per_call(hk, HAKMEM), hk[2])]
    if rows[1][1]["malloc"][0] == 0:
        raise SystemExit("hook_instructions: the hook never ran: hakmem did not install "
                         "in the child (is hakmem built or installed?)")
    print(f"{a.workload}, {a.rounds} rounds; instructions per call (callgrind)")
    print(f"{'allocator':<12} {'mallocs':>10} {'instr':>6} {'frees':>10} {'instr':>6} "
          f"{'program total':>15}")
    for name, r, total in rows:
        (nm, im), (nf, if_) = r["malloc"], r["free"]
        print(f"{name:<12} {nm:>10} {im:>6.1f} {nf:>10} {if_:>6.1f} {total:>15,}")
    print(f"program: hakmem / pymalloc = {hk[2] / py[2]:.3f}")
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
