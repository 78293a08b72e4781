"""Webhook records in Redis (store/webhooks.py says what they are), shared by every
front end: each process's sender claims due records with a lease, so a delivery is
sent by one process at a time.

Keys, beside the jobs' (``<prefix>`` is the store's): ``<prefix>:W:<job>`` a hash
(``record``: the JSON, ``token``: the fence), ``<prefix>:W:due`` a sorted set of job
ids by due time (a claim moves the score ``lease`` seconds on), ``<prefix>:W:done`` by
finish time (for purges), and ``<prefix>:WA:<job>`` the attempt log, a capped list.
Each change is one Lua script, atomic and safe to run twice, run through the store's
``retrying`` so a Redis restart stalls the sender instead of losing a write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from genq.store.webhooks import MAX_ATTEMPTS_KEPT, Attempt, Webhook

T = TypeVar("T")

ADD = """
local prefix, job, record, due = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. ':W:' .. job
if redis.call('HSETNX', key, 'record', record) == 1 then
    redis.call('HSET', key, 'token', 0)
    redis.call('ZADD', prefix .. ':W:due', due, job)
end
return redis.call('HMGET', key, 'record', 'token')
"""

CLAIM = """
local prefix, now, lease, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local due = prefix .. ':W:due'
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, job in ipairs(ids) do
    local key = prefix .. ':W:' .. job
    local record = redis.call('HGET', key, 'record')
    if record then
        redis.call('ZADD', due, now + lease, job)
        local token = redis.call('HINCRBY', key, 'token', 1)
        table.insert(out, record)
        table.insert(out, token)
    else
        redis.call('ZREM', due, job)
    end
end
return out
"""

SAVE = """
local prefix, job, token, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local due, done, attempt, keep = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
local key = prefix .. ':W:' .. job
if redis.call('HGET', key, 'token') ~= token then return 0 end
redis.call('HSET', key, 'record', record)
if due == '' then
    redis.call('ZREM', prefix .. ':W:due', job)
    redis.call('ZADD', prefix .. ':W:done', done, job)
else
    redis.call('ZADD', prefix .. ':W:due', due, job)
end
if attempt ~= '' then
    local log = prefix .. ':WA:' .. job
    redis.call('RPUSH', log, attempt)
    redis.call('LTRIM', log, -keep, -1)
end
return 1
"""

PURGE = """
local prefix, before, limit = ARGV[1], ARGV[2], ARGV[3]
local done = prefix .. ':W:done'
local ids = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. before, 'LIMIT', 0, limit)
for _, job in ipairs(ids) do
    redis.call('DEL', prefix .. ':W:' .. job, prefix .. ':WA:' .. job)
    redis.call('ZREM', done, job)
    redis.call('ZREM', prefix .. ':W:due', job)
end
return #ids
"""


class RedisWebhooks:
    """``WebhookStore`` on the store's connection (``connection``), every call through
    its ``retrying``."""

    def __init__(self, connection: Callable[[], aioredis.Redis],
                 retrying: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
                 prefix: str) -> None:
        self._connection = connection
        self._retrying = retrying
        self._prefix = prefix

    async def _script(self, source: str, *args: Any) -> Any:
        script = self._connection().register_script(source)  # hashed here, no round trip
        return await self._retrying(lambda: script(args=[self._prefix, *args]))

    async def add(self, hook: Webhook, due: float) -> Webhook:
        record, token = await self._script(ADD, hook.job_id, hook.to_json(), repr(due))
        return Webhook.from_json(record, int(token))

    async def get(self, job_id: str) -> Webhook | None:
        key = f"{self._prefix}:W:{job_id}"
        record, token = await self._retrying(
            lambda: self._connection().hmget(key, ["record", "token"]))
        return None if record is None else Webhook.from_json(record, int(token or 0))

    async def attempts(self, job_id: str) -> list[Attempt]:
        key = f"{self._prefix}:WA:{job_id}"
        items = await self._retrying(lambda: self._connection().lrange(key, 0, -1))
        return [Attempt.from_json(item) for item in items]

    async def claim_due(self, now: float, limit: int, lease: float) -> list[Webhook]:
        flat = await self._script(CLAIM, repr(now), repr(lease), limit)
        return [Webhook.from_json(flat[i], int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def save(self, hook: Webhook, due: float | None, attempt: Attempt | None) -> bool:
        done = "" if hook.done_at is None else repr(hook.done_at)
        saved = await self._script(
            SAVE, hook.job_id, hook.token, hook.to_json(), "" if due is None else repr(due),
            done, "" if attempt is None else attempt.to_json(), MAX_ATTEMPTS_KEPT)
        return bool(saved)

    async def purge(self, before: float, limit: int) -> int:
        return int(await self._script(PURGE, repr(before), limit))
