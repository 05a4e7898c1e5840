#!/bin/sh
# The whole test suite, as CI runs it: installs what is missing, builds
# kwal three ways and runs the tests of each:
#   build/        plain                    unit tests (ctest), and the
#                                          integration tests of the test kit
#                                          and the runners (marker "harness")
#                                          and the longest fault tests ("slow")
#   build-asan/   ASan + UBSan             unit tests, and every other
#                                          integration test (pytest, on a real
#                                          ZooKeeper and real Apache Kafka
#                                          clusters)
#   build-tsan/   ThreadSanitizer          the threaded unit tests (label "threads")
# Build directories are reused when they exist. A build that fails stops
# everything; a test run that fails does not stop the ones after it, so that
# one failure does not hide the sanitizers' results. Exit status: non-zero if
# any build or test run fails; the last line names the test runs that failed.
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

# One pytest session for tests/integration: the shared 3-node Kafka cluster
# starts once. The programs under test are DIR's; more pytest arguments may
# follow. Each integration test runs once, in one of the two sessions (the
# markers are in tests/integration/conftest.py): that keeps CI near 40
# minutes on 2 cores instead of 70.
integration() {   # integration DIR [pytest args...]
    dir=$1
    shift
    echo "==> pytest tests/integration with $dir/tools $*"
    (cd "$here" && KWAL_BIN_DIR="$here/$dir/tools" \
        python3 -m pytest -q -rfE --durations=12 -p no:cacheprovider "$@" tests/integration)
}

failed=""
note_failure() {  # note_failure WHAT: a test run failed
    failed="$failed${failed:+, }$1"
    echo "==> FAILED: $1"
}

build build
run build || note_failure "unit tests (build)"
integration build -m "harness or slow" || note_failure "integration tests (build)"

build build-asan -DKWAL_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run build-asan || note_failure "unit tests (build-asan)"
integration build-asan -m "not harness and not slow" || note_failure "integration tests (build-asan)"
unset ASAN_OPTIONS UBSAN_OPTIONS

build build-tsan -DKWAL_TSAN=ON
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    run build-tsan -L threads || note_failure "threaded unit tests (build-tsan)"

if [ -n "$failed" ]; then
    echo "==> failed: $failed"
    exit 1
fi
echo "==> all test builds passed"
