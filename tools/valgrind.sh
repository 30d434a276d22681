#!/usr/bin/env bash
# Run the stress tests in short form under valgrind memcheck.
#
#   tools/valgrind.sh                    # tests/test_stress.py, HAKMEM_STRESS_SCALE=0.02
#   tools/valgrind.sh tests/test_oom.py  # other test files / pytest arguments
#
# hakmem is built (release flags plus -g) into a throw-away virtualenv. Memcheck
# sees hakmem's regions as plain mmap memory, so it checks hakmem's own metadata
# accesses, the large path's system-malloc blocks and everything Python does;
# PYTHONMALLOC=malloc lets it see Python's objects too. Suppressions cover CPython
# internals only. Any memcheck error makes the run fail (exit code 99).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/hakmem-valgrind.XXXXXX)"
trap 'rm -rf "$work"' EXIT
python3 -m venv --system-site-packages "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
echo "== building hakmem (release, -g)"
cp -r "$here/hakmem" "$here/setup.py" "$here/pyproject.toml" "$here/README.md" "$work/"
rm -f "$work"/hakmem/*.so "$work"/hakmem/*.c "$work"/hakmem/*/*.so "$work"/hakmem/*/*.c
(cd "$work" && CFLAGS="-g" pip install -q --no-deps --no-build-isolation . > "$work/build.log" 2>&1) \
    || { tail -30 "$work/build.log"; exit 1; }

supp=()
for f in /usr/lib/valgrind/python3.supp "$here/tools/valgrind-python.supp"; do
  [ -f "$f" ] && supp+=("--suppressions=$f")
done
if [ $# -eq 0 ]; then set -- "$here/tests/test_stress.py" -m "not slow"; fi
export PYTHONMALLOC=malloc
export HAKMEM_STRESS_SCALE="${HAKMEM_STRESS_SCALE:-0.02}"
mkdir "$work/run" && cd "$work/run"
echo "== valgrind memcheck: pytest $*"
valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=no \
  --num-callers=30 --child-silent-after-fork=yes --trace-children=no "${supp[@]}" \
  python -m pytest -q -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" "$@"
