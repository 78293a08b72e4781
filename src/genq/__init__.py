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
    IdempotencyConflict,
    InvalidInput,
    JobCancelled,
    JobExpired,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
    RateLimited,
    RemoteError,
    ResultTimeout,
    StorageFull,
    StoreLocked,
    StoreLost,
    StoreUnavailable,
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
    "PayloadTooLarge",
    "Progress",
    "ProtocolError",
    "QueueFull",
    "RateLimited",
    "RemoteError",
    "Restart",
    "ResultTimeout",
    "StorageFull",
    "StoreLocked",
    "StoreLost",
    "StoreUnavailable",
    "SubmitReason",
    "Transport",
    "TryLater",
    "Unauthorized",
    "UnknownFunction",
    "iterate_in_thread",
]
__version__ = "0.1.0"
