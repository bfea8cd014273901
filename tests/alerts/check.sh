#!/usr/bin/env bash
# The operator files in etc/: the alerting rules pass `promtool check rules` and their unit tests
# (alerts.test.yml), the Grafana dashboard is valid JSON, and every sqlq_ metric either of them
# names is one the supervisor serves (listed in docs/operations.md, "Metrics").
# Exit 77 (skipped) without promtool (Debian's prometheus package; scripts/setup.sh installs it).
set -euo pipefail
root=${1:?usage: check.sh SOURCE_DIR}
if ! command -v promtool >/dev/null; then
    echo "check.sh: promtool not found (apt install prometheus): skipped" >&2
    exit 77
fi
promtool check rules "$root/etc/prometheus-alerts.yml"
(cd "$root/tests/alerts" && promtool test rules alerts.test.yml)
/usr/bin/python3 - "$root" <<'PY'
import json, re, sys
root = sys.argv[1]
dash = json.load(open(f"{root}/etc/grafana-dashboard.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
alerts = open(f"{root}/etc/prometheus-alerts.yml").read()
served = set(re.findall(r"^\| `((?:sqlq|process)_[a-z_]+)` \|", open(f"{root}/docs/operations.md").read(), re.M))
assert len(served) >= 15, f"docs/operations.md lists only {sorted(served)}"
used = set()
for text in exprs + [alerts]:
    for name in re.findall(r"\b(sqlq_[a-z_]+)", text):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) and
                 re.sub(r"_(bucket|sum|count)$", "", name) in served else name)
unknown = sorted(used - served)
if unknown:
    sys.exit(f"check.sh: not served by the supervisor (docs/operations.md, Metrics): {unknown}")
print(f"check.sh: dashboard ({len(exprs)} queries) and alerts use {len(used)} metrics, all served")
PY
