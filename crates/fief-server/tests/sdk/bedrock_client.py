"""boto3's bedrock-runtime Converse and ConverseStream against fief, with a
fief API key as AWS_BEARER_TOKEN_BEDROCK (set by tests/llm.rs together with
FIEF_URL, MODEL and FORBIDDEN)."""
import os
import sys

import boto3

from botocore.config import Config

client = boto3.client(
    "bedrock-runtime",
    endpoint_url=os.environ["FIEF_URL"],
    region_name="us-east-1",
    config=Config(read_timeout=20, connect_timeout=5, retries={"max_attempts": 1}),
)
model = os.environ["MODEL"]
ask = [{"role": "user", "content": [{"text": "hello bedrock"}]}]

answer = client.converse(
    modelId=model, messages=ask, system=[{"text": "be brief"}], inferenceConfig={"maxTokens": 100}
)
text = answer["output"]["message"]["content"][0]["text"]
assert "hello bedrock" in text, answer
assert answer["stopReason"] == "end_turn", answer
assert answer["usage"]["totalTokens"] > 0, answer

streamed, stop, usage = "", None, None
for event in client.converse_stream(modelId=model, messages=ask)["stream"]:
    if "contentBlockDelta" in event:
        streamed += event["contentBlockDelta"]["delta"]["text"]
    if "messageStop" in event:
        stop = event["messageStop"]["stopReason"]
    if "metadata" in event:
        usage = event["metadata"]["usage"]
assert "hello bedrock" in streamed, streamed
assert stop == "end_turn" and usage and usage["totalTokens"] > 0, (stop, usage)

try:
    client.converse(modelId=os.environ["FORBIDDEN"], messages=ask)
    sys.exit("a forbidden model answered")
except client.exceptions.AccessDeniedException:
    pass

print("bedrock sdk: ok")
