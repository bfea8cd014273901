#!/usr/bin/env bash
# The sqlq benchmarks (issue 7), one command: installs what is missing (scripts/setup.sh bench),
# builds into build-bench/, starts a private RabbitMQ node on a free port in a temporary
# directory, runs bench/bench.py and stops the node. Results: bench/results/*.json, summary.txt
# and throughput.png. Not part of the test pass/fail.
#
#   bench/run.sh [--quick] [--only SECTION,...] [--keep]
#     --quick   fewer tasks and rounds, one queue type: a few minutes
#     --only    ceiling,throughput,respawn,cancel,memory,scale,thousand,submit,metrics,latency,postgres,overlap,fairness,cpu,pgstore
#     --keep    keep the temporary directory (configs, stores, logs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
args=(); keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) args+=(--quick) ;;
    --only) args+=(--only "$2"); shift ;;
    --keep) keep=1 ;;
    *) echo "bench/run.sh: unknown argument $1 (--quick, --only S, --keep)" >&2; exit 2 ;;
    esac
    shift
done

"$root/scripts/setup.sh" bench
build=${SQLQ_BENCH_BUILD:-$root/build-bench}
"$root/scripts/build.sh" "$build" -DSQLQ_TESTS=OFF -DSQLQ_BENCH=ON >/dev/null

work=$(mktemp -d /tmp/sqlq-bench.XXXXXX)
port=$("$root/scripts/free-port.sh")
cleanup() {
    "$root/scripts/broker.sh" stop "$work/node" >/dev/null 2>&1 || true
    "$root/scripts/postgres.sh" stop "$work/pg" >/dev/null 2>&1 || true
    if [ "$keep" = 1 ]; then echo "bench/run.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
echo "bench/run.sh: private RabbitMQ node on 127.0.0.1:$port ($work)" >&2
"$root/scripts/broker.sh" start "$work/node" "$port"
"$root/scripts/make-demo-db.sh" "$work/demo.db"
# A private PostgreSQL server with the same demo data (section postgres), fsync as a real one.
pg_url=$("$root/scripts/postgres-demo.sh" start "$work/pg" "$("$root/scripts/free-port.sh")")
# Debian's python3 (where python3-pika is), whatever python3 comes first on PATH.
/usr/bin/python3 "$root/bench/bench.py" --build "$build" --port "$port" --work "$work" --demo "$work/demo.db" \
    --out "$root/bench/results" --pg-url "$pg_url" "${args[@]}"
