#!/bin/sh
# The whole test suite, as CI runs it: installs what is missing, builds
# kwal three ways and runs ctest in each:
#   build/        plain                    every test (unit + integration)
#   build-asan/   ASan + UBSan             every test
#   build-tsan/   ThreadSanitizer          the threaded tests (label "threads")
# Build directories are reused when they exist. Exit status: non-zero if any
# build or test fails.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)

"$here/tools/install-deps.sh"

build() {   # build DIR [cmake options...]
    dir=$1
    shift
    echo "==> configure and build $dir ($*)"
    cmake -S "$here" -B "$here/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$here/$dir" -j "$jobs"
}

run() {     # run DIR [ctest options...]
    dir=$1
    shift
    echo "==> ctest in $dir $*"
    (cd "$here/$dir" && ctest --output-on-failure -j "$jobs" "$@")
}

build build
run build

build build-asan -DKWAL_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run build-asan

build build-tsan -DKWAL_TSAN=ON
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    run build-tsan -L threads

echo "==> all test builds passed"
