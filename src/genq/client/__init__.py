"""Clients: one async surface over a transport (in-process or HTTP), and its sync twin."""

from genq.client.base import Artifact, AsyncClientBase, AsyncJob
from genq.client.http import AsyncClient, Client
from genq.client.sync import Job, SyncClient

__all__ = ["Artifact", "AsyncClient", "AsyncClientBase", "AsyncJob", "Client", "Job",
           "SyncClient"]
