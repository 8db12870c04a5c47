"""The shared AWS retry policy and error shaping."""
import botocore.exceptions
import pytest

from ansible_collections.guardrail.ecs.plugins.module_utils.common import aws


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


class FailingClient(FakeClient):
    """Fails with the given exceptions (instances), then answers."""

    def __init__(self, errors):
        super().__init__([])
        self.errors = list(errors)

    def describe_services(self, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"services": []}


def server_error(code, status):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "boom"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "DescribeServices")


@pytest.mark.parametrize("error", [
    server_error("InternalError", 500),
    server_error("ServiceUnavailable", 503),
    server_error("Whatever", 502),
    server_error("RequestTimeout", 400),
    botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
])
def test_server_and_connection_errors_are_retried_as_the_standard_mode_does(error):
    sleeps = []
    client = FailingClient([error, error])
    assert aws.call(client, "describe_services", sleep=sleeps.append) == {"services": []}
    assert client.calls == 3 and len(sleeps) == 2
    assert all(0 <= s <= 0.2 * 2 ** i for i, s in enumerate(sleeps))
    # three attempts in all, then the error is reported
    client = FailingClient([error] * 3)
    with pytest.raises(aws.AWSError):
        aws.call(client, "describe_services", sleep=lambda s: None)
    assert client.calls == 3


def test_backoff_is_full_jitter_and_capped(monkeypatch):
    draws = []
    monkeypatch.setattr(aws.random, "uniform", lambda low, high: draws.append((low, high)) or high)
    assert [aws.backoff(attempt) for attempt in range(10)][-1] == 20.0
    assert draws[:3] == [(0, 0.2), (0, 0.4), (0, 0.8)] and all(low == 0 for low, _high in draws)


@pytest.mark.parametrize("error", [server_error("ValidationException", 400), server_error("NotFound", 404)])
def test_client_errors_are_not_retried(error):
    client = FailingClient([error])
    with pytest.raises(aws.AWSError):
        aws.call(client, "describe_services", sleep=lambda s: None)
    assert client.calls == 1


@pytest.mark.parametrize("error", [botocore.exceptions.NoCredentialsError(), botocore.exceptions.NoRegionError(),
                                   botocore.exceptions.ProfileNotFound(profile="nope")])
def test_configuration_errors_are_named_as_such_and_not_retried(error):
    client = FailingClient([error])
    with pytest.raises(aws.AWSError, match="AWS configuration error") as err:
        aws.call(client, "describe_services", sleep=lambda s: None)
    assert err.value.configuration and client.calls == 1
