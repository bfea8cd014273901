#!/usr/bin/env bash
# Builds the Debian package: a Release build of the four programs (sqlq, sqlq-supervisor,
# sqlq-worker, sqlq-web) in DIR (default build-pkg/), then `cpack -G DEB`. Prints the path of the
# .deb; install it with
#   apt install ./build-pkg/sqlq_<version>_<arch>.deb
# Extra arguments go to cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build-pkg}; shift || true
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
      -DSQLQ_TESTS=OFF -DSQLQ_BENCH=OFF "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" --target sqlq sqlq-supervisor sqlq-worker sqlq-web
rm -f "$dir"/sqlq_*.deb
(cd "$dir" && cpack -G DEB >/dev/null)
ls "$dir"/sqlq_*.deb
