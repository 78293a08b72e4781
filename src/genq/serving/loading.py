"""One load of a model and its teardown, whatever the loader's kind.

A ``def`` loader runs in a thread, so a 50 s checkpoint load never blocks the event
loop (the dashboard, the streams of other jobs and lease renewals go on). If the wait
for it is cancelled (shutdown while loading), the thread cannot be stopped; it is left
to finish and then tears down what it loaded itself, so no model is leaked either way.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from genq.serving.model import Model

log = logging.getLogger("genq.models")


@dataclass(slots=True)
class Loaded:
    """A model instance this replica holds, with what it takes to let it go."""

    model: Model
    key: Any  # None for a model without key
    value: Any
    load_seconds: float
    loaded_at: float  # time.time()
    teardown: Callable[[], Any] | None  # sync, or returning an awaitable

    @property
    def label(self) -> str:
        return self.model.label(self.key)

    def describe(self) -> dict[str, Any]:
        """An entry of the worker's report: what the dashboard lists."""
        return {"name": self.model.name, "key": self.key, "label": self.label,
                "load_seconds": round(self.load_seconds, 3), "loaded_at": self.loaded_at}

    async def close(self) -> None:
        """Run the teardown (a sync one in a thread); errors are logged, not raised, so
        one model's failing teardown does not keep the others from theirs."""
        teardown, self.teardown = self.teardown, None
        if teardown is None:
            return
        try:
            if _is_async(teardown):
                await teardown()
            else:
                await anyio.to_thread.run_sync(teardown)
        except Exception:
            log.exception("genq: the teardown of model %s failed", self.label)


async def load(model: Model, key: Any, device: str) -> Loaded:
    """Run ``model``'s loader for ``key`` on ``device``; its errors propagate."""
    args, kwargs = model.arguments(key, device)
    started = time.monotonic()
    if model.is_async:
        value, teardown = await _open_async(model, args, kwargs)
    else:
        value, teardown = await _open_in_thread(model, key, args, kwargs)
    return Loaded(model, key, value, time.monotonic() - started, time.time(), teardown)


async def _open_async(model: Model, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[Any, Callable[[], Any] | None]:
    if model.yields:
        agen: AsyncGenerator[Any, None] = model.loader(*args, **kwargs)
        value = await agen.__anext__()

        async def finish() -> None:
            with contextlib.suppress(StopAsyncIteration):
                await agen.__anext__()
                await agen.aclose()
                raise RuntimeError(f"model {model.name!r}: the loader yielded twice")

        return value, finish
    value = await model.loader(*args, **kwargs)
    return value, _unloader(model, value)


async def _open_in_thread(model: Model, key: Any, args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> tuple[Any, Callable[[], Any] | None]:
    lock = threading.Lock()
    abandoned = False
    handed: tuple[Any, Callable[[], Any] | None] | None = None  # returned, maybe unseen

    def open_sync() -> tuple[Any, Callable[[], Any] | None]:
        if model.yields:
            gen: Generator[Any, None, None] = model.loader(*args, **kwargs)
            value = next(gen)

            def finish() -> None:
                with contextlib.suppress(StopIteration):
                    next(gen)
                    gen.close()
                    raise RuntimeError(f"model {model.name!r}: the loader yielded twice")

            opened: tuple[Any, Callable[[], Any] | None] = (value, finish)
        else:
            value = model.loader(*args, **kwargs)
            opened = (value, _unloader(model, value))
        nonlocal handed
        with lock:
            if not abandoned:
                handed = opened
                return opened
        _teardown_abandoned(model.label(key), opened[1])  # nobody waits for it any more
        return opened

    try:
        return await anyio.to_thread.run_sync(open_sync, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with lock:
            abandoned = True
            lost = handed  # the thread returned just as the wait was cancelled
        if lost is not None:
            threading.Thread(target=_teardown_abandoned, args=(model.label(key), lost[1]),
                             daemon=True).start()
        raise


def _teardown_abandoned(label: str, teardown: Callable[[], Any] | None) -> None:
    if teardown is None or _is_async(teardown):
        return
    try:
        teardown()
    except Exception:
        log.exception("genq: the teardown of model %s (loaded after shutdown) failed",
                      label)


def _unloader(model: Model, value: Any) -> Callable[[], Any] | None:
    unload = model.unload
    if unload is None:
        return None
    if _is_async(unload):
        async def finish() -> None:
            await unload(value)
        return finish
    return lambda: unload(value)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)
