"""Drives modelrollout-proxy with the official openai client (run by openai_python.rs).

PROXY_BASE_URL points at the proxy; "chat-default" is served at weight 0 (stable answers) and
"embed-default" at weight 100 (canary answers). Exits non-zero with a message on any mismatch.
"""
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["PROXY_BASE_URL"], api_key="sk-test", max_retries=0)
messages = [{"role": "user", "content": "hello"}]

# A plain chat completion; the raw response shows the track header.
raw = client.chat.completions.with_raw_response.create(model="chat-default", messages=messages)
completion = raw.parse()
assert raw.headers["x-modelrollout-track"] == "stable", raw.headers
assert completion.model == "stable-model", completion.model
assert completion.choices[0].message.content, completion
assert completion.usage.prompt_tokens == 10, completion.usage
print("chat:", completion.model, repr(completion.choices[0].message.content))

# A streamed chat completion with the final usage chunk.
pieces, usage = [], None
stream = client.chat.completions.create(
    model="chat-default", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
assert len(pieces) >= 2, pieces
assert usage is not None and usage.completion_tokens == 20, usage
print("stream:", len(pieces), "pieces", "usage", usage.prompt_tokens, usage.completion_tokens)

# Embeddings, answered by the canary.
embeddings = client.embeddings.create(model="embed-default", input=["a", "b"])
assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) > 0, embeddings
assert embeddings.model == "canary-model", embeddings.model
print("embeddings:", embeddings.model, len(embeddings.data))

# An unknown model raises NotFoundError carrying the proxy's model_not_found error.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
except openai.NotFoundError as error:
    assert error.status_code == 404
    assert error.code == "model_not_found", error.body
    assert "chat-default" in error.message, error.message
    print("unknown model: NotFoundError", error.code)
else:
    sys.exit("expected openai.NotFoundError for an unknown model")

# The model list holds the served aliases.
ids = sorted(model.id for model in client.models.list())
assert ids == ["chat-default", "embed-default"], ids
print("models:", ids)
print("ok")
