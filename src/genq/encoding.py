"""Turning what job code returns or yields into what the store keeps (JSON or artifacts)."""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from genq.media import as_binary
from genq.store.base import Store

_PLAIN = (str, int, float, bool, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)


class NotSerializable(TypeError):
    pass


async def encode(value: Any, store: Store, job_id: str, name: str) -> Any:
    """JSON for JSON-able values; binary values are stored and replaced by their reference."""
    if isinstance(value, _PLAIN):
        return value
    binary = as_binary(value)
    if binary is not None:
        ref = await store.put_artifact(job_id, binary.name or name, binary.content_type,
                                       binary.data)
        return ref.to_dict()
    if isinstance(value, list | tuple):
        if all(type(v) in _PLAIN_TYPES for v in value):  # a vector: no awaits per item
            return list(value)
        return [await encode(v, store, job_id, f"{name}-{i}") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: await encode(v, store, job_id, f"{name}-{k}") for k, v in value.items()}
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        raise NotSerializable(
            f"a value of type {type(value).__name__} is neither JSON-serializable nor "
            "binary; return or yield genq.Image, genq.File, bytes or JSON-able data"
        ) from None
