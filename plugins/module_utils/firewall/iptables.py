# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Owning a few iptables chains on a host whose other rules belong to others.

Plain Python, no AnsibleModule. A caller describes chains it owns (their
rules) or only needs to exist (such as DOCKER-USER), and the chains that must
jump to them. `plan()` compares that with the live ruleset read from
`iptables-save`, and yields, per table, the commands for one
`iptables-restore --noflush` run and the commands that undo them. `apply()`
loads the tables one by one and, when a table is refused, undoes the tables
already loaded, so a failed rule set leaves the previous rules in place.
`merge_save_file()` merges the same chains and jumps into an iptables-save
file (/etc/iptables/rules.v4, /etc/sysconfig/iptables) without adding
anything else of the live ruleset to it.

It also sets the policies of built-in chains (`policies`), and with
`state="absent"` takes its owned chains and their jumps away again and puts
those policies back to ACCEPT, the kernel's default. The same code serves
iptables and ip6tables: only the commands differ.

A jump is placed ahead of the first rule of the chain it sits in that could
drop traffic: a DROP, REJECT or RETURN, or a jump to a chain that holds one
(a log-and-drop chain), so it works under a default-deny firewall; a jump
already ahead of every such rule is left where it is. `Plan.placements` says
where each jump sits and which rule it is ahead of. A table iptables has not
created yet (nft-backed iptables creates them on first use) counts as one with
empty built-in chains.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from ansible_collections.guardrail.ecs.plugins.module_utils.common import process

TABLES = ("filter", "nat", "mangle", "raw")
TERMINAL_TARGETS = ("DROP", "REJECT", "RETURN")
POLICIES = ("ACCEPT", "DROP")
STATES = ("present", "absent")
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
_NEW_CHAIN = ("-N", "--new-chain")
_POLICY = ("-P", "--policy")
COMMAND_TIMEOUT = 60

_LONG_OPTIONS = {
    "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
    "--in-interface": "-i", "--out-interface": "-o", "--protocol": "-p",
    "--jump": "-j", "--goto": "-g", "--match": "-m",
    "--destination-port": "--dport", "--source-port": "--sport",
}
# iptables-save prints these first, in this order, whatever order they were given in.
_GENERIC_ORDER = ("-s", "-d", "-i", "-o", "-p")
# Options of the tcp/udp matches that iptables loads implicitly after -p tcp/udp.
_PROTOCOL_OPTIONS = ("--dport", "--sport", "--tcp-flags", "--syn", "--tcp-option")


class IptablesError(Exception):
    """A rule set iptables refused, a command that failed, or bad input."""


@dataclass
class Chain:
    name: str
    policy: str | None = None
    rules: list = field(default_factory=list)

    @property
    def builtin(self):
        return self.policy is not None


@dataclass
class ChainSpec:
    """A chain the caller owns (`rules` is a list) or only needs (`rules` None)."""
    table: str
    name: str
    rules: list | None = None
    jump_from: list = field(default_factory=list)
    omit_rules_found_in: list = field(default_factory=list)


@dataclass
class TablePlan:
    table: str
    commands: list = field(default_factory=list)
    undo: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    policies_before: dict = field(default_factory=dict)
    policies_after: dict = field(default_factory=dict)

    def payload(self, commands=None):
        lines = ["*%s" % self.table] + list(self.commands if commands is None else commands) + ["COMMIT", ""]
        return "\n".join(lines)


@dataclass
class Plan:
    tables: list = field(default_factory=list)
    omitted: list = field(default_factory=list)
    effective_rules: dict = field(default_factory=dict)
    placements: list = field(default_factory=list)
    policies: list = field(default_factory=list)

    @property
    def changed(self):
        return any(t.commands for t in self.tables)

    def commands(self):
        return {t.table: list(t.commands) for t in self.tables if t.commands}

    def before_text(self):
        return _render_state(self.tables, "before")

    def after_text(self):
        return _render_state(self.tables, "after")


def _render_state(tables, which):
    out = []
    for plan in tables:
        state = getattr(plan, which)
        policies = getattr(plan, "policies_" + which)
        if not state and not policies:
            continue
        out.append("*%s" % plan.table)
        out.extend(":%s %s" % item for item in policies.items())
        for name, rules in state.items():
            if rules is None:
                continue
            out.append(":%s" % name)
            out.extend("-A %s %s" % (name, rule) for rule in rules)
    return "\n".join(out) + ("\n" if out else "")


def split_rule(rule):
    try:
        return shlex.split(rule)
    except ValueError as exc:
        raise IptablesError("cannot parse rule %r: %s" % (rule, exc))


def canonical(rule):
    """Tokens of a rule in the order and spelling iptables-save prints.

    Covers what rule authors commonly write differently from iptables-save:
    long option names, generic options in any order, addresses without a
    mask or with host bits, 0.0.0.0/0 (which iptables-save leaves out), and
    the tcp/udp match loaded implicitly by -p tcp --dport.
    """
    tokens = [_LONG_OPTIONS.get(t, t) for t in split_rule(rule)]
    generic = {}
    rest = []
    negate = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
            i += 1
            continue
        if token in _GENERIC_ORDER and i + 1 < len(tokens):
            value = tokens[i + 1]
            if token in ("-s", "-d"):
                value = _network(value)
            if token == "-p":
                value = value.lower()
            if not (token in ("-s", "-d") and value in ("0.0.0.0/0", "::/0") and not negate):
                generic[token] = (negate, value)
            i += 2
        else:
            if negate:
                rest.append("!")
            rest.append(token)
            i += 1
        negate = False
    protocol = generic.get("-p", (False, ""))[1]
    if protocol in ("tcp", "udp") and ["-m", protocol] != rest[:2]:
        first_match = rest.index("-m") if "-m" in rest else len(rest)
        if any(t in _PROTOCOL_OPTIONS for t in rest[:first_match]):
            rest = ["-m", protocol] + rest
    out = []
    for option in _GENERIC_ORDER:
        if option in generic:
            negated, value = generic[option]
            out.extend((["!"] if negated else []) + [option, value])
    return tuple(out + rest)


def _network(value):
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return value


def target_of(rule):
    tokens = split_rule(rule)
    for flag in ("-j", "--jump", "-g", "--goto"):
        if flag in tokens:
            index = tokens.index(flag)
            if index + 1 < len(tokens):
                return tokens[index + 1]
    return None


def _matches(rule):
    """The plain (not negated) -i, -p and --dport of a rule: {option: value}."""
    tokens = canonical(rule)
    found = {}
    for index, token in enumerate(tokens[:-1]):
        if token in ("-i", "-p", "--dport") and (index == 0 or tokens[index - 1] != "!"):
            found[token] = tokens[index + 1]
    return found


def _interfaces_meet(a, b):
    if a.endswith("+") or b.endswith("+"):
        return a.rstrip("+").startswith(b.rstrip("+")) or b.rstrip("+").startswith(a.rstrip("+"))
    return a == b


def stateful_only(rule):
    """Whether `rule` matches nothing but an established or related connection
    state. Such a rule needs no protection of its own: a connection whose
    first packet a DROP ahead stops never becomes established."""
    tokens = list(canonical(rule))
    for option in ("--ctstate", "--state"):
        if option in tokens:
            at = tokens.index(option)
            states = set(tokens[at + 1].split(",")) if at + 1 < len(tokens) else set()
            rest = tokens[:at - 2] + tokens[at + 2:]
            return bool(states) and states <= {"ESTABLISHED", "RELATED"} and rest == ["-j", "ACCEPT"]
    return False


def disjoint(drop, accept):
    """Whether no packet can match both rules: they name different input
    interfaces, protocols or single destination ports."""
    d, a = _matches(drop), _matches(accept)
    if "-i" in d and "-i" in a and not _interfaces_meet(d["-i"], a["-i"]):
        return True
    if "-p" in d and "-p" in a and d["-p"] != a["-p"]:
        return True
    return ("--dport" in d and "--dport" in a and d["--dport"] != a["--dport"]
            and d["--dport"].isdigit() and a["--dport"].isdigit())


def could_drop(rule, chains=None, protect=None, _seen=None):
    """Whether `rule` can end a packet's way through its chain: DROP, REJECT,
    RETURN, or a jump to a chain of `chains` ({name: [rules]}) that holds a
    DROP or REJECT (a RETURN there only returns). With `protect` (rules), a
    DROP or REJECT that no packet of those rules can match does not count."""
    target = target_of(rule)
    if target in ("DROP", "REJECT"):
        return not (protect and all(disjoint(rule, p) for p in protect))
    if target == "RETURN":
        return _seen is None
    if not chains or target not in chains:
        return False
    seen = set(_seen or ()) | {target}
    return any(could_drop(r, chains, protect, seen) for r in chains[target]
               if target_of(r) not in seen)


def first_terminal(rules, chains=None, ignore=None, protect=None):
    """1-based position of the first rule that could drop (see could_drop), or
    None; jumps to the chain `ignore` do not count."""
    for position, rule in enumerate(rules, 1):
        if target_of(rule) != ignore and could_drop(rule, chains, protect):
            return position
    return None


def declared_chain(line):
    """The chain a declaration line (`:NAME POLICY`, `-N NAME`, `--new-chain
    NAME`) declares, or None."""
    line = line.strip()
    if line.startswith(":"):
        return (line[1:].split() or [None])[0]
    parts = line.split()
    if len(parts) == 2 and parts[0] in _NEW_CHAIN:
        return parts[1]
    return None


def parse_save(text):
    """{table: {chain name: Chain}} from iptables-save output or a rules file.

    Rules are kept as written after `-A <chain> `.
    """
    tables = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line == "COMMIT":
            current = None
        elif current is None:
            raise IptablesError("line %d is outside a table: %s" % (number, raw))
        elif line.startswith(":"):
            name, policy = (line[1:].split() + ["-"])[:2]
            current[name] = Chain(name, None if policy == "-" else policy, current.get(name, Chain(name)).rules)
        elif line.split()[0] in _NEW_CHAIN and len(line.split()) == 2:
            current.setdefault(line.split()[1], Chain(line.split()[1]))
        elif line.split()[0] in _POLICY and len(line.split()) == 3:
            name, policy = line.split()[1:]
            current[name] = Chain(name, policy, current.get(name, Chain(name)).rules)
        elif line.startswith("-A "):
            parts = line.split(None, 2)
            chain = current.setdefault(parts[1], Chain(parts[1]))
            chain.rules.append(parts[2] if len(parts) > 2 else "")
        else:
            raise IptablesError("line %d is not a chain or an appended rule: %s" % (number, raw))
    return tables


def validate_specs(specs):
    seen = set()
    for spec in specs:
        if spec.table not in TABLES:
            raise IptablesError("table %r of chain %s is not one of %s" % (spec.table, spec.name, ", ".join(TABLES)))
        if not spec.name or len(spec.name) > 28 or any(c.isspace() for c in spec.name) or spec.name.startswith("-"):
            raise IptablesError("chain name %r must be 1 to 28 characters, no spaces, not starting with '-'" % spec.name)
        if spec.name in ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"):
            raise IptablesError("chain %s is built in: own a chain of your own and jump to it" % spec.name)
        if (spec.table, spec.name) in seen:
            raise IptablesError("chain %s appears twice in table %s" % (spec.name, spec.table))
        seen.add((spec.table, spec.name))
        for rule in spec.rules or []:
            if not canonical(rule):
                raise IptablesError("chain %s has an empty rule" % spec.name)
    owned = {(s.table, s.name) for s in specs if s.rules is not None}
    for spec in specs:
        for source in spec.jump_from:
            if (spec.table, source) in owned:
                raise IptablesError("chain %s jumps from %s, whose rules are owned and rewritten: "
                                    "jump from a chain that is not owned" % (spec.name, source))


def validate_policies(policies):
    for table, chains in (policies or {}).items():
        for name, policy in chains.items():
            if name not in BUILTIN_CHAINS.get(table, ()):
                raise IptablesError("policy of %s: only the built-in chains of table %s have one (%s)"
                                    % (name, table, ", ".join(BUILTIN_CHAINS.get(table, ())) or "none"))
            if policy not in POLICIES:
                raise IptablesError("policy of %s must be one of %s, not %r" % (name, ", ".join(POLICIES), policy))


def plan(live, specs, policies=None, state="present"):
    """The commands that make `live` (from parse_save) hold `specs` and
    `policies` ({table: {built-in chain: ACCEPT or DROP}}), or, with
    state "absent", no owned chain of `specs`, no jump to one, and those
    policies back to ACCEPT."""
    validate_specs(specs)
    validate_policies(policies)
    if state not in STATES:
        raise IptablesError("state must be one of %s, not %r" % (", ".join(STATES), state))
    policies = policies or {}
    result = Plan()
    by_table = {}
    for spec in specs:
        by_table.setdefault(spec.table, []).append(spec)
    for table in policies:
        by_table.setdefault(table, [])
    for table, table_specs in by_table.items():
        chains = dict(live.get(table, {}))
        for name in BUILTIN_CHAINS.get(table, ()):
            chains.setdefault(name, Chain(name, "ACCEPT"))
        wanted = policies.get(table, {})
        if state == "absent":
            wanted = dict.fromkeys(wanted, "ACCEPT")
        tp = TablePlan(table)
        _plan_policies(tp, chains, wanted, result)
        if state == "absent":
            _plan_removal(tp, chains, table_specs)
        else:
            _plan_table(tp, chains, table_specs, result)
        result.tables.append(tp)
    return result


def _plan_policies(tp, chains, wanted, result):
    """Policy lines go first: iptables-restore takes chain lines ahead of rules."""
    for name, policy in wanted.items():
        current = chains[name].policy or "ACCEPT"
        tp.policies_before[name] = current
        tp.policies_after[name] = policy
        if current != policy:
            tp.commands.append(":%s %s [0:0]" % (name, policy))
            tp.undo.append(":%s %s [0:0]" % (name, current))
            result.policies.append({"table": tp.table, "chain": name, "before": current, "after": policy})


def _plan_removal(tp, chains, specs):
    owned = [s.name for s in specs if s.rules is not None and s.name in chains]
    jumps_undo = []
    for name, chain in chains.items():
        if name in owned:
            continue
        positions = []
        for position, rule in enumerate(chain.rules, 1):
            if target_of(rule) not in owned:
                continue
            if canonical(rule) != ("-j", target_of(rule)):
                raise IptablesError("rule %r of chain %s jumps to %s and is not one of the owned jumps: "
                                    "remove it first" % (rule, name, target_of(rule)))
            positions.append(position)
        if positions:
            tp.before[name] = list(chain.rules)
            tp.after[name] = [r for n, r in enumerate(chain.rules, 1) if n not in positions]
        tp.commands.extend("-D %s %d" % (name, p) for p in reversed(positions))
        jumps_undo.extend("-I %s %d %s" % (name, p, chain.rules[p - 1]) for p in positions)
    for name in owned:
        tp.before[name] = list(chains[name].rules)
        tp.after[name] = None
        tp.commands.extend(["-F %s" % name, "-X %s" % name])
        tp.undo.append("-N %s" % name)
        tp.undo.extend("-A %s %s" % (name, rule) for rule in chains[name].rules)
    tp.undo.extend(jumps_undo)


def _plan_table(tp, chains, specs, result):
    table = tp.table
    working = {name: list(chain.rules) for name, chain in chains.items()}
    creates = []
    for spec in specs:
        existing = chains.get(spec.name)
        if spec.rules is None:
            if existing is None:
                tp.commands.append("-N %s" % spec.name)
                creates.append(spec.name)
                working[spec.name] = []
            continue
        effective = []
        for rule in spec.rules:
            found = _found_in(chains, spec.omit_rules_found_in, rule)
            if found:
                result.omitted.append({"table": table, "chain": spec.name, "rule": rule, "found_in": found})
            else:
                effective.append(rule)
        result.effective_rules[(table, spec.name)] = effective
        tp.before[spec.name] = list(existing.rules) if existing else None
        tp.after[spec.name] = effective
        if existing is None:
            tp.commands.append("-N %s" % spec.name)
            creates.append(spec.name)
            tp.commands.extend("-A %s %s" % (spec.name, rule) for rule in effective)
        elif [canonical(r) for r in existing.rules] != [canonical(r) for r in effective]:
            tp.commands.append("-F %s" % spec.name)
            tp.commands.extend("-A %s %s" % (spec.name, rule) for rule in effective)
            head = _policy_lines(tp.undo)
            tp.undo[head:head] = (
                ["-F %s" % spec.name] + ["-A %s %s" % (spec.name, r) for r in existing.rules])
        else:
            # Unchanged: show the rules as iptables spells them, so the diff is empty.
            tp.after[spec.name] = list(existing.rules)
        working[spec.name] = list(effective)

    jump_undo = []
    for spec in specs:
        jump = "-j %s" % spec.name
        # What the jump must keep from being dropped: the traffic the owned chain
        # lets through. Its own DROP and REJECT rules lose nothing to a drop ahead.
        protect = None if spec.rules is None else [r for r in spec.rules if target_of(r) not in ("DROP", "REJECT")
                                                   and not stateful_only(r)]
        for source in spec.jump_from:
            if source not in working:
                raise IptablesError("chain %s (jump to %s) does not exist in table %s" % (source, spec.name, table))
            rules = working[source]
            tp.before.setdefault(source, list(chains[source].rules) if source in chains else [])
            at = [n for n, rule in enumerate(rules, 1) if canonical(rule) == canonical(jump)]
            terminal = first_terminal(rules, working, spec.name, protect)
            if len(at) == 1 and (terminal is None or at[0] < terminal):
                result.placements.append(_placement(table, source, spec.name, at[0], rules, terminal))
                continue
            for position in reversed(at):
                tp.commands.append("-D %s %d" % (source, position))
                jump_undo.insert(0, "-I %s %d %s" % (source, position, rules[position - 1]))
                del rules[position - 1]
            terminal = first_terminal(rules, working, spec.name, protect)
            if terminal is None:
                tp.commands.append("-A %s %s" % (source, jump))
                rules.append(jump)
                jump_undo.insert(0, "-D %s %d" % (source, len(rules)))
                result.placements.append(_placement(table, source, spec.name, len(rules), rules, None))
            else:
                tp.commands.append("-I %s %d %s" % (source, terminal, jump))
                rules.insert(terminal - 1, jump)
                jump_undo.insert(0, "-D %s %d" % (source, terminal))
                result.placements.append(_placement(table, source, spec.name, terminal, rules, terminal + 1))
    for name in tp.before:
        if name not in tp.after:
            tp.after[name] = list(working[name])
    head = _policy_lines(tp.undo)
    tp.undo = (tp.undo[:head] + jump_undo + tp.undo[head:]
               + ["-F %s" % name for name in creates] + ["-X %s" % name for name in reversed(creates)])


def _policy_lines(commands):
    """How many policy lines (`:CHAIN POLICY`) lead `commands`."""
    return sum(1 for line in commands if line.startswith(":"))


def _placement(table, source, name, position, rules, terminal):
    return {"table": table, "chain": source, "jump": name, "position": position,
            "ahead_of": rules[terminal - 1] if terminal else None}


def unsaved_forms(live, the_plan):
    """(rule as given, rule as iptables-save prints it) for loaded rules whose
    spelling `canonical()` does not map to iptables-save's: each makes every
    later run report a change until it is written the saved way."""
    pairs = []
    for (table, name), rules in the_plan.effective_rules.items():
        chain = live.get(table, {}).get(name)
        if chain is None or len(chain.rules) != len(rules):
            continue
        for given, saved in zip(rules, chain.rules):
            if canonical(given) != canonical(saved):
                pairs.append((given, saved))
    return pairs


def _found_in(chains, sources, rule):
    wanted = canonical(rule)
    for source in sources:
        chain = chains.get(source)
        if chain and any(canonical(r) == wanted for r in chain.rules):
            return source
    return None


def run(argv, data=None, timeout=COMMAND_TIMEOUT):
    """(rc, stdout, stderr) of a command run without a shell."""
    return process.run(argv, data=data, timeout=timeout)


def read_live(save_bin, runner=None):
    rc, out, err = (runner or run)([save_bin])
    if rc != 0:
        raise IptablesError("%s failed (rc=%d): %s" % (save_bin, rc, err.strip()))
    return parse_save(out)


def apply(the_plan, restore_bin, runner=None):
    """Loads the plan table by table; on a refusal undoes the loaded tables.

    Raises IptablesError with iptables' own message when a table is refused.
    """
    runner = runner or run
    loaded = []
    for tp in the_plan.tables:
        if not tp.commands:
            continue
        rc, _out, err = runner([restore_bin, "--wait", "--noflush"], tp.payload())
        if rc == 0:
            loaded.append(tp)
            continue
        problems = []
        for done in reversed(loaded):
            urc, _uout, uerr = runner([restore_bin, "--wait", "--noflush"], done.payload(done.undo))
            if urc != 0:
                problems.append("undoing table %s failed too: %s" % (done.table, uerr.strip()))
        state = "; ".join(problems) if problems else "the previous rules are in place"
        raise IptablesError("iptables-restore refused table %s: %s (%s)" % (tp.table, err.strip(), state))


def prove_loads(text, path, restore_bin, unshare_bin, runner=None):
    """Loads `text`, the whole rules file, with iptables-restore inside a
    scratch network namespace: a real load that touches no live rule. Raises
    IptablesError with the loader's message when it fails."""
    rc, _out, err = (runner or run)([unshare_bin, "--net", restore_bin], text)
    if rc != 0:
        raise IptablesError("the rules file %s would not load at boot, so nothing was changed: %s"
                            % (path, err.strip() or "%s exited with %d" % (restore_bin, rc)))


def merge_save_file(text, specs, effective_rules, policies=None, state="present"):
    """`text` (an iptables-save file) with the chains of `specs` and their jumps.

    Owned chains get exactly `effective_rules[(table, name)]`; a needed chain
    is declared when missing; jumps move ahead of the chain's first terminal
    rule; built-in chains get the policies of `policies`. With state
    "absent", the owned chains and the jumps to them go, and those policies
    are ACCEPT. Every other line of the file stays as it is.
    """
    policies = policies or {}
    lines = text.splitlines()
    for table in dict.fromkeys([spec.table for spec in specs] + list(policies)):
        table_specs = [s for s in specs if s.table == table]
        wanted = policies.get(table, {})
        start = _find_line(lines, "*%s" % table)
        if start is None and state == "absent":
            continue
        if start is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines.extend(["*%s" % table, "COMMIT"])
            start = len(lines) - 2
        end = start + 1
        while end < len(lines) and lines[end].strip() != "COMMIT":
            end += 1
        if end == len(lines):
            raise IptablesError("table %s has no COMMIT line" % table)
        body = lines[start + 1:end]
        if state == "absent":
            body = _remove_owned(body, table_specs)
            wanted = dict.fromkeys(wanted, "ACCEPT")
        else:
            body = _merge_table(body, table_specs, effective_rules, table)
        lines[start + 1:end] = _set_policies(body, wanted)
    return "\n".join(lines) + "\n"


def _find_line(lines, wanted):
    for index, line in enumerate(lines):
        if line.strip() == wanted:
            return index
    return None


def _set_policies(body, wanted):
    body = list(body)
    missing = 0
    for name, policy in wanted.items():
        line = ":%s %s [0:0]" % (name, policy)
        at = next((i for i, old in enumerate(body)
                   if old.strip().startswith(":") and declared_chain(old) == name), None)
        if at is not None:
            body[at] = line
            continue
        body = [old for old in body if old.split()[:2] != ["-P", name] and old.split()[:2] != ["--policy", name]]
        body.insert(missing, line)
        missing += 1
    return body


def _is_jump_to(line, targets):
    parts = line.split(None, 2)
    if len(parts) != 3 or parts[0] != "-A":
        return False
    rule = canonical(parts[2])
    return len(rule) == 2 and rule[0] == "-j" and rule[1] in targets


def _remove_owned(body, specs):
    owned = {s.name for s in specs if s.rules is not None}
    kept = []
    for line in body:
        parts = line.strip().split(None, 2)
        if declared_chain(line) in owned or (len(parts) >= 2 and parts[0] == "-A" and parts[1] in owned):
            continue
        if _is_jump_to(line.strip(), owned):
            continue
        kept.append(line)
    return kept


def _merge_table(body, specs, effective_rules, table):
    owned = {s.name for s in specs if s.rules is not None}
    targets = {s.name for s in specs}

    def is_rule_of(line, chains):
        parts = line.split(None, 2)
        return len(parts) >= 2 and parts[0] == "-A" and parts[1] in chains

    body = [line for line in body if not is_rule_of(line.strip(), owned) and not _is_jump_to(line.strip(), targets)]
    declared = {declared_chain(line) for line in body} - {None}
    last_declaration = max([i for i, line in enumerate(body) if declared_chain(line)], default=-1)
    for spec in specs:
        if spec.name not in declared:
            last_declaration += 1
            body.insert(last_declaration, ":%s - [0:0]" % spec.name)
            declared.add(spec.name)
    for spec in specs:
        if spec.rules is not None:
            body.extend("-A %s %s" % (spec.name, rule) for rule in effective_rules[(table, spec.name)])
    for spec in specs:
        for source in spec.jump_from:
            chains = {}
            for line in body:
                parts = line.strip().split(None, 2)
                if len(parts) == 3 and parts[0] == "-A":
                    chains.setdefault(parts[1], []).append(parts[2])
            positions = [i for i, line in enumerate(body) if is_rule_of(line.strip(), {source})]
            terminal = next((i for i in positions if target_of(body[i].split(None, 2)[2]) != spec.name
                             and could_drop(body[i].split(None, 2)[2], chains)), None)
            jump = "-A %s -j %s" % (source, spec.name)
            if terminal is not None:
                body.insert(terminal, jump)
            elif positions:
                body.insert(positions[-1] + 1, jump)
            else:
                body.append(jump)
    return body
