"""Text-to-image with a real diffusers pipeline, served as durable genq jobs.

The same shape as the demo's ``render``, around a Stable Diffusion-style pipeline: the
pipeline is a ``@app.model``, loaded once per worker replica when the worker starts
(before it claims a ``generate`` job) and freed at shutdown; every denoising step becomes
a progress event, a cancelled job stops at the next step, and identical requests (same
prompt, seed and settings) are answered from the cache.

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
your process imports it earlier. When the variable is unset or names no pipeline, the
worker reports the model failed with that sentence (``/readyz``, the dashboard) and tries
again with backoff while ``generate`` jobs wait in the queue: fix the path, and they run.

Any pipeline ``AutoPipelineForText2Image`` knows (SD 1.x/2.x, SDXL, ...) works. A worker
replica on ``cuda``/``cuda:N`` (``genq serve --devices cuda:0,cuda:1``) loads it there in
float16; on ``cpu`` it runs in float32 (slow, but real).

Why one pipeline and not a family (``@app.model(key="checkpoint", max_models=2)``, where
the job's input names a checkpoint): this example's point is the pipeline's life cycle
and step progress, and one SD checkpoint already fills a consumer GPU. To serve several,
give the loader the checkpoint name as its first argument and add a ``checkpoint`` field
to ``generate``: genq then keeps up to ``max_models`` of them per replica and routes each
job to a replica that holds its checkpoint.

No lock is needed around the pipeline, although it keeps per-call state (its scheduler's
timesteps, guidance scale, interrupt flag) and calls on it must not overlap: each worker
replica has its own pipeline, and ``concurrency=1`` lets a replica run one ``generate`` at
a time (a cancelled call keeps that slot until its thread has really stopped).

torch and diffusers are imported by the loader, not at import time, so
``genq serve --no-workers`` (an API node) starts without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypeAlias

from pydantic import Field

import genq

app = genq.App("diffusers")

MODEL_ENV = "GENQ_DIFFUSERS_MODEL"

Prompt = Annotated[str, Field(min_length=1, max_length=1000)]
Steps = Annotated[int, Field(ge=1, le=150)]
Guidance = Annotated[float, Field(ge=0.0, le=30.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Side = Annotated[int, Field(ge=64, le=2048, multiple_of=8)]  # the VAE needs multiples of 8
# diffusers' DiffusionPipeline: not imported here, so the module imports without diffusers
# (genq reads this annotation when ``generate`` is registered).
Pipeline: TypeAlias = Any


class ModelNotConfigured(RuntimeError):
    """GENQ_DIFFUSERS_MODEL is unset or does not name a local pipeline directory."""


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


def load_pipeline(path: Path, device: str = "cpu") -> Pipeline:
    """The pipeline in ``path`` on ``device``: float16 on CUDA, float32 elsewhere."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported
    import torch
    from diffusers import AutoPipelineForText2Image

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = AutoPipelineForText2Image.from_pretrained(path, local_files_only=True)
    pipe = pipe.to(device, dtype)  # loaded in float32; on the CPU this changes nothing
    pipe.set_progress_bar_config(disable=True)  # progress goes to genq, not to stderr
    return pipe


@app.model()
def pipeline(device: str) -> Iterator[Pipeline]:
    """The pipeline in $GENQ_DIFFUSERS_MODEL, loaded on this replica's device; after the
    yield (shutdown) its weights are let go, and on CUDA the memory is handed back."""
    pipe = load_pipeline(model_path(), device)
    yield pipe
    del pipe
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()  # the pipeline's modules hold reference cycles
        torch.cuda.empty_cache()


@app.function(concurrency=1, timeout=600, cache=True)
def generate(prompt: Prompt, pipe: Annotated[Pipeline, pipeline],
             negative_prompt: str = "", steps: Steps = 25,
             guidance: Guidance = 7.5, seed: Seed = 0, width: Side = 512,
             height: Side = 512,
             progress: genq.Progress = genq.Progress()) -> genq.Image:
    """Generate an image from a prompt with the pipeline in $GENQ_DIFFUSERS_MODEL.

    The same prompt, seed and settings give the same image, so results are cached."""
    import torch

    def on_step_end(running: Any, step: int, timestep: Any,
                    tensors: dict[str, Any]) -> dict[str, Any]:
        # Called after each denoising step. A cancelled (or timed-out) job raises
        # genq.Cancelled right here, so denoising stops now, not after the last step.
        # Timesteps actually run: ``steps`` for most schedulers, more for 2nd-order ones.
        total = getattr(running, "num_timesteps", None) or steps
        progress(current=step + 1, total=total, unit="steps",
                 desc=f"denoising step {step + 1} of {total}")
        return tensors

    progress(current=0, total=steps, unit="steps", desc="encoding the prompt")
    extra = {"negative_prompt": negative_prompt} if negative_prompt else {}
    result = pipe(
        prompt, num_inference_steps=steps, guidance_scale=guidance, width=width,
        height=height, generator=torch.Generator("cpu").manual_seed(seed),
        callback_on_step_end=on_step_end, **extra,
    )
    return genq.Image.from_pil(result.images[0])
