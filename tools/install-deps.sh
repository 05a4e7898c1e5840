#!/bin/sh
# Installs every Debian package kwal needs to build and test, then Apache
# Kafka's jars for the integration tests (tools/testkit/fetch-kafka.sh) and
# Apache Spark's jars with the Spark Streaming program the benchmark runs
# next to kwal (tools/bench/fetch-spark.sh, which builds it with javac), both
# from Maven Central into the git-ignored .deps/. Safe to run twice: it asks
# apt only for packages that are missing and Maven only for jars that are
# missing (or a build whose sources changed), and does nothing when all are
# present.
set -eu

PKGS="cmake gcc make pkg-config
librdkafka-dev libzookeeper-mt-dev liblz4-dev libsqlite3-dev libcmocka-dev
libxxhash-dev libfiu-dev fiu-utils libmicrohttpd-dev
zookeeper kcat sqlite3 jq gnuplot-nox
openjdk-17-jre-headless openjdk-17-jdk-headless maven openssl python3 python3-pip
libpq-dev postgresql
python3-prometheus-client"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# pytest, for the integration tests and runners (tests/integration/).
if ! python3 -c 'import pytest' 2>/dev/null; then
    echo "install-deps: installing pytest (pip)" >&2
    python3 -m pip install -q pytest >/dev/null 2>&1 ||
        { $SUDO apt-get install -y -qq --no-install-recommends python3-pytest >/dev/null; }
fi

# prometheus_client's parser, which test_0080 checks the metrics endpoint's
# text with: Debian's package above serves Debian's python3; a python3 of
# another origin first on PATH (pyenv, a venv) gets it from pip.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    echo "install-deps: installing prometheus-client (pip)" >&2
    python3 -m pip install -q prometheus-client >/dev/null 2>&1 ||
        echo "install-deps: pip could not install prometheus-client (test_0080 needs it)" >&2
fi

# Apache Kafka's jars (default version); a no-op, without mvn, once
# .deps/kafka-VERSION/libs is there.
"$(dirname "$0")/testkit/fetch-kafka.sh" >/dev/null

# Apache Spark's jars and kwal-spark-bench.jar (default version); a no-op,
# without mvn, once .deps/spark-VERSION holds a build of the current sources.
"$(dirname "$0")/bench/fetch-spark.sh" >/dev/null
