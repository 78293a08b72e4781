"""What a download may touch (genq.downloads.policy), against real loopback HTTP servers:
the folder it writes in, the URLs and addresses it reaches, redirects, and its size."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import genq
from genq.demo import app as demo_app
from genq.downloads import download
from genq.downloads.policy import (
    AddressRefused,
    DownloadPolicy,
    DownloadRefused,
    DownloadTooLarge,
    safe_destination,
)
from genq.local import LocalRunner
from tests.support.flaky_http import FlakyFiles, serve_files

SIZE = 4 * 1024 * 1024
BLOB = random.Random(9).randbytes(SIZE)
LOOPBACK = DownloadPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))


class Hits:
    """Requests a test server received, and body bytes it sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.sent = 0


def downloads_only(tmp_path: Path) -> LocalRunner:
    """The demo app running only ``download_model``: its chat and embedding models are
    loaded by the workers of the functions that take them, which these tests leave out."""
    return demo_app.local(tmp_path / "db.sqlite3", functions=["download_model"])


@contextmanager
def serve(respond: Callable[[BaseHTTPRequestHandler, Hits], None],
          host: str = "127.0.0.1") -> Iterator[tuple[str, Hits]]:
    """A real HTTP server on ``host`` answering every GET with ``respond``."""
    hits = Hits()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits.requests += 1
            respond(self, hits)

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def redirect_to(location: str) -> Callable[[BaseHTTPRequestHandler, Hits], None]:
    def respond(handler: BaseHTTPRequestHandler, hits: Hits) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return respond


def endless(handler: BaseHTTPRequestHandler, hits: Hits) -> None:
    """A chunked body with no announced length that goes on (up to 256 MiB)."""
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    piece = b"x" * 65536
    try:
        while hits.sent < 256 << 20:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            hits.sent += len(piece)
    except OSError:
        handler.close_connection = True  # the client hung up: what the test wants


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- where it writes ----------------------------------------------------------------

@pytest.mark.parametrize(("name", "problem"), [
    ("../evil.bin", "path separator"), ("/etc/passwd", "path separator"),
    ("sub/x.bin", "path separator"), ("..\\evil.bin", "path separator"),
    ("..", "refers to a folder"), (".", "refers to a folder"), ("", "is empty"),
    ("  ", "is empty"), (" x.bin", "space"), ("a\x00b", "control character"),
    ("m.bin.part", "partial downloads"), ("m.bin.part.json", "partial downloads"),
    ("a" * 256, "longer than 255 bytes"),
])
def test_names_that_leave_the_folder_or_collide_are_refused(
        tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(DownloadRefused, match=problem):
        safe_destination(tmp_path / "downloads", name)
    assert tree(tmp_path) == ["downloads"]


def test_symbolic_links_in_the_folder_are_not_written_through(tmp_path: Path) -> None:
    folder, outside = tmp_path / "downloads", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "m.bin").symlink_to(outside / "m.bin")
    (folder / "w.bin.part").symlink_to(outside / "w.bin")
    with pytest.raises(DownloadRefused, match=r"m\.bin in the downloads folder is a symbolic"):
        safe_destination(folder, "m.bin")
    with pytest.raises(DownloadRefused, match=r"w\.bin\.part .* symbolic link"):
        safe_destination(folder, "w.bin")
    assert safe_destination(folder, "ok.bin") == folder.resolve() / "ok.bin"
    # A link planted after the check (a race) is never followed: a part file that is one
    # is refused (O_NOFOLLOW), or removed itself when it does not belong to the URL.
    (outside / "w.bin").write_bytes(b"secret")
    with serve_files(FlakyFiles({"w.bin": BLOB})) as url:
        (folder / "w.bin.part.json").write_text(json.dumps({"url": f"{url}/w.bin"}))
        with pytest.raises(OSError, match="symbolic links"):
            download(f"{url}/w.bin", folder / "w.bin", policy=LOOPBACK)
        (folder / "w.bin.part.json").write_text(json.dumps({"url": "elsewhere"}))
        assert download(f"{url}/w.bin", folder / "w.bin", policy=LOOPBACK).size == SIZE
    assert (outside / "w.bin").read_bytes() == b"secret"
    assert tree(outside) == ["w.bin"] and tree(folder) == ["m.bin", "w.bin"]


def test_demo_refuses_names_that_leave_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "downloads"
    monkeypatch.setenv("GENQ_DOWNLOADS", str(folder))
    monkeypatch.setenv("GENQ_DOWNLOAD_ALLOW_PRIVATE", "1")
    with serve_files(FlakyFiles({"..": BLOB, "m.bin": BLOB})) as url, \
            downloads_only(tmp_path) as client:
        with pytest.raises(genq.InvalidInput, match=r"filename: .*refers to a folder"):
            client.submit("download_model", url=f"{url}/m.bin", filename="..")
        # A name taken from the URL is decoded, then checked the same way.
        job = client.submit("download_model", url=f"{url}/%2e%2e")
        with pytest.raises(genq.JobFailed, match=r"DownloadRefused: file name '\.\.' refers"):
            job.result(timeout=30)
        assert not [e for e in job.events() if e.type is genq.EventType.RETRYING]
    assert tree(tmp_path) == sorted(["downloads", *(p.name for p in tmp_path.glob("db*"))])


# -- which URLs --------------------------------------------------------------------

@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/m.bin",
                                 "data:text/plain,hello", "gopher://127.0.0.1:70/"])
@pytest.mark.parametrize("policy", [None, DownloadPolicy(allow_private=True)])
def test_only_http_and_https_urls_are_fetched(
        tmp_path: Path, url: str, policy: DownloadPolicy | None) -> None:
    with pytest.raises(DownloadRefused, match="only http and https URLs can be downloaded"):
        download(url, tmp_path / "m.bin", policy=policy)
    assert tree(tmp_path) == []


def test_demo_refuses_other_schemes_and_credentials_at_submit(tmp_path: Path) -> None:
    with downloads_only(tmp_path) as client:
        with pytest.raises(genq.InvalidInput, match="url: "):
            client.submit("download_model", url="file:///etc/passwd")
        with pytest.raises(genq.InvalidInput, match=r"url: .*carries credentials") as refused:
            client.submit("download_model", url="https://me:s3cret@example.com/m.bin")
    assert "s3cret" not in str(refused.value)


# -- which addresses ---------------------------------------------------------------

def test_loopback_is_refused_by_default_and_allowed_when_enabled(tmp_path: Path) -> None:
    files = FlakyFiles({"m.bin": BLOB})
    with serve_files(files) as url:
        port = url.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(AddressRefused, match=rf"{host}.*a loopback address"):
                download(f"http://{host}:{port}/m.bin", tmp_path / "m.bin",
                         policy=DownloadPolicy())
        assert files.requests == 0  # refused before connecting: the server saw nothing
        assert tree(tmp_path) == []
        for allowing in (DownloadPolicy(allow_private=True), LOOPBACK):
            result = download(f"{url}/m.bin", tmp_path / "m.bin", policy=allowing)
            assert result.size == SIZE
    assert (tmp_path / "m.bin").read_bytes() == BLOB


def test_demo_job_fails_at_once_on_a_private_address_unless_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "downloads"
    monkeypatch.setenv("GENQ_DOWNLOADS", str(folder))
    monkeypatch.delenv("GENQ_DOWNLOAD_ALLOW_PRIVATE", raising=False)
    monkeypatch.delenv("GENQ_DOWNLOAD_ALLOW_NETWORKS", raising=False)
    files = FlakyFiles({"m.bin": BLOB})
    with serve_files(files) as url, downloads_only(tmp_path) as client:
        job = client.submit("download_model", url=f"{url}/m.bin")
        with pytest.raises(genq.JobFailed, match=r"AddressRefused: refused to connect to "
                                                 r"127\.0\.0\.1: a loopback address") as failed:
            job.result(timeout=30)
        assert "GENQ_DOWNLOAD_ALLOW_PRIVATE" in str(failed.value)
        assert not [e for e in job.events() if e.type is genq.EventType.RETRYING]
        assert files.requests == 0

        monkeypatch.setenv("GENQ_DOWNLOAD_ALLOW_PRIVATE", "1")
        result = client.submit("download_model", url=f"{url}/m.bin").result(timeout=30)
    assert result["path"] == str(folder.resolve() / "m.bin") and result["size"] == SIZE
    assert (folder / "m.bin").read_bytes() == BLOB


def test_demo_job_fails_at_once_when_the_file_is_not_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download_model retries DownloadErrors five times, but not a 404 (issue 17)."""
    monkeypatch.setenv("GENQ_DOWNLOADS", str(tmp_path / "downloads"))
    monkeypatch.setenv("GENQ_DOWNLOAD_ALLOW_PRIVATE", "1")
    with serve_files(FlakyFiles({})) as url, downloads_only(tmp_path) as client:
        job = client.submit("download_model", url=f"{url}/missing.bin")
        with pytest.raises(genq.JobFailed, match=rf"PermanentDownloadError: HTTP 404 Not "
                                                 rf"Found for {url}/missing\.bin"):
            job.result(timeout=30)
        assert job.info().attempts == 1
        assert not [e for e in job.events() if e.type is genq.EventType.RETRYING]


@pytest.mark.parametrize(("address", "reason"), [
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("100.64.0.1", "not globally routable"),
    ("0.0.0.0", "unspecified"), ("224.0.0.251", "multicast"), ("240.0.0.1", "reserved"),
    ("::1", "loopback"), ("fd00::1", "private"), ("fe80::1", "link-local"),
    ("fec0::1", "site-local"), ("ff02::1", "multicast"), ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback address, embedded"),
    ("2002:a00:1::", "private address, embedded"),  # 6to4 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local address, embedded"),  # NAT64 of 169.254.169.254
])
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    ip = ipaddress.ip_address(address)
    assert reason in (DownloadPolicy().refusal(ip) or "")
    assert DownloadPolicy(allow_private=True).refusal(ip) is None
    with pytest.raises(AddressRefused, match=f"refused to connect to {ip}: a {reason}"):
        DownloadPolicy().check_address(str(ip), ip)


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.69", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert DownloadPolicy().refusal(ipaddress.ip_address(address)) is None


def test_a_redirect_to_a_private_address_is_refused(tmp_path: Path) -> None:
    """127.0.0.2 stands for an allowed host, 127.0.0.1 for the internal service."""
    files = FlakyFiles({"m.bin": BLOB})
    only_2 = DownloadPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    with serve_files(files) as internal, \
            serve(redirect_to(f"{internal}/m.bin"), host="127.0.0.2") as (allowed, hits):
        with pytest.raises(AddressRefused, match=r"refused to connect to 127\.0\.0\.1"):
            download(f"{allowed}/m.bin", tmp_path / "m.bin", policy=only_2)
        assert hits.requests == 1 and files.requests == 0
        assert tree(tmp_path) == []
        # The same redirect is followed when its target is allowed too.
        assert download(f"{allowed}/m.bin", tmp_path / "m.bin", policy=LOOPBACK).size == SIZE


@pytest.mark.parametrize("policy", [None, LOOPBACK])
def test_a_redirect_to_another_scheme_is_refused_without_retrying(
        tmp_path: Path, policy: DownloadPolicy | None) -> None:
    with serve(redirect_to("file:///etc/passwd")) as (url, hits):
        with pytest.raises(DownloadRefused, match="file"):
            download(f"{url}/m.bin", tmp_path / "m.bin", policy=policy, retries=3)
    assert hits.requests == 1
    assert tree(tmp_path) == []


def test_a_redirect_to_a_url_with_credentials_is_refused(tmp_path: Path) -> None:
    with serve(redirect_to("http://me:s3cret@127.0.0.1:9/m.bin")) as (url, _):
        with pytest.raises(DownloadRefused, match="carries credentials") as refused:
            download(f"{url}/m.bin", tmp_path / "m.bin", policy=LOOPBACK)
    assert "s3cret" not in str(refused.value)


# -- how many bytes ----------------------------------------------------------------

def test_a_file_larger_than_the_limit_is_refused_before_it_is_written(tmp_path: Path) -> None:
    files = FlakyFiles({"m.bin": BLOB})
    small = DownloadPolicy(allow_private=True, max_bytes=1 << 20)
    with serve_files(files) as url:
        with pytest.raises(DownloadTooLarge, match=f"is {SIZE} bytes, over the download "
                                                   f"limit of 1048576 bytes"):
            download(f"{url}/m.bin", tmp_path / "m.bin", policy=small)
    assert tree(tmp_path) == []


def test_a_body_past_the_limit_is_cut_off_and_removed(tmp_path: Path) -> None:
    small = DownloadPolicy(allow_private=True, max_bytes=2 << 20)
    with serve(endless) as (url, hits):
        with pytest.raises(DownloadTooLarge, match="sent more than 2097152 bytes"):
            download(f"{url}/forever", tmp_path / "forever", policy=small)
    assert tree(tmp_path) == []  # the part file and its sidecar are removed
    assert hits.sent < 64 << 20


def test_demo_size_limit_comes_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "downloads"
    monkeypatch.setenv("GENQ_DOWNLOADS", str(folder))
    monkeypatch.setenv("GENQ_DOWNLOAD_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("GENQ_DOWNLOAD_MAX_MB", "1")
    with serve_files(FlakyFiles({"m.bin": BLOB})) as url, \
            downloads_only(tmp_path) as client:
        job = client.submit("download_model", url=f"{url}/m.bin")
        with pytest.raises(genq.JobFailed, match=r"DownloadTooLarge: .* over the download limit"):
            job.result(timeout=30)
        assert not [e for e in job.events() if e.type is genq.EventType.RETRYING]
    assert os.listdir(folder) == []


@pytest.mark.parametrize(("env", "problem"), [
    ({"GENQ_DOWNLOAD_ALLOW_PRIVATE": "maybe"}, "GENQ_DOWNLOAD_ALLOW_PRIVATE must be"),
    ({"GENQ_DOWNLOAD_ALLOW_NETWORKS": "10.0.0.0/33"}, "GENQ_DOWNLOAD_ALLOW_NETWORKS: "),
    ({"GENQ_DOWNLOAD_MAX_MB": "lots"}, "GENQ_DOWNLOAD_MAX_MB must be a positive"),
    ({"GENQ_DOWNLOAD_MAX_MB": "0"}, "GENQ_DOWNLOAD_MAX_MB must be a positive"),
    ({"GENQ_DOWNLOAD_MAX_MB": "inf"}, "GENQ_DOWNLOAD_MAX_MB must be a positive"),
])
def test_bad_settings_are_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DownloadPolicy.from_env(env)


def test_settings_from_the_environment() -> None:
    assert DownloadPolicy.from_env({}) == DownloadPolicy()
    assert DownloadPolicy().max_bytes == 20 << 30
    policy = DownloadPolicy.from_env({"GENQ_DOWNLOAD_ALLOW_PRIVATE": "yes",
                                      "GENQ_DOWNLOAD_ALLOW_NETWORKS": "10.0.0.0/8, fd00::/8",
                                      "GENQ_DOWNLOAD_MAX_MB": "1.5"})
    assert policy.allow_private and policy.max_bytes == 3 << 19
    assert policy.allowed_networks == (ipaddress.ip_network("10.0.0.0/8"),
                                       ipaddress.ip_network("fd00::/8"))
