"""The demo's OpenAI models with the REAL SmolLM2-135M-Instruct and the real ``openai``
SDK against a live server: a chat completion streamed and not, sync and async, greedy
(temperature 0) and a few tokens only, so both forms give the same text; and the
fractal renderer as an image model."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from sentence_transformers import SentenceTransformer

from genq.demo import app, embeddings, llm
from tests.support.http_fixtures import FAST, LiveServer

llm.model_folder()  # raises ModelUnavailable if set-up did not install the weights

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One demo server for the module: it loads SmolLM2 and MiniLM once, at start."""
    live = LiveServer(app, tmp_path_factory.mktemp("openai-demo") / "jobs.sqlite3",
                      FAST).start()
    yield live
    live.stop()


@pytest.fixture
def client(demo: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{demo.url}/v1", api_key="none", max_retries=0,
                       timeout=120) as sdk:
        yield sdk


def test_demo_models_are_listed(client: openai.OpenAI) -> None:
    assert {"smollm2", "fractal", "all-minilm-l6-v2"} <= {m.id for m in client.models.list()}


def test_minilm_embeddings_equal_sentence_transformers_called_directly(
        client: openai.OpenAI) -> None:
    texts = ["a red fox in the snow", "the stock market fell", "a fox runs through snow"]
    answer = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    got = np.array([item.embedding for item in sorted(answer.data, key=lambda d: d.index)])
    direct = SentenceTransformer(str(embeddings.model_folder()), device="cpu",
                                 local_files_only=True).encode(texts,
                                                               normalize_embeddings=True)
    assert got.shape == direct.shape == (3, 384)
    cosines = np.sum(got * direct, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(direct, axis=1))
    assert (cosines >= 0.999).all(), cosines


@pytest.mark.anyio
async def test_smollm2_streamed_and_not_say_the_same(client: openai.OpenAI,
                                                     demo: LiveServer) -> None:
    whole = client.chat.completions.create(model="smollm2", messages=MESSAGES,
                                           max_tokens=6, temperature=0)
    text = whole.choices[0].message.content
    assert text and text.strip()
    stream = client.chat.completions.create(model="smollm2", messages=MESSAGES,
                                            max_tokens=6, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1  # it streamed, piece by piece
    assert "".join(pieces) == text
    async with openai.AsyncOpenAI(base_url=f"{demo.url}/v1", api_key="none",
                                  max_retries=0, timeout=120) as aclient:
        astream = await aclient.chat.completions.create(
            model="smollm2", messages=MESSAGES, max_tokens=6, temperature=0, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in astream
                        if c.choices]) == text
        again = await aclient.chat.completions.create(model="smollm2", messages=MESSAGES,
                                                      max_tokens=6, temperature=0)
        assert again.choices[0].message.content == text


def test_fractal_images_decode_as_png(client: openai.OpenAI) -> None:
    result = client.images.generate(model="fractal", prompt="a storm", size="32x32")
    assert result.data is not None and result.data[0].b64_json is not None
    png = base64.b64decode(result.data[0].b64_json)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (32, 32)
    with pytest.raises(openai.BadRequestError):  # past the renderer's 512 px
        client.images.generate(model="fractal", prompt="a storm", size="1024x1024")
