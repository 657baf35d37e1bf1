#!/usr/bin/env bash
# Runs the default test suite against pyaiml._C built with AddressSanitizer and
# UndefinedBehaviorSanitizer; exits non-zero on any sanitizer report or test failure.
#
# What it does:
#  1. builds _C into build/asan with -fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g
#     (CMAKE_CXX_FLAGS / CMAKE_SHARED_LINKER_FLAGS; CMakeLists.txt adds -O3 per target after
#     them, so the kernels are compiled at -O3 with the checks, as they ship);
#  2. stages a copy of pyaiml/ (with that _C), tests/ and pyproject.toml in build/asan/stage, so
#     that the suite and the fresh interpreters some tests start (every ISA, the threads
#     tests) all import the sanitized build, and the working tree is left alone;
#  3. runs pytest there (the default selection: -m 'not slow') with libasan and libstdc++
#     preloaded into python (libubsan comes in as _C's dependency),
#     ASAN_OPTIONS=detect_leaks=0 (CPython and NumPy keep allocations until exit by design) and
#     allocator_may_return_null=1 (a request too big to allocate returns null, as without ASan,
#     so the MemoryError path is what gets checked)
#     and UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1; ASan writes its reports to
#     build/asan/logs/ (one file per process, subprocesses included), UBSan to stderr, kept
#     in build/asan/pytest.out; every report is printed again at the end.
# Numba stays on (its JIT code is not instrumented: the C++ kernels are what this checks);
# its cache goes to build/asan/numba-cache so a second run does not compile again.
# No -DNDEBUG (build type None): assert()s in csrc/ are live too.
#
# Usage: tools/sanitize.sh [pytest arguments, e.g. tests/test_conv.py -x]; with
# PYAIML_FUZZ=slow the fuzz tests run their 2000-example budget under the sanitizers.
# Environment: PYTHON (default python), JOBS (build jobs, default 2), CXX (default g++),
# LIBASAN (the ASan runtime to preload; default: what $CXX -print-file-name=libasan.so names).
# Measured on the 2-core VM (shared, load 2-5): build ~11 min; default suite 125 s with a
# warm Numba cache (98 s without sanitizers), 487 s on the first run (cold cache, load ~4).
# Needs the compiler's libasan and libubsan (Debian: part of gcc).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python}
OUT=$ROOT/build/asan
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g"

echo "== build (build/asan) =="
cmake -S . -B "$OUT" -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -Dpybind11_DIR="$($PY -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DPython_EXECUTABLE="$(command -v "$PY")" >/dev/null || exit 2
cmake --build "$OUT" -j"${JOBS:-2}" || exit 2

echo "== stage (build/asan/stage) =="
STAGE=$OUT/stage
rm -rf "$STAGE" "$OUT/logs"
mkdir -p "$STAGE" "$OUT/logs" "$OUT/numba-cache"
cp -r pyaiml tests pyproject.toml "$STAGE"/
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$STAGE"/pyaiml/_C*.so
cp "$OUT"/_C*.so "$STAGE"/pyaiml/

LIBASAN=${LIBASAN:-$(${CXX:-g++} -print-file-name=libasan.so)}
if [ ! -e "$LIBASAN" ]; then
  echo "sanitize.sh: libasan.so not found ($LIBASAN); set LIBASAN=/path/to/libasan.so" >&2
  exit 2
fi

# libstdc++ right after libasan: python does not link it, and ASan's __cxa_throw interceptor
# must find the real one at start-up (else "CHECK failed ... real___cxa_throw" at the first
# C++ exception, i.e. the first ValueError from _C)
LIBSTDCXX=$(${CXX:-g++} -print-file-name=libstdc++.so)
echo "== pytest with LD_PRELOAD=$LIBASAN $LIBSTDCXX =="
start=$(date +%s)
# --capture=sys: pytest captures Python's sys.stdout/err only, so what the sanitizer runtimes
# write to file descriptor 2 reaches build/asan/pytest.out even when halt_on_error aborts the
# process (UBSan, loaded beside ASan, ignores log_path and always writes there)
(
  cd "$STAGE" &&
  LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
  ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:log_path=$OUT/logs/asan:print_summary=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$OUT/logs/ubsan" \
  NUMBA_CACHE_DIR="$OUT/numba-cache" PYTHONPATH="$STAGE" PYAIML_REQUIRE_CPP=1 \
  "$PY" -m pytest -q -p no:cacheprovider --capture=sys "$@" 2>&1 | tee "$OUT/pytest.out"
  exit "${PIPESTATUS[0]}"
)
rc=$?
echo "sanitize.sh: pytest exit status $rc after $(( $(date +%s) - start )) s"

# reports: ASan's log files (one per process), and report lines in pytest's output (UBSan's,
# and those of subprocesses that tests echo in their failure messages)
# (a log holding only ASan's "failed to allocate" warning is a refused allocation that
# allocator_may_return_null turned into a null pointer, which pyaiml reports as MemoryError)
reports=$(for f in $(find "$OUT/logs" -type f | sort); do
  grep -q -v -E "^==[0-9]+==WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes$" "$f" && echo "$f"
done)
inline=$(grep -c -E "runtime error:|ERROR: AddressSanitizer|CHECK failed" "$OUT/pytest.out" || true)
if [ -n "$reports" ] || [ "$inline" -gt 0 ]; then
  echo "== sanitizer reports =="
  for f in $reports; do
    echo "---- $f"
    cat "$f"
  done
  if [ "$inline" -gt 0 ]; then
    echo "---- in build/asan/pytest.out:"
    grep -n -E -A3 "runtime error:|ERROR: AddressSanitizer|CHECK failed" "$OUT/pytest.out"
  fi
  echo "sanitize.sh: sanitizer reports: $(echo "$reports" | grep -c . || true) log file(s), $inline line(s) in" \
       "build/asan/pytest.out" >&2
  exit 1
fi
echo "sanitize.sh: no sanitizer report"
exit $rc
