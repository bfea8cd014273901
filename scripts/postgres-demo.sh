#!/usr/bin/env bash
# A private PostgreSQL server with the demo data, for pointing sqlq at a PostgreSQL target:
#
#   scripts/postgres-demo.sh start [DIR] [PORT]   (default var/postgres, port 55432) prints the
#                                                 [query] database URL to put in etc/sqlq.conf
#   scripts/postgres-demo.sh stop [DIR]
#
# Database "demo" holds the tables of scripts/demo.sql; role sqlq_reader (password in
# DIR/reader-password, made at the first start) may read it and nothing else (pg_read_all_data).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:?usage: postgres-demo.sh start|stop [DIR] [PORT]}
dir=${2:-$root/var/postgres}
port=${3:-55432}
case "$cmd" in
start)
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    "$root/scripts/postgres.sh" start "$dir" "$port"
    if [ ! -s "$dir/reader-password" ]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/reader-password")
    fi
    pw=$(cat "$dir/reader-password")
    if ! "$root/scripts/postgres.sh" psql "$dir" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'demo'" | grep -q 1; then
        "$root/scripts/postgres.sh" psql "$dir" -d postgres -c "CREATE DATABASE demo"
        "$root/scripts/postgres.sh" psql "$dir" -d demo < "$root/scripts/demo-pg.sql"
    fi
    "$root/scripts/postgres.sh" psql "$dir" -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqlq_reader') THEN
    CREATE ROLE sqlq_reader LOGIN;
  END IF;
END \$\$;
ALTER ROLE sqlq_reader PASSWORD '$pw';
GRANT pg_read_all_data TO sqlq_reader;
SQL
    echo "postgresql://sqlq_reader:$pw@127.0.0.1:$port/demo"
    ;;
stop)
    "$root/scripts/postgres.sh" stop "$dir"
    ;;
*) echo "postgres-demo.sh: unknown command '$cmd' (start, stop)" >&2; exit 2 ;;
esac
