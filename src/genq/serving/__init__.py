"""Models as first-class: declared with ``@app.model``, loaded once per worker replica
before work, torn down at shutdown, many of a family held in an LRU with jobs routed to
the replica that holds theirs. See docs/serving.md."""

from genq.serving.devices import DeviceUnavailable, check_available, parse_devices
from genq.serving.model import Model

__all__ = ["DeviceUnavailable", "Model", "check_available", "parse_devices"]
