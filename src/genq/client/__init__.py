"""Clients: one async surface (``AsyncClient``) over a ``Transport`` (in-process or HTTP),
and its blocking twin (``Client``)."""

from genq.client.async_client import Artifact, AsyncClient, AsyncJob
from genq.client.attempts import Restart
from genq.client.http import HttpTransport
from genq.client.sync import Client, Job
from genq.client.transport import Transport

__all__ = ["Artifact", "AsyncClient", "AsyncJob", "Client", "HttpTransport", "Job",
           "Restart", "Transport"]
