#!/usr/bin/env bash
# CTest fixture "cluster": three private RabbitMQ nodes on this host joined into one cluster,
# for the cluster suite (tests/cluster/). Each node is a scripts/broker.sh node of its own
# (DIR/node1..3: own data dir, node name sqlq<port>@localhost, AMQP port, distribution port
# port+20000); all three run as the rabbitmq user and so share its Erlang cookie. Nodes 2 and 3
# join node 1 with `rabbitmqctl join_cluster`. Writes the three AMQP ports to DIR/ports (one a
# line, node 1 first) and builds the demo database in DIR.
#
#   cluster-fixture.sh start DIR
#   cluster-fixture.sh stop DIR
set -euo pipefail
cmd=${1:?usage: cluster-fixture.sh start|stop DIR}
dir=${2:?usage: cluster-fixture.sh start|stop DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
broker="$root/scripts/broker.sh"

# Only nodes that answer: `rabbitmqctl stop PIDFILE` of a node already gone (its pid file
# removed) waits for that file forever.
stop_all() {
    for n in 1 2 3; do
        if [ -d "$dir/node$n" ] && "$broker" status "$dir/node$n"; then
            "$broker" stop "$dir/node$n" >/dev/null 2>&1 &
        fi
    done
    wait
}

case "$cmd" in
start)
    stop_all || true
    rm -rf "$dir"; mkdir -p "$dir"
    ports=()
    for n in 1 2 3; do
        # free-port.sh picks at random: draw again on the rare repeat.
        while :; do
            p=$("$root/scripts/free-port.sh")
            case " ${ports[*]-} " in *" $p "*) continue ;; esac
            break
        done
        ports+=("$p")
    done
    # Booting is most of the time: the three boot side by side.
    pids=()
    for n in 1 2 3; do
        "$broker" start "$dir/node$n" "${ports[$((n - 1))]}" "${SQLQ_TEST_HEARTBEAT:-5}" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    first=$(cat "$dir/node1/nodename")
    for n in 2 3; do
        "$broker" ctl "$dir/node$n" stop_app >/dev/null
        "$broker" ctl "$dir/node$n" join_cluster "$first" >/dev/null
        "$broker" ctl "$dir/node$n" start_app >/dev/null
    done
    "$broker" ctl "$dir/node1" await_online_nodes 3 --timeout 120 >/dev/null
    "$root/scripts/make-demo-db.sh" "$dir/demo.db"
    printf '%s\n' "${ports[@]}" > "$dir/ports"
    echo "cluster-fixture: RabbitMQ cluster of 3 nodes on 127.0.0.1:${ports[*]} ($dir)"
    ;;
stop)
    stop_all
    ;;
*)
    echo "cluster-fixture.sh: unknown command '$cmd' (start, stop)" >&2; exit 2 ;;
esac
