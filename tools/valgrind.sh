#!/usr/bin/env bash
# Run the stress tests in short form under valgrind memcheck.
#
#   tools/valgrind.sh                    # tests/test_stress.py, HAKMEM_STRESS_SCALE=0.02
#   tools/valgrind.sh tests/test_oom.py  # other test files / pytest arguments
#
# Works from any directory; test paths are relative to where it is started. hakmem is
# built (release flags plus -g) in place in a throw-away copy put first on PYTHONPATH;
# everything else (numpy, pytest, Cython) comes from the running environment (the
# active virtualenv, or the system's). Memcheck
# sees hakmem's regions as plain mmap memory, so it checks hakmem's own metadata
# accesses, the large path's system-malloc blocks and everything Python does;
# PYTHONMALLOC=malloc lets it see Python's objects too. Suppressions cover CPython
# internals and the dynamic loader only. Any memcheck error makes the run fail (exit
# code 99). The test-only extensions the tests build are compiled before valgrind
# starts (a compiler under memcheck would take minutes).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
caller="$(pwd)"
work="$(mktemp -d /tmp/hakmem-valgrind.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# The interpreter itself, not a wrapper script (pyenv's shims are bash scripts, and
# valgrind would check bash while python ran unwatched as its child).
py="$(python3 -c 'import sys; print(sys.executable)')"
echo "== building hakmem (release, -g) with $py"
mkdir "$work/src"
cp -r "$here/hakmem" "$here/setup.py" "$here/pyproject.toml" "$here/README.md" "$here/LICENSE" "$work/src/"
find "$work/src/hakmem" \( -name '*.so' -o -name '*.c' \) -delete
(cd "$work/src" && CFLAGS="-g" "$py" setup.py build_ext --inplace > "$work/build.log" 2>&1) \
    || { tail -30 "$work/build.log"; exit 1; }
export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"

supp=()
for f in /usr/lib/valgrind/python3.supp "$here/tools/valgrind-python.supp"; do
  [ -f "$f" ] && supp+=("--suppressions=$f")
done
args=()
for a in "$@"; do        # test paths relative to the caller's directory
  path="${a%%::*}"
  if [[ "$a" != -* && "$path" != /* && -e "$caller/$path" ]]; then a="$caller/$a"; fi
  args+=("$a")
done
if [ ${#args[@]} -eq 0 ]; then args=("$here/tests/test_stress.py" -m "not slow"); fi
export HAKMEM_STRESS_SCALE="${HAKMEM_STRESS_SCALE:-0.02}"
mkdir "$work/run" && cd "$work/run"
"$py" -c "import hakmem, sys; print('hakmem from', hakmem.__file__, file=sys.stderr)"
# collect once without valgrind: builds (or finds cached) the test extensions
"$py" -m pytest -q -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" \
  --collect-only "${args[@]}" > "$work/collect.log" 2>&1 || { tail -30 "$work/collect.log"; exit 1; }
export PYTHONMALLOC=malloc
vg=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=no
    --num-callers=30 --child-silent-after-fork=yes --trace-children=no "${supp[@]}")
# Preflight: a read one word past a large block must be reported, or memcheck is not
# watching this interpreter (and a clean run would prove nothing).
if "${vg[@]}" -q "$py" -c "import ctypes, hakmem; ctypes.string_at(hakmem.malloc(2000) + 2000, 8)" \
     > /dev/null 2> "$work/preflight.log"; then
  echo "valgrind.sh: memcheck did not report a planted invalid read; not running" >&2; exit 1
fi
grep -q "Invalid read of size" "$work/preflight.log" \
  || { cat "$work/preflight.log" >&2; echo "valgrind.sh: preflight failed oddly" >&2; exit 1; }
echo "== preflight: memcheck reported a planted invalid read (as it must)"
echo "== valgrind memcheck: pytest ${args[*]}"
"${vg[@]}" "$py" -m pytest -q -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" "${args[@]}"
