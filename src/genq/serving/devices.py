"""Device names for ``genq worker --devices`` / ``genq serve --devices``, checked up front.

One worker replica runs per device entry (``cuda:0,cuda:1``; repeat an entry, or pass
``--replicas N``, for several replicas on one device). A replica's models are loaded by
loaders told its device. The replicas of one process share its event loop and store
connection; their model code runs in threads, where torch releases the GIL during its
kernels (docs/serving.md says why replicas are in-process, and how to run a process
per GPU instead).

A device torch cannot see is refused at start-up with a sentence naming it, not at the
first load: a typo in ``cuda:7`` should not look like a model that fails to load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


class DeviceUnavailable(ValueError):
    """A device name that is malformed, or that this machine does not have."""


def parse_devices(spec: str | Sequence[str] | None, replicas: int = 1) -> list[str]:
    """The device of each replica: ``spec``'s entries (default ``cpu``), each repeated
    ``replicas`` times, in order. Raises DeviceUnavailable."""
    if replicas < 1:
        raise DeviceUnavailable("replicas must be at least 1")
    names = (spec.split(",") if isinstance(spec, str) else list(spec or ["cpu"]))
    names = [n.strip().lower() for n in names if n.strip()] or ["cpu"]
    for name in names:
        if not _DEVICE.match(name):
            raise DeviceUnavailable(f"unknown device {name!r}: use cpu, cuda, cuda:N, mps "
                                    "or xpu:N, comma-separated")
    return [name for name in names for _ in range(replicas)]


def check_available(devices: Sequence[str]) -> None:
    """Raise DeviceUnavailable for a device torch does not see (CPU always exists)."""
    accelerated = sorted({d for d in devices if d != "cpu"})
    if not accelerated:
        return
    try:
        import torch
    except ImportError:
        raise DeviceUnavailable(f"device {accelerated[0]} needs torch, which is not "
                                "installed") from None
    for name in accelerated:
        kind, _, index_text = name.partition(":")
        index = int(index_text or 0)
        if kind == "mps":
            if not torch.backends.mps.is_available():
                raise DeviceUnavailable("device mps: torch sees no Apple GPU here")
            continue
        backend = getattr(torch, kind)
        count = backend.device_count() if backend.is_available() else 0
        if index >= count:
            raise DeviceUnavailable(
                f"device {name}: torch sees {count} {kind.upper()} device(s) here"
                + (f" ({kind}:0 to {kind}:{count - 1})" if count else ""))
