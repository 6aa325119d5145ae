"""The fake Gemini speaks generateContent well enough for the real google-genai client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpcore2
import httpx2
import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.gemini_api import FakeGemini, echo_summary

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

MODEL = "gemini-2.5-flash"


@pytest.fixture
def gm() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


def client(fake: FakeGemini, key: str | None = None, timeout_ms: int | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=fake.base_url, api_version="v1beta", timeout=timeout_ms)
    return genai.Client(api_key=key or fake.api_key, http_options=options)


def test_generate_content_returns_the_configured_text_and_records_the_prompt(
    gm: FakeGemini,
) -> None:
    c = client(gm)  # keep the client alive: a dropped Client closes its connection pool
    reply = c.models.generate_content(model=MODEL, contents="RSI 28, price at band")
    assert reply.text == gm.answer
    assert gm.prompts == ["RSI 28, price at band"]
    [call] = gm.calls
    assert (call.version, call.model, call.api_key) == ("v1beta", MODEL, gm.api_key)


def test_default_echo_answer_is_deterministic_and_traceable(gm: FakeGemini) -> None:
    gm.answer = None
    prompt = "Summarise BTCUSDT: EMA cross up, volume rising"
    c = client(gm)
    first = c.models.generate_content(model=MODEL, contents=prompt).text
    again = c.models.generate_content(model=MODEL, contents=prompt).text
    assert first == again == echo_summary(prompt)
    assert "EMA cross up" in (first or "")


async def test_async_client_works_too(gm: FakeGemini) -> None:
    c = client(gm)
    reply = await c.aio.models.generate_content(model=MODEL, contents="async")
    assert reply.text == gm.answer


def test_wrong_key_is_a_client_error(gm: FakeGemini) -> None:
    c = client(gm, key="wrong-key")
    with pytest.raises(errors.ClientError) as caught:
        c.models.generate_content(model=MODEL, contents="x")
    assert caught.value.code == 400
    assert gm.prompts == []


@pytest.mark.parametrize(
    ("status", "kind", "name"),
    [(429, errors.ClientError, "RESOURCE_EXHAUSTED"), (503, errors.ServerError, "UNAVAILABLE")],
)
def test_injected_errors_map_to_the_client_error_types(
    gm: FakeGemini, status: int, kind: type[errors.APIError], name: str
) -> None:
    gm.inject(status, message="quota")
    c = client(gm)
    with pytest.raises(kind) as caught:
        c.models.generate_content(model=MODEL, contents="x")
    assert (caught.value.code, caught.value.status, caught.value.message) == (status, name, "quota")
    assert c.models.generate_content(model=MODEL, contents="x").text == gm.answer


def test_client_retries_opted_in_get_through_injected_errors(gm: FakeGemini) -> None:
    gm.inject(503, times=2)
    retry = types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.02)
    options = types.HttpOptions(base_url=gm.base_url, api_version="v1beta", retry_options=retry)
    c = genai.Client(api_key=gm.api_key, http_options=options)
    assert c.models.generate_content(model=MODEL, contents="x").text == gm.answer
    assert gm.requests == 3


def test_stall_times_the_client_out(gm: FakeGemini) -> None:
    gm.inject_stall(1.0)
    c = client(gm, timeout_ms=200)
    # google-genai 3.4 lets its transport's timeout through unwrapped (httpcore2), not as
    # an APIError: callers must catch broadly.
    with pytest.raises((httpcore2.TimeoutException, httpx2.TimeoutException)):
        c.models.generate_content(model=MODEL, contents="x")
    assert c.models.generate_content(model=MODEL, contents="x").text == gm.answer


def test_standalone_process_serves_the_real_client() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gemini_api", "--port", "0", "--api-key", "k-1"],
        cwd=root, env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        options = types.HttpOptions(base_url=url, api_version="v1beta")
        c = genai.Client(api_key="k-1", http_options=options)
        reply = c.models.generate_content(model=MODEL, contents="standalone prompt")
        assert reply.text == echo_summary("standalone prompt")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        assert proc.returncode == 0
