"""`moram serve` checked with the official `openai` Python client (a client moram did not write).

Run by crates/moram-cli/tests/serve.rs against a server on loopback:
    python openai_client.py BASE_URL API_KEY EXPECTED.json
EXPECTED holds the model id, prompts with the answers `moram generate` gave them, and one chat
prompt with its answer. Prints "ok" when every check passes; an assertion names the one that
failed.
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
from openai import OpenAI


def main() -> None:
    base, key, expected_path = sys.argv[1:4]
    with open(expected_path) as f:
        exp = json.load(f)
    model, prompts, answers = exp["model"], exp["prompts"], exp["answers"]
    client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)

    ids = [m.id for m in client.models.list().data]
    assert ids == [model], ids

    r = client.completions.create(model=model, prompt=prompts[0])
    assert r.choices[0].text == answers[0], (r.choices[0].text, answers[0])
    assert r.usage.completion_tokens >= 1 and r.choices[0].finish_reason in ("stop", "length"), r

    streamed = client.completions.create(model=model, prompt=prompts[0], stream=True)
    text = "".join(chunk.choices[0].text for chunk in streamed)
    assert text == answers[0], (text, answers[0])

    messages = [{"role": "user", "content": exp["chat_prompt"]}]
    chat = client.chat.completions.create(model=model, messages=messages)
    assert chat.choices[0].message.content == exp["chat_answer"], (chat.choices[0].message.content, exp["chat_answer"])
    streamed = client.chat.completions.create(model=model, messages=messages, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == exp["chat_answer"], (text, exp["chat_answer"])

    def ask(i: int) -> str:
        return client.completions.create(model=model, prompt=prompts[i % len(prompts)]).choices[0].text

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(32)))
    assert got == [answers[i % len(answers)] for i in range(32)], got

    try:
        client.completions.create(model=model, prompt="a", max_tokens=10**6)
        raise AssertionError("max_tokens beyond the server's limit was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "max_tokens", e.body

    bad = OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    print("ok")


if __name__ == "__main__":
    main()
