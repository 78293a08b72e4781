"""The HTTP server: REST + Server-Sent Events over a store, with in-process workers."""

from genq.server.api import ServerSettings, create_server
from genq.server.auth import ApiKeys

__all__ = ["ApiKeys", "ServerSettings", "create_server"]
