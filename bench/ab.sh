#!/usr/bin/env bash
# Same-window A/B of two builds (bench/ab.py): bench/ab.sh BUILD_A BUILD_B [ROUNDS]
# Each build needs SQLQ_BENCH on (scripts/build.sh DIR -DSQLQ_BENCH=ON). A private RabbitMQ
# node on a free port in a temporary directory, stopped at the end. Not part of the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: bench/ab.sh BUILD_A BUILD_B [ROUNDS]" >&2; exit 2; }
"$root/scripts/setup.sh" bench
work=$(mktemp -d /tmp/sqlq-ab.XXXXXX)
port=$("$root/scripts/free-port.sh")
trap '"$root/scripts/broker.sh" stop "$work/node" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$root/scripts/broker.sh" start "$work/node" "$port"
"$root/scripts/make-demo-db.sh" "$work/demo.db"
/usr/bin/python3 "$root/bench/ab.py" --a "$1" --b "$2" --rounds "${3:-3}" --port "$port" --work "$work" --demo "$work/demo.db"
