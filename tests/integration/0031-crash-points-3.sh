#!/bin/sh
# 0031-crash-points-3.sh -- the crash-point matrix at pass 3: for every
# crash point, kwal receive dies there (KWAL_CRASH_AT=<point>:3, exit 99),
# restarts (recovery first), and the run must end with every record stored
# exactly once and the ZooKeeper offsets at the end offsets. See
# lib_crash.sh for the trial and what is checked.
#
# Run by ctest with KWAL_BIN_DIR=<build>/tools and KWAL_SRC_DIR.
set -u

BIN=${KWAL_BIN_DIR:?set KWAL_BIN_DIR to the build directory of tools/}
SRC=${KWAL_SRC_DIR:?set KWAL_SRC_DIR to the source tree}
NAME=0031
. "$SRC/tests/integration/lib.sh"
. "$SRC/tests/integration/lib_crash.sh"

crash_matrix 3

echo "PASS: $checks checks"
