"""``ModelHost``: the models of one worker replica, from setup to teardown.

The worker asks it three things: is a function ready (every model it needs without a
key is loaded: until then the worker does not claim its jobs), what to inject into a
call, and what to report (per function: loading / ready / failed with the error, and
the models held). Functions that need no model are ready from the start.

A setup that raises is retried with backoff (1 s doubling to 5 min): a model file still
being copied, a GPU another process has not released yet, a network share not mounted
are all worth another try, and the jobs of that function stay queued meanwhile (they
are never failed for it: another worker may load the model fine). The error, the number
of attempts and the next try are in the worker's report, so /readyz, the dashboard and
the job view show why nothing runs. Models load concurrently, each in its own thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
from anyio.abc import TaskGroup

from genq.backoff import backoff_delay
from genq.functions import FunctionSpec
from genq.serving.loading import Loaded, load
from genq.serving.model import Model
from genq.serving.pool import ModelPool

log = logging.getLogger("genq.models")

SETUP_RETRY_FIRST = 1.0  # seconds before a failed setup is tried again; doubles
SETUP_RETRY_MAX = 300.0


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"  # the last attempt raised; another is due at ``retry_at``


@dataclass(slots=True)
class _Setup:
    """A model without key on this replica: its state and, once ready, its instance."""

    model: Model
    state: ModelState = ModelState.LOADING
    since: float = 0.0  # time.time() this state began (loading: the current attempt)
    attempts: int = 0
    error: str | None = None
    retry_at: float | None = None
    loaded: Loaded | None = None

    def report(self) -> dict[str, Any]:
        return {"model": self.model.name, "state": self.state.value, "since": self.since,
                "attempts": self.attempts, "error": self.error, "retry_at": self.retry_at,
                "load_seconds": None if self.loaded is None
                else round(self.loaded.load_seconds, 3)}


class ModelHost:
    """The models of ``specs`` on ``device``; ``on_change`` is called whenever what
    the replica reports changes (a load started, ended or failed; a model evicted)."""

    def __init__(self, specs: Mapping[str, FunctionSpec], device: str,
                 on_change: Callable[[], None]) -> None:
        self.device = device
        self._specs = dict(specs)
        self._on_change = on_change
        self._setups: dict[int, _Setup] = {}  # id(model) -> its setup
        self.pools: dict[str, ModelPool] = {}  # model name -> pool of a keyed family
        now = time.time()
        for spec in self._specs.values():
            for model in spec.models.values():
                if model.keyed:
                    self.pools.setdefault(model.name, ModelPool(model, device, on_change))
                else:
                    self._setups.setdefault(id(model), _Setup(model, since=now))
        self._closed = False

    # -- setup -----------------------------------------------------------------------
    def start(self, tg: TaskGroup) -> None:
        """Begin loading every model without key, each in a task of ``tg``."""
        for setup in self._setups.values():
            tg.start_soon(self._keep_loading, setup, name=f"genq setup {setup.model.name}")

    async def _keep_loading(self, setup: _Setup) -> None:
        while not self._closed:
            setup.state, setup.since = ModelState.LOADING, time.time()
            setup.attempts += 1
            self._on_change()
            try:
                loaded = await load(setup.model, None, self.device)
            except Exception as exc:
                delay = backoff_delay(setup.attempts - 1, SETUP_RETRY_FIRST, SETUP_RETRY_MAX)
                setup.state, setup.since = ModelState.FAILED, time.time()
                setup.error = f"{type(exc).__name__}: {exc}"
                setup.retry_at = setup.since + delay
                log.warning("genq: setup of model %s on %s failed (attempt %d); trying "
                            "again in %.0f s; its jobs stay queued", setup.model.name,
                            self.device, setup.attempts, delay, exc_info=exc)
                self._on_change()
                await anyio.sleep(delay)
                continue
            if self._closed:  # shut down while it loaded
                await loaded.close()
                return
            setup.loaded, setup.state, setup.since = loaded, ModelState.READY, time.time()
            setup.error = setup.retry_at = None
            log.info("genq: model %s loaded on %s in %.1f s", setup.model.name, self.device,
                     loaded.load_seconds)
            self._on_change()
            return

    # -- the worker's questions ------------------------------------------------------
    def ready(self, function: str) -> bool:
        return all(self._setup_of(m).state is ModelState.READY
                   for m in self._specs[function].models.values() if not m.keyed)

    def _setup_of(self, model: Model) -> _Setup:
        return self._setups[id(model)]

    def holds(self) -> frozenset[str]:
        """Affinity keys of every keyed model held: where warm routing sends jobs."""
        return frozenset(a for pool in self.pools.values() for a in pool.holds())

    def function_states(self) -> dict[str, dict[str, Any]]:
        """Per function: ``state`` (the worst of its models': failed, loading, ready)
        with ``since``, and the models' own reports. What the worker tells the store."""
        states: dict[str, dict[str, Any]] = {}
        for name, spec in self._specs.items():
            setups = [self._setup_of(m) for m in spec.models.values() if not m.keyed]
            if not setups:
                states[name] = {"state": ModelState.READY.value, "since": None, "models": []}
                continue
            worst = max(setups, key=lambda s: _SEVERITY[s.state])
            states[name] = {"state": worst.state.value, "since": worst.since,
                            "models": [s.report() for s in setups]}
        return states

    def loaded_models(self) -> list[dict[str, Any]]:
        loaded = [s.loaded for s in self._setups.values() if s.loaded is not None]
        loaded += [item for pool in self.pools.values() for item in pool.loaded()]
        return [item.describe() for item in loaded]

    @contextlib.asynccontextmanager
    async def inject(self, spec: FunctionSpec, kwargs: dict[str, Any],
                     on_load: Callable[[str], None] | None = None
                     ) -> AsyncIterator[dict[str, Any]]:
        """``kwargs`` with the call's models added, held until the block ends."""
        if not spec.models:
            yield kwargs
            return
        full = dict(kwargs)
        async with contextlib.AsyncExitStack() as stack:
            for param, model in spec.models.items():
                if model.keyed:
                    assert model.key is not None
                    pool = self.pools[model.name]
                    full[param] = await stack.enter_async_context(
                        pool.use(kwargs[model.key], on_load))
                else:
                    loaded = self._setup_of(model).loaded
                    assert loaded is not None, "claimed before its model was ready"
                    full[param] = loaded.value
            yield full

    # -- teardown --------------------------------------------------------------------
    async def close(self) -> None:
        """Tear every model down, the last loaded first (shutdown, after the grace)."""
        self._closed = True
        for pool in self.pools.values():
            await pool.close()
        loaded = sorted((s.loaded for s in self._setups.values() if s.loaded is not None),
                        key=lambda item: item.loaded_at, reverse=True)
        for setup in self._setups.values():
            setup.loaded = None
        for item in loaded:
            await item.close()
            log.info("genq: model %s torn down on %s", item.label, self.device)


_SEVERITY = {ModelState.READY: 0, ModelState.LOADING: 1, ModelState.FAILED: 2}
