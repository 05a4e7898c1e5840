#!/bin/sh
# The main job on local defaults. Until receiver mode lands this is the WAL:
# installs what is missing, builds, runs the WAL benchmark (which leaves a
# 3-replica WAL behind), then shows and verifies that WAL with `kwal wal`.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)

"$here/tools/install-deps.sh"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$here/build" -j "$jobs" --target kwal kwal-bench-wal >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/kwal-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

echo "==> WAL benchmark (kwal-bench-wal --dir $work ${KWAL_BENCH_ARGS:---quick})"
# shellcheck disable=SC2086
"$here/build/tools/kwal-bench-wal" --dir "$work" ${KWAL_BENCH_ARGS:---quick} --keep

# Show one of the 3-replica WALs the benchmark left behind.
case=$(find "$work" -mindepth 2 -maxdepth 2 -type d -name wal-2 | sort | tail -n 1)
if [ -n "$case" ]; then
    case=$(dirname "$case")
    dirs="--dir $case/wal-0 --dir $case/wal-1 --dir $case/wal-2"
    echo "==> kwal wal ls $dirs"
    # shellcheck disable=SC2086
    "$here/build/tools/kwal" wal ls $dirs
    echo "==> kwal wal verify $dirs"
    # shellcheck disable=SC2086
    "$here/build/tools/kwal" wal verify $dirs
fi
