"""What ``import genq`` offers, pinned: the names, one client surface over any transport,
the JobInfo view and the submit reasons on the wire.

``genq.__all__`` is compared as a whole, so adding or dropping a public name is a
decision this file records. The client tests run the same calls in-process
(``app.local()``) and against a real server on a loopback port, and compare.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import genq
from genq.client import HttpTransport
from genq.local import LocalTransport
from genq.models import Event, Job, JobInfo, JobStatus, SubmitReason
from tests.apps.http_app import app as http_app
from tests.support.http_fixtures import LiveServer

PUBLIC = [
    "App", "Artifact", "ArtifactTooLarge", "AsyncClient", "AsyncJob", "BadRequest",
    "Cancelled", "Client", "ConnectionLost", "Event", "EventType", "File", "Forbidden",
    "GenqError", "HostNotAllowed", "IdempotencyConflict", "Image", "InvalidInput", "Job",
    "JobCancelled", "JobExpired", "JobFailed", "JobInfo", "JobNotFound", "JobStatus",
    "Model", "NotReady", "OriginNotAllowed", "OwnerQuota", "PayloadTooLarge", "PermanentError",
    "Progress", "ProtocolError", "QueueFull",
    "RateLimited", "RemoteError", "RequestTimeout", "Restart", "ResultTimeout",
    "StorageFull", "StoreLocked", "StoreLost", "StoreUnavailable", "SubmitReason",
    "TooManyConnections", "Transport", "TryLater", "Unauthorized",
    "UnknownFunction", "UnknownTicket", "iterate_in_thread",
]
TRANSPORT_CALLS = ["submit", "get", "list_jobs", "follow", "wait", "cancel", "artifact",
                   "functions", "aclose"]


def test_genq_exports_exactly_the_public_names() -> None:
    assert sorted(genq.__all__) == sorted(PUBLIC)
    assert len(set(genq.__all__)) == len(genq.__all__)
    for name in PUBLIC:
        assert getattr(genq, name) is not None, name
    # The plumbing of the old client classes is gone, not merely unexported.
    for gone in ("AsyncClientBase", "SyncClient", "LocalClient"):
        assert not hasattr(genq, gone), gone


def test_both_transports_have_every_call_of_the_protocol() -> None:
    for transport in (HttpTransport, LocalTransport):
        for call in TRANSPORT_CALLS:
            assert callable(getattr(transport, call, None)), (transport.__name__, call)


def test_submit_reasons_keep_their_wire_values() -> None:
    assert {r.name: r.value for r in SubmitReason} == {
        "NEW": "new", "IDEMPOTENT": "idempotent", "CACHED": "cached",
        "DEDUPLICATED": "deduplicated", "EXISTING": "existing"}


def test_job_info_is_the_storage_view_without_private_fields() -> None:
    """The JSON view has the keys of the wire contract, in that order (docs/api.md;
    result_size, result_url, waiting and ticket are the newest), none of the record's
    private fields, and reads back as itself."""
    job = Job(id="j1", function="add", input={"x": 1}, owner="alice",
              status=JobStatus.RUNNING, priority=3, created_at=10.5, started_at=11.0,
              attempts=1, max_attempts=2, cache_key="k", idempotency_key="i",
              worker_id="w", lease_until=99.0, lease_token=7, last_event_id=4)
    info = JobInfo.from_job(job, queue_position=None)
    view = info.to_dict()
    assert list(view) == ["id", "function", "input", "status", "priority", "created_at",
                          "started_at", "finished_at", "attempts", "max_attempts", "result",
                          "result_size", "result_url", "error", "last_event_id",
                          "queue_position", "waiting", "ticket"]
    assert view["status"] == "running" and view["input"] == {"x": 1}
    assert view["attempts"] == 1 and view["last_event_id"] == 4
    assert JobInfo.from_dict({**view, "submitted": "new"}) == info
    for private in ("owner", "cache_key", "idempotency_key", "worker_id", "lease_token"):
        assert not hasattr(info, private), private


def test_the_api_job_view_is_job_info(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        submitted = http.post("/api/jobs", json={"function": "add", "input": {"x": 1}})
        assert submitted.status_code == 201
        body = submitted.json()
        assert body["submitted"] == SubmitReason.NEW
        del body["submitted"]
        assert list(body) == list(JobInfo.from_dict(body).to_dict())
        got = http.get(f"/api/jobs/{body['id']}").json()
        assert JobInfo.from_dict(got).to_dict() == got


# -- one client surface, in-process and remote ------------------------------------------
def surface(client: genq.Client) -> dict[str, Any]:
    """The calls that are new on the sync client, reduced to comparable values."""
    out: dict[str, Any] = {}
    job = client.submit("tokens", n=3)
    assert job.reason is SubmitReason.NEW and isinstance(job.submitted, JobInfo)
    out["outputs"] = list(job.outputs())
    info = job.info()
    assert isinstance(info, JobInfo)
    out["info"] = (info.function, info.status, info.result)
    listed = client.list_jobs(function="tokens", status=JobStatus.SUCCEEDED)
    out["listed"] = [(j.id == job.id, type(j).__name__) for j in listed]
    out["functions"] = client.functions()
    image = client.submit("image", side=2)
    art = image.result(timeout=30)
    decoded = client.decode(image.info().result)  # the stored reference, fetched
    assert isinstance(decoded, genq.Artifact)
    out["decoded"] = (decoded.content_type, decoded == art)
    out["cancelled"] = type(client.cancel(image.id)).__name__
    handle = client.job(job.id)
    out["handle"] = (handle.reason, handle.submitted, list(handle.outputs()))
    with pytest.raises(genq.JobFailed):
        list(client.submit("fail", message="no").outputs())
    return out


def test_local_and_remote_clients_are_one_class_with_one_surface(
        server: LiveServer, tmp_path: Path) -> None:
    with http_app.local(tmp_path / "local.sqlite3") as local:
        assert type(local) is genq.Client
        assert isinstance(local.transport, LocalTransport)
        expected = surface(local)
    with genq.Client(server.url) as remote:
        assert isinstance(remote.transport, HttpTransport)
        got = surface(remote)
    assert got == expected
    assert got["outputs"] == ["t0 ", "t1 ", "t2 "]
    assert got["listed"] == [(True, "JobInfo")]
    assert {f["name"] for f in got["functions"]} == set(http_app.functions)
    assert got["handle"] == (SubmitReason.EXISTING, None, ["t0 ", "t1 ", "t2 "])


class Recording:
    """A transport of one's own: wraps another and notes each call's name."""

    def __init__(self, inner: genq.Transport) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def submit(self, function: str, inputs: dict[str, Any], *,
                     priority: int | None = None, idempotency_key: str | None = None
                     ) -> tuple[JobInfo, SubmitReason]:
        self.calls.append("submit")
        return await self.inner.submit(function, inputs, priority=priority,
                                       idempotency_key=idempotency_key)

    async def get(self, job_id: str) -> JobInfo:
        self.calls.append("get")
        return await self.inner.get(job_id)

    async def list_jobs(self, **filters: Any) -> list[JobInfo]:
        self.calls.append("list_jobs")
        return await self.inner.list_jobs(**filters)

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        self.calls.append("follow")
        async for batch in self.inner.follow(job_id, after):
            yield batch

    async def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        self.calls.append("wait")
        return await self.inner.wait(job_id, timeout)

    async def cancel(self, job_id: str) -> JobInfo:
        self.calls.append("cancel")
        return await self.inner.cancel(job_id)

    async def artifact(self, artifact_id: str) -> bytes:
        self.calls.append("artifact")
        return await self.inner.artifact(artifact_id)

    async def functions(self) -> list[dict[str, Any]]:
        self.calls.append("functions")
        return await self.inner.functions()

    async def aclose(self) -> None:
        self.calls.append("aclose")


@pytest.mark.anyio
async def test_any_transport_makes_an_async_client(tmp_path: Path) -> None:
    async with http_app.local(tmp_path / "db.sqlite3") as local:
        assert type(local) is genq.AsyncClient
        recording = Recording(local.transport)
        async with genq.AsyncClient(recording) as client:
            assert await client.run("add", x=2, y=3) == 5
            art = await client.run("image", side=2)
            assert [c async for c in client.stream("tokens", n=2)] == ["t0 ", "t1 "]
            job = await client.submit("tokens", n=2)
            assert [c async for c in job.outputs()] == ["t0 ", "t1 "]
            assert (await client.decode(art.ref.to_dict())).data == art.data
            assert [j.function for j in await client.list_jobs(function="add")] == ["add"]
            assert await client.functions() == await local.functions()
        assert recording.calls == [
            "submit", "wait", "submit", "wait", "artifact", "submit", "follow", "submit",
            "follow", "artifact", "list_jobs", "functions", "aclose"]
        with pytest.raises(TypeError, match="api_key"):
            genq.AsyncClient(recording, api_key="k")


def test_binary_outputs_decode_as_artifacts(tmp_path: Path) -> None:
    app = genq.App("outputs")

    @app.function
    def frames(n: int = 2) -> Iterator[Any]:
        for i in range(n):
            yield f"step {i}"
            yield genq.File(bytes([i]) * 3, name=f"f{i}.bin",
                            content_type="application/octet-stream")

    with app.local(tmp_path / "db.sqlite3") as client:
        job = client.submit("frames", n=2)
        chunks = list(job.outputs())
        assert [c if isinstance(c, str) else (c.name, c.data) for c in chunks] == [
            "step 0", ("f0.bin", b"\0\0\0"), "step 1", ("f1.bin", b"\1\1\1")]
        raw = [e.data["chunk"] for e in job.events() if e.type is genq.EventType.OUTPUT]
        assert [client.decode(c) for c in raw] == chunks
