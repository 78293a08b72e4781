"""Resumable, verified model downloads, and what a download of an untrusted URL may touch.

``download`` (in ``transfer.py``) resumes with HTTP Range and checks sha256;
``DownloadPolicy`` and ``safe_destination`` (in ``policy.py``) confine a download whose
URL or file name comes from a user. Both are blocking code for sync genq functions.
"""

from genq.downloads.policy import (
    DownloadPolicy,
    DownloadRefused,
    DownloadTooLarge,
    check_name,
    check_url,
    name_from_url,
    safe_destination,
)
from genq.downloads.transfer import (
    ChecksumMismatch,
    DownloadError,
    DownloadResult,
    PermanentDownloadError,
    download,
)

__all__ = [
    "ChecksumMismatch",
    "DownloadError",
    "DownloadPolicy",
    "DownloadRefused",
    "DownloadResult",
    "DownloadTooLarge",
    "PermanentDownloadError",
    "check_name",
    "check_url",
    "download",
    "name_from_url",
    "safe_destination",
]
