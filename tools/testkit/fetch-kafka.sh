#!/bin/sh
# fetch-kafka.sh [VERSION] -- put Apache Kafka VERSION's jars (default 4.1.1)
# in <repo>/.deps/kafka-VERSION/libs/ and print that folder on stdout.
#
# The jars come from Maven Central through tools/testkit/kafka/pom.xml
# (mvn dependency:copy-dependencies). They are copied into a temporary folder
# beside the final one, which is renamed into place only when complete, so a
# fetch cut short is never used. When the folder is there and was made from
# the current pom.xml (its sha256 is kept in kafka-VERSION/pom.sha256), the
# script does nothing and needs no network; after a pom.xml change it fetches
# again. Kafka 3.x gets the reload4j backend (-Pkafka3), 4.x log4j2.
# .deps/ is git-ignored. Exit 0 on success, 1 on failure, 2 for bad usage.
set -eu

VERSION=${1:-4.1.1}
case $VERSION in
    '' | *[!0-9A-Za-z.-]* | .* )
        echo "usage: fetch-kafka.sh [VERSION]   (e.g. 4.1.1, 3.9.2)" >&2
        exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
pom="$here/kafka/pom.xml"
deps="$repo/.deps"
dest="$deps/kafka-$VERSION"
want=$(sha256sum "$pom" | cut -d' ' -f1)

if [ -d "$dest/libs" ] && [ "$(cat "$dest/pom.sha256" 2>/dev/null)" = "$want" ]; then
    echo "$dest/libs"
    exit 0
fi

case $VERSION in
    3.*) profile=kafka3 ;;
    *)   profile=log4j2 ;;
esac

mkdir -p "$deps"
tmp=$(mktemp -d "$deps/.kafka-$VERSION.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM                  # runs the EXIT trap too
echo "fetch-kafka: fetching Apache Kafka $VERSION jars (mvn, profile $profile)" >&2
# mvn prints to stdout; ours carries only the folder.
if ! mvn -q -B -Dstyle.color=never -f "$pom" "-Dkafka.version=$VERSION" "-P$profile" \
        dependency:copy-dependencies "-DoutputDirectory=$tmp/libs" >&2; then
    echo "fetch-kafka: mvn could not fetch Kafka $VERSION" >&2
    exit 1
fi
if [ ! -f "$tmp/libs/kafka_2.13-$VERSION.jar" ]; then
    echo "fetch-kafka: no kafka_2.13-$VERSION.jar in what mvn fetched" >&2
    exit 1
fi
echo "$want" >"$tmp/pom.sha256"

# Swap in: an older folder (other pom.xml) is moved aside first. mv -T fails
# rather than moving into an existing folder: then another fetch won the race.
if [ -d "$dest" ]; then
    mv -T "$dest" "$tmp.old"
fi
if ! mv -T "$tmp" "$dest" 2>/dev/null; then
    [ -d "$dest/libs" ] || { echo "fetch-kafka: cannot rename $tmp to $dest" >&2; exit 1; }
fi
rm -rf "$tmp.old"
echo "$dest/libs"
