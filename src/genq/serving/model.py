"""``genq.Model``: a model a function needs loaded, declared once, injected by type.

Shape, and why (docs/serving.md says the same for users):

* **A loader function, not a class.** ``@app.model`` decorates a plain function that
  loads the model and returns it, or *yields* it when something must run at shutdown
  (the code after ``yield`` is the teardown, as in a pytest fixture or a FastAPI
  dependency). The loader may be ``def`` (run in a thread: it never blocks the loop) or
  ``async def``. Functions stay ordinary functions with their schema from their
  signature; one loaded model serves every function that names it; a function may need
  several models; and the loader can be called directly in a test.
* **Injected by annotation.** A function asks for a model with a parameter annotated
  ``Annotated[Pipeline, pipeline_model]``: the parameter is not part of its input schema,
  and the worker fills it with this replica's loaded instance. Annotated keeps the
  parameter's real type for mypy and editors, where a sentinel default would not.
* **Singletons load before work; keyed models load on demand.** A model without ``key``
  is loaded once per worker replica (per device) before that replica claims any job of
  the functions using it. A model with ``key="checkpoint"`` is a family (checkpoints,
  LoRAs): the job's input field ``checkpoint`` names which one; each replica keeps up to
  ``max_models`` of them in an LRU and jobs are routed to the replica that already holds
  theirs (the job's ``affinity``, see genq.store.base.Warmth).
* **The device is an argument.** A loader with a ``device`` parameter is told its
  replica's device (``"cpu"``, ``"cuda:1"``); the key of a keyed model is its first
  positional argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genq.jsoncodec import compact_json


@dataclass(eq=False)
class Model:
    """A model declared with ``@app.model``. Compare by identity: two declarations with
    the same loader are two models."""

    name: str
    loader: Callable[..., Any]
    key: str | None = None  # the input field naming which model of a family a job needs
    max_models: int = 1  # keyed: how many of the family one replica holds (LRU)
    unload: Callable[[Any], Any] | None = None  # a returning loader's teardown
    takes_device: bool = field(init=False)
    is_async: bool = field(init=False)
    yields: bool = field(init=False)

    def __post_init__(self) -> None:
        fn = self.loader
        self.yields = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        params = inspect.signature(fn).parameters
        self.takes_device = "device" in params
        if self.max_models < 1:
            raise ValueError(f"model {self.name!r}: max_models must be at least 1")
        if self.key is None and self.max_models != 1:
            raise ValueError(f"model {self.name!r}: max_models is for a keyed model "
                             "(@app.model(key=...))")
        if self.yields and self.unload is not None:
            raise ValueError(f"model {self.name!r}: a loader that yields has its teardown "
                             "after the yield; unload= is for a loader that returns")
        positional = [p for n, p in params.items() if n != "device" and p.kind in (
            p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
        wanted = 1 if self.keyed else 0
        if len(positional) != wanted:
            shape = ("its key (e.g. the checkpoint name) as its only positional parameter"
                     if self.keyed else "no parameter but an optional `device`")
            raise TypeError(f"model {self.name!r}: the loader must take {shape}")

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def arguments(self, key: Any, device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The loader's arguments for one load on ``device``."""
        args = (key,) if self.keyed else ()
        return args, ({"device": device} if self.takes_device else {})

    def affinity(self, key: Any) -> str:
        """The job's routing key for a model of this family: ``name:key``."""
        return f"{self.name}:{key if isinstance(key, str) else compact_json(key)}"

    def label(self, key: Any = None) -> str:
        """How logs and the dashboard name it: ``sdxl`` or ``checkpoints[sd15]``."""
        return self.name if key is None else f"{self.name}[{key}]"

    def __repr__(self) -> str:
        return f"<genq.Model {self.name!r}{'' if self.key is None else f' key={self.key!r}'}>"
