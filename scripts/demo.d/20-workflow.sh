#!/usr/bin/env bash
# The guarded change workflow on the embedded example: a stack repository made
# from examples/ in a temporary clone with a bare remote (which also holds the
# run lock), then: a first run that creates and pushes, a second run that finds
# no change, a second owner refused while a lock is held, a missing tofu refused
# before any lock, and a change planned and applied from a shell with the
# design's alias written verbatim. Each outcome is checked: the section fails
# when the story does not happen.
set -euo pipefail
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.invalid
export GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.invalid
export ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False

say() { printf '\n== %s\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }
locks() { git -C "$work/remote.git" for-each-ref --format='%(refname)' refs/guardrail/locks/; }

# One workflow task (its options as key=value; a group as
# `lock=owner=alice,run_id=demo-1`); prints each step's outcome and duration,
# then the summary. Returns the task's status.
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
workflow "stack=alpha profile=prod lock=owner=alice repo_path=$PWD"
echo "  remote main is now $(git -C "$work/remote.git" rev-parse --short main) (local $(git rev-parse --short HEAD))"
[ "$(git -C "$work/remote.git" rev-parse main)" = "$(git rev-parse HEAD)" ] || fail "the apply was not pushed"

say "second run: nothing to change"
workflow "stack=alpha profile=prod lock=owner=alice repo_path=$PWD" | tee "$work/second"
grep -q "(changed: false)" "$work/second" || fail "the second run changed something"

say "alice takes the lock and stops there (steps render, git_check, lock)"
workflow "stack=alpha profile=prod lock=owner=alice,run_id=demo-1 steps=render,git_check,lock repo_path=$PWD"
echo "  lock on the remote: $(locks)"
[ -n "$(locks)" ] || fail "alice holds no lock"

say "bob tries the whole workflow while alice holds the lock: refused, and told who holds it"
if workflow "stack=alpha profile=prod lock=owner=bob repo_path=$PWD"; then
    fail "bob was not refused"
fi

say "bob tries unlock-any: it releases only bob's own locks, so it is refused"
if workflow "stack=alpha profile=prod lock=owner=bob steps=unlock-any repo_path=$PWD"; then
    fail "bob released alice's lock"
fi
[ -n "$(locks)" ] || fail "alice's lock is gone"

say "alice releases her lock (steps unlock-any: her lock, whichever of her runs took it)"
workflow "stack=alpha profile=prod lock=owner=alice steps=unlock-any repo_path=$PWD"
echo "  locks left on the remote: $(locks | wc -l)"
[ -z "$(locks)" ] || fail "alice's lock is still held"

say "a tofu that is not installed: refused before the lock, nothing locked"
if workflow "stack=alpha profile=prod lock=owner=alice tofu=binary=/opt/no-such/tofu repo_path=$PWD"; then
    fail "a missing tofu was not refused"
fi
echo "  locks on the remote: $(locks | wc -l)"
[ -z "$(locks)" ] || fail "a lock was left behind"

alias_steps=(build git-check lock exec git-push unlock-any)
say "from a shell, the design's alias verbatim: guardrail ${alias_steps[*]} -- alpha prod tofu ..."
sed -i 's/replicas: 3/replicas: 4/' profiles/prod.yml
git commit -q -am "prod: four replicas"
echo "  \$ guardrail ${alias_steps[*]} -- alpha prod tofu plan"
"$root/bin/guardrail" --owner alice "${alias_steps[@]}" -- alpha prod tofu plan >"$work/plan" 2>&1 ||
    { cat "$work/plan"; fail "the plan failed"; }
# The reviewer's view: tofu's own plan for the changed resource, then the summary.
sed -n '/# terraform_data.service will be updated/,/^    }/p; /^render/,$p' "$work/plan" | sed 's/^/  /'
plan_id=$(sed -n 's/^Saved plan \([0-9a-f]*\);.*/\1/p' "$work/plan")
[ -n "$plan_id" ] || fail "no saved plan id"
echo "  \$ guardrail ${alias_steps[*]} -- alpha prod tofu apply $plan_id"
"$root/bin/guardrail" --owner alice "${alias_steps[@]}" -- alpha prod tofu apply "$plan_id" 2>&1 |
    grep -E '^(render|git_check|lock|exec|git_push|unlock_any) |^Apply complete|^  update' | sed 's/^/  /'
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "the apply of plan $plan_id failed"
[ "$(git -C "$work/remote.git" rev-parse main)" = "$(git rev-parse HEAD)" ] || fail "the apply was not pushed"
[ -z "$(locks)" ] || fail "the alias left a lock"
echo "  applied plan $plan_id, pushed $(git rev-parse --short HEAD), no lock left"
