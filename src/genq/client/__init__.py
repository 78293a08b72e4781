"""Clients: one async surface over a transport, and its sync twin."""

from genq.client.base import Artifact, AsyncClientBase, AsyncJob
from genq.client.sync import Client, Job

__all__ = ["Artifact", "AsyncClientBase", "AsyncJob", "Client", "Job"]
