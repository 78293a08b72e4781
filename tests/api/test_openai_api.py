"""The OpenAI-compatible API (/v1) driven by the real ``openai`` SDK against a live
server of tests/apps/openai_app.py: chat completions (streaming and not, sync and
async), stop sequences, usage, errors as the SDK's own classes, jobs per owner,
embeddings through dynamic batching, images, and disconnects that cancel."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import anyio
import httpx
import openai
import pytest

from genq.server import ApiKeys
from tests.apps import openai_app
from tests.apps.openai_app import app, vector, words
from tests.support.http_fixtures import LiveServer, ServerFactory, wait_until

USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def live(make_server: ServerFactory) -> LiveServer:
    return make_server(app, keys=ApiKeys({"key-a": "alice", "key-b": "bob"}))


OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def client(live: LiveServer, key: str = "key-a") -> openai.OpenAI:
    """An SDK client that retries nothing (an error must surface), closed after the test."""
    sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=30)
    OPEN.append(sdk)
    return sdk


def jobs_of(live: LiveServer, key: str) -> list[dict]:
    answer = httpx.get(f"{live.url}/api/jobs", headers={"Authorization": f"Bearer {key}"})
    return answer.json()["jobs"]


def test_models_are_listed(live: LiveServer) -> None:
    names = {m.id for m in client(live).models.list()}
    assert names == {"echo-1", "fails-1", "hash-embed", "tiny-png"}
    assert client(live).models.retrieve("echo-1").owned_by == "genq"


def test_chat_completion_is_an_owned_job(live: LiveServer) -> None:
    raw = client(live).chat.completions.with_raw_response.create(
        model="echo-1", messages=USER, max_tokens=5)
    completion = raw.parse()
    assert completion.choices[0].message.content == "".join(words(USER, 5))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    job_id = raw.headers["x-genq-job-id"]
    assert completion.id == f"chatcmpl-{job_id}"
    assert [j["id"] for j in jobs_of(live, "key-a")] == [job_id]
    assert jobs_of(live, "key-b") == []  # bob does not see alice's job


def test_streaming_chat_with_usage(live: LiveServer) -> None:
    stream = client(live).chat.completions.create(
        model="echo-1", messages=USER, max_completion_tokens=7, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(words(USER, 7))
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


def test_stop_sequence_cuts_the_text_and_stops_the_job(live: LiveServer) -> None:
    expected = "".join(words(USER, 20))
    stop = words(USER, 20)[3].strip()
    completion = client(live).chat.completions.create(
        model="echo-1", messages=USER, max_tokens=20, stop=[stop, "zzzz"])
    assert completion.choices[0].message.content == expected[:expected.index(stop)]
    assert completion.choices[0].finish_reason == "stop"
    wait_until(lambda: jobs_of(live, "key-a")[0]["status"] in ("cancelled", "succeeded"))


@pytest.mark.anyio
async def test_async_client_streams(live: LiveServer) -> None:
    async with openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key="key-b",
                                  max_retries=0) as aclient:
        messages = [{"role": "user", "content": f"async {i}"} for i in range(3)]

        async def one(i: int) -> str:
            stream = await aclient.chat.completions.create(
                model="echo-1", messages=[messages[i]], max_tokens=4, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        texts: list[str] = ["", "", ""]

        async def store(i: int) -> None:
            texts[i] = await one(i)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(store, i)
    assert texts == ["".join(words([m], 4)) for m in messages]


def test_errors_are_the_sdks_own(live: LiveServer, make_server: ServerFactory) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(live).chat.completions.create(model="gpt-4o", messages=USER)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):  # an embedding model is no chat model
        client(live).chat.completions.create(model="hash-embed", messages=USER)
    with pytest.raises(openai.BadRequestError) as bad:
        client(live).chat.completions.create(model="echo-1", messages=USER, temperature=7)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as invalid:  # the function's own schema
        client(live).chat.completions.create(model="echo-1", messages=USER,
                                             max_tokens="many")  # type: ignore[arg-type]
    assert invalid.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        client(live).chat.completions.create(model="echo-1", messages=[])
    with pytest.raises(openai.AuthenticationError):
        client(live, key="wrong").models.list()
    with pytest.raises(openai.InternalServerError, match="the model fell over"):
        client(live).chat.completions.create(model="fails-1", messages=USER)
    limited = make_server(app, keys=ApiKeys.parse("key-r=rita rate=1/m burst=1"))
    client(limited, "key-r").models.list()
    with pytest.raises(openai.RateLimitError) as limit:
        client(limited, "key-r").models.list()
    assert int(limit.value.response.headers["retry-after"]) >= 1


def test_streaming_client_disconnect_cancels_the_job(live: LiveServer) -> None:
    stream = client(live).chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "slow: go on"}],
        max_tokens=400, stream=True)
    job_id = stream.response.headers["x-genq-job-id"]
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    job = wait_until(lambda: next(j for j in jobs_of(live, "key-a")
                                  if j["id"] == job_id)["status"] == "cancelled" or None,
                     what="the job cancelled")
    assert job


def test_embeddings_are_batched_and_equal_the_function(live: LiveServer) -> None:
    texts = [f"sentence number {i}" for i in range(12)]
    openai_app.BATCHES.clear()
    result = client(live).embeddings.create(model="hash-embed", input=texts)  # base64
    assert [d.index for d in result.data] == list(range(12))
    for d, text in zip(result.data, texts, strict=True):
        assert d.embedding == pytest.approx(vector(text), abs=1e-6)
    assert max(openai_app.BATCHES) > 1  # dynamic batching grouped the request's jobs
    floats = client(live).embeddings.create(model="hash-embed", input="one",
                                            encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vector("one"))


def test_images_decode_as_png_and_urls_point_at_artifacts(live: LiveServer) -> None:
    result = client(live).images.generate(model="tiny-png", prompt="a red square",
                                          size="8x8")
    assert result.data is not None and result.data[0].b64_json is not None
    png = base64.b64decode(result.data[0].b64_json)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (8, 8)
    linked = client(live).images.generate(model="tiny-png", prompt="a red square",
                                          response_format="url")
    assert linked.data is not None and linked.data[0].url is not None
    fetched = httpx.get(linked.data[0].url, headers={"Authorization": "Bearer key-a"})
    assert fetched.status_code == 200 and fetched.content[:4] == b"\x89PNG"
    assert httpx.get(linked.data[0].url,
                     headers={"Authorization": "Bearer key-b"}).status_code == 404


def test_a_cancelled_response_ends_cancelled(live: LiveServer) -> None:
    response = client(live).responses.create(model="echo-1", input="slow: cancel me",
                                             background=True, max_output_tokens=400)
    assert response.status == "queued" and response.background
    wait_until(lambda: client(live).responses.retrieve(response.id).status
               == "in_progress")
    cancelled = client(live).responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    events = list(client(live).responses.retrieve(response.id, stream=True))
    assert events[-1].type == "response.cancelled"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    with pytest.raises(openai.NotFoundError):
        client(live, "key-b").responses.retrieve(response.id)


def test_an_oversize_body_is_refused_in_openai_shape(make_server: ServerFactory) -> None:
    small = make_server(app, max_body=64 * 1024)
    huge = [{"role": "user", "content": "x" * (4 << 20)}]  # 4 MiB of one message
    with pytest.raises(openai.APIStatusError) as refused:
        client(small).chat.completions.create(model="echo-1", messages=huge)
    assert refused.value.status_code == 413
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "payload_too_large"
    assert "65536" in body["message"]
    assert [j for j in jobs_of(small, "key-a")] == []  # nothing was submitted
