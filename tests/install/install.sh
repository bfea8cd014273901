#!/usr/bin/env bash
# The install story, without a broker: `cmake --install BUILD --prefix /usr` into a DESTDIR, then
# the layout (and nothing more: no tests, no bench tools), the modes, the installed config (it
# parses, and its paths are absolute), the units' ExecStart, user and sandboxing, and
# `systemd-analyze verify` of each.
#   tests/install/install.sh BUILD_DIR [CONFIG]
# Exit 77 (skipped) only when systemd-analyze is not installed.
set -euo pipefail
build=${1:?usage: install.sh BUILD_DIR [CONFIG]}
config=${2:-}
if ! command -v systemd-analyze >/dev/null; then
    echo "install.sh: SKIP: systemd-analyze is not installed (apt-get install systemd)"
    exit 77
fi
dest=$(mktemp -d "${TMPDIR:-/tmp}/sqlq-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
fails=0
fail() { echo "install.sh: FAIL: $*" >&2; fails=$((fails + 1)); }

DESTDIR=$dest cmake --install "$build" --prefix /usr ${config:+--config "$config"} >"$dest.log" 2>&1 ||
    { cat "$dest.log" >&2; rm -f "$dest.log"; echo "install.sh: FAIL: cmake --install" >&2; exit 1; }
rm -f "$dest.log"

# Exactly these files: the binaries, the config, the units, the docs and the metrics examples.
expected=$(
    printf '%s\n' usr/bin/sqlq usr/bin/sqlq-supervisor usr/bin/sqlq-worker usr/bin/sqlq-web etc/sqlq/sqlq.conf \
        usr/lib/systemd/system/sqlq-supervisor.service usr/lib/systemd/system/sqlq-web.service \
        usr/share/doc/sqlq/README.md \
        usr/share/doc/sqlq/examples/prometheus-alerts.yml usr/share/doc/sqlq/examples/grafana-dashboard.json
    for d in "$(dirname "$0")"/../../docs/*.md; do echo "usr/share/doc/sqlq/$(basename "$d")"; done
)
actual=$(cd "$dest" && find . -type f -o -type l | sed 's|^\./||')
if [ "$(sort <<<"$expected")" != "$(sort <<<"$actual")" ]; then
    fail "installed files differ from the expected layout:"
    diff <(sort <<<"$expected") <(sort <<<"$actual") | sed -n 's/^[<>]/  &/p' >&2
fi
for b in sqlq sqlq-supervisor sqlq-worker sqlq-web; do
    [ -x "$dest/usr/bin/$b" ] || fail "/usr/bin/$b is not an executable"
done
# The supervisor finds the worker beside itself.
[ "$(dirname "$(readlink -f "$dest/usr/bin/sqlq-supervisor")")" = "$(dirname "$(readlink -f "$dest/usr/bin/sqlq-worker")")" ] ||
    fail "sqlq-worker is not beside sqlq-supervisor"

# The config: 0640 (a DESTDIR install runs as the current user: the bits are checked, the group
# root:sqlq is the .deb postinst's job), absolute paths, and it parses: `status` loads it and,
# with no supervisor on its run directory, says so with exit 3 (a bad config would be exit 2).
conf=$dest/etc/sqlq/sqlq.conf
mode=$(stat -c %a "$conf")
[ "$mode" = 640 ] || fail "/etc/sqlq/sqlq.conf has mode $mode, not 640"
if grep -nE '^[a-z_]+ *= *"\.\.?/' "$conf" >&2; then fail "the installed config keeps relative paths"; fi
grep -qx 'path = "/var/lib/sqlq/sqlq.db"' "$conf" || fail "[store] path is not /var/lib/sqlq/sqlq.db"
grep -qx 'run_dir = "/var/lib/sqlq/run"' "$conf" || fail "[supervisor] run_dir is not /var/lib/sqlq/run"
set +e
out=$("$dest/usr/bin/sqlq-supervisor" status --json -c "$conf" 2>&1)
rc=$?
set -e
case $rc in
0 | 3) grep -q '"run_dir":"/var/lib/sqlq/run"' <<<"$out" || fail "status of the installed config: $out" ;;
*) fail "the installed config does not load (sqlq-supervisor status exit $rc): $out" ;;
esac

# The units: ExecStart names the installed binary and the installed config.
declare -A exec_start=(
    [sqlq-supervisor]='ExecStart=/usr/bin/sqlq-supervisor start --foreground -c /etc/sqlq/sqlq.conf'
    [sqlq-web]='ExecStart=/usr/bin/sqlq-web -c /etc/sqlq/sqlq.conf'
)
for name in sqlq-supervisor sqlq-web; do
    unit=$dest/usr/lib/systemd/system/$name.service
    grep -qx "${exec_start[$name]}" "$unit" ||
        fail "$name.service: ExecStart is not '${exec_start[$name]}': $(grep '^ExecStart=' "$unit")"
    if grep -qE '@[A-Z_]+@' "$unit"; then fail "unsubstituted @VARIABLE@ in $name.service: $(grep -E '@[A-Z_]+@' "$unit")"; fi
    # Each runs as its own user, with private files and the usual sandboxing (issue 12, part 5).
    grep -qE '^User=[a-z_][a-z0-9_-]*$' "$unit" || fail "$name.service names no User= (it would run as root): $(grep '^User=' "$unit" || echo none)"
    grep -qE '^ReadWritePaths=/' "$unit" || fail "$name.service has no ReadWritePaths= for the state directory"
    for line in UMask=0077 NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes ProtectHome=yes; do
        grep -qx "$line" "$unit" || fail "$name.service lacks $line: $(grep "^${line%%=*}=" "$unit" || echo 'not set')"
    done

    # systemd-analyze verify checks that ExecStart exists and is executable, on this machine's root
    # (with --root it would want the whole of systemd and /bin/kill inside the DESTDIR). So it
    # verifies a copy whose only change is ExecStart's directory: the DESTDIR's binary. Unknown keys
    # are only warnings (exit 0), so any output fails too.
    verify=$dest/verify/$name.service
    mkdir -p "$(dirname "$verify")"
    sed "s|^ExecStart=/usr/bin/|ExecStart=$dest/usr/bin/|" "$unit" >"$verify"
    set +e
    out=$(systemd-analyze verify --man=no "$verify" 2>&1)
    rc=$?
    set -e
    if [ $rc -ne 0 ] || [ -n "$out" ]; then fail "systemd-analyze verify $name.service (exit $rc): $out"; fi
    echo "install.sh: systemd-analyze security $name.service: $(systemd-analyze security --offline=yes "$verify" 2>/dev/null | grep -o 'Overall exposure level.*' || echo '?')"
done

[ $fails -eq 0 ] || exit 1
echo "install.sh: ok: $(wc -l <<<"$actual") files installed under --prefix /usr; config, units and verify pass"
