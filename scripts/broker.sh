#!/usr/bin/env bash
# A private RabbitMQ node: its own port, its own data dir (owned by the rabbitmq user),
# its own node name. Used by the tests, the benchmarks and the local default.
#
#   scripts/broker.sh start DIR PORT [HEARTBEAT_S]   start (or reuse) the node, return once it accepts AMQP
#       (tests: SQLQ_BROKER_CONSUMER_TIMEOUT_MS and SQLQ_BROKER_CHANNEL_TICK_MS, when set, replace
#       the consumer_timeout of one hour and the channel tick of 60 s)
#   scripts/broker.sh stop  DIR                      stop it and wait until it is gone
#   scripts/broker.sh status DIR                     exit 0 when the node runs
#   scripts/broker.sh ctl DIR ARGS...                rabbitmqctl against that node
set -euo pipefail

cmd=${1:?usage: broker.sh start|stop|status|ctl DIR [PORT]}
dir=${2:?usage: broker.sh $cmd DIR}
RMQ=/usr/lib/rabbitmq/bin

as_rabbitmq() {
    # The cookie lives in the rabbitmq user's home; every CLI tool needs the same one.
    if [ "$(id -u)" = "$(id -u rabbitmq)" ]; then env HOME=/var/lib/rabbitmq "$@"
    else setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups env HOME=/var/lib/rabbitmq "$@"; fi
}

node_of() { cat "$1/nodename"; }

ctl() { as_rabbitmq "$RMQ/rabbitmqctl" -q -n "$(node_of "$dir")" "$@"; }

case "$cmd" in
start)
    port=${3:?usage: broker.sh start DIR PORT [HEARTBEAT_S]}
    heartbeat=${4:-60}
    # The node's distribution port is PORT + 20000 (below), and must be a port too.
    case "$port" in
    '' | *[!0-9]*) echo "broker.sh: PORT must be a number, not '$port'" >&2; exit 2 ;;
    esac
    if [ "$port" -lt 1 ] || [ "$port" -gt 45535 ]; then
        echo "broker.sh: PORT $port out of range: 1 to 45535 (the node's distribution port is PORT + 20000)" >&2
        exit 2
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -f "$dir/nodename" ] && ctl ping >/dev/null 2>&1; then exit 0; fi
    # The node name must be unique on this host: derive it from the port.
    echo "sqlq$port@localhost" > "$dir/nodename"
    mkdir -p "$dir/mnesia" "$dir/log"
    cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
loopback_users.guest = true
heartbeat = $heartbeat
# Above the longest query sqlq allows (query.timeout_ms), so the broker never
# takes a delivery away from a worker that is still running it.
consumer_timeout = ${SQLQ_BROKER_CONSUMER_TIMEOUT_MS:-3600000}
disk_free_limit.absolute = 50MB
max_message_size = 1048576
log.console = false
log.file.level = warning
CONF
    echo "[]." > "$dir/enabled_plugins"
    # Channels check their consumer timeout once per tick (60 s by default in 3.10); a test of
    # the timeout sets a shorter tick (SQLQ_BROKER_CHANNEL_TICK_MS) through advanced.config.
    echo "[{rabbit, [{channel_tick_interval, ${SQLQ_BROKER_CHANNEL_TICK_MS:-60000}}]}]." > "$dir/advanced.config"
    chown -R rabbitmq:rabbitmq "$dir"
    # The node itself must be able to reach its directory.
    chmod o+x "$dir"
    d=$dir; while [ "$d" != "/" ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
    # The node takes its file limit from this shell: one descriptor per connection, and short of
    # the limit it stops accepting ("file descriptor limit alarm"): at a soft limit of 1,024 a
    # fleet of 1,000 workers stopped at 830 (docs/operations.md, "A thousand workers"). Debian's
    # rabbitmq-server.service sets LimitNOFILE=65536; here the soft limit is raised to the hard one.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    as_rabbitmq env \
        RABBITMQ_NODENAME="$(node_of "$dir")" \
        RABBITMQ_NODE_PORT="$port" \
        RABBITMQ_DIST_PORT=$((port + 20000)) \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$RMQ/rabbitmq-server" > "$dir/log/startup.log" 2>&1 < /dev/null &
    # `wait` returns when the node has booted (or fails when it dies during boot).
    if ! ctl wait --timeout 120 "$dir/pid" >/dev/null 2>&1; then
        echo "broker.sh: the RabbitMQ node in $dir did not start; see $dir/log" >&2
        tail -n 20 "$dir/log/startup.log" >&2 || true
        exit 1
    fi
    ;;
stop)
    [ -f "$dir/nodename" ] || exit 0
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    # Ask the node to stop (bounded: a node that no longer answers must not hang the caller),
    # then wait for its process to end, and kill it if it does not within a minute.
    as_rabbitmq timeout 120 "$RMQ/rabbitmqctl" -q -n "$(node_of "$dir")" stop >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        timeout 60 tail --pid="$pid" -s 0.05 -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    ;;
status)
    [ -f "$dir/nodename" ] && ctl ping >/dev/null 2>&1
    ;;
ctl)
    shift 2
    ctl "$@"
    ;;
*)
    echo "broker.sh: unknown command '$cmd' (start, stop, status, ctl)" >&2; exit 2 ;;
esac
