"""Bad events on the Lambda-compatible invoke route, sent by boto3 as a client would.

Run by crates/cli/tests/bad_events.rs with HEARTH_URL and HEARTH_API_KEY of a `hearth up`
where the function `echo` exists; exits non-zero on the first check that fails.
"""

import os

import boto3
import botocore.config
from botocore.exceptions import ClientError

lam = boto3.client(
    "lambda",
    endpoint_url=os.environ["HEARTH_URL"],
    region_name="us-east-1",
    aws_access_key_id="admin",
    aws_secret_access_key=os.environ["HEARTH_API_KEY"],
    config=botocore.config.Config(read_timeout=300, retries={"max_attempts": 1}),
)

BAD = {
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "not UTF-8": b'{"action": "look", "x": "\xff\xfe"}',
}

for what, payload in BAD.items():
    try:
        lam.invoke(FunctionName="echo", Payload=payload)
    except ClientError as e:
        code = e.response["Error"]["Code"]
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (code, status) == ("InvalidRequestContentException", 400), (what, code, status)
        continue
    raise AssertionError(f"the Lambda route ran the function on an event {what}")

answer = lam.invoke(FunctionName="echo", Payload=b'{"action": "look"}')
assert answer["StatusCode"] == 200, answer
assert "FunctionError" not in answer, answer["Payload"].read()
print("bad events refused on the Lambda route")
