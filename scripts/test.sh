#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, and runs through CTest the unit,
# integration, supervisor and fault tests (each suite that needs a broker gets a private
# RabbitMQ node from the CTest fixture), then the same tests built with AddressSanitizer and
# UndefinedBehaviorSanitizer, then the fuzz targets for a short time.
#   SQLQ_SOAK=1       the fault suite's long mode
#   SQLQ_NO_SANITIZE=1  skip the sanitizer pass
#   SQLQ_FUZZ_SECONDS=N fuzz each target N seconds (default 20)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
jobs=${SQLQ_TEST_JOBS:-2}
status=0
begun=$SECONDS
stage() { echo "== $* (at $((SECONDS - begun)) s)"; }

# Both builds with -g1 (line tables only: a backtrace or a sanitizer report still names file and
# line) instead of -g: 12-17 % less compile time per file, measured on the supervisor's and the
# console's heaviest files. The plain build is otherwise the product's (-O2, RelWithDebInfo).
stage build
"$root/scripts/build.sh" "$root/build" -DSQLQ_BENCH=OFF -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"

# While the tests run, their processes mostly wait (on servers, timeouts, kills): the sanitizer
# build is built meanwhile, at the lowest CPU priority so that the tests keep the cores whenever
# they want them. It is the suite's critical path (it ended 121 s after the plain tests in a
# loaded CI run), so the fuzz targets are built later, beside the sanitizer tests (below), which
# wait as much. Without a sanitizer pass they are built beside the plain tests. The output goes
# to logs, shown on failure.
sanitize=${SQLQ_NO_SANITIZE:-}
fuzz=0; [ -x "$root/tests/fuzz/run.sh" ] && fuzz=1
side_log=$root/build/side-build.log
fuzz_log=$root/build/fuzz-build.log
side_pid=
fuzz_pid=
build_fuzz() {  # in the background, at the lowest priority, beside the tests named
    stage "building the fuzz targets beside the $1 (nice 19; log: $fuzz_log)"
    ( nice -n 19 "$root/tests/fuzz/run.sh" build ) > "$fuzz_log" 2>&1 &
    fuzz_pid=$!
}
if [ -z "$sanitize" ]; then
    stage "building the sanitizer build beside the tests (nice 19; log: $side_log)"
    (
        rc=0
        nice -n 19 "$root/scripts/build.sh" "$root/build-asan" -DSQLQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
            -DCMAKE_CXX_FLAGS_DEBUG="-g1" -DSQLQ_BENCH=OFF -DSQLQ_KILL_SUITES=OFF || rc=1
        echo "== the side build ended at $((SECONDS - begun)) s, status $rc"
        exit $rc
    ) > "$side_log" 2>&1 &
    side_pid=$!
elif [ $fuzz = 1 ]; then
    build_fuzz tests
fi

stage tests
(cd "$root/build" && ctest -j"$jobs" --output-on-failure --timeout 900) || status=1

side=0
if [ -n "$side_pid" ]; then
    wait "$side_pid" || side=$?
    tail -n 1 "$side_log"
    if [ $side != 0 ]; then
        echo "== the side build failed (sanitizer build):" >&2
        tail -n 60 "$side_log" >&2
        status=1
    fi
fi
if [ $fuzz = 1 ] && [ -z "$fuzz_pid" ]; then build_fuzz "sanitizer tests"; fi

if [ -z "$sanitize" ] && ! ((side & 1)); then
    # Not the install and package tests either: they check the install tree and the .deb, which
    # the plain build's pass has done (25 s at the end of this pass, one at a time).
    stage "tests under AddressSanitizer and UndefinedBehaviorSanitizer (the fault and cluster suites, whole-process kill scenarios, and the install and package tests run in the plain build only)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    (cd "$root/build-asan" && ctest -j"$jobs" --output-on-failure --timeout 900 -LE "fault|cluster|install") || status=1
fi

if [ $fuzz = 1 ]; then
    if wait "$fuzz_pid"; then
        stage fuzz
        "$root/tests/fuzz/run.sh" run "${SQLQ_FUZZ_SECONDS:-20}" || status=1
    else
        echo "== the fuzz targets' build failed:" >&2
        tail -n 60 "$fuzz_log" >&2
        status=1
    fi
fi
stage "done, exit $status"
exit $status
