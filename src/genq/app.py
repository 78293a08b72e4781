"""``genq.App``: the registry of functions, and the way to build jobs for them.

Nothing here runs jobs or keeps figures about them: the engine (genq.engine) owns the
run-time statistics its worker records and the submit policy built from them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from genq.errors import UnknownFunction
from genq.functions import FunctionSpec, Options
from genq.models import Job, new_job_id
from genq.serving.model import Model
from genq.store import store_url

if TYPE_CHECKING:
    from genq.local import LocalRunner

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Register functions with ``@app.function(...)`` and the models they take with
    ``@app.model``; run them with ``app.local()``."""

    def __init__(self, name: str = "genq") -> None:
        self.name = name
        self.functions: dict[str, FunctionSpec] = {}
        self.models: dict[str, Model] = {}

    @overload
    def model(self, loader: Callable[..., Any], /, *, name: str | None = None,
              key: str | None = None, max_models: int = 1,
              unload: Callable[[Any], Any] | None = None) -> Model: ...

    @overload
    def model(self, loader: None = None, /, *, name: str | None = None,
              key: str | None = None, max_models: int = 1,
              unload: Callable[[Any], Any] | None = None
              ) -> Callable[[Callable[..., Any]], Model]: ...

    def model(self, loader: Callable[..., Any] | None = None, /, *, name: str | None = None,
              key: str | None = None, max_models: int = 1,
              unload: Callable[[Any], Any] | None = None
              ) -> Model | Callable[[Callable[..., Any]], Model]:
        """Declare a model that functions take as ``Annotated[T, the_model]``.

        ``loader`` returns the loaded model, or yields it with its teardown after the
        ``yield``; ``def`` loaders run in a thread. A ``device`` parameter receives the
        replica's device. Without ``key`` the model is loaded once per worker replica,
        before it claims the jobs that need it. With ``key="field"`` it is a family: the
        job's input ``field`` names which one (the loader's first argument), each replica
        holds up to ``max_models`` (least recently used unloaded first), and jobs go to
        a replica that holds theirs. ``unload(model)`` tears down what a returning loader
        loaded. See docs/serving.md.
        """

        def register(fn: Callable[..., Any]) -> Model:
            declared = Model(name or fn.__name__, fn, key=key, max_models=max_models,
                             unload=unload)
            if declared.name in self.models:
                raise ValueError(f"a model named {declared.name!r} is already declared")
            self.models[declared.name] = declared
            return declared

        return register(loader) if loader is not None else register

    @overload
    def function(self, fn: F, /) -> F: ...

    @overload
    def function(self, *, name: str | None = None, **options: Any) -> Callable[[F], F]: ...

    def function(self, fn: F | None = None, /, *, name: str | None = None,  # type: ignore[misc]
                 **options: Any) -> F | Callable[[F], F]:
        """Register ``fn`` as a job function. Options: see ``genq.functions.Options``."""
        opts = Options(**_normalise(options))

        def register(f: F) -> F:
            fname = name or f.__name__
            if fname in self.functions:
                raise ValueError(f"a function named {fname!r} is already registered")
            spec = FunctionSpec(fname, f, opts)
            for model in spec.models.values():
                if self.models.get(model.name) is not model:
                    raise ValueError(f"{fname}: model {model.name!r} is not declared with "
                                     "this app's @app.model")
            self.functions[fname] = spec
            return f

        return register(fn) if fn is not None else register

    def get_function(self, name: str) -> FunctionSpec:
        spec = self.functions.get(name)
        if spec is None:
            known = ", ".join(sorted(self.functions)) or "none"
            raise UnknownFunction(f"no function named {name!r} (known: {known})",
                                  function=name)
        return spec

    def new_job(self, function: str, data: dict[str, Any], *, owner: str = "local",
                priority: int | None = None, idempotency_key: str | None = None) -> Job:
        """Validate input and build a job (its submit policy: ``JobService.submit_policy``)."""
        spec = self.get_function(function)
        validated = spec.validate(data)
        o = spec.options
        now = time.time()
        return Job(
            id=new_job_id(), function=function, input=validated, owner=owner,
            priority=o.priority if priority is None else priority, created_at=now,
            max_attempts=o.retries + 1,
            expires_at=None if o.queue_timeout is None else now + o.queue_timeout,
            cache_key=spec.cache_key(validated, owner), idempotency_key=idempotency_key,
            affinity=spec.affinity(validated),
        )

    def local(self, store: str | os.PathLike[str] | None = None, *, workers: bool = True,
              owner: str = "local", shutdown_grace: float = 10.0,
              devices: Sequence[str] = ("cpu",),
              functions: Sequence[str] | None = None) -> LocalRunner:
        """An engine in this process: a store plus in-process workers.

        ``with app.local() as client`` gives the sync client (safe in scripts, inside a
        running loop such as Jupyter, and from many threads); ``async with`` gives the
        async one on the current loop. ``store`` is a SQLite path or a store URL
        (``redis://host:port/0``, see genq.store); it defaults to $GENQ_STORE, then
        $GENQ_DB, then .genq/genq.sqlite3. With ``workers=False`` this process only
        submits and follows, while ``genq worker`` processes run the jobs. ``devices``
        runs a worker replica per entry, each loading the app's models on its device.
        ``functions`` limits the workers to some of the app's functions (as ``genq worker
        --functions`` does): only the models those take are loaded.
        """
        # Imported here: genq.local imports this module (and the engine and clients on
        # top of it), so importing it at module level would be a cycle.
        from genq.local import LocalRunner

        return LocalRunner(self, store_url(store), workers=workers, owner=owner,
                           shutdown_grace=shutdown_grace, devices=list(devices),
                           functions=None if functions is None else list(functions))


def _normalise(options: dict[str, Any]) -> dict[str, Any]:
    retry_on = options.get("retry_on")
    if retry_on is not None and not isinstance(retry_on, tuple):
        options["retry_on"] = tuple(retry_on) if isinstance(retry_on, list) else (retry_on,)
    return options
