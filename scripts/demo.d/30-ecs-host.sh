#!/usr/bin/env bash
# A CIS-hardened ECS host that still works: playbooks/ecs_host.yml (cis_hardening
# Level 2, then agent_firewall) on the lab host, where the compliance report is
# and its counts, then the task-namespace credential probe once more.
set -euo pipefail
: "${DEMO_HOST:?}" "${DEMO_INVENTORY:?}"
report_dir=$(pwd)/reports
say() { printf '\n== %s\n' "$*"; }
on_host() { ansible "$DEMO_HOST" -i "$DEMO_INVENTORY" -m ansible.builtin.command -a "$*"; }

if ! on_host test -x /usr/local/bin/lab-task-probe >/dev/null 2>&1; then
    say "ECS container instance stand-in (docker0, task namespace, agent, IMDS)"
    ansible-playbook -i "$DEMO_INVENTORY" tests/lab/ecs_agent_standins.yml >/dev/null
fi

say "Harden with playbooks/ecs_host.yml (CIS Level 2, container-host exceptions on)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
if ! ansible-playbook -i "$DEMO_INVENTORY" playbooks/ecs_host.yml \
    -e "{\"target\": \"$DEMO_HOST\", \"cis_hardening_level\": 2, \"cis_hardening_install_packages\": false, \"cis_hardening_report_dir\": \"$report_dir\"}" \
    >"$log" 2>&1; then
    cat "$log"
    exit 1
fi
grep -A2 '^PLAY RECAP' "$log"
echo "  took $(( $(date +%s) - start ))s"

say "Compliance report"
python3 - "$report_dir/$DEMO_HOST.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
s = report["summary"]
print("  %s (HTML: %s)" % (sys.argv[1], sys.argv[1][:-5] + ".html"))
print("  benchmark %s, Level %s: %d controls" % (report["benchmark"], report["level"], s["total"]))
print("  " + ", ".join("%s %d" % kv for kv in sorted(s["statuses"].items())))
for c in report["controls"]:
    if c["status"] == "waived":
        print("  waived %-9s %s" % (c["id"], c["reason"]))
PY

say "The host still works: task credentials through the hardened firewall"
on_host /usr/local/bin/lab-task-probe http://169.254.170.2/v2/credentials
forward=$(on_host sysctl -n net.ipv4.ip_forward | tail -1)
echo "  net.ipv4.ip_forward = $forward (Docker's bridge networking needs it on)"
[ "$forward" = 1 ] || { echo "demo: hardening turned IPv4 forwarding off" >&2; exit 1; }
