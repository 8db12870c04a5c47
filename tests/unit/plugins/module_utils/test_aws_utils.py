"""The shared AWS retry policy and error shaping."""
import botocore.exceptions
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils import aws


class FakeClient:
    """Stands in for a boto3 client: fails with the given codes, then answers."""

    class meta:  # noqa: N801 - mirrors boto3's client.meta
        class service_model:  # noqa: N801
            service_name = "ecs"

    def __init__(self, codes):
        self.codes = list(codes)
        self.calls = 0

    def describe_services(self, **kwargs):
        self.calls += 1
        if self.codes:
            code = self.codes.pop(0)
            raise botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "no"}}, "DescribeServices")
        return {"services": [], "echo": kwargs}


def test_throttling_is_retried_with_bounded_jittered_sleeps():
    sleeps = []
    client = FakeClient(["ThrottlingException", "Throttling", "TooManyRequestsException"])
    result = aws.call(client, "describe_services", sleep=sleeps.append, cluster="c")
    assert result["echo"] == {"cluster": "c"}
    assert client.calls == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.2 * 2 ** i for i, s in enumerate(sleeps))


def test_throttling_gives_up_after_the_retry_budget():
    client = FakeClient(["Throttling"] * 5)
    with pytest.raises(aws.AWSError) as err:
        aws.call(client, "describe_services", retries=2, sleep=lambda s: None)
    assert client.calls == 3
    assert err.value.code == "Throttling"


def test_missing_permission_names_the_api_action():
    client = FakeClient(["AccessDeniedException"])
    with pytest.raises(aws.AWSError) as err:
        aws.call(client, "describe_services", sleep=lambda s: None)
    assert err.value.action == "ecs:DescribeServices"
    assert "permission denied for ecs:DescribeServices" in str(err.value)
    assert client.calls == 1


def test_other_errors_carry_the_code_and_are_not_retried():
    client = FakeClient(["ClusterNotFoundException"])
    with pytest.raises(aws.AWSError) as err:
        aws.call(client, "describe_services", sleep=lambda s: None)
    assert err.value.code == "ClusterNotFoundException"
    assert client.calls == 1


def test_options_are_read_from_the_shared_spec():
    params = {key: f"v-{key}" for key in aws.AWS_ARGUMENT_SPEC}
    params["profile"] = "prod"  # a stack's profile, never the AWS one
    options = aws.aws_options(params)
    assert options["profile"] == "v-aws_profile"
    assert options["endpoint_url"] == "v-endpoint_url"
    assert "aws_profile" not in options
