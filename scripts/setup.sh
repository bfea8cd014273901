#!/usr/bin/env bash
# Installs what sqlq needs from Debian 12's packages (only what is missing), as root.
#   scripts/setup.sh          build, run and test dependencies
#   scripts/setup.sh bench    also the benchmark's (python3-pika, gnuplot)
# postgresql-15: the tests' private PostgreSQL server (never the system cluster: its service is
# not started, as for rabbitmq-server below).
# dpkg-dev: the .deb's Depends (dpkg-shlibdeps); systemd: systemd-analyze for the install test.
# python3-prometheus-client: its parser reads the supervisor's /metrics in the integration test;
# prometheus: promtool checks etc/prometheus-alerts.yml (its service is not started).
# libcrypt-dev: the console's password hashes (yescrypt); chromium, chromium-driver and
# python3-selenium: the console's browser tests (tests/web/browser_test.py).
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      librabbitmq-dev libboost-dev libsqlite3-dev sqlite3 libpq-dev postgresql-15 nlohmann-json3-dev catch2
      libtomlplusplus-dev libspdlog-dev libfmt-dev libcli11-dev
      rabbitmq-server iproute2 util-linux procps
      dpkg-dev systemd python3-prometheus-client prometheus
      libcrypt-dev chromium chromium-driver python3-selenium
      clang libclang-rt-14-dev)
if [ "${1:-}" = bench ]; then pkgs+=(python3-pika gnuplot-nox); fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# rabbitmq-server's postinst would start the system node: we run private nodes instead.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
