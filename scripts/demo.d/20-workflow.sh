#!/usr/bin/env bash
# The guarded change workflow on the embedded example: a stack repository made
# from examples/ in a temporary clone with a bare remote (which also holds the
# run lock), then: a first run that creates and pushes, a second run that finds
# no change, and a second owner refused while a lock is held.
set -euo pipefail
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.invalid
export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.invalid
export ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False

say() { printf '\n== %s\n' "$*"; }

# One workflow task; prints each step's outcome and duration, then the
# summary. Returns the task's status.
workflow() {
    local out rc=0
    out=$(ansible localhost -m guardrail.ecs.workflow -a "$*") || rc=$?
    python3 - "$out" <<'PY'
import json, sys
text = sys.argv[1]
# ansible prints "localhost | CHANGED => {...}"
if "=> {" not in text:
    sys.exit(f"no result: {text}")
result = json.loads(text[text.index("=> {") + 3:])
for step in result.get("steps", []):
    line = f"  {step['step']:<10} {step['status']:<8} {'changed' if step['changed'] else '':<8} {step['duration']:.3f}s"
    print(line)
if "counts" in result:
    print(f"  counts: {result['counts']}")
if "outputs" in result:
    print(f"  outputs: {json.dumps(result['outputs'], sort_keys=True)}")
print(f"  -> {'FAILED: ' if result.get('failed') else ''}{result.get('msg')} (changed: {str(result.get('changed')).lower()})")
PY
    return $rc
}

say "stack repository: examples/ in a clone of a bare remote ($work)"
git init -q --bare -b main "$work/remote.git"
git clone -q "$work/remote.git" "$work/infra" 2>/dev/null
cd "$work/infra"
git checkout -q -b main
cp -r "$root/examples/stacks" "$root/examples/profiles" .
git add stacks profiles
git commit -q -m "stack alpha with profiles base and prod"
git push -q -u origin main
git log --oneline | sed 's/^/  /'

say "first run as alice: render, git_check, lock, exec (apply), git_push, unlock"
echo "# release notes" > stacks/alpha/NOTES.md
git add stacks/alpha/NOTES.md && git commit -q -m "alpha: notes"
workflow "stack=alpha profile=prod owner=alice repo_path=$PWD"
echo "  remote main is now $(git -C "$work/remote.git" rev-parse --short main) (local $(git rev-parse --short HEAD))"

say "second run: nothing to change"
workflow "stack=alpha profile=prod owner=alice repo_path=$PWD"

say "alice takes the lock and stops there (steps render, git_check, lock)"
workflow "stack=alpha profile=prod owner=alice run_id=demo-1 steps=render,git_check,lock repo_path=$PWD"
echo "  lock on the remote: $(git -C "$work/remote.git" for-each-ref --format='%(refname)' 'refs/tags/guardrail-lock/')"

say "bob tries the whole workflow while alice holds the lock: refused"
if workflow "stack=alpha profile=prod owner=bob repo_path=$PWD"; then
    echo "demo: bob was not refused" >&2
    exit 1
fi

say "alice releases her lock (steps unlock)"
workflow "stack=alpha profile=prod owner=alice steps=unlock repo_path=$PWD"
echo "  locks left on the remote: $(git -C "$work/remote.git" for-each-ref 'refs/tags/guardrail-lock/' | wc -l)"
