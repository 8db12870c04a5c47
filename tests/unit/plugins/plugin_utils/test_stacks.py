"""plugin_utils/stacks.py and module_utils/policy.py without git or tofu: the
dependency graph, the scheduler, and the policy schema and verdicts."""
import threading
import time

import pytest

from ansible_collections.guardrail.ecs.plugins.plugin_utils import policy as p
from ansible_collections.guardrail.ecs.plugins.plugin_utils import stacks as s


def graph(**deps):
    return {name: s.Stack(name, tuple(d)) for name, d in deps.items()}


def write(tmp_path, layout):
    for name, text in layout.items():
        (tmp_path / "stacks" / name).mkdir(parents=True)
        if text is not None:
            (tmp_path / "stacks" / name / "stack.yml").write_text(text)


def test_order_is_dependencies_first_and_stable():
    g = graph(web=["db", "app"], db=["net"], app=["net"], net=[], solo=[])
    assert s.order(g, list(g)) == ["net", "solo", "app", "db", "web"]
    assert s.order(g, ["web", "net"]) == ["net", "web"]
    assert s.closure(g, "web") == {"db", "app", "net"}


def test_cycles_are_found_with_their_path():
    assert s.find_cycle(graph(a=["b"], b=["c"], c=["a"], d=[])) == ["a", "b", "c", "a"]
    assert s.find_cycle(graph(a=["a"])) == ["a", "a"]
    assert s.find_cycle(graph(a=["b"], b=[])) is None


@pytest.mark.parametrize("layout, expected", [
    ({"a": "depends_on: [b]\n", "b": "depends_on: [a]\n"}, "dependency cycle: a -> b -> a"),
    ({"a": "depends_on: [zz]\n"}, "depends on unknown stack(s) zz"),
    ({"a": "depends_on: [b, b]\n", "b": None}, "depends_on names something twice"),
    ({"a": "needs: [b]\n"}, "unknown key(s) needs"),
    ({"a": "inputs: [../outside]\n"}, "must be a path inside the repository"),
    ({"a": "mock_outputs: {b: {x: 1}}\n", "b": None}, "mock_outputs for b, which it does not depend on"),
    ({"all": None}, "reserved name"),
    ({"a": "- just a list\n"}, "must be a mapping"),
])
def test_bad_stack_files_are_refused(tmp_path, layout, expected):
    write(tmp_path, layout)
    with pytest.raises(s.StackError, match="nothing was run") as caught:
        s.load_graph(str(tmp_path))
    assert expected in str(caught.value)


def test_selection_of_lists_and_all():
    g = graph(net=[], db=["net"])
    assert s.parse_selection("all", g) == ["net", "db"]
    assert s.parse_selection("db, net", g) == ["db", "net"]
    for spec, expected in (("db,x", "unknown stack(s) x"), ("db,db", "twice"), ("db,", "empty name"),
                           ("all,db", "selects stacks on its own")):
        with pytest.raises(s.StackError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            s.parse_selection(spec, g)
    assert s.selects_many("a,b") and s.selects_many("affected") and not s.selects_many("alpha")


def test_schedule_waits_for_needs_caps_parallelism_and_skips_after_a_failure():
    running, peak, started = [0], [0], []
    guard = threading.Lock()

    def work(name):
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            started.append(name)
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return ("failed", "boom") if name == "db" else ("ok", "")
    needs = {"net": [], "db": ["net"], "app": ["net"], "web": ["db", "app"], "solo": [], "x": [], "y": []}
    outcomes = s.schedule(list(needs), needs, work, 2)
    assert outcomes["web"][0] == "skipped" and "db" in outcomes["web"][1]
    assert outcomes["app"] == ("ok", "") and outcomes["db"][0] == "failed"
    assert peak[0] == 2 and "web" not in started
    assert started.index("net") < started.index("db")
    assert s.schedule(["b"], {"b": ["a"]}, work, 1, {"a": ("failed", "")})["b"][0] == "skipped"


def plan(*changes):
    return {"resource_changes": [
        {"address": address, "type": address.split(".")[-2].split("]")[-1], "name": "x",
         "change": {"actions": actions, "after": after, "after_unknown": {}}}
        for address, actions, after in changes]}


POLICY = p.validate({
    "max_changes": 2,
    "protect": [{"profiles": ["prod"], "resources": ["terraform_data.*"], "deny": ["delete", "replace"]}],
    "require_tags": [{"profiles": ["prod"], "resources": ["aws_*"], "tags": ["team"]}],
})


def test_protect_denies_delete_and_replace_in_protected_profiles_only():
    changes = plan(("terraform_data.a", ["delete"], None), ("terraform_data.b", ["delete", "create"], {}))
    found = p.violations(POLICY, changes, "net", "prod")
    assert [(v["address"], v["action"]) for v in found] == [("terraform_data.a", "delete"),
                                                            ("terraform_data.b", "replace")]
    assert p.violations(POLICY, changes, "net", "staging") == []
    assert p.violations(POLICY, changes, "net", "prod", allow=["terraform_data.a", "terraform_data.b"]) == []
    module = plan(("module.m.terraform_data.c[0]", ["delete"], None))
    module["resource_changes"][0]["module_address"] = "module.m"
    module["resource_changes"][0]["index"] = 0
    assert len(p.violations(POLICY, module, "net", "prod")) == 1


def test_max_changes_and_required_tags():
    many = plan(*((f"terraform_data.n{i}", ["create"], {}) for i in range(3)))
    found = p.violations(POLICY, many, "net", "prod")
    assert len(found) == 3 and "max_changes: 3 changes, at most 2" in found[0]["rule"]
    tags = plan(("aws_s3_bucket.b", ["create"], {"tags": {"owner": "x"}}),
                ("aws_s3_bucket.c", ["update"], {"tags": {"team": "t"}}))
    found = p.violations(POLICY, tags, "net", "prod")
    assert [v["address"] for v in found] == ["aws_s3_bucket.b"] and "lacks team" in found[0]["rule"]
    with pytest.raises(p.PolicyViolation, match="aws_s3_bucket.b"):
        p.checker(POLICY, "net", "prod")(tags)


@pytest.mark.parametrize("data, expected", [
    ([], "must be a mapping"),
    ({"max_changes": True}, "whole number"),
    ({"protect": {"deny": ["delete"]}}, "must be a list of rules"),
    ({"protect": [{"resources": "x", "deny": ["drop"]}]}, "unknown action(s) drop"),
    ({"protect": [{"resources": [], "deny": ["delete"]}]}, "non-empty list"),
    ({"require_tags": [{"resources": ["*"]}]}, "needs tags"),
    ({"require_tags": [{"resources": ["*"], "tags": ["t"], "colour": 1}]}, "unknown key(s) colour"),
])
def test_policy_schema_errors_name_the_problem(data, expected):
    with pytest.raises(p.PolicyError) as caught:
        p.validate(data)
    assert expected in str(caught.value)


@pytest.mark.parametrize("command, pushes", [
    ("apply", True), ("destroy", True), ("plan", False),
    (["terraform", "apply", "-auto-approve"], True), (["/usr/bin/tofu", "destroy"], True),
    (["tofu", "plan", "-out=x"], False), (["make", "apply"], False),
    (["tofu", "-chdir=.", "apply", "-auto-approve"], True), (["tofu", "-version"], False),
])
def test_a_run_of_several_stacks_pushes_what_one_stack_would(command, pushes):
    """Both decide from one function: a command line `terraform apply …` over
    several stacks re-checks the upstream once locked, as one stack does."""
    many = object.__new__(s.ManyRun)
    many.command = command
    assert many.pushing() is pushes


def test_a_stack_without_a_stack_yml_has_the_defaults():
    plain = s.Stack("alpha")
    assert (plain.depends_on, plain.inputs, plain.mock_outputs) == ((), (), {})
    assert s.Stack("beta").mock_outputs is not plain.mock_outputs, "no dict shared between stacks"
