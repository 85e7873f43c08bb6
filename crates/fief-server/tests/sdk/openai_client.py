"""The official openai SDK against fief: every surface a tenant uses.

Run by tests/llm.rs with FIEF_URL, FIEF_KEY, MODEL, EMBED_MODEL and
FORBIDDEN (a model this tenant may not use) in the environment.
"""
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["FIEF_URL"] + "/v1", api_key=os.environ["FIEF_KEY"], max_retries=0, timeout=20)
model = os.environ["MODEL"]
ask = [{"role": "user", "content": "hello sdk"}]

print("chat", file=sys.stderr, flush=True)
whole = client.chat.completions.create(model=model, messages=ask)
text = whole.choices[0].message.content
assert "hello sdk" in text, whole
assert whole.model == model, whole.model
assert whole.usage.total_tokens > 0, whole.usage

print("stream", file=sys.stderr, flush=True)
streamed = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(model=model, messages=ask, stream=True)
    if chunk.choices
)
assert streamed == text, (streamed, text)

chunks = list(
    client.chat.completions.create(
        model=model, messages=ask, stream=True, stream_options={"include_usage": True}
    )
)
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, chunks[-1]
assert all(c.usage is None for c in chunks[:-1])

print("completions", file=sys.stderr, flush=True)
done = client.completions.create(model=model, prompt="complete me")
assert "complete me" in done.choices[0].text, done

print("models", file=sys.stderr, flush=True)
listed = [m.id for m in client.models.list()]
assert model in listed and os.environ["FORBIDDEN"] not in listed, listed

print("embeddings", file=sys.stderr, flush=True)
vectors = client.embeddings.create(model=os.environ["EMBED_MODEL"], input=["one", "two"])
assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0, vectors

try:
    client.chat.completions.create(model=os.environ["FORBIDDEN"], messages=ask)
    sys.exit("a forbidden model answered")
except openai.PermissionDeniedError as e:
    assert e.status_code == 403

print("openai sdk: ok")
