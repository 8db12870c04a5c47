# -*- coding: utf-8 -*-
# Copyright: guardrail.ecs contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every module and plugin that talks to AWS.
    DOCUMENTATION = r"""
options:
  region:
    description:
      - The AWS region to use.
      - When not set, the C(AWS_REGION) or C(AWS_DEFAULT_REGION) environment variable or the profile's region is used.
    type: str
    aliases: [aws_region]
  aws_profile:
    description:
      - A named profile from the AWS shared configuration and credentials files.
      - Cannot be used together with O(access_key) and O(secret_key).
      - Named C(aws_profile), not C(profile), because C(profile) is a stack's profile
        throughout the collection; C(module_defaults) for C(group/guardrail.ecs.aws)
        set it under this name.
    type: str
  access_key:
    description:
      - AWS access key ID. When not set, the usual boto3 credential chain is used
        (environment, shared files, instance or task role).
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - AWS secret access key. Never logged.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - AWS session token for temporary credentials. Never logged.
    type: str
    aliases: [aws_session_token]
  endpoint_url:
    description:
      - Send requests to this URL instead of the AWS endpoint, for a VPC endpoint,
        a proxy or a local stand-in such as moto.
      - When not set, the C(AWS_ENDPOINT_URL) environment variable is honoured by boto3.
    type: str
    aliases: [aws_endpoint_url]
requirements:
  - boto3 >= 1.28.0
  - botocore >= 1.31.0
"""
