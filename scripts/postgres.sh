#!/usr/bin/env bash
# A private PostgreSQL server: its own data dir (owned by the postgres user), its own port, its
# Unix socket in its own dir. Used by the tests, the benchmarks and the PostgreSQL demo; never
# the system's cluster.
#
#   scripts/postgres.sh start DIR PORT      initdb if needed, start (or reuse) the server, return
#                                           once it accepts connections (SQLQ_PG_FSYNC=off: no
#                                           fsync, for throwaway test servers)
#   scripts/postgres.sh stop DIR            stop it (fast shutdown) and wait until it is gone
#   scripts/postgres.sh status DIR          exit 0 when it runs
#   scripts/postgres.sh psql DIR ARGS...    psql as the superuser postgres, over the socket
#   scripts/postgres.sh restart DIR         stop, then start on the same port
set -euo pipefail

cmd=${1:?usage: postgres.sh start|stop|status|psql|restart DIR [PORT]}
dir=${2:?usage: postgres.sh $cmd DIR}
PG=/usr/lib/postgresql/15/bin
[ -x "$PG/postgres" ] || { echo "postgres.sh: $PG/postgres not found: install postgresql-15 (scripts/setup.sh)" >&2; exit 1; }

as_postgres() {
    if [ "$(id -u)" = "$(id -u postgres)" ]; then "$@"
    else setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql "$@"; fi
}
port_of() { cat "$dir/port"; }
running() { [ -f "$dir/port" ] && as_postgres "$PG/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; }

start() {
    local port=$1
    if running && [ "$(port_of)" = "$port" ]; then return 0; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir/data"
        mkdir -p "$dir/data" "$dir/socket"
        chown postgres:postgres "$dir" "$dir/data" "$dir/socket"
        # The server must reach its directory.
        d=$dir; while [ "$d" != "/" ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
        # Local (socket) connections trust the postgres superuser only: the socket's directory
        # is private to the postgres user. TCP connections need a password.
        as_postgres "$PG/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { echo "postgres.sh: initdb failed; see $dir/initdb.log" >&2; tail -n 20 "$dir/initdb.log" >&2; exit 1; }
        chmod 0700 "$dir/socket"
    fi
    cat > "$dir/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/socket'
max_connections = ${SQLQ_PG_MAX_CONNECTIONS:-300}
shared_buffers = 64MB
fsync = ${SQLQ_PG_FSYNC:-on}
synchronous_commit = ${SQLQ_PG_FSYNC:-on}
full_page_writes = ${SQLQ_PG_FSYNC:-on}
logging_collector = off
log_min_messages = warning
CONF
    chown postgres:postgres "$dir/data/postgresql.auto.conf"
    echo "$port" > "$dir/port"
    # -w: pg_ctl returns once the server accepts connections (or fails when it dies).
    if ! as_postgres "$PG/pg_ctl" start -w -t 120 -D "$dir/data" -l "$dir/server.log" >/dev/null 2>&1; then
        echo "postgres.sh: the server in $dir did not start; see $dir/server.log" >&2
        tail -n 20 "$dir/server.log" >&2 || true
        exit 1
    fi
}

case "$cmd" in
start)
    port=${3:?usage: postgres.sh start DIR PORT}
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    start "$port"
    ;;
stop)
    [ -d "$dir/data" ] || exit 0
    as_postgres "$PG/pg_ctl" stop -w -t 60 -m fast -D "$dir/data" >/dev/null 2>&1 || true
    ;;
restart)
    dir=$(cd "$dir" && pwd)
    port=$(port_of)
    as_postgres "$PG/pg_ctl" stop -w -t 60 -m fast -D "$dir/data" >/dev/null 2>&1 || true
    start "$port"
    ;;
status)
    running
    ;;
psql)
    shift 2
    dir=$(cd "$dir" && pwd)
    as_postgres "$PG/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/socket" -p "$(port_of)" -U postgres "$@"
    ;;
*)
    echo "postgres.sh: unknown command '$cmd' (start, stop, status, psql, restart)" >&2; exit 2 ;;
esac
