# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS access shared by the collection's modules, action and lookup plugins.

Plain Python, no AnsibleModule: connection options, a client factory, and one
retry policy (jittered exponential backoff on throttling) for every call.
"""
from __future__ import annotations

import importlib.util
import random
import sys
import time

# boto3 takes a noticeable fraction of a second to import; plugins that may
# never call AWS (the git lock backend, the workflow) must not pay for it.
HAS_BOTO3 = importlib.util.find_spec("boto3") is not None and importlib.util.find_spec("botocore") is not None
BOTO3_IMPORT_ERROR = None if HAS_BOTO3 else ImportError("No module named 'boto3' (or 'botocore')")

# The argument spec matching doc fragment guardrail.ecs.aws.
AWS_ARGUMENT_SPEC = dict(
    region=dict(type="str", aliases=["aws_region"]),
    aws_profile=dict(type="str"),
    access_key=dict(type="str", aliases=["aws_access_key_id"], no_log=False),
    secret_key=dict(type="str", aliases=["aws_secret_access_key"], no_log=True),
    session_token=dict(type="str", aliases=["aws_session_token"], no_log=True),
    endpoint_url=dict(type="str", aliases=["aws_endpoint_url"]),
)
AWS_MUTUALLY_EXCLUSIVE = [["aws_profile", "access_key"], ["aws_profile", "secret_key"]]
AWS_REQUIRED_TOGETHER = [["access_key", "secret_key"]]

THROTTLING_CODES = frozenset((
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestLimitExceeded", "SlowDown", "RequestThrottled", "PriorRequestNotComplete",
))
# What botocore's standard retry mode treats as transient besides throttling.
TRANSIENT_CODES = frozenset((
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError",
    "InternalFailure", "InternalServerError", "ServiceUnavailable", "TransactionInProgressException",
))
TRANSIENT_STATUS = frozenset((500, 502, 503, 504))
# botocore exceptions that mean the connection failed or timed out (class names,
# so the policy is known without importing botocore).
CONNECTION_ERRORS = frozenset((
    "ConnectionError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "HTTPClientError", "ProxyConnectionError",
))
# botocore exceptions that mean the caller's configuration is incomplete or wrong.
CONFIGURATION_ERRORS = frozenset((
    "NoRegionError", "NoCredentialsError", "PartialCredentialsError", "ProfileNotFound",
    "InvalidRegionError", "InvalidConfigError", "ConfigNotFound",
))
PERMISSION_CODES = frozenset((
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
))


class AWSError(Exception):
    """An AWS call failed. Carries the API action and AWS error code."""

    def __init__(self, message, action=None, code=None, configuration=False):
        super().__init__(message)
        self.action = action
        self.code = code
        # True when the region, credentials or profile are missing or wrong:
        # a configuration error, not a failure of the service.
        self.configuration = configuration


def aws_options(params):
    """The AWS connection options out of a module's or plugin's parameters.

    The option is `aws_profile` because `profile` names a stack's profile across
    the collection; here it becomes the session's `profile`."""
    options = {key: params.get(key) for key in AWS_ARGUMENT_SPEC if key != "aws_profile"}
    options["profile"] = params.get("aws_profile")
    return options


def missing_boto3():
    """Why AWS cannot be called from this Python, or None when it can."""
    if HAS_BOTO3:
        return None
    return (f"boto3 and botocore are not installed for the Python that runs this ({sys.executable}): "
            f"install them there ({sys.executable} -m pip install boto3), or use a Python that has them "
            "(for the guardrail command: GUARDRAIL_PYTHON)")


def session(options):
    missing = missing_boto3()
    if missing:
        raise AWSError(missing, configuration=True)
    import boto3  # pylint: disable=import-outside-toplevel
    return boto3.session.Session(
        aws_access_key_id=options.get("access_key"),
        aws_secret_access_key=options.get("secret_key"),
        aws_session_token=options.get("session_token"),
        profile_name=options.get("profile"),
        region_name=options.get("region"),
    )


def client(service, options, max_attempts=1):
    """A boto3 client for `service`. botocore's own retries are off by default:
    `call()` retries, so one policy applies everywhere and is counted once."""
    missing = missing_boto3()
    if missing:
        raise AWSError(missing, configuration=True)
    import botocore.config  # pylint: disable=import-outside-toplevel
    import botocore.exceptions  # pylint: disable=import-outside-toplevel
    config = botocore.config.Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                                    user_agent_extra="guardrail.ecs")
    try:
        return session(options).client(service, endpoint_url=options.get("endpoint_url") or None,
                                       config=config)
    except botocore.exceptions.BotoCoreError as exc:
        configuration = type(exc).__name__ in CONFIGURATION_ERRORS
        raise AWSError(f"{'AWS configuration error: ' if configuration else ''}cannot create the {service} "
                       f"client: {exc}", configuration=configuration) from exc


def error_code(exc):
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def _is_botocore_error(exc):
    if not HAS_BOTO3:
        return False
    import botocore.exceptions  # pylint: disable=import-outside-toplevel
    return isinstance(exc, botocore.exceptions.BotoCoreError)


def _status(exc):
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _exception_names(exc):
    return {cls.__name__ for cls in type(exc).__mro__}


def retry_kind(exc):
    """"throttling", "transient" (a server or connection error) or None: what
    botocore's standard retry mode would retry."""
    code = error_code(exc)
    if code in THROTTLING_CODES:
        return "throttling"
    if code in TRANSIENT_CODES or _status(exc) in TRANSIENT_STATUS:
        return "transient"
    if code is None and _exception_names(exc) & CONNECTION_ERRORS:
        return "transient"
    return None


def backoff(attempt, base_delay=0.2, max_delay=20.0):
    """Full jitter: a uniform wait between 0 and base_delay * 2**attempt, capped."""
    return random.uniform(0, min(max_delay, base_delay * (2 ** attempt)))


def call(api_client, action, retries=8, transient_retries=2, base_delay=0.2, max_delay=20.0,
         sleep=time.sleep, **kwargs):
    """Calls `api_client.<action>(**kwargs)`. Throttling is retried up to
    `retries` times, server errors (5xx, timeouts) and connection errors up to
    `transient_retries` times (three attempts, as botocore's standard mode), each
    after a full-jitter exponential backoff. Other errors raise AWSError naming
    the action and code; a missing permission says which API action was refused,
    a missing region, credentials or profile is a configuration error."""
    method = getattr(api_client, action)
    service = api_client.meta.service_model.service_name if hasattr(api_client, "meta") else "aws"
    api_name = f"{service}:{''.join(part.capitalize() for part in action.split('_'))}"
    attempt = 0
    while True:
        try:
            return method(**kwargs)
        except Exception as exc:  # botocore errors are not importable without boto3
            kind = retry_kind(exc)
            if (kind == "throttling" and attempt < retries) or (kind == "transient" and attempt < transient_retries):
                sleep(backoff(attempt, base_delay, max_delay))
                attempt += 1
                continue
            code = error_code(exc)
            if _exception_names(exc) & CONFIGURATION_ERRORS:
                raise AWSError(f"AWS configuration error for {api_name}: {exc}", action=api_name,
                               configuration=True) from exc
            if code in PERMISSION_CODES:
                raise AWSError(f"permission denied for {api_name}: {exc}", action=api_name, code=code) from exc
            if code is not None:
                raise AWSError(f"{api_name} failed ({code}): {exc}", action=api_name, code=code) from exc
            if _is_botocore_error(exc):
                raise AWSError(f"{api_name} failed: {exc}", action=api_name) from exc
            raise


def paginate(api_client, action, result_key, **kwargs):
    """Yields every item of `result_key` across pages, each page through call()."""
    paginator = api_client.get_paginator(action)
    # Drive the paginator page by page so each request gets the retry policy.
    token = None
    input_token = paginator._pagination_cfg["input_token"]
    output_token = paginator._pagination_cfg["output_token"]
    input_token = input_token[0] if isinstance(input_token, list) else input_token
    output_token = output_token[0] if isinstance(output_token, list) else output_token
    while True:
        args = dict(kwargs)
        if token:
            args[input_token] = token
        page = call(api_client, action, **args)
        yield from page.get(result_key, [])
        token = page.get(output_token)
        if not token:
            return
