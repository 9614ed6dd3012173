"""Drives a running metis-serve with the official `openai` client (see openai_client.rs).

Environment: METIS_BASE_URL (http://127.0.0.1:PORT/v1), METIS_MODEL (served model id).
The fixture model is random, so the checks are about protocol and shape, not text quality.
The server prefills `<think>\n`, so until a `</think>` everything generated is reasoning.
"""

import json
import os
import sys
import urllib.request

import openai

BASE = os.environ["METIS_BASE_URL"]
MODEL = os.environ["METIS_MODEL"]
client = openai.OpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=120)
USER = [{"role": "user", "content": "Which CWE covers SQL injection?"}]
# ignore_eos (vLLM extension) so the random model always produces max_tokens tokens.
EXTRA = {"ignore_eos": True}


def reasoning_of(obj):
    """Reasoning under either field name (vLLM renamed reasoning_content to reasoning)."""
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("reasoning_content") or extra.get("reasoning") or getattr(
        obj, "reasoning_content", None
    )


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


# Models list.
models = client.models.list()
ids = [m.id for m in models.data]
check(ids == [MODEL], f"models list is [{MODEL}] (got {ids})")

# Chat, non-streaming.
r = client.chat.completions.create(
    model=MODEL, messages=USER, max_tokens=12, temperature=0, seed=7, extra_body=EXTRA
)
c = r.choices[0]
check(r.object == "chat.completion", "chat object type")
check(c.finish_reason == "length", f"finish_reason length (got {c.finish_reason})")
check(r.usage.completion_tokens == 12, f"12 completion tokens (got {r.usage})")
check(
    r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
    "usage adds up",
)
extra = c.message.model_extra or {}
check(
    isinstance(extra.get("reasoning_content"), str) and extra["reasoning_content"],
    "message.reasoning_content present",
)
check(extra.get("reasoning") == extra.get("reasoning_content"), "message.reasoning mirrors it")
check(c.message.content in (None, ""), f"no answer before </think> (got {c.message.content!r})")
reasoning_plain = extra["reasoning_content"]

# Chat, streaming with usage.
stream = client.chat.completions.create(
    model=MODEL,
    messages=USER,
    max_tokens=12,
    temperature=0,
    seed=7,
    stream=True,
    stream_options={"include_usage": True},
    extra_body=EXTRA,
)
chunks = list(stream)  # the SDK stops at data: [DONE]
check(len(chunks) >= 3, f"several chunks ({len(chunks)})")
check(all(ch.object == "chat.completion.chunk" for ch in chunks), "chunk object type")
check(chunks[0].choices[0].delta.role == "assistant", "first delta carries the role")
reasoning = "".join(
    reasoning_of(ch.choices[0].delta) or "" for ch in chunks if ch.choices
)
content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
check(finishes == ["length"], f"one finish_reason length (got {finishes})")
last = chunks[-1]
check(last.choices == [] and last.usage is not None, "last chunk has usage and no choices")
check(last.usage.completion_tokens == 12, f"stream usage counts 12 tokens ({last.usage})")
check(reasoning.strip() == reasoning_plain, "streamed reasoning equals the non-streamed one")
check(content == "", "no answer content streamed before </think>")
check(
    all(ch.usage is None for ch in chunks[:-1]),
    "usage is null on every chunk but the last",
)

# Raw SSE: the stream ends with data: [DONE].
req = urllib.request.Request(
    BASE + "/chat/completions",
    data=json.dumps(
        {"model": MODEL, "messages": USER, "max_tokens": 3, "stream": True, "ignore_eos": True}
    ).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(req, timeout=60) as resp:
    check(resp.headers["Content-Type"].startswith("text/event-stream"), "SSE content type")
    lines = [l.decode().strip() for l in resp.read().splitlines() if l.strip()]
check(lines[-1] == "data: [DONE]", f"stream ends with [DONE] (got {lines[-1]!r})")

# Completions (raw prompt, no reasoning split).
r = client.completions.create(
    model=MODEL, prompt="The quick brown fox", max_tokens=5, temperature=0, extra_body=EXTRA
)
check(r.object == "text_completion" and isinstance(r.choices[0].text, str), "completion text")
check(r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length", "completion usage")
text = "".join(
    ch.choices[0].text
    for ch in client.completions.create(
        model=MODEL, prompt="The quick brown fox", max_tokens=5, temperature=0,
        stream=True, extra_body=EXTRA,
    )
    if ch.choices
)
check(text == r.choices[0].text, "streamed completion equals the plain one")

# Errors map to the SDK's exception types.
for bad, what in [
    (dict(messages=USER, temperature=5), "invalid temperature"),
    (dict(messages=[]), "empty messages"),
    (dict(messages=USER, max_tokens=10**9), "max_tokens over the cap"),
]:
    try:
        client.chat.completions.create(model=MODEL, **bad)
        check(False, f"{what} is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.body and e.body.get("message"), f"{what} -> BadRequestError")
try:
    client.post("/chat/completions", body={"model": MODEL}, cast_to=object)
    check(False, "missing messages is refused")
except openai.BadRequestError as e:
    check("messages" in str(e), "missing messages -> BadRequestError")
try:
    client.chat.completions.create(model="no-such-model", messages=USER)
    check(False, "unknown model is refused")
except openai.NotFoundError:
    check(True, "unknown model -> NotFoundError")

print("ALL OK")
