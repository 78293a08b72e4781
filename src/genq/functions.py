"""A registered function: what to call, how (its kind), and the limits that apply to it."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from genq.jsoncodec import canonical_json
from genq.progress import Progress
from genq.schema import input_model, model_parameters, progress_parameter, validate_input
from genq.serving.model import Model
from genq.store.base import SubmitPolicy


class Kind(StrEnum):
    FUNCTION = "function"
    COROUTINE = "coroutine"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async_generator"

    @property
    def streams(self) -> bool:
        return self in (Kind.GENERATOR, Kind.ASYNC_GENERATOR)


def kind_of(fn: Callable[..., Any]) -> Kind:
    if inspect.isasyncgenfunction(fn):
        return Kind.ASYNC_GENERATOR
    if inspect.iscoroutinefunction(fn):
        return Kind.COROUTINE
    if inspect.isgeneratorfunction(fn):
        return Kind.GENERATOR
    return Kind.FUNCTION


@dataclass(frozen=True, slots=True)
class Options:
    """Limits and policies of one function. Times are in seconds."""

    concurrency: int = 1  # runs at once, per worker process
    max_running: int | None = None  # runs at once across all workers of the store
    timeout: float | None = None  # execution time limit per attempt
    queue_timeout: float | None = None  # a job still queued after this expires
    max_queue: int | None = 10_000  # submissions beyond this many queued get QueueFull
    priority: int = 0  # default priority of submissions (higher runs first)
    retries: int = 0  # extra attempts after the first, for ``retry_on`` exceptions
    retry_on: tuple[type[BaseException], ...] = ()
    retry_backoff: float = 1.0  # first delay; doubles per attempt, with equal jitter (genq.backoff)
    retry_backoff_max: float = 60.0
    cache: bool | float = False  # True: reuse results forever; a number: for that long
    dedupe: bool | None = None  # join an identical queued/running job; default: with cache
    stream_buffer: int = 1024  # chunks a sync generator may run ahead of its consumer
    # The largest output chunk the job's log takes (text as UTF-8, other values as JSON;
    # binary chunks are artifacts, under the store's artifact limit), and all the output
    # of one attempt (chunks, binary ones included, plus the result). Past either the job
    # fails with OutputTooLarge naming the limit, its producer stopped (docs/api.md).
    max_chunk_bytes: int = 8 << 20
    max_output_bytes: int = 256 << 20
    batch_size: int | None = None  # run up to this many queued jobs as one call
    batch_wait: float = 0.05  # how long a batch waits to fill up once its first job runs
    # A job naming a model of a keyed family (``@app.model(key=...)``) waits this long
    # for a worker that holds its model before any free worker takes it (and loads the
    # model): the bound on how long warm routing may pass a job over (docs/serving.md).
    warm_wait: float = 30.0
    isolate: bool = False  # an async function on an event loop of its own (genq.isolation)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError("max_running must be at least 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.batch_wait < 0:
            raise ValueError("batch_wait cannot be negative")
        if self.warm_wait < 0:
            raise ValueError("warm_wait cannot be negative")
        if self.retries < 0:
            raise ValueError("retries cannot be negative")
        for size in ("max_chunk_bytes", "max_output_bytes"):
            if getattr(self, size) < 1:
                raise ValueError(f"{size} must be at least 1")
        for limit in ("timeout", "queue_timeout"):
            value = getattr(self, limit)
            if value is not None and value <= 0:
                raise ValueError(f"{limit} must be positive")

    @property
    def batched(self) -> bool:
        return self.batch_size is not None

    @property
    def cache_ttl(self) -> float | None:
        if self.cache is False:
            return None
        if self.cache is True:
            return float("inf")
        return float(self.cache)

    @property
    def uses_cache_key(self) -> bool:
        return self.cache_ttl is not None or bool(self.dedupe)


@dataclass(slots=True)
class FunctionSpec:
    name: str
    fn: Callable[..., Any]
    options: Options
    kind: Kind = field(init=False)
    input_model: type[BaseModel] = field(init=False)  # pydantic: the input's schema
    progress_param: str | None = field(init=False)
    progress_template: Progress = field(init=False)  # the default each run's Progress copies
    description: str = field(init=False)
    models: dict[str, Model] = field(init=False)  # parameter -> the model injected into it

    def __post_init__(self) -> None:
        self.kind = kind_of(self.fn)
        if self.options.batched and self.kind.streams:
            raise TypeError(f"{self.name}: a generator cannot be batched")
        if self.options.isolate and self.kind not in (Kind.COROUTINE, Kind.ASYNC_GENERATOR):
            raise TypeError(f"{self.name}: isolate=True is for async def functions; a plain "
                            "def (or generator) already runs in a thread of its own")
        self.models = model_parameters(self.fn)
        self.input_model = input_model(self.fn, self.name, batched=self.options.batched)
        self._check_models()
        self.progress_param = progress_parameter(self.fn)
        default = (None if self.progress_param is None
                   else inspect.signature(self.fn).parameters[self.progress_param].default)
        self.progress_template = default if isinstance(default, Progress) else Progress()
        self.description = inspect.getdoc(self.fn) or ""

    def _check_models(self) -> None:
        keyed = [m for m in self.models.values() if m.keyed]
        if len(keyed) > 1:
            raise TypeError(f"{self.name}: a function can take one keyed model (it routes "
                            f"the job), not {len(keyed)}")
        if keyed and self.options.batched:
            raise TypeError(f"{self.name}: a batched function cannot take a keyed model "
                            "(the jobs of one batch could each name another)")
        for model in keyed:
            if model.key not in self.input_model.model_fields:
                raise TypeError(f"{self.name}: model {model.name!r} is chosen by the input "
                                f"field {model.key!r}, which {self.name} has no parameter "
                                "for")

    @property
    def keyed_model(self) -> Model | None:
        return next((m for m in self.models.values() if m.keyed), None)

    def affinity(self, validated: dict[str, Any]) -> str | None:
        """The model a job of this input needs, for warm routing (``Job.affinity``)."""
        model = self.keyed_model
        if model is None or model.key is None:
            return None
        return model.affinity(validated.get(model.key))

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        """The JSON form of valid input; raises InvalidInput naming the bad fields."""
        return validate_input(self.input_model, self.name, data).model_dump(mode="json")

    def call_kwargs(self, stored_input: dict[str, Any]) -> dict[str, Any]:
        """Typed keyword arguments for a call, rebuilt from the stored JSON input."""
        if not self.input_model.model_fields:
            return {}
        model = self.input_model.model_validate(stored_input)
        return {name: getattr(model, name) for name in type(model).model_fields}

    def batch_kwargs(self, stored_inputs: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """For a batched function: one list per parameter, in the order of the jobs."""
        calls = [self.call_kwargs(data) for data in stored_inputs]
        return {name: [c[name] for c in calls] for name in self.input_model.model_fields}

    def cache_key(self, validated: dict[str, Any], owner: str) -> str | None:
        """Same function, same input, same owner: a cache hit never reveals (or serves the
        artifacts of) another owner's job."""
        if not self.options.uses_cache_key:
            return None
        canonical = canonical_json([self.name, owner, validated])
        return hashlib.sha256(canonical.encode()).hexdigest()

    def submit_policy(self) -> SubmitPolicy:
        o = self.options
        dedupe = o.cache_ttl is not None if o.dedupe is None else o.dedupe
        return SubmitPolicy(max_queue=o.max_queue, cache_ttl=o.cache_ttl, dedupe=dedupe,
                            retry_after=max(1, int(o.timeout or 1)) if o.timeout else 1)

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def describe(self) -> dict[str, Any]:
        """What a caller may know of it: an entry of GET /api/functions, and of every
        client's ``functions()``, in-process or remote."""
        o = self.options
        return {
            "name": self.name, "description": self.description, "kind": self.kind.value,
            "streams": self.kind.streams, "input_schema": self.input_schema(),
            "options": {"concurrency": o.concurrency, "timeout": o.timeout,
                        "queue_timeout": o.queue_timeout, "max_queue": o.max_queue,
                        "retries": o.retries, "cache": o.cache_ttl is not None},
        }
