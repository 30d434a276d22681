#!/usr/bin/env bash
# Build hakmem with AddressSanitizer + UndefinedBehaviorSanitizer into a throw-away
# virtualenv and run the test suite against that build.
#
#   tools/sanitize.sh                 # short form: the suite without `slow` tests
#   tools/sanitize.sh -m slow         # any extra arguments go to pytest
#   HAKMEM_SANITIZE=address tools/sanitize.sh    # pick the sanitizers
#
# Works from any directory; test paths given as arguments are taken relative to the
# directory it is started from.
#
# CPython itself is not ASan-built, so libasan is LD_PRELOADed (it must come first),
# followed by libstdc++: C++ extensions loaded later (matplotlib's) would otherwise
# throw through ASan's interceptors before libstdc++'s symbols are bound, and abort.
# PYTHONMALLOC=malloc sends Python's own allocations, and with them hakmem's large
# path (the system malloc), through ASan's checked heap. Leak checking is off:
# the interpreter leaks at exit by design. Any ASan or UBSan report aborts the
# process, so a clean run is a passing pytest. The test-only extensions the tests
# build (tests/conftest.py) get the same -fsanitize flags through HAKMEM_SANITIZE.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
caller="$(pwd)"
sanitize="${HAKMEM_SANITIZE:-address,undefined}"
work="$(mktemp -d /tmp/hakmem-sanitize.XXXXXX)"
trap 'rm -rf "$work"' EXIT
py="$(python3 -c 'import sys; print(sys.executable)')"   # not a wrapper script (pyenv shims)

# Reuse the running environment's numpy/pytest/hypothesis/Cython (a venv or the
# system's): only hakmem is rebuilt, in place in a copy put first on PYTHONPATH.
echo "== building hakmem with -fsanitize=$sanitize"
mkdir "$work/src"
cp -r "$here/hakmem" "$here/setup.py" "$here/pyproject.toml" "$here/README.md" "$here/LICENSE" "$work/src/"
find "$work/src/hakmem" \( -name '*.so' -o -name '*.c' \) -delete
(cd "$work/src" && HAKMEM_SANITIZE="$sanitize" "$py" setup.py build_ext --inplace \
    > "$work/build.log" 2>&1) || { tail -30 "$work/build.log"; exit 1; }
export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"
export HAKMEM_SANITIZE="$sanitize"

preload=""
if [[ "$sanitize" == *address* ]]; then
  preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so.6)"
fi
export LD_PRELOAD="$preload"
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1:handle_segv=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export HAKMEM_STRESS_SCALE="${HAKMEM_STRESS_SCALE:-0.2}"
mkdir "$work/run" && cd "$work/run"   # so `import hakmem` finds the sanitized install
"$py" -c "import hakmem, sys; print('hakmem from', hakmem.__file__, file=sys.stderr)"
if [[ "$sanitize" == *address* ]]; then
  # Preflight: a one-byte overflow of a large block must be caught, or ASan is not
  # really watching (and a clean run would prove nothing). Here ASan exits with status 1
  # after its report instead of aborting, so the shell prints no alarming "Aborted".
  if ASAN_OPTIONS="$ASAN_OPTIONS:abort_on_error=0" \
       "$py" -c "import ctypes, hakmem; a = hakmem.malloc(2000); ctypes.memset(a, 0, 2001)" \
       > /dev/null 2> "$work/preflight.log"; then
    echo "sanitize.sh: ASan did not catch a planted overflow; not running" >&2; exit 1
  fi
  grep -q "heap-buffer-overflow" "$work/preflight.log" \
    || { cat "$work/preflight.log" >&2; echo "sanitize.sh: preflight failed oddly" >&2; exit 1; }
  echo "== preflight: ASan caught a planted one-byte heap-buffer-overflow (as it must)"
fi
# Arguments naming files or directories (tests/test_core.py, tests/x.py::test_y) are
# relative to where the script was started; pytest runs elsewhere (see above).
args=()
paths=0
for a in "$@"; do
  path="${a%%::*}"
  if [[ "$a" != -* && "$path" != /* && -e "$caller/$path" ]]; then
    a="$caller/$a"
  fi
  [[ "$a" != -* && -e "${a%%::*}" ]] && paths=1
  args+=("$a")
done
if [ ${#args[@]} -eq 0 ]; then args=(-m "not slow"); fi
if [ "$paths" = 0 ]; then args=("$here/tests" "${args[@]}"); fi
echo "== pytest under $sanitize (LD_PRELOAD=${preload:-none})"
# --capture=sys: the sanitizer runtimes write their reports to file descriptor 2
# directly; pytest's default fd-level capture would put a report in a per-test temp
# file that dies with the process (a failing run then ended silently with status 1).
"$py" -m pytest -q -p no:cacheprovider --capture=sys -c "$here/pyproject.toml" --rootdir "$here" "${args[@]}"
