#!/usr/bin/env bash
# Builds the demo database (scripts/demo.sql) at PATH unless it is already there.
set -euo pipefail
out=${1:?usage: make-demo-db.sh PATH}
[ -s "$out" ] && exit 0
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
rm -f "$tmp"
sqlite3 "$tmp" < "$(dirname "$0")/demo.sql"
mv "$tmp" "$out"
