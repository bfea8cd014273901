#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, and runs through CTest the unit,
# integration, supervisor and fault tests (each suite that needs a broker gets a private
# RabbitMQ node from the CTest fixture), then the same tests built with AddressSanitizer and
# UndefinedBehaviorSanitizer, then the fuzz targets for a short time.
#   SQLQ_SOAK=1       the fault suite's long mode
#   SQLQ_NO_SANITIZE=1  skip the sanitizer pass
#   SQLQ_FUZZ_SECONDS=N fuzz each target N seconds (default 20)
#   SQLQ_SANITIZE_CXX=g++  the sanitizer build with GCC (by default Clang, the faster to compile)
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
# build and the fuzz targets are built meanwhile, at the lowest CPU priority so that the tests
# keep the cores whenever they want them. Their output goes to a log, shown if they fail.
sanitize=${SQLQ_NO_SANITIZE:-}
fuzz=0; [ -x "$root/tests/fuzz/run.sh" ] && fuzz=1
side_log=$root/build/side-build.log
side_pid=
if [ -z "$sanitize" ] || [ $fuzz = 1 ]; then
    stage "building the sanitizer build and the fuzz targets beside the tests (nice 19; log: $side_log)"
    (   # exit status: 1 the sanitizer build failed, 2 the fuzz targets' build, 3 both
        rc=0
        if [ -z "$sanitize" ]; then
            # With Clang (Debian's, which setup.sh installs for the fuzz targets): it compiles
            # this build in 170 s where GCC takes 298 (2 cores, a quiet machine), and this build
            # is the suite's critical path. The plain build stays GCC's, the product's compiler.
            # SQLQ_SANITIZE_CXX=g++ builds it with GCC.
            sanitize_cxx=${SQLQ_SANITIZE_CXX:-$(command -v clang++-14 || command -v clang++ || echo g++)}
            CXX=$sanitize_cxx nice -n 19 "$root/scripts/build.sh" "$root/build-asan" -DSQLQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
                -DCMAKE_CXX_FLAGS_DEBUG="-g1" -DSQLQ_BENCH=OFF -DSQLQ_KILL_SUITES=OFF || rc=1
        fi
        if [ $fuzz = 1 ]; then nice -n 19 "$root/tests/fuzz/run.sh" build || rc=$((rc + 2)); fi
        echo "== the side build ended at $((SECONDS - begun)) s, status $rc"
        exit $rc
    ) > "$side_log" 2>&1 &
    side_pid=$!
fi

stage tests
(cd "$root/build" && ctest -j"$jobs" --output-on-failure --timeout 900) || status=1

side=0
if [ -n "$side_pid" ]; then
    wait "$side_pid" || side=$?
    tail -n 1 "$side_log"
    if [ $side != 0 ]; then
        echo "== the side build failed ($( ((side & 1)) && echo "sanitizer build " )$( ((side & 2)) && echo "fuzz targets" )):" >&2
        tail -n 60 "$side_log" >&2
        status=1
    fi
fi

if [ -z "$sanitize" ] && ! ((side & 1)); then
    # Not the install and package tests either: they check the install tree and the .deb, which
    # the plain build's pass has done (25 s at the end of this pass, one at a time).
    stage "tests under AddressSanitizer and UndefinedBehaviorSanitizer (the fault and cluster suites, whole-process kill scenarios, and the install and package tests run in the plain build only)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    (cd "$root/build-asan" && ctest -j"$jobs" --output-on-failure --timeout 900 -LE "fault|cluster|install") || status=1
fi

if [ $fuzz = 1 ] && ! ((side & 2)); then
    stage fuzz
    "$root/tests/fuzz/run.sh" run "${SQLQ_FUZZ_SECONDS:-20}" || status=1
fi
stage "done, exit $status"
exit $status
