#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a private RabbitMQ node when the
# configured broker is on this host and not answering, starts the fleet with etc/sqlq.conf
# (or $SQLQ_CONFIG), submits sample queries against the demo database and prints their results,
# then starts the web console (sqlq-web) in the background and prints its address and the demo
# user's sign-in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
conf=${SQLQ_CONFIG:-$root/etc/sqlq.conf}
"$root/scripts/setup.sh"
SQLQ_TARGETS="sqlq sqlq-worker sqlq-supervisor sqlq-web" "$root/scripts/build.sh" "$root/build"
bin=$root/build
export SQLQ_CONFIG=$conf

# The broker: start a private node when the configured one is local and silent.
url=$(sed -n 's/^url *= *"\([^"]*\)".*/\1/p' "$conf" | head -n1)
hostport=${url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
host=${hostport%%:*}; port=${hostport##*:}; [ "$port" = "$host" ] && port=5672
if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    case "$host" in
    127.*|localhost|::1)
        echo "run.sh: no broker on $host:$port; starting a private RabbitMQ node ($root/var/rabbitmq)"
        "$root/scripts/broker.sh" start "$root/var/rabbitmq" "$port" ;;
    *) echo "run.sh: the broker $host:$port does not answer" >&2; exit 1 ;;
    esac
fi

db=$(sed -n 's/^database *= *"\([^"]*\)".*/\1/p' "$conf" | head -n1)
case "$db" in /*) ;; *) db=$(dirname "$conf")/$db ;; esac
"$root/scripts/make-demo-db.sh" "$db"

if "$bin/supervisor/sqlq-supervisor" status >/dev/null 2>&1; then
    "$bin/supervisor/sqlq-supervisor" reload
else
    "$bin/supervisor/sqlq-supervisor" start
fi
"$bin/supervisor/sqlq-supervisor" status

samples=(
  "SELECT country, count(*) AS customers FROM customers GROUP BY country ORDER BY country"
  "SELECT c.country, round(sum(o.amount), 2) AS revenue FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 2 DESC"
  "SELECT strftime('%m', placed_at) AS month, count(*) AS orders FROM orders GROUP BY 1 ORDER BY 1 LIMIT 3"
  "DELETE FROM orders"
)
ids=()
for q in "${samples[@]}"; do ids+=("$("$bin/client/sqlq" submit --user demo "$q")"); done
for i in "${!ids[@]}"; do
    id=${ids[$i]}
    echo; echo "== task $id: ${samples[$i]}"
    if "$bin/client/sqlq" wait "$id" --timeout 120 >/dev/null; then
        "$bin/client/sqlq" result "$id"
    else
        "$bin/client/sqlq" show "$id" | grep -E '^(status|error):'
    fi
done
echo
"$bin/client/sqlq" audit

# The console: a demo user (its password kept beside the store, made once), sqlq-web in the
# background with its log and pid in the supervisor's run dir.
run_dir=$(dirname "$conf")/../var/run
mkdir -p "$run_dir"
pwfile=$(dirname "$conf")/../var/demo-password
if [ ! -s "$pwfile" ]; then
    (umask 077; head -c 12 /dev/urandom | base64 | tr -d '/+=' > "$pwfile")
    "$bin/web/sqlq-web" adduser demo < "$pwfile" >/dev/null
fi
if [ -f "$run_dir/web.pid" ] && kill -0 "$(cat "$run_dir/web.pid")" 2>/dev/null; then
    kill "$(cat "$run_dir/web.pid")"
    while kill -0 "$(cat "$run_dir/web.pid")" 2>/dev/null; do sleep 0.1; done
fi
nohup "$bin/web/sqlq-web" >"$run_dir/web.log" 2>&1 </dev/null &
echo $! > "$run_dir/web.pid"
for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$run_dir/web.log" | head -n1)
    [ -n "$addr" ] && break
    kill -0 "$(cat "$run_dir/web.pid")" 2>/dev/null || { cat "$run_dir/web.log" >&2; exit 1; }
    sleep 0.1
done
echo
echo "The console: $addr  (sign in as demo / $(cat "$pwfile"); log: var/run/web.log)"
echo
echo "The fleet keeps running: 'build/supervisor/sqlq-supervisor status', 'build/client/sqlq submit \"SELECT ...\"',"
echo "'build/supervisor/sqlq-supervisor stop', 'kill \$(cat var/run/web.pid)' for the console (and"
echo "'scripts/broker.sh stop var/rabbitmq' for the private broker)."
