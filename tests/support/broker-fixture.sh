#!/usr/bin/env bash
# CTest fixture: starts one private RabbitMQ node for the integration tests on a free port,
# writes the port to DIR/port, and builds the demo database in DIR; `stop` stops it.
set -euo pipefail
cmd=${1:?usage: broker-fixture.sh start|stop DIR [SUPERVISOR]}
dir=${2:?usage: broker-fixture.sh start|stop DIR [SUPERVISOR]}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
root=$(cd "$here/../.." && pwd)
# Every RabbitMQ node whose data lies in DIR, SIGKILLed: a node that a test started again on
# another port (a fault test) and did not stop, or one a killed run left behind.
kill_nodes() {
    for p in $(pgrep -u rabbitmq -x beam.smp); do
        if grep -qz "^RABBITMQ_MNESIA_BASE=$dir/" "/proc/$p/environ" 2>/dev/null; then kill -KILL "$p" || true; fi
    done
}
case "$cmd" in
start)
    "$root/scripts/broker.sh" stop "$dir/node" >/dev/null 2>&1 || true
    kill_nodes
    rm -rf "$dir"; mkdir -p "$dir"
    port=$("$root/scripts/free-port.sh")
    "$root/scripts/broker.sh" start "$dir/node" "$port" "${SQLQ_TEST_HEARTBEAT:-5}"
    "$root/scripts/make-demo-db.sh" "$dir/demo.db"
    echo "$port" > "$dir/port"
    echo "broker-fixture: RabbitMQ node on 127.0.0.1:$port ($dir)"
    ;;
stop)
    # A test that was killed (a ctest timeout) never ran its Fleet's destructor: end any
    # supervisor it left behind (its workers die with it), then the node. Only this build's
    # supervisors (SUPERVISOR: its binary's path): other builds on the machine may be testing.
    if [ -n "${3:-}" ]; then
        pkill -KILL -f "^$3 .*-c /tmp/sqlq-test-" 2>/dev/null || true
    fi
    "$root/scripts/broker.sh" stop "$dir/node"
    kill_nodes
    ;;
esac
