"""boto3's sagemaker-runtime invoke_endpoint against fief, signing with AWS
Signature V4: a fief key's id as the access key id, its secret as the secret
access key (set by tests/serving.rs with FIEF_URL, ENDPOINT, MODEL, INPUT,
EXPECTED, OTHER_ENDPOINT and OTHER_MODEL)."""
import datetime
import json
import os
import sys
from unittest import mock

import boto3
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError


def client(secret=None, hooks=()):
    c = boto3.client(
        "sagemaker-runtime",
        endpoint_url=os.environ["FIEF_URL"],
        region_name="eu-west-1",
        aws_access_key_id=os.environ["ACCESS_KEY"],
        aws_secret_access_key=secret or os.environ["SECRET_KEY"],
        config=Config(read_timeout=20, connect_timeout=5, retries={"max_attempts": 1}),
    )
    for event, hook in hooks:
        c.meta.events.register(event, hook)
    return c


def invoke(c, endpoint, model):
    return c.invoke_endpoint(
        EndpointName=endpoint,
        TargetModel=model,
        Body=os.environ["INPUT"],
        ContentType="application/json",
    )


def refused(status, call, reason):
    try:
        call()
    except ClientError as e:
        got = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got == status, (reason, got, e.response)
        return e
    sys.exit(f"{reason}: answered 200")


expected = json.loads(os.environ["EXPECTED"])
ok = client()
for endpoint in ["shared", os.environ["ENDPOINT"]]:
    answer = invoke(ok, endpoint, os.environ["MODEL"])
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200, answer
    body = json.loads(answer["Body"].read())
    assert body == expected, (endpoint, body, expected)

refused(403, lambda: invoke(ok, os.environ["OTHER_ENDPOINT"], os.environ["MODEL"]), "another tenant's endpoint")
refused(403, lambda: invoke(ok, "shared", os.environ["OTHER_MODEL"]), "another tenant's model")

wrong = client(secret="0" * 64)
refused(401, lambda: invoke(wrong, "shared", os.environ["MODEL"]), "a wrong secret")


def tamper(request, **_):
    # One hex digit of the signature changed after signing.
    auth = request.headers["Authorization"]
    if isinstance(auth, bytes):
        auth = auth.decode()
    last = auth[-1]
    request.headers["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")


tampered = client(hooks=[("before-send.sagemaker-runtime", tamper)])
refused(401, lambda: invoke(tampered, "shared", os.environ["MODEL"]), "a tampered signature")


def altered_body(request, **_):
    # The body changed after signing: the payload hash no longer matches.
    request.body = request.body.replace(b"0.5", b"9.5")


altered = client(hooks=[("before-send.sagemaker-runtime", altered_body)])
refused(401, lambda: invoke(altered, "shared", os.environ["MODEL"]), "an altered body")

twenty_minutes_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
with mock.patch.object(botocore.auth, "get_current_datetime", return_value=twenty_minutes_ago):
    refused(401, lambda: invoke(client(), "shared", os.environ["MODEL"]), "a request dated 20 minutes ago")

print("sagemaker sdk: ok")
