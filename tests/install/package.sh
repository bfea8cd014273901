#!/usr/bin/env bash
# The Debian package, as scripts/package.sh makes it (cpack -G DEB over the install rules of
# packaging/CMakeLists.txt), built from this build directory into a temporary one (no second
# build: the programs are already there), then read back with dpkg-deb: the files, the control
# fields, the conffiles and the maintainer scripts.
#   tests/install/package.sh BUILD_DIR
# Exit 77 (skipped) only when dpkg-deb or dpkg-shlibdeps is not installed.
set -euo pipefail
build=${1:?usage: package.sh BUILD_DIR}
for tool in dpkg-deb dpkg-shlibdeps; do
    if ! command -v $tool >/dev/null; then
        echo "package.sh: SKIP: $tool is not installed (apt-get install dpkg-dev)"
        exit 77
    fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/sqlq-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
fails=0
fail() { echo "package.sh: FAIL: $*" >&2; fails=$((fails + 1)); }

# The package's prefix is /usr whatever this build was configured with (scripts/package.sh
# configures its own build with it).
if ! (cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work" \
        -D CPACK_INSTALL_PREFIX=/usr -D CPACK_PACKAGING_INSTALL_PREFIX=/usr >"$work/cpack.log" 2>&1); then
    cat "$work/cpack.log" >&2
    echo "package.sh: FAIL: cpack" >&2
    exit 1
fi
debs=("$work"/sqlq_*.deb)
[ -f "${debs[0]}" ] || { ls -R "$work" >&2; echo "package.sh: FAIL: cpack made no sqlq_*.deb" >&2; exit 1; }
deb=${debs[0]}
echo "package.sh: built $(basename "$deb") ($(stat -c %s "$deb") bytes)"

# The files: the four programs, the config, the unit, the docs and the examples; no test binary.
contents=$(dpkg-deb --contents "$deb")
has() { grep -qE "$1" <<<"$contents" || fail "the package lacks $2"; }
for b in sqlq sqlq-supervisor sqlq-worker sqlq-web; do has "^-rwxr-xr-x .* \./usr/bin/$b$" "/usr/bin/$b (mode 0755)"; done
has '^-rw-r----- .* \./etc/sqlq/sqlq\.conf$' "/etc/sqlq/sqlq.conf (mode 0640)"
has ' \./usr/lib/systemd/system/sqlq-supervisor\.service$' "the systemd unit"
has ' \./usr/share/doc/sqlq/README\.md$' "README.md"
has ' \./usr/share/doc/sqlq/operations\.md$' "docs/operations.md"
has ' \./usr/share/doc/sqlq/examples/prometheus-alerts\.yml$' "the Prometheus rules example"
has ' \./usr/share/doc/sqlq/examples/grafana-dashboard\.json$' "the Grafana dashboard example"
if grep -E 'test|bench|/usr/local/' <<<"$contents" >&2; then fail "the package holds test, bench or /usr/local files"; fi

# The control fields. Depends: what dpkg-shlibdeps found in the programs, plus adduser.
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = sqlq ] || fail "Package is '$(field Package)'"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is '$(field Architecture)'"
depends=$(field Depends)
echo "package.sh: Depends: $depends"
for dep in adduser libc6 'libstdc\+\+6' libsqlite3-0 libpq5 libcrypt1 'libspdlog[^ ,]*' 'libfmt[0-9]+' 'libtomlplusplus[0-9]+'; do
    grep -qE "(^|, )$dep( |,|$)" <<<"$depends" || fail "Depends lacks $dep: $depends"
done
grep -qw rabbitmq-server <<<"$(field Recommends)" || fail "Recommends lacks rabbitmq-server: $(field Recommends)"

# The control archive: conffiles and the maintainer scripts, executable.
ctrl=$work/control
dpkg-deb --control "$deb" "$ctrl"
[ "$(cat "$ctrl/conffiles" 2>/dev/null)" = /etc/sqlq/sqlq.conf ] ||
    fail "conffiles is not exactly /etc/sqlq/sqlq.conf: $(cat "$ctrl/conffiles" 2>/dev/null || echo missing)"
for script in postinst prerm postrm; do
    [ -x "$ctrl/$script" ] || { fail "no executable $script"; continue; }
    sh -n "$ctrl/$script" || fail "$script is not valid sh"
    if grep -qE '@[A-Z_]+@' "$ctrl/$script"; then fail "unsubstituted @VARIABLE@ in $script"; fi
done
grep -q 'adduser --system --group' "$ctrl/postinst" && grep -q -- '--gecos "sqlq worker fleet" sqlq$' "$ctrl/postinst" ||
    fail "the postinst does not create the system user sqlq"
grep -q 'chmod 0640 /etc/sqlq/sqlq.conf' "$ctrl/postinst" || fail "the postinst does not set the config's mode"
grep -qE 'systemctl stop .*sqlq-supervisor.service' "$ctrl/prerm" || fail "the prerm does not stop the fleet"
grep -qE 'systemctl stop .*sqlq-web.service' "$ctrl/prerm" || fail "the prerm does not stop the web console"
grep -q 'rm -rf /var/lib/sqlq' "$ctrl/postrm" || fail "the postrm does not purge /var/lib/sqlq"

# The unit in the package names the packaged binary and config.
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/systemd/system/sqlq-supervisor.service >"$work/unit"
grep -qx 'ExecStart=/usr/bin/sqlq-supervisor start --foreground -c /etc/sqlq/sqlq.conf' "$work/unit" ||
    fail "the packaged unit's ExecStart: $(grep '^ExecStart=' "$work/unit")"

[ $fails -eq 0 ] || exit 1
echo "package.sh: ok"
