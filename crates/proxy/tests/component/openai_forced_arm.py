"""The forced arm through the official openai client (run by guards.rs): `extra_headers`.

PROXY_BASE_URL points at the proxy; "chat-default" is served at weight 0 with forceArmHeader
X-Force-Arm. Exits non-zero with a message on any mismatch, prints "ok" last.
"""
import os

import openai

client = openai.OpenAI(base_url=os.environ["PROXY_BASE_URL"], api_key="sk-test", max_retries=0)
messages = [{"role": "user", "content": "hello"}]

# A tester forces the canary at 0 %.
raw = client.chat.completions.with_raw_response.create(
    model="chat-default", messages=messages, extra_headers={"X-Force-Arm": "canary"}
)
assert raw.headers["x-modelrollout-track"] == "canary", raw.headers
assert raw.parse().model == "canary-model", raw.parse().model

# Everyone else stays on stable.
raw = client.chat.completions.with_raw_response.create(model="chat-default", messages=messages)
assert raw.headers["x-modelrollout-track"] == "stable", raw.headers

# A typo is refused, not placed at random.
try:
    client.chat.completions.create(
        model="chat-default", messages=messages, extra_headers={"X-Force-Arm": "canry"}
    )
    raise SystemExit("a forced arm of 'canry' was accepted")
except openai.BadRequestError as error:
    assert error.code == "invalid_forced_arm", error
    assert "canary or stable" in error.message, error.message

print("ok")
