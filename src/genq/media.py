"""Binary values that job code returns or yields: stored as artifacts, not JSON."""

from __future__ import annotations

import io
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class File:
    """Bytes with a name and a content type; ``File.from_path`` reads a file from disk."""

    data: bytes
    name: str = "file"
    content_type: str = "application/octet-stream"

    @classmethod
    def from_path(cls, path: str | Path, content_type: str | None = None) -> File:
        p = Path(path)
        guessed = content_type or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return cls(p.read_bytes(), p.name, guessed)


@dataclass(frozen=True, slots=True)
class Image:
    """An encoded image (PNG by default). ``Image.from_pil`` accepts a PIL image."""

    data: bytes
    content_type: str = "image/png"
    name: str = "image.png"

    @classmethod
    def from_pil(cls, image: Any, format: str = "PNG") -> Image:
        buffer = io.BytesIO()
        image.save(buffer, format=format)
        subtype = format.lower()
        return cls(buffer.getvalue(), f"image/{subtype}", f"image.{subtype}")


def as_binary(value: Any) -> File | Image | None:
    """The binary form of ``value`` when it must become an artifact, else None."""
    if isinstance(value, File | Image):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return File(bytes(value))
    if type(value).__module__.startswith("PIL.") and hasattr(value, "save"):
        return Image.from_pil(value)
    return None
