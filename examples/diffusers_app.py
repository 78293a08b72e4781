"""Text-to-image with a real diffusers pipeline, served as durable genq jobs.

The same shape as the demo's ``render``, around a Stable Diffusion-style pipeline: the
pipeline is loaded once per worker process (lazily, on the first job), every denoising
step becomes a progress event, a cancelled job stops at the next step, and identical
requests (same prompt, seed and settings) are answered from the cache.

Run it::

    pip install -e ".[llm]"        # torch, transformers, diffusers
    GENQ_DIFFUSERS_MODEL=/path/to/model genq serve examples/diffusers_app.py:app
    genq run generate --url http://127.0.0.1:7860 --prompt "a red fox in the snow"

``GENQ_DIFFUSERS_MODEL`` must be a local directory holding a diffusers pipeline (a
``model_index.json`` beside ``unet/``, ``vae/``, ``text_encoder/``...): one saved with
``pipeline.save_pretrained(path)``, or a hub snapshot downloaded beforehand, e.g.
``hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir /path/to/model``
(``huggingface-cli download`` with older huggingface_hub). Nothing is downloaded at run
time: the pipeline is loaded with ``local_files_only=True``, and ``HF_HUB_OFFLINE=1`` is
set (unless you set it yourself) before huggingface_hub is imported; export it too if
your process imports it earlier.

Any pipeline ``AutoPipelineForText2Image`` knows (SD 1.x/2.x, SDXL, ...) works. It runs
on CUDA in float16 when a GPU is present, else on the CPU in float32 (slow, but real).

torch and diffusers are imported on the first job, not at import time, so
``genq serve --no-workers`` (an API node) starts without them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

import genq

app = genq.App("diffusers")

MODEL_ENV = "GENQ_DIFFUSERS_MODEL"

Prompt = Annotated[str, Field(min_length=1, max_length=1000)]
Steps = Annotated[int, Field(ge=1, le=150)]
Guidance = Annotated[float, Field(ge=0.0, le=30.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Side = Annotated[int, Field(ge=64, le=2048, multiple_of=8)]  # the VAE needs multiples of 8


class ModelNotConfigured(RuntimeError):
    """GENQ_DIFFUSERS_MODEL is unset or does not name a local pipeline directory."""


_load_lock = threading.Lock()  # one thread loads; the others wait for its pipeline
# A pipeline keeps per-call state (its scheduler's timesteps, guidance scale, interrupt
# flag), so calls on it must not overlap. ``concurrency=1`` already ensures that within
# one worker; the lock keeps it true whatever the options or the number of engines.
_run_lock = threading.Lock()
_loaded: tuple[Path, Any] | None = None  # (directory, pipeline) of this process


def model_path() -> Path:
    """The pipeline directory named by $GENQ_DIFFUSERS_MODEL, checked."""
    value = os.environ.get(MODEL_ENV)
    if not value:
        raise ModelNotConfigured(
            f"set {MODEL_ENV} to a local diffusers pipeline directory (one written by "
            "save_pretrained, or a hub snapshot downloaded beforehand)")
    path = Path(value).expanduser().resolve()
    if not (path / "model_index.json").is_file():
        raise ModelNotConfigured(
            f"{MODEL_ENV}={value} is not a diffusers pipeline directory "
            "(no model_index.json there); nothing is downloaded at run time")
    return path


def load_pipeline() -> Any:
    """The process's pipeline, loaded on first use; safe to call from many threads."""
    global _loaded
    path = model_path()
    loaded = _loaded
    if loaded is not None and loaded[0] == path:
        return loaded[1]
    with _load_lock:
        if _loaded is None or _loaded[0] != path:
            _loaded = (path, _load(path))
        return _loaded[1]


def _load(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    import torch
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(path, local_files_only=True)
    if torch.cuda.is_available():
        pipe = pipe.to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)  # progress goes to genq, not to stderr
    return pipe


@app.function(concurrency=1, timeout=600, cache=True)
def generate(prompt: Prompt, negative_prompt: str = "", steps: Steps = 25,
             guidance: Guidance = 7.5, seed: Seed = 0, width: Side = 512,
             height: Side = 512,
             progress: genq.Progress = genq.Progress()) -> genq.Image:
    """Generate an image from a prompt with the pipeline in $GENQ_DIFFUSERS_MODEL.

    The same prompt, seed and settings give the same image, so results are cached."""
    path = model_path()  # an unset or wrong path fails the job now, with a clear message
    if _loaded is None or _loaded[0] != path:
        progress(0.0, desc="loading the pipeline")
    pipe = load_pipeline()
    import torch

    def on_step_end(pipeline: Any, step: int, timestep: Any,
                    tensors: dict[str, Any]) -> dict[str, Any]:
        # Called after each denoising step. A cancelled (or timed-out) job raises
        # genq.Cancelled right here, so denoising stops now, not after the last step.
        # Timesteps actually run: ``steps`` for most schedulers, more for 2nd-order ones.
        total = getattr(pipeline, "num_timesteps", None) or steps
        progress(current=step + 1, total=total, unit="steps",
                 desc=f"denoising step {step + 1} of {total}")
        return tensors

    with _run_lock:
        progress(current=0, total=steps, unit="steps", desc="encoding the prompt")
        extra = {"negative_prompt": negative_prompt} if negative_prompt else {}
        result = pipe(
            prompt, num_inference_steps=steps, guidance_scale=guidance, width=width,
            height=height, generator=torch.Generator("cpu").manual_seed(seed),
            callback_on_step_end=on_step_end, **extra,
        )
    return genq.Image.from_pil(result.images[0])
