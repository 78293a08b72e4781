"""See what a declared model's REAL loader loads, for tests of apps that declare models.

A worker loads an ``@app.model`` on its own, so a test has no handle on the instance its
jobs use. ``spy_loads(model)`` wraps the model's loader while it is active: the real
loader still runs (and its teardown still runs after its ``yield``), and every instance
it produces is appended to the returned ``Loads``. ``gate`` holds each load back until
the test sets it; ``on_load`` sees the instance before genq does (e.g. to hook a real
pipeline's modules before its first job).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from genq.serving.model import Model


@dataclass
class Loads:
    instances: list[Any] = field(default_factory=list)
    teardowns: int = 0
    loaded: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> Any:
        """The first instance, once loaded (raises AssertionError after ``timeout``)."""
        assert self.loaded.wait(timeout), "the model did not load"
        return self.instances[0]


@contextlib.contextmanager
def spy_loads(model: Model, *, gate: threading.Event | None = None,
              on_load: Callable[[Any], None] | None = None) -> Iterator[Loads]:
    assert model.yields and not model.is_async, "spy_loads wraps a sync loader that yields"
    original = model.loader
    loads = Loads()

    def spy(*args: Any, **kwargs: Any) -> Iterator[Any]:
        if gate is not None:
            assert gate.wait(300), "the test never opened the gate"
        gen = original(*args, **kwargs)
        value = next(gen)
        if on_load is not None:
            on_load(value)
        loads.instances.append(value)
        loads.loaded.set()
        yield value
        with contextlib.suppress(StopIteration):
            next(gen)  # the real teardown
        loads.teardowns += 1

    model.loader = spy
    try:
        yield loads
    finally:
        model.loader = original
