#!/bin/sh
# fetch-spark.sh [VERSION] -- build kwal.bench.SparkDirect (tools/bench/spark/)
# against Apache Spark VERSION (default 4.2.0) into <repo>/.deps/spark-VERSION/
# and print that folder on stdout. It holds libs/ (every runtime jar: Spark,
# its Kafka direct stream, kafka-clients, Scala, ...) and kwal-spark-bench.jar
# (the program), so that the program runs as
#
#   java $(grep -v '^#' tools/bench/spark/jvm.options) -Xmx1g \
#       -cp 'DIR/libs/*:DIR/kwal-spark-bench.jar' kwal.bench.SparkDirect ...
#
# The jars come from Maven Central through tools/bench/spark/pom.xml (mvn
# package, then dependency:copy-dependencies); the build happens in a
# temporary folder beside the final one, which is renamed into place only when
# complete, so a build cut short is never used, and no target/ is left in the
# source tree. When the folder is there and was made from the current pom.xml
# and sources (one sha256 over them, kept in spark-VERSION/src.sha256), the
# script does nothing and needs no network; after a change it builds again.
# Needs mvn and a JDK 17 or newer (javac). .deps/ is git-ignored.
# Exit 0 on success, 1 on failure, 2 for bad usage.
set -eu

VERSION=${1:-4.2.0}
case $VERSION in
    '' | *[!0-9A-Za-z.-]* | .* )
        echo "usage: fetch-spark.sh [VERSION]   (e.g. 4.2.0)" >&2
        exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
src="$here/spark"
pom="$src/pom.xml"
deps="$repo/.deps"
dest="$deps/spark-$VERSION"
# The pom and every file under src/, by path and content, in a fixed order.
want=$(cd "$src" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum |
       cut -d' ' -f1)

if [ -d "$dest/libs" ] && [ -f "$dest/kwal-spark-bench.jar" ] &&
        [ "$(cat "$dest/src.sha256" 2>/dev/null)" = "$want" ]; then
    echo "$dest"
    exit 0
fi

mkdir -p "$deps"
tmp=$(mktemp -d "$deps/.spark-$VERSION.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp" "$tmp.old"' EXIT
trap 'exit 1' INT TERM                  # runs the EXIT trap too
echo "fetch-spark: building kwal-spark-bench against Apache Spark $VERSION (mvn)" >&2
# mvn prints to stdout; ours carries only the folder.
if ! mvn -q -B -Dstyle.color=never -f "$pom" "-Dspark.version=$VERSION" \
        "-Dkwal.build.dir=$tmp/build" package >&2; then
    echo "fetch-spark: mvn could not build kwal-spark-bench for Spark $VERSION" >&2
    exit 1
fi
if ! mvn -q -B -Dstyle.color=never -f "$pom" "-Dspark.version=$VERSION" \
        "-Dkwal.build.dir=$tmp/build" dependency:copy-dependencies \
        -DincludeScope=runtime "-DoutputDirectory=$tmp/libs" >&2; then
    echo "fetch-spark: mvn could not fetch Spark $VERSION's jars" >&2
    exit 1
fi
if [ ! -f "$tmp/libs/spark-streaming-kafka-0-10_2.13-$VERSION.jar" ]; then
    echo "fetch-spark: no spark-streaming-kafka-0-10_2.13-$VERSION.jar in what mvn fetched" >&2
    exit 1
fi
mv "$tmp/build/kwal-spark-bench.jar" "$tmp/kwal-spark-bench.jar"
rm -rf "$tmp/build"
echo "$want" >"$tmp/src.sha256"

# Swap in: an older folder (other sources) is moved aside first. mv -T fails
# rather than moving into an existing folder: then another build won the race.
if [ -d "$dest" ]; then
    mv -T "$dest" "$tmp.old"
fi
if ! mv -T "$tmp" "$dest" 2>/dev/null; then
    [ -d "$dest/libs" ] || { echo "fetch-spark: cannot rename $tmp to $dest" >&2; exit 1; }
fi
rm -rf "$tmp.old"
echo "$dest"
