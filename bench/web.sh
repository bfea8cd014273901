#!/usr/bin/env bash
# The web console's benchmark (bench/web.py): builds the test build (it runs the test worker),
# starts a private RabbitMQ node on a free port in a temporary directory, runs, stops the node.
#   bench/web.sh [--quick]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build" -DSQLQ_BENCH=OFF >/dev/null
work=$(mktemp -d /tmp/sqlq-bench-web.XXXXXX)
trap '"$root/scripts/broker.sh" stop "$work/node" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$root/tests/support/broker-fixture.sh" start "$work" >&2
SQLQ_BUILD_DIR="$root/build" SQLQ_TEST_BROKER_DIR="$work" /usr/bin/python3 -W ignore "$root/bench/web.py" "$@"
