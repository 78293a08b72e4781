"""``ModelPool``: the models of one keyed family a replica holds, least recently used
first out.

A job takes a model with ``async with pool.use(key)``: held models are used at once;
a model being loaded for another job is waited for (loaded once, not twice); otherwise
room is made by unloading the least recently used model that no running job uses, and
the model is loaded. When every held model is in use, the job waits for one to be
released rather than overrunning ``max_models`` (GPU memory is the limit it stands for).
A load that fails fails the job that asked (its retries apply) and leaves the pool as
it was.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from genq.serving.loading import Loaded, load
from genq.serving.model import Model


@dataclass(slots=True)
class _Entry:
    loaded: Loaded
    users: int = 0


@dataclass(slots=True)
class PoolCounts:
    """What the pool has done since start: the figures tests and benchmarks read."""

    loads: int = 0
    evictions: int = 0
    load_seconds: float = 0.0
    order: list[str] = field(default_factory=list)  # affinity keys as evicted


class ModelPool:
    def __init__(self, model: Model, device: str, on_change: Callable[[], None]) -> None:
        assert model.keyed
        self.model = model
        self.device = device
        self.counts = PoolCounts()
        self._on_change = on_change
        self._held: OrderedDict[str, _Entry] = OrderedDict()  # affinity -> entry, LRU first
        self._loading: dict[str, anyio.Event] = {}  # affinity -> set when its load ends
        self._changed = anyio.Event()  # set (and replaced) when a model is released

    def holds(self) -> list[str]:
        """Affinity keys of the models held, least recently used first."""
        return list(self._held)

    def loaded(self) -> list[Loaded]:
        return [entry.loaded for entry in self._held.values()]

    @contextlib.asynccontextmanager
    async def use(self, key: Any, on_load: Callable[[str], None] | None = None
                  ) -> AsyncIterator[Any]:
        """The model for ``key``, held for the block; ``on_load(label)`` is called
        before a load starts (the job's log says what it waits for)."""
        affinity = self.model.affinity(key)
        entry = await self._acquire(affinity, key, on_load)
        try:
            yield entry.loaded.value
        finally:
            entry.users -= 1
            self._signal()

    async def _acquire(self, affinity: str, key: Any,
                       on_load: Callable[[str], None] | None) -> _Entry:
        while True:
            entry = self._held.get(affinity)
            if entry is not None:
                entry.users += 1
                self._held.move_to_end(affinity)
                return entry
            pending = self._loading.get(affinity)
            if pending is not None:
                await pending.wait()
                continue
            if len(self._held) + len(self._loading) < self.model.max_models:
                return await self._load(affinity, key, on_load)
            victim = next((a for a, e in self._held.items() if e.users == 0), None)
            if victim is None:
                await self._wait_for_release()
                continue
            await self._evict(victim)

    async def _load(self, affinity: str, key: Any,
                    on_load: Callable[[str], None] | None) -> _Entry:
        done = self._loading[affinity] = anyio.Event()
        try:
            if on_load is not None:
                on_load(self.model.label(key))
            loaded = await load(self.model, key, self.device)
        finally:
            del self._loading[affinity]
            done.set()
        entry = self._held[affinity] = _Entry(loaded, users=1)
        self.counts.loads += 1
        self.counts.load_seconds += loaded.load_seconds
        self._on_change()
        return entry

    async def _evict(self, affinity: str) -> None:
        entry = self._held.pop(affinity)
        self.counts.evictions += 1
        self.counts.order.append(affinity)
        self._on_change()  # routing stops sending its jobs here before the unload ends
        with anyio.CancelScope(shield=True):
            await entry.loaded.close()
        self._signal()

    async def _wait_for_release(self) -> None:
        await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def close(self) -> None:
        """Unload every model (shutdown), most recently used last."""
        while self._held:
            _, entry = self._held.popitem(last=False)
            await entry.loaded.close()
