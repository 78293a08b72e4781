"""examples/diffusers_app.py around a REAL diffusers pipeline, with nothing downloaded.

The pipeline is a tiny, randomly initialised Stable Diffusion built from configs the way
diffusers' own tests build theirs (``get_dummy_components``): a two-block UNet with
cross-attention, a tiny VAE, a tiny CLIP text encoder and a CLIP BPE tokenizer made from a
vocab.json and merges.txt written here. It is saved with ``save_pretrained`` and loaded
back by the example from $GENQ_DIFFUSERS_MODEL, exactly as a downloaded model would be.

The example declares the pipeline with ``@app.model``: a worker loads it when it starts.
``spy_loads`` sees the pipeline the worker loaded (the real loader runs) and puts forward
hooks on its real UNet and VAE decoder before its first job: they count denoising steps
and decodes (and, where a test needs time to act, slow each step down). The pipeline
itself is not mocked.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from PIL import Image as PILImage
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import genq
from genq.engine import Engine
from genq.models import EventType, JobStatus
from genq.serving import host as host_module
from genq.store.sqlite import SQLiteStore
from tests.support.model_spy import Loads, spy_loads

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diffusers_app.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- a tiny pipeline, built from configs and saved like a downloaded one -------------------
def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level BPE: one printable symbol for each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer from a vocab.json + merges.txt of our own: every byte alone and
    word-final, the two special tokens, and a few merges so BPE really merges."""
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in _byte_symbols():
        vocab[symbol] = len(vocab)
    for symbol in _byte_symbols():
        vocab[symbol + "</w>"] = len(vocab)
    merges = [("r", "e"), ("f", "o"), ("fo", "x</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def tiny_pipeline(scratch: Path) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(scratch / "tokenizer-source")
    assert tokenizer.tokenize("a red fox") == ["a</w>", "re", "d</w>", "fox</w>"]
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=32,
        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, layer_norm_eps=1e-5,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("diffusers")
    target = scratch / "tiny-sd"
    tiny_pipeline(scratch).save_pretrained(target)
    assert (target / "model_index.json").is_file()
    return target


@pytest.fixture
def example(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh copy of examples/diffusers_app.py (its own app and model),
    loaded by path the way ``genq serve examples/diffusers_app.py:app`` does."""
    monkeypatch.setenv("GENQ_DIFFUSERS_MODEL", str(model_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = f"diffusers_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    yield module


class PipelineCounter:
    """Counts real denoising steps (UNet calls) and decodes (VAE decoder calls) through
    forward hooks; ``delay`` slows each step so a test has time to act mid-run."""

    def __init__(self, delay: float = 0.0) -> None:
        self.steps = 0
        self.decodes = 0
        self.delay = delay

    def attach(self, pipe: Any) -> None:
        pipe.unet.register_forward_pre_hook(self._on_step)
        pipe.vae.decoder.register_forward_pre_hook(self._on_decode)

    def _on_step(self, module: Any, args: Any) -> None:
        self.steps += 1
        if self.delay:
            time.sleep(self.delay)

    def _on_decode(self, module: Any, args: Any) -> None:
        self.decodes += 1


@contextlib.contextmanager
def counted(example: ModuleType, delay: float = 0.0) -> Iterator[tuple[Loads, PipelineCounter]]:
    """Count the steps and decodes of the pipeline a worker loads (hooked before genq
    has it, so before its first job)."""
    counter = PipelineCounter(delay=delay)
    with spy_loads(example.pipeline, on_load=counter.attach) as loads:
        yield loads, counter


def direct_pipeline(example: ModuleType, delay: float = 0.0) -> tuple[Any, PipelineCounter]:
    """A pipeline loaded by the example's own function, for calling ``generate`` directly."""
    pipe = example.load_pipeline(example.model_path(), "cpu")
    counter = PipelineCounter(delay=delay)
    counter.attach(pipe)
    return pipe, counter


class RecordingProgress(genq.Progress):
    """An unbound Progress that records every report, and cancels itself after the
    report whose ``current`` is ``cancel_at`` (as genq does when a job is cancelled)."""

    def __init__(self, cancel_at: int | None = None) -> None:
        super().__init__()
        self.reports: list[tuple[Any, Any, Any]] = []
        self.cancel_at = cancel_at

    def __call__(self, fraction: float | None = None, desc: str | None = None,
                 **kwargs: Any) -> None:
        super().__call__(fraction, desc, **kwargs)  # raises genq.Cancelled once cancelled
        self.reports.append((kwargs.get("current"), kwargs.get("total"), desc))
        if self.cancel_at is not None and kwargs.get("current") == self.cancel_at:
            self.cancel("job cancelled")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    with PILImage.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


# -- through genq ----------------------------------------------------------------------
def test_generates_a_png_of_the_requested_size_with_step_progress(
        example: ModuleType, tmp_path: Path) -> None:
    steps = 4
    with counted(example) as (_, counter), \
            example.app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("generate", prompt="a red fox", steps=steps, guidance=7.5,
                            seed=3, width=80, height=64)
        image = job.result(timeout=60)
        events = list(job.events())

    assert isinstance(image, genq.Artifact)
    assert image.content_type == "image/png"
    assert png_size(image.data) == (80, 64)  # (width, height): not transposed
    assert counter.steps == steps and counter.decodes == 1

    # Progress is coalesced (at most one event per 0.1 s), so which intermediate steps
    # got an event of their own depends on timing; what does not: the counts only go
    # up, stay within the steps, and the last event is the last step at fraction 1.0.
    # (That every step is reported is shown exactly by the direct-call test below.)
    progress = [e.data for e in events if e.type is EventType.PROGRESS]
    assert progress
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions)
    currents = [p["current"] for p in progress]
    assert currents == sorted(currents) and set(currents) <= set(range(steps + 1))
    assert progress[-1] == {"fraction": 1.0, "current": steps, "total": steps,
                            "unit": "steps",
                            "description": f"denoising step {steps} of {steps}"}
    assert events[-1].type is EventType.SUCCEEDED


def test_identical_requests_come_from_the_cache(example: ModuleType, tmp_path: Path) -> None:
    inputs = {"prompt": "a red fox", "steps": 3, "seed": 7, "width": 64, "height": 64}
    with counted(example) as (_, counter), \
            example.app.local(tmp_path / "db.sqlite3") as client:
        first = client.submit("generate", **inputs)
        original = first.result(timeout=60)
        assert counter.steps == 3 and counter.decodes == 1

        again = client.submit("generate", **inputs)
        assert again.reason == "cached"
        repeat = again.result(timeout=60)
        replayed = list(again.events())
        assert not {EventType.STARTED, EventType.PROGRESS} & {e.type for e in replayed}
        assert replayed[-1].type is EventType.SUCCEEDED
        assert replayed[-1].data["cached_from"] == first.id
        assert repeat.data == original.data
        assert counter.steps == 3 and counter.decodes == 1  # the pipeline did not run

        other_seed = client.run("generate", {**inputs, "seed": 8}, timeout=60)
        assert counter.steps == 6 and counter.decodes == 2  # a new input runs again
        assert other_seed.data != original.data


def test_cancel_stops_denoising_at_the_next_step(example: ModuleType, tmp_path: Path) -> None:
    steps = 60
    with counted(example, delay=0.05) as (_, counter), \
            example.app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("generate", prompt="a slow fox", steps=steps, width=64,
                            height=64)
        with contextlib.closing(job.events()) as events:
            for event in events:
                if event.type is EventType.PROGRESS and event.data.get("current", 0) >= 3:
                    job.cancel()
                    break
        with pytest.raises(genq.JobCancelled):
            job.result(timeout=30)
        assert job.info().status is JobStatus.CANCELLED
        # The cancelled call's thread keeps the function's slot and the pipeline until
        # it returns, so the next job runs only once denoising has really stopped.
        after = client.run("generate", prompt="a quick fox", steps=2, width=64, height=64,
                           timeout=60)
    assert png_size(after.data) == (64, 64)
    cancelled_steps = counter.steps - 2
    assert 3 <= cancelled_steps < steps
    assert counter.decodes == 1  # the cancelled run never reached its VAE decode


def test_bad_input_is_rejected_at_submit(example: ModuleType, tmp_path: Path) -> None:
    with example.app.local(tmp_path / "db.sqlite3") as client:
        for bad in ({"steps": 0}, {"steps": 151}, {"width": 100}, {"height": 32},
                    {"guidance": -1.0}, {"prompt": ""}):
            with pytest.raises(genq.InvalidInput) as caught:
                client.submit("generate", {"prompt": "a fox", **bad})
            field = next(iter(bad))
            assert any(e["field"] == field for e in caught.value.detail["errors"]), bad


@pytest.mark.anyio
async def test_a_missing_model_is_reported_retried_and_fails_no_job(
        example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "SETUP_RETRY_FIRST", 0.1)
    monkeypatch.delenv("GENQ_DIFFUSERS_MODEL")
    engine = Engine(example.app, SQLiteStore(tmp_path / "db.sqlite3"), shutdown_grace=1.0)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.serve)
        job = (await engine.jobs.submit("local", "generate", {"prompt": "a fox"})).job
        report = await _failed_model(engine, "set GENQ_DIFFUSERS_MODEL")
        assert report["model"] == "pipeline" and report["retry_at"] is not None
        # Not a pipeline directory: the next attempt reads the variable again.
        monkeypatch.setenv("GENQ_DIFFUSERS_MODEL", str(tmp_path))
        await _failed_model(engine, "no model_index.json")
        assert (await engine.jobs.get("local", job.id)).status is JobStatus.QUEUED
        await engine.stop()


async def _failed_model(engine: Engine, error: str) -> dict[str, Any]:
    """The worker's report of the pipeline once its error contains ``error``."""
    with anyio.fail_after(30):
        while True:
            cluster = await engine.cluster(queue_depths=False)
            state = cluster.workers[0].states.get("generate", {})
            models = state.get("models") or [{}]
            if state.get("state") == "failed" and error in (models[0].get("error") or ""):
                return dict(models[0])
            await anyio.sleep(0.05)


def test_the_example_declares_its_pipeline_and_an_input_without_it(
        example: ModuleType) -> None:
    assert example.app.models == {"pipeline": example.pipeline}
    spec = example.app.functions["generate"]
    assert spec.models == {"pipe": example.pipeline}
    assert example.pipeline.takes_device and example.pipeline.yields
    assert not example.pipeline.keyed
    schema = spec.input_schema()
    assert set(schema["properties"]) == {"prompt", "negative_prompt", "steps", "guidance",
                                         "seed", "width", "height"}
    assert schema["required"] == ["prompt"]


# -- the function itself ---------------------------------------------------------------
def test_every_step_is_reported_in_order(example: ModuleType) -> None:
    pipe, counter = direct_pipeline(example)
    progress = RecordingProgress()
    image = example.generate("a red fox", pipe, steps=5, guidance=2.0, seed=1, width=64,
                             height=64, progress=progress)
    assert png_size(image.data) == (64, 64)
    assert progress.reports == [(0, 5, "encoding the prompt")] + [
        (i, 5, f"denoising step {i} of 5") for i in range(1, 6)]
    assert counter.steps == 5


def test_a_cancel_raises_at_the_next_step_callback(example: ModuleType) -> None:
    pipe, counter = direct_pipeline(example)
    progress = RecordingProgress(cancel_at=2)
    with pytest.raises(genq.Cancelled):
        example.generate("a red fox", pipe, steps=20, seed=1, width=64, height=64,
                         progress=progress)
    assert [r[0] for r in progress.reports] == [0, 1, 2]
    assert counter.steps == 3  # step 3 ran, its callback raised, nothing after it
    assert counter.decodes == 0


def test_one_load_per_worker_before_its_jobs_and_freed_at_shutdown(
        example: ModuleType, tmp_path: Path) -> None:
    with counted(example) as (loads, counter):
        with example.app.local(tmp_path / "db.sqlite3") as client:
            jobs = [client.submit("generate", prompt=f"fox {i}", steps=2, width=64,
                                  height=64) for i in range(3)]
            assert all(png_size(job.result(timeout=60).data) == (64, 64) for job in jobs)
            assert loads.teardowns == 0  # held while the worker runs
        assert len(loads.instances) == 1 and loads.teardowns == 1
    assert type(loads.instances[0]).__name__ == "StableDiffusionPipeline"
    assert counter.steps == 6 and counter.decodes == 3
