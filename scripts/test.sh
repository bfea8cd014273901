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

echo "== build"
"$root/scripts/build.sh" "$root/build" -DSQLQ_BENCH=OFF
echo "== tests"
(cd "$root/build" && ctest -j"$jobs" --output-on-failure --timeout 900) || status=1

if [ -z "${SQLQ_NO_SANITIZE:-}" ]; then
    echo "== build with AddressSanitizer and UndefinedBehaviorSanitizer"
    "$root/scripts/build.sh" "$root/build-asan" -DSQLQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DSQLQ_BENCH=OFF
    echo "== tests under the sanitizers (the fault and cluster suites, whole-process kill scenarios, run in the plain build only)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    (cd "$root/build-asan" && ctest -j"$jobs" --output-on-failure --timeout 900 -LE "fault|cluster") || status=1
fi

if [ -x "$root/tests/fuzz/run.sh" ]; then
    echo "== fuzz"
    "$root/tests/fuzz/run.sh" "${SQLQ_FUZZ_SECONDS:-20}" || status=1
fi
exit $status
