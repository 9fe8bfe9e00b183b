"""The AWS Lambda API of a running hearth, driven by boto3 as a user would.

Run by crates/cli/tests/lambda_api.rs with HEARTH_URL and HEARTH_API_KEY of a fresh
`hearth up`; exits non-zero (with a traceback) on the first check that fails.
"""

import base64
import io
import json
import os
import sys
import time
import urllib.request
import uuid
import zipfile

import boto3
import botocore.config
from botocore.exceptions import ClientError, ReadTimeoutError

URL = os.environ["HEARTH_URL"]
KEY = os.environ["HEARTH_API_KEY"]

APP_V1 = b'''
import os, time

def lambda_handler(event, context):
    print("hello from the log", event.get("n"))
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"v": 1, "event": event, "greeting": os.environ.get("GREETING")}
'''

APP_V2 = APP_V1.replace(b'"v": 1', b'"v": 2')


def zip_of(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def client(secret=KEY, access_key="admin", **config):
    return boto3.client(
        "lambda",
        endpoint_url=URL,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        config=botocore.config.Config(
            read_timeout=config.pop("read_timeout", 900),
            retries={"max_attempts": config.pop("max_attempts", 1), "mode": "standard"},
            **config,
        ),
    )


def error_code(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{call.__name__} did not fail")


def hearth_get(path):
    request = urllib.request.Request(URL + path, headers={"Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def eventually(what, check, seconds=120):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def step(name):
    print(f"lambda_api: {name}", flush=True)


def main():
    lam = client()
    name = "boto-" + uuid.uuid4().hex[:8]

    step("CreateFunction from a zip, with a handler outside main.py")
    created = lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/ignored",
        Handler="app.lambda_handler",
        Code={"ZipFile": zip_of({"app.py": APP_V1})},
        MemorySize=256,
        Timeout=5,
        Environment={"Variables": {"GREETING": "hi"}},
        Description="made by boto3",
    )
    assert created["FunctionName"] == name, created
    assert created["Handler"] == "app.lambda_handler", created
    assert created["MemorySize"] == 256 and created["Timeout"] == 5, created
    assert created["Runtime"].startswith("python3"), created
    assert created["FunctionArn"].endswith(":function:" + name), created
    assert error_code(
        lam.create_function,
        FunctionName=name,
        Runtime="python3.12",
        Role="r",
        Handler="app.lambda_handler",
        Code={"ZipFile": zip_of({"app.py": APP_V1})},
    ) == ("ResourceConflictException", 409)

    step("Invoke RequestResponse with Tail logs")
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 1}), LogType="Tail")
    assert out["StatusCode"] == 200, out
    payload = json.loads(out["Payload"].read())
    assert payload == {"v": 1, "event": {"n": 1}, "greeting": "hi"}, payload
    assert "FunctionError" not in out, out
    assert out["ExecutedVersion"] == "1", out
    log = base64.b64decode(out["LogResult"]).decode()
    assert "hello from the log 1" in log and "REPORT RequestId" in log, log
    assert len(base64.b64decode(out["LogResult"])) <= 4096

    step("a function error is a 200 with X-Amz-Function-Error")
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"fail": True}))
    assert out["StatusCode"] == 200 and out["FunctionError"] == "Unhandled", out
    error = json.loads(out["Payload"].read())
    assert error["errorType"] == "ValueError", error
    assert "asked to fail" in error["errorMessage"], error
    assert isinstance(error["stackTrace"], list), error

    step("Invoke Event (202) runs later; DryRun (204) runs nothing")
    out = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 2}))
    assert out["StatusCode"] == 202, out
    request_id = out["ResponseMetadata"]["RequestId"]
    done = eventually(
        "the Event invocation to finish",
        lambda: (lambda i: i if i["status"] == "success" else None)(hearth_get(f"/v1/invocations/{request_id}")),
    )
    assert done["result"]["event"] == {"n": 2}, done
    out = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert out["StatusCode"] == 204, out

    step("GetFunction, GetFunctionConfiguration, UpdateFunctionConfiguration")
    got = lam.get_function(FunctionName=name)["Configuration"]
    assert got["MemorySize"] == 256 and got["Environment"]["Variables"] == {"GREETING": "hi"}, got
    updated = lam.update_function_configuration(
        FunctionName=name, MemorySize=512, Timeout=10, Environment={"Variables": {"GREETING": "hello"}}
    )
    assert updated["MemorySize"] == 512 and updated["Timeout"] == 10, updated
    conf = lam.get_function_configuration(FunctionName=name)
    assert conf["MemorySize"] == 512 and conf["Environment"]["Variables"] == {"GREETING": "hello"}, conf
    assert conf["Handler"] == "app.lambda_handler", conf
    payload = json.loads(lam.invoke(FunctionName=name, Payload=b'{"n": 3}')["Payload"].read())
    assert payload["greeting"] == "hello" and payload["v"] == 1, payload

    step("UpdateFunctionCode")
    lam.update_function_code(FunctionName=name, ZipFile=zip_of({"app.py": APP_V2}))
    out = lam.invoke(FunctionName=name, Payload=b'{"n": 4}')
    payload = json.loads(out["Payload"].read())
    assert payload["v"] == 2 and payload["greeting"] == "hello", payload
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 512

    step("an SDK retry of a long synchronous call attaches to the first run")
    impatient = client(read_timeout=2, max_attempts=3)
    before = len(hearth_get(f"/v1/functions/{name}/invocations?limit=1000")["invocations"])
    out = impatient.invoke(FunctionName=name, Payload=json.dumps({"sleep": 4, "n": 5}))
    payload = json.loads(out["Payload"].read())
    assert payload["event"]["n"] == 5, payload
    assert out["ResponseMetadata"]["RetryAttempts"] >= 1, out["ResponseMetadata"]
    after = hearth_get(f"/v1/functions/{name}/invocations?limit=1000")["invocations"]
    assert len(after) == before + 1, f"{len(after) - before} runs of one retried call"

    step("X-Hearth-Idempotency-Key: the same key gets the same invocation")
    keyed = client()
    key = uuid.uuid4().hex
    keyed.meta.events.register(
        "before-sign.lambda.Invoke",
        lambda request, **_: request.headers.__setitem__("X-Hearth-Idempotency-Key", key),
    )
    first = keyed.invoke(FunctionName=name, Payload=b'{"n": 6}')
    second = keyed.invoke(FunctionName=name, Payload=b'{"n": 6}')
    assert first["ResponseMetadata"]["RequestId"] == second["ResponseMetadata"]["RequestId"]
    assert second["ResponseMetadata"]["HTTPHeaders"].get("x-hearth-idempotent-replay") == "true"

    step("X-Hearth-Idempotency-Key on /v1 invoke too")
    def v1_invoke(key):
        request = urllib.request.Request(
            f"{URL}/v1/functions/{name}/invoke",
            data=b'{"n": 7}',
            method="POST",
            headers={"Authorization": "Bearer " + KEY, "X-Hearth-Idempotency-Key": key},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["id"]

    v1_key = uuid.uuid4().hex
    assert v1_invoke(v1_key) == v1_invoke(v1_key)
    assert v1_invoke(uuid.uuid4().hex) != v1_invoke(v1_key)

    step("errors: unknown function, bad parameter, too large, bad signatures")
    assert error_code(lam.invoke, FunctionName="no-such-fn", Payload=b"{}") == ("ResourceNotFoundException", 404)
    assert error_code(lam.get_function, FunctionName="no-such-fn")[0] == "ResourceNotFoundException"
    assert error_code(lam.update_function_configuration, FunctionName=name, MemorySize=20000)[0] == (
        "InvalidParameterValueException"
    )
    big = b'"' + b"x" * (6 * 1024 * 1024 + 10) + b'"'
    assert error_code(lam.invoke, FunctionName=name, Payload=big) == ("RequestEntityTooLargeException", 413)
    try:
        lam.invoke(FunctionName="no-such-fn", Payload=b"{}")
        raise AssertionError("invoking a missing function succeeded")
    except lam.exceptions.ResourceNotFoundException:
        pass
    assert error_code(client(secret="wrong").list_functions) == ("InvalidSignatureException", 403)
    assert error_code(client(access_key="nobody").list_functions) == ("UnrecognizedClientException", 403)

    step("ListFunctions and DeleteFunction")
    names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert name in names, names
    lam.delete_function(FunctionName=name)
    try:
        lam.get_function(FunctionName=name)
        raise AssertionError("a deleted function is still there")
    except lam.exceptions.ResourceNotFoundException:
        pass
    assert name not in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    print("lambda_api: all passed")


if __name__ == "__main__":
    sys.exit(main())
