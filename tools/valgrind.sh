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
echo "== building hakmem (release, -g) with $(command -v python3)"
mkdir "$work/src"
cp -r "$here/hakmem" "$here/setup.py" "$here/pyproject.toml" "$here/README.md" "$here/LICENSE" "$work/src/"
find "$work/src/hakmem" \( -name '*.so' -o -name '*.c' \) -delete
(cd "$work/src" && CFLAGS="-g" python3 setup.py build_ext --inplace > "$work/build.log" 2>&1) \
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
python3 -c "import hakmem, sys; print('hakmem from', hakmem.__file__, file=sys.stderr)"
# collect once without valgrind: builds (or finds cached) the test extensions
python3 -m pytest -q -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" \
  --collect-only "${args[@]}" > "$work/collect.log" 2>&1 || { tail -30 "$work/collect.log"; exit 1; }
export PYTHONMALLOC=malloc
echo "== valgrind memcheck: pytest ${args[*]}"
valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=no \
  --num-callers=30 --child-silent-after-fork=yes --trace-children=no "${supp[@]}" \
  python3 -m pytest -q -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" "${args[@]}"
