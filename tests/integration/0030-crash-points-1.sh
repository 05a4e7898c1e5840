#!/bin/sh
# 0030-crash-points-1.sh -- the crash-point matrix at pass 1: for every
# crash point, kwal receive dies there (KWAL_CRASH_AT=<point>:1, exit 99),
# restarts (recovery first), and the run must end with every record stored
# exactly once and the ZooKeeper offsets at the end offsets. Then one trial
# with --classic (no ZooKeeper repair) dying at pipeline.tracked: 0 missing,
# and the re-consumed records reported as duplicate deliveries. See
# lib_crash.sh for the trial and what is checked.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0030
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_crash.sh"

crash_matrix 1 pipeline.tracked

echo "PASS: $checks checks"
