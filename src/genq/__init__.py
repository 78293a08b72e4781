"""genq: durable jobs for generative-AI apps.

``app = genq.App()``, ``@app.function(...)``, then ``with app.local() as client``.
"""

from genq.app import App
from genq.bridge import iterate_in_thread
from genq.client import Artifact, AsyncClient, AsyncJob, Client, Job, Restart, Transport
from genq.errors import (
    ArtifactTooLarge,
    BadRequest,
    Cancelled,
    ConnectionLost,
    Forbidden,
    GenqError,
    HostNotAllowed,
    IdempotencyConflict,
    InvalidInput,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    OriginNotAllowed,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
    RateLimited,
    RemoteError,
    RequestTimeout,
    ResultTimeout,
    StoreLocked,
    StoreUnavailable,
    TooManyConnections,
    TryLater,
    Unauthorized,
    UnknownFunction,
)
from genq.media import File, Image
from genq.models import Event, EventType, JobInfo, JobStatus, SubmitReason
from genq.progress import Progress

__all__ = [
    "App",
    "Artifact",
    "ArtifactTooLarge",
    "AsyncClient",
    "AsyncJob",
    "BadRequest",
    "Cancelled",
    "Client",
    "ConnectionLost",
    "Event",
    "EventType",
    "File",
    "Forbidden",
    "GenqError",
    "HostNotAllowed",
    "IdempotencyConflict",
    "Image",
    "InvalidInput",
    "Job",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "OriginNotAllowed",
    "PayloadTooLarge",
    "Progress",
    "ProtocolError",
    "QueueFull",
    "RateLimited",
    "RemoteError",
    "RequestTimeout",
    "Restart",
    "ResultTimeout",
    "StoreLocked",
    "StoreUnavailable",
    "SubmitReason",
    "TooManyConnections",
    "Transport",
    "TryLater",
    "Unauthorized",
    "UnknownFunction",
    "iterate_in_thread",
]
__version__ = "0.1.0"
