"""Resumable downloads against a real loopback HTTP server that drops connections."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

import genq
from genq.downloads import ChecksumMismatch, DownloadError, download
from tests.support.flaky_http import FlakyFiles, serve_files

SIZE = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def blob() -> bytes:
    return random.Random(7).randbytes(SIZE)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_random_drops_resume_without_wasting_bytes(tmp_path: Path, blob: bytes) -> None:
    resuming = FlakyFiles({"model.bin": blob}, drop_probability=0.7, seed=3)
    with serve_files(resuming) as url:
        result = download(f"{url}/model.bin", tmp_path / "model.bin", sha256=sha(blob),
                          retries=50, backoff=0.001)
    assert (tmp_path / "model.bin").read_bytes() == blob
    assert not (tmp_path / "model.bin.part").exists()
    assert resuming.dropped >= 3, "the server should have cut several responses"
    assert result.resumed == resuming.range_requests >= 3
    assert result.transferred == SIZE  # a resumed download receives every byte once

    # The same drops without range support: every drop throws away what was received.
    restarting = FlakyFiles({"model.bin": blob}, drop_probability=0.7, seed=3, ranges=False)
    with serve_files(restarting) as url:
        again = download(f"{url}/model.bin", tmp_path / "again.bin", sha256=sha(blob),
                         retries=200, backoff=0.001)
    assert (tmp_path / "again.bin").read_bytes() == blob
    assert again.resumed == 0
    assert restarting.sent > 1.5 * resuming.sent


def test_a_later_call_resumes_the_part_file(tmp_path: Path, blob: bytes) -> None:
    files = FlakyFiles({"m.bin": blob}, drop_probability=1.0, seed=5)
    with serve_files(files) as url:
        with pytest.raises(DownloadError, match="failed after 1 attempts"):
            download(f"{url}/m.bin", tmp_path / "m.bin", retries=0)
        kept = (tmp_path / "m.bin.part").stat().st_size
        assert 0 < kept < SIZE
        files.drop_probability = 0.0
        result = download(f"{url}/m.bin", tmp_path / "m.bin", sha256=sha(blob))
    assert result.resumed == 1
    assert result.transferred == SIZE - kept
    assert (tmp_path / "m.bin").read_bytes() == blob


def test_changed_file_starts_over_instead_of_splicing(tmp_path: Path, blob: bytes) -> None:
    files = FlakyFiles({"m.bin": blob}, drop_probability=1.0, seed=11)
    with serve_files(files) as url:
        with pytest.raises(DownloadError):
            download(f"{url}/m.bin", tmp_path / "m.bin", retries=0)
        new = blob[::-1]
        files.files["m.bin"] = new
        files.etag_suffix = "-v2"
        files.drop_probability = 0.0
        result = download(f"{url}/m.bin", tmp_path / "m.bin", sha256=sha(new))
    assert result.resumed == 0 and result.transferred == SIZE
    assert (tmp_path / "m.bin").read_bytes() == new


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path: Path, blob: bytes) -> None:
    with serve_files(FlakyFiles({"m.bin": blob})) as url:
        with pytest.raises(ChecksumMismatch, match="expected 00"):
            download(f"{url}/m.bin", tmp_path / "m.bin", sha256="00" * 32)
    assert sorted(os.listdir(tmp_path)) == []


def test_download_job_reports_bytes_and_resumes_across_job_retries(
        tmp_path: Path, blob: bytes) -> None:
    app = genq.App()
    files = FlakyFiles({"m.bin": blob}, drop_probability=1.0, seed=2)

    @app.function(retries=3, retry_on=(DownloadError,), retry_backoff=0.01)
    def fetch(url: str, expected: str, progress: genq.Progress = genq.Progress()) -> dict:
        result = download(url, tmp_path / "out" / "m.bin", sha256=expected, retries=0,
                          progress=progress)
        return result.to_dict()

    with serve_files(files) as url, app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("fetch", url=f"{url}/m.bin", expected=sha(blob))
        seen_retry = False
        for event in job.events():
            if event.type is genq.EventType.RETRYING:
                seen_retry = True
                files.drop_probability = 0.0  # the link recovers after the first failure
        result = job.result(timeout=30)
        progress = [e.data for e in job.events() if e.type is genq.EventType.PROGRESS]
    assert seen_retry
    assert result["sha256"] == sha(blob) and result["size"] == SIZE
    assert result["resumed"] == 1 and result["transferred"] < SIZE
    assert progress and progress[-1]["unit"] == "B" and progress[-1]["total"] == SIZE
    assert any("rate" in p for p in progress)


def test_cancelling_a_download_job_stops_it_and_keeps_the_part(
        tmp_path: Path, blob: bytes) -> None:
    app = genq.App()
    files = FlakyFiles({"m.bin": blob}, chunk_delay=0.02)

    @app.function
    def fetch(url: str, progress: genq.Progress = genq.Progress()) -> dict:
        return download(url, tmp_path / "m.bin", progress=progress).to_dict()

    with serve_files(files) as url, app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("fetch", url=f"{url}/m.bin")
        for event in job.events():
            if event.type is genq.EventType.PROGRESS and event.data.get("current", 0) > 0:
                job.cancel()
                break
        with pytest.raises(genq.JobCancelled):
            job.result(timeout=30)
    part = tmp_path / "m.bin.part"
    assert part.exists() and 0 < part.stat().st_size < SIZE
    assert not (tmp_path / "m.bin").exists()


def test_a_missing_file_fails_the_job_at_once_with_its_status(tmp_path: Path) -> None:
    """404 cannot turn into the file by asking again: no retry, though the function
    retries DownloadErrors (PermanentDownloadError is both)."""
    app = genq.App()
    files = FlakyFiles({})

    @app.function(retries=5, retry_on=(DownloadError,), retry_backoff=5.0)
    def fetch(url: str) -> dict:
        return download(url, tmp_path / "m.bin").to_dict()

    with serve_files(files) as url, app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("fetch", url=f"{url}/gone.bin")
        with pytest.raises(genq.JobFailed) as failed:
            job.result(timeout=30)
        info = job.info()
        types = [e.type for e in job.events()]
    assert f"HTTP 404 Not Found for {url}/gone.bin" in str(failed.value)
    assert info.error is not None and info.error["type"] == "PermanentDownloadError"
    assert info.attempts == 1 and genq.EventType.RETRYING not in types
    assert not (tmp_path / "m.bin.part").exists()


def test_a_function_marks_an_error_permanent(tmp_path: Path) -> None:
    """An error of a ``retry_on`` type that is also a genq.PermanentError is not retried;
    the same type without it is."""
    app = genq.App()

    class Missing(ConnectionError, genq.PermanentError):
        pass

    @app.function(retries=2, retry_on=(ConnectionError,), retry_backoff=0.01)
    def flaky(permanent: bool) -> str:
        raise (Missing if permanent else ConnectionError)("no such model")

    with app.local(tmp_path / "db.sqlite3") as client:
        permanent = client.submit("flaky", permanent=True)
        with pytest.raises(genq.JobFailed, match="no such model"):
            permanent.result(timeout=30)
        transient = client.submit("flaky", permanent=False)
        with pytest.raises(genq.JobFailed, match="no such model"):
            transient.result(timeout=30)
        assert permanent.info().attempts == 1
        assert transient.info().attempts == 3
