"""A minimal PNG encoder (8-bit RGB), so the demo needs no imaging library."""

from __future__ import annotations

import struct
import zlib


def encode_rgb(width: int, height: int, rows: list[bytes]) -> bytes:
    """``rows`` holds ``height`` rows of ``width * 3`` bytes each."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
