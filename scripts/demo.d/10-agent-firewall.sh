#!/usr/bin/env bash
# The ECS host firewall on the lab host: an ECS container instance stand-in
# (tests/lab/ecs_agent_standins.yml: ecs-init's NAT rules, a stand-in agent,
# the metadata service, and no firewall of its own), where a task reaches the
# instance metadata service and so the host's role credentials; then
# playbooks/agent_firewall.yml makes the host default-deny, the same probes
# from the task's network namespace, and a second run that changes nothing.
set -euo pipefail
: "${DEMO_HOST:?}" "${DEMO_INVENTORY:?}"
say() { printf '\n== %s\n' "$*"; }

# Prints what a task sees fetching URL (the body, or curl's error) and fails
# the section unless that is the EXPECTED outcome (answers or blocked).
probe() {
    local out rc=0
    out=$(ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json \
        ansible "$DEMO_HOST" -i "$DEMO_INVENTORY" -m ansible.builtin.command \
        -a "/usr/local/bin/lab-task-probe $1") || rc=$?
    [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] || return "$rc"
    python3 - "$1" "$2" "$DEMO_HOST" "$out" <<'PY'
import json, sys
url, expected, host, text = sys.argv[1:5]
result = json.loads(text)["plays"][0]["tasks"][0]["hosts"][host]
if result.get("rc") == 0:
    body = result["stdout"][:160].replace("\n", "\n         ")
    print(f"  task -> {url}\n     OK: {body}")
    outcome = "answers"
else:
    error = (result.get("stderr") or result.get("msg", "")).strip()
    print(f"  task -> {url}\n     FAILED (curl exit {result.get('rc')}): {error}")
    outcome = "blocked"
if outcome != expected:
    sys.exit(f"demo: expected the task's request to be {expected}, it {outcome}")
PY
}

# Runs a playbook quietly; prints its recap line and wall time.
play() {
    local log start rc=0
    log=$(mktemp)
    start=$(date +%s)
    ansible-playbook -i "$DEMO_INVENTORY" --limit "$DEMO_HOST" "$@" >"$log" 2>&1 || rc=$?
    last_recap=$(grep -E "^$DEMO_HOST +:" "$log" | tr -s ' ')
    printf '  %s  (%ss)\n' "$last_recap" "$(( $(date +%s) - start ))"
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        rm -f "$log"
        return "$rc"
    fi
    rm -f "$log"
}

say "ECS container instance stand-in: no firewall of its own, docker0 + task namespace, agent on 127.0.0.1:51679, ecs-init NAT rules, IMDS"
play tests/lab/ecs_agent_standins.yml

say "BEFORE: a task asks for its IAM role credentials (ecs-init's NAT rules, nothing closed yet)"
probe http://169.254.170.2/v2/credentials answers
say "BEFORE: a bridge-mode task asks the instance metadata service (the host's role credentials: the hole)"
probe http://169.254.169.254/latest/meta-data/ answers

say "Apply playbooks/agent_firewall.yml (default-deny; SSH from the inventory's agent_firewall_ssh_sources)"
play playbooks/agent_firewall.yml -e "target=$DEMO_HOST"

say "AFTER: the task still gets its credentials from the agent, through the default-deny"
probe http://169.254.170.2/v2/credentials answers
say "AFTER: the task is kept away from the instance metadata service"
probe http://169.254.169.254/latest/meta-data/ blocked

say "Second run changes nothing"
play playbooks/agent_firewall.yml -e "target=$DEMO_HOST"
grep -q "changed=0 " <<<"$last_recap" || { echo "demo: the second run changed something" >&2; exit 1; }

say "The role's chain, jumped to ahead of the host's DROP rules"
ansible "$DEMO_HOST" -i "$DEMO_INVENTORY" -m ansible.builtin.command -a "iptables -S INPUT" |
    sed -n 's/^-/  -/p'
