#!/usr/bin/env bash
# Builds the libFuzzer targets (clang from Debian, under AddressSanitizer and
# UndefinedBehaviorSanitizer) into build-fuzz/ and runs each for SECONDS (default 20; CI uses
# the default, a longer run is just a bigger number), two at a time (one per core). Findings land
# in build-fuzz/findings/.
#   tests/fuzz/run.sh [SECONDS]         build, then run
#   tests/fuzz/run.sh build             build only (scripts/test.sh does it while tests run)
#   tests/fuzz/run.sh run [SECONDS]     run what was built
set -euo pipefail
phase=all
case "${1:-}" in build|run) phase=$1; shift ;; esac
seconds=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build-fuzz
cxx=${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}
mkdir -p "$out/findings"
# toml++ is compiled in (header-only) so that the fuzzer sees its branches. NDEBUG as in Debian's
# build of the library that sqlq links: toml++ 3.3's internal asserts (parse_key on "[~x]") fire
# on inputs that its release build refuses with a proper parse error.
flags=(-std=c++20 -g1 -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fsanitize-ignorelist="$root/tests/fuzz/ubsan-ignore.txt"
       -I "$root/common" -DTOML_HEADER_ONLY=1 -DNDEBUG)

# The SQLite query target as a worker runs it (the factory links the PostgreSQL target too; the
# fuzzer never opens one); SQLite itself is Debian's library (not instrumented: the coverage that
# guides the fuzzer is sqlq's, the dictionary gives it SQL).
target_sources=(tests/fuzz/target.fuzz.cpp common/target/target.cpp common/target/row_encoder.cpp
    common/target/limit_guard.cpp common/target/sqlite/readonly.cpp common/target/sqlite/sqlite_target.cpp
    common/target/sqlite/temp_vfs.cpp common/sqlite/db.cpp common/config/config.cpp
    common/target/postgres/pg_target.cpp common/target/postgres/statement.cpp common/target/postgres/values.cpp
    common/pg/conninfo.cpp common/pg/libpq.cpp)

# Every file of the three targets compiled on its own, as many at once as there are cores; then
# the three links.
build() {
    echo "fuzz: building with $cxx"
    local objs=$out/obj
    rm -rf "$objs"; mkdir -p "$objs"
    printf '%s\n' tests/fuzz/message.fuzz.cpp common/task/message.cpp tests/fuzz/config.fuzz.cpp "${target_sources[@]}" |
        sort -u | xargs -P "$(nproc)" -I{} sh -c 'o="$1/$(echo "$2" | tr / _).o"; shift 2; exec "$@" -c "$0" -o "$o"' \
            "$root/{}" "$objs" {} "$cxx" "${flags[@]}" $(pkg-config --cflags libpq) ||
        { echo "fuzz: a build failed" >&2; return 1; }
    o() { for f in "$@"; do echo "$objs/$(echo "$f" | tr / _).o"; done; }
    "$cxx" "${flags[@]}" $(o tests/fuzz/message.fuzz.cpp common/task/message.cpp) -o "$out/message_fuzz"
    "$cxx" "${flags[@]}" $(o tests/fuzz/config.fuzz.cpp common/config/config.cpp) -o "$out/config_fuzz"
    "$cxx" "${flags[@]}" $(o "${target_sources[@]}") -lsqlite3 -o "$out/target_fuzz"
}

# One target for SECONDS; its verdict in $out/$target.status (0 clean, 1 a finding).
fuzz() {
    local target=$1 corpus=$out/corpus/$1 dict=()
    mkdir -p "$corpus"
    cp -n "$root/tests/fuzz/corpus/$target/"* "$corpus/" 2>/dev/null || true
    [ -f "$root/tests/fuzz/$target.dict" ] && dict=(-dict="$root/tests/fuzz/$target.dict")
    if "$out/${target}_fuzz" "${dict[@]}" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$out/findings/$target-" -print_final_stats=1 "$corpus" > "$out/$target.log" 2>&1; then
        echo 0 > "$out/$target.status"
    else
        echo 1 > "$out/$target.status"
    fi
}

if [ "$phase" != run ]; then build; fi
if [ "$phase" = build ]; then exit 0; fi

echo "fuzz: message and config for $seconds s, then target for $seconds s"
fuzz message & fuzz config & wait
fuzz target
status=0
for target in message config target; do
    if [ "$(cat "$out/$target.status" 2>/dev/null)" != 0 ]; then
        echo "fuzz: $target FAILED; see $out/$target.log and $out/findings/" >&2
        tail -n 40 "$out/$target.log" >&2
        status=1
    else
        echo "fuzz: $target: $(grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$out/$target.log" | tr '\n' ' ')"
    fi
done
exit $status
