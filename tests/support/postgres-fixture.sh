#!/usr/bin/env bash
# CTest fixture: one private PostgreSQL server for the suites that query it (the demo data in
# database "demo", role sqlq_reader that may only read), on a free port; writes DIR/port and
# DIR/url (the reader's URL). Test roles: sqlq_super (a superuser) and sqlq_bypass (may bypass
# row security), both password "test-pw-super", for the refusal tests. `stop` stops it.
set -euo pipefail
cmd=${1:?usage: postgres-fixture.sh start|stop DIR}
dir=${2:?usage: postgres-fixture.sh start|stop DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
case "$cmd" in
start)
    "$root/scripts/postgres.sh" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"; mkdir -p "$dir"
    port=$("$root/scripts/free-port.sh")
    export SQLQ_PG_FSYNC=off
    url=$("$root/scripts/postgres-demo.sh" start "$dir" "$port")
    "$root/scripts/postgres.sh" psql "$dir" -d postgres >/dev/null <<'SQL'
CREATE ROLE sqlq_super LOGIN SUPERUSER PASSWORD 'test-pw-super';
CREATE ROLE sqlq_bypass LOGIN BYPASSRLS PASSWORD 'test-pw-super';
GRANT pg_read_all_data TO sqlq_bypass;
-- The tests look at pg_stat_activity as this role: it sees every backend's state and query.
GRANT pg_read_all_stats TO sqlq_reader;
SQL
    echo "$port" > "$dir/port"
    echo "$url" > "$dir/url"
    echo "postgres-fixture: PostgreSQL on 127.0.0.1:$port ($dir)"
    ;;
stop)
    "$root/scripts/postgres.sh" stop "$dir"
    ;;
esac
