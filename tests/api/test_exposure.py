"""Web pages cannot use a server they merely reach: cross-site requests and DNS rebinding
against a real server on loopback without API keys (genq serve's and genq demo's
default), while the same origin, requests without an Origin (curl, genq's clients) and
configured origins and host names still work. docs/api.md, "Exposure to web pages"."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import genq
from genq.server.run import answering_to
from genq.server.security import Exposure
from tests.support.http_fixtures import LiveServer, ServerFactory, error_of, submit

EVIL = "http://evil.example"
JOB = json.dumps({"function": "add", "input": {"x": 1}})


def jobs(live: LiveServer) -> list[dict[str, Any]]:
    """Every job of the open server, asked as the genq client asks."""
    with httpx.Client(base_url=live.url, timeout=10) as http:
        found: list[dict[str, Any]] = http.get("/api/jobs").json()["jobs"]
        return found


def post_job(live: LiveServer, **headers: str) -> httpx.Response:
    """A submission as a web page's ``fetch`` sends it without a CORS preflight: a
    text/plain body (a "simple" request)."""
    with httpx.Client(base_url=live.url, timeout=10) as http:
        return http.post("/api/jobs", content=JOB,
                         headers={"Content-Type": "text/plain", **headers})


def test_a_cross_site_submission_is_refused_and_creates_nothing(
        idle_server: LiveServer) -> None:
    server = idle_server  # no workers: a job stays queued, so a cancel would show
    error = error_of(post_job(server, Origin=EVIL), 403, "origin_not_allowed")
    assert error["origin"] == EVIL and "--allowed-origins" in error["message"]
    # Without an Origin, a browser's Referer names the page.
    error_of(post_job(server, Referer=f"{EVIL}/page.html"), 403, "origin_not_allowed")
    # A sandboxed frame or a file:// page says "null".
    error_of(post_job(server, Origin="null"), 403, "origin_not_allowed")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        job = submit(http, "add", x=2, status=201)  # a real one, to cancel
        response = http.post(f"/api/jobs/{job['id']}/cancel", headers={"Origin": EVIL})
        error_of(response, 403, "origin_not_allowed")
        assert http.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"
    assert [j["input"]["x"] for j in jobs(server)] == [2]


def test_dns_rebinding_is_refused(server: LiveServer) -> None:
    """The page's own name, resolved to 127.0.0.1: same-origin to the browser, so only the
    Host header tells."""
    rebound = f"rebind.evil.example:{server.port}"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        submit(http, "add", x=3, status=201)
        response = http.get("/api/jobs", headers={"Host": rebound})
        error = error_of(response, 403, "host_not_allowed")
        assert error["host"] == rebound and "--allowed-hosts" in error["message"]
        assert "jobs" not in response.text and "x" not in error
        for path in ("/", "/api/functions", "/api/stats", "/metrics", "/openapi.json"):
            error_of(http.get(path, headers={"Host": rebound}), 403, "host_not_allowed")
        # Host and Origin agree, as they do for a rebound page: still refused.
        refused = http.post("/api/jobs", content=JOB, headers={
            "Host": rebound, "Origin": f"http://{rebound}", "Content-Type": "text/plain"})
        error_of(refused, 403, "host_not_allowed")
        # Names that only look local, and no name at all.
        for host in ("localhost.evil.example", "127.0.0.1.nip.io", "evil@127.0.0.1", ""):
            error_of(http.get("/api/jobs", headers={"Host": host}), 403, "host_not_allowed")
        # The refusal still carries the security headers.
        assert response.headers["x-content-type-options"] == "nosniff"
        # Probes answer load balancers that ask by address.
        for probe in ("/healthz", "/readyz"):
            assert http.get(probe, headers={"Host": "10.1.2.3:7860"}).status_code == 200
    assert [j["input"]["x"] for j in jobs(server)] == [3]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "127.9.8.7",
                                  "[::1]", "LOCALHOST"])
def test_loopback_names_are_the_servers_own(server: LiveServer, host: str) -> None:
    own = f"{host}:{server.port}"
    response = post_job(server, Host=own, Origin=f"http://{own}")
    assert response.status_code == 201, response.text


def test_same_origin_and_requests_without_origin_are_accepted(server: LiveServer) -> None:
    assert post_job(server, Origin=server.url).status_code == 201  # the web UI
    assert post_job(server, Referer=f"{server.url}/jobs").status_code == 201
    assert post_job(server).status_code == 201  # curl, scripts, other servers
    # genq's own clients send no Origin.
    with genq.Client(server.url) as client:
        assert client.run("add", x=20, y=22) == 42
    assert len(jobs(server)) == 4


def test_configured_origins_and_hosts_are_accepted(make_server: ServerFactory) -> None:
    live = make_server(exposure=Exposure(
        origins=("https://app.example", "http://localhost:3000/"),
        hosts=("genq.example.com", "*.internal.example")))
    assert post_job(live, Origin="https://app.example").status_code == 201
    assert post_job(live, Origin="http://LOCALHOST:3000").status_code == 201
    error_of(post_job(live, Origin="http://app.example"), 403, "origin_not_allowed")
    error_of(post_job(live, Origin="https://app.example.evil"), 403, "origin_not_allowed")
    for host in ("genq.example.com", "genq.example.com:443", "a.b.internal.example"):
        assert post_job(live, Host=host, Origin=f"https://{host}").status_code == 201, host
    for host in ("example.com", "internal.example", "genq.example.com.evil"):
        error_of(post_job(live, Host=host), 403, "host_not_allowed")


def test_a_star_allows_any_origin_or_host(make_server: ServerFactory) -> None:
    live = make_server(exposure=Exposure(origins=("*",), hosts=("*",)))
    assert post_job(live, Origin=EVIL).status_code == 201
    assert post_job(live, Host="anything.example").status_code == 201


def test_the_server_answers_to_the_address_it_listens_on() -> None:
    """What ``genq serve --host`` adds to the names (tested without listening there)."""
    exposure = answering_to("192.168.1.5", Exposure(hosts=("genq.example.com",)))
    for host in ("192.168.1.5:7860", "genq.example.com", "localhost:7860"):
        assert exposure.host_allowed(host), host
    assert not exposure.host_allowed("192.168.1.6:7860")
    for wildcard in ("0.0.0.0", "::"):
        assert answering_to(wildcard, Exposure()) == Exposure()
        assert not answering_to(wildcard, Exposure()).host_allowed(f"{wildcard}:7860")


def test_an_origin_entry_that_names_no_origin_is_refused_at_start() -> None:
    """A typo must not let pages in: 'app.example' (no scheme) names no origin, and read
    as one it would have been ``null``, the origin of sandboxed frames."""
    with pytest.raises(ValueError, match="not an origin"):
        Exposure(origins=("app.example",))
    assert Exposure(origins=("null",)).origin_allowed("null", "127.0.0.1:7860")
