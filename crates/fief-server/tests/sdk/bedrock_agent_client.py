"""boto3's bedrock-agent-runtime Retrieve and RetrieveAndGenerate against
fief, signing with AWS Signature V4 with a fief key's AWS pair (set by
tests/knowledge/answer.rs, with FIEF_URL, KB, QUESTION, EXPECTED, CANARY,
OTHER_KB, OTHER_CANARY and MODEL)."""
import os
import sys

import boto3

from botocore.config import Config

env = os.environ
client = boto3.client(
    "bedrock-agent-runtime",
    endpoint_url=env["FIEF_URL"],
    region_name="us-east-1",
    config=Config(read_timeout=20, connect_timeout=5, retries={"max_attempts": 1}),
)


def documents(results):
    return [r["location"]["customDocumentLocation"]["id"] for r in results]


found = client.retrieve(
    knowledgeBaseId=env["KB"],
    retrievalQuery={"text": env["QUESTION"]},
    retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}},
)
results = found["retrievalResults"]
assert len(results) == 2 and documents(results)[0] == env["EXPECTED"], found
assert all(env["CANARY"] in r["content"]["text"] and r["score"] > -1 for r in results), found
assert env["OTHER_CANARY"] not in str(found), found

# Bedrock's filter shape, translated to fief's.
narrowed = client.retrieve(
    knowledgeBaseId=env["KB"],
    retrievalQuery={"text": "anything at all"},
    retrievalConfiguration={
        "vectorSearchConfiguration": {
            "numberOfResults": 5,
            "filter": {"orAll": [
                {"equals": {"key": "topic", "value": env["EXPECTED"]}},
                {"startsWith": {"key": "topic", "value": "nothing-starts-so"}},
            ]},
        }
    },
)
assert documents(narrowed["retrievalResults"]) == [env["EXPECTED"]], narrowed


def rag(kb):
    return client.retrieve_and_generate(
        input={"text": env["QUESTION"]},
        retrieveAndGenerateConfiguration={
            "type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb,
                "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/" + env["MODEL"],
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 2}},
            },
        },
    )


generated = rag(env["KB"])
assert env["CANARY"] in generated["output"]["text"], generated
references = generated["citations"][0]["retrievedReferences"]
assert documents(references)[0] == env["EXPECTED"], generated
assert generated["sessionId"], generated
assert env["OTHER_CANARY"] not in str(generated), generated

for call in (
    lambda: client.retrieve(knowledgeBaseId=env["OTHER_KB"], retrievalQuery={"text": "q"}),
    lambda: rag(env["OTHER_KB"]),
):
    try:
        call()
        sys.exit("another tenant's knowledge base answered")
    except client.exceptions.AccessDeniedException:
        pass

print("bedrock agent sdk: ok")
