"""API keys against a live server: key entries read exactly as generators print keys,
per-key rate limits with 429 + Retry-After, wrong keys (and only wrong keys) throttled
per client address without ever refusing a valid key, the web UI's session cookie,
admin-only operations data, and nothing one owner does visible to another in
/api/stats or /healthz."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import genq
from genq.server.accesslog import redact_url
from genq.server.auth import ApiKeys, Caller, derived_owner
from genq.server.ratelimit import Rate
from genq.server.sessions import SESSION_COOKIE, SessionSigner
from tests.apps import http_app
from tests.support.http_fixtures import ServerFactory, error_of, finished, submit

ALICE = {"Authorization": "Bearer key-a"}
BOB = {"Authorization": "Bearer key-b"}
OPS = {"Authorization": "Bearer key-ops"}


def test_key_entries_parse_owner_role_and_rate() -> None:
    keys = ApiKeys.parse("key-a=alice rate=5/s burst=2, key-ops=ops admin\nbare")
    assert keys.enabled
    with pytest.raises(ValueError, match="unknown option 'root'"):
        ApiKeys.parse("k=alice root")
    with pytest.raises(ValueError, match="not a rate"):
        ApiKeys.parse("k=alice rate=fast")
    assert Rate.parse("600/min") == Rate(10.0, 10)
    assert Rate.parse("5/10s", burst=3) == Rate(0.5, 3)


# -- key entries -------------------------------------------------------------------------
# Keys as generators print them: `openssl rand -base64 N` (padded), `openssl rand -hex N`,
# urlsafe base64 (padded), `secrets.token_urlsafe` (unpadded urlsafe).
GENERATED_KEYS = st.one_of(
    st.binary(min_size=1, max_size=48).map(lambda b: base64.b64encode(b).decode()),
    st.binary(min_size=1, max_size=48).map(lambda b: b.hex()),
    st.binary(min_size=1, max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(min_size=1, max_size=48).map(
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
)
OWNERS = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.@="), min_size=1,
                 max_size=20)


@st.composite
def key_entries(draw: st.DrawFn) -> tuple[str, str, str | None]:
    """(entry text, key, owner or None) in every form that must read back exactly."""
    key = draw(GENERATED_KEYS)
    owner = draw(st.none() | OWNERS)
    options = draw(st.sampled_from(["", " admin", " rate=5/s burst=3"]))
    if owner is None:
        return key + options, key, None
    forms = [f"{key} owner={owner}{options}", f"{key}  {options} owner={owner}"]
    if "=" not in key and "=" not in owner:  # the older KEY=OWNER form, where it is read
        forms.append(f"{key}={owner}{options}")
    return draw(st.sampled_from(forms)), key, owner


@settings(max_examples=300, deadline=None)
@given(st.lists(key_entries(), min_size=1, max_size=5,
                unique_by=lambda entry: entry[1]),
       st.sampled_from([",", ", ", "\n", " ,\n"]))
def test_generated_keys_read_back_exactly(entries: list[tuple[str, str, str | None]],
                                          separator: str) -> None:
    keys = ApiKeys.parse(separator.join(text for text, _, _ in entries))
    for _, key, owner in entries:
        caller = keys.lookup(key)
        assert caller is not None, key
        assert caller.owner == (owner if owner is not None else derived_owner(key))
        unpadded = key.rstrip("=")
        if unpadded != key and unpadded not in {k for _, k, _ in entries}:
            assert keys.lookup(unpadded) is None  # the padding is part of the key


def test_a_key_without_owner_is_named_by_its_hash() -> None:
    key = "q0Zb3kJx9u1mYc2LwQe7Hg=="
    caller = ApiKeys.parse(key).lookup(key)
    assert caller is not None
    assert caller.owner == "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    assert caller.owner == "key-ff38b82c"  # as docs/api.md says
    assert key.rstrip("=") not in caller.owner


@pytest.mark.parametrize(("entries", "where", "says"), [
    ("k1=alice, =bob", "GENQ_API_KEYS entry 2", "key before '=' is empty"),
    ("k1=alice\n== owner=bob", "GENQ_API_KEYS entry 2", "key before '=' is empty"),
    ("q0Zb3kJx9u1mYc2LwQe7Hg==alice", "GENQ_API_KEYS entry 1", "KEY owner=NAME"),
    ("k1=a=b", "GENQ_API_KEYS entry 1", "ambiguous"),
    ("k1 owner=alice, k2=bob, k1 owner=carol", "GENQ_API_KEYS entry 3", "same key as "
     "GENQ_API_KEYS entry 1"),
    ("k1 owner=", "GENQ_API_KEYS entry 1", "owner name is empty"),
    ("k1=alice owner=bob", "GENQ_API_KEYS entry 1", "owner is given twice"),
    ("k1 owner=a admin admin", "GENQ_API_KEYS entry 1", "admin is given twice"),
    ("k1 owner=a rate=fast", "GENQ_API_KEYS entry 1", "not a rate"),
])
def test_entries_that_cannot_be_read_are_refused_naming_them(entries: str, where: str,
                                                             says: str) -> None:
    with pytest.raises(ValueError, match=f"^{where}: .*{says}"):
        ApiKeys.parse(entries)


def test_a_keys_file_names_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# ops keys\nZr8TQp2vN5sXoA1dK3yUeQ== owner=ops admin\n\n"
                    "q0Zb3kJx9u1mYc2LwQe7Hg== owner=alice\n")
    monkeypatch.setenv("GENQ_API_KEYS", "q0Zb3kJx9u1mYc2LwQe7Hg== owner=bob")
    with pytest.raises(ValueError, match=f"^{path} line 4: the same key as "
                                         "GENQ_API_KEYS entry 1"):
        ApiKeys.from_env(path)
    with pytest.raises(ValueError, match="cannot read the keys file"):
        ApiKeys.from_env(tmp_path / "missing.txt")


DOCS_API = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _docs_block(first_line: str) -> str:
    """The fenced block of docs/api.md that begins with ``first_line``."""
    for block in DOCS_API.read_text().split("```")[1::2]:
        body = block.split("\n", 1)[1]  # after the fence's language tag
        if body.startswith(first_line):
            return body
    raise AssertionError(f"no block starting {first_line!r} in {DOCS_API}")


def test_the_documented_key_examples_read_as_documented(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(_docs_block("# keys.txt"))
    monkeypatch.delenv("GENQ_API_KEYS", raising=False)
    keys = ApiKeys.from_env(path)
    expected = {"q0Zb3kJx9u1mYc2LwQe7Hg==": ("alice", False, None),
                "3f9a0c7d2e51b4a8e0c1d2f3a4b5c6d7": ("bob", False, Rate(5.0, 20)),
                "Zr8TQp2vN5sXoA1dK3yUeQ==": ("ops", True, None),
                "kX2_-9aQmZ3yV0wLr8TqPA": ("ci", False, None)}
    for key, (owner, admin, rate) in expected.items():
        caller = keys.lookup(key)
        assert caller is not None and (caller.owner, caller.admin, caller.rate) == (
            owner, admin, rate)
    # and they are what the generators named beside them print: 16 random bytes each
    assert len(base64.b64decode("q0Zb3kJx9u1mYc2LwQe7Hg==", validate=True)) == 16
    assert len(bytes.fromhex("3f9a0c7d2e51b4a8e0c1d2f3a4b5c6d7")) == 16
    assert len(base64.urlsafe_b64decode("kX2_-9aQmZ3yV0wLr8TqPA==")) == 16
    env = _docs_block("GENQ_API_KEYS=").split('"')[1]
    monkeypatch.setenv("GENQ_API_KEYS", env)
    from_env = ApiKeys.from_env()
    callers = [from_env.lookup(k) for k in ("q0Zb3kJx9u1mYc2LwQe7Hg==",
                                            "Zr8TQp2vN5sXoA1dK3yUeQ==")]
    assert [c.owner if c else None for c in callers] == ["alice", "ops"]


def test_bare_keys_whose_names_collide_are_refused() -> None:
    """Two keys whose derived names (32 bits of their hashes) are equal would be one
    owner; found by brute force over a birthday-sized set of keys."""
    seen: dict[str, str] = {}
    for i in range(1_000_000):
        key = f"k{i}"
        name = derived_owner(key)
        if name in seen:
            break
        seen[name] = key
    else:
        pytest.fail("no collision found")
    with pytest.raises(ValueError, match="entry 2: its derived owner name"):
        ApiKeys.parse(f"{seen[name]}, {key}")
    assert ApiKeys.parse(f"{seen[name]}, {key} owner=carol").enabled


def test_the_access_log_never_shows_a_key() -> None:
    assert redact_url("/api/jobs/1/events?last_event_id=3&api_key=s3cr%2Bt%3D%3D") == \
        "/api/jobs/1/events?last_event_id=3&api_key=[redacted]"
    assert redact_url("/x?api%5Fkey=s3cret&API_KEY=s3cret") == \
        "/x?api%5Fkey=[redacted]&API_KEY=[redacted]"
    assert redact_url("/x?a=1") == "/x?a=1"


# -- through a live server ------------------------------------------------------------------
def test_rate_limit_per_key_answers_429_with_retry_after(make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": Caller("alice", rate=Rate(0.2, burst=3)), "key-b": "bob"})
    live = make_server(keys=keys, rate_limit=Rate(1000, burst=1000))
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for _ in range(3):
            assert http.get("/api/jobs", headers=ALICE).status_code == 200
        response = http.get("/api/jobs", headers=ALICE)
        error = error_of(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 4  # one request per 5 s
        assert error["retry_after"] == int(response.headers["retry-after"])
        assert "0.2/s" in error["message"]
        # Submissions count too, and a refused one is not accepted work.
        error_of(http.post("/api/jobs", json={"function": "add", "input": {"x": 1}},
                           headers=ALICE), 429, "rate_limited")
        # Bob's key has its own bucket (the server's generous default).
        job = submit(http, "add", headers=BOB, x=1)
        assert finished(http, job["id"], headers=BOB)["status"] == "succeeded"
        assert [j["id"] for j in http.get("/api/jobs", headers=BOB).json()["jobs"]] == [
            job["id"]]


def test_wrong_keys_are_throttled_per_address_but_never_a_valid_key(
        make_server: ServerFactory) -> None:
    live = make_server(keys=ApiKeys({"key-a": "alice"}))
    wrong = {"Authorization": "Bearer guess"}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        answers = [http.get("/api/jobs", headers=wrong).status_code for _ in range(50)]
        assert answers == [401] * 10 + [429] * 40
        # Everyone else at this address (one NAT, one proxy) still gets in.
        assert http.get("/api/jobs", headers=ALICE).status_code == 200
        submit(http, "add", headers=ALICE, x=1)
        response = http.get("/api/jobs", headers={"X-API-Key": "another-guess"})
        error = error_of(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) > 0
        assert "wrong API key" in error["message"]


def test_requests_without_a_key_are_not_counted(make_server: ServerFactory) -> None:
    live = make_server(keys=ApiKeys({"key-a": "alice"}))
    with httpx.Client(base_url=live.url, timeout=30) as http:
        for path in ["/api/jobs", "/api/functions", "/api/jobs?api_key="] * 34:
            error = error_of(http.get(path), 401, "unauthorized")
            assert "required" in error["message"]
        # 102 keyless requests later the address has all ten tries left.
        answers = [http.get("/api/jobs", headers={"Authorization": "Bearer guess"})
                   .status_code for _ in range(11)]
        assert answers == [401] * 10 + [429]
        assert http.get("/api/jobs", headers=ALICE).status_code == 200


def test_the_ui_session_cookie_reads_but_never_writes(make_server: ServerFactory) -> None:
    live = make_server(keys=ApiKeys({"key-a": "alice", "key-b": "bob"}))
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job = submit(http, "image", headers=ALICE, side=4)
        assert finished(http, job["id"], headers=ALICE)["status"] == "succeeded"
        artifact = http.get(f"/api/jobs/{job['id']}", headers=ALICE).json()["result"]
    # Only with the key in a header: a key in a URL would be logged on the way.
    with httpx.Client(base_url=live.url, timeout=30) as browser:
        error_of(browser.post("/api/session", params={"api_key": "key-a"}), 401,
                 "unauthorized")
        error_of(browser.post("/api/session", headers={"Authorization": "Bearer nope"}),
                 401, "unauthorized")
        signed_in = browser.post("/api/session", headers=ALICE)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["owner"] == "alice"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/api", "Max-Age=3600"):
            assert attribute.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http here; Secure over https
        assert "key-a" not in cookie
        # The cookie alone reads alice's jobs, events and artifacts...
        assert [j["id"] for j in browser.get("/api/jobs").json()["jobs"]] == [job["id"]]
        events = browser.get(f"/api/jobs/{job['id']}/events", params={"format": "json"})
        assert events.status_code == 200 and events.json()["events"]
        assert browser.get(f"/api/artifacts/{artifact['artifact']['id']}").status_code == 200
        # ...but submits and cancels nothing: a forged cross-site request gains no power.
        error_of(browser.post("/api/jobs", json={"function": "add", "input": {"x": 1}}),
                 401, "unauthorized")
        error_of(browser.post(f"/api/jobs/{job['id']}/cancel"), 401, "unauthorized")
        # A key in a header wins over the cookie.
        assert browser.get("/api/jobs", headers=BOB).json()["jobs"] == []
        # Signing out clears it.
        assert browser.delete("/api/session").status_code == 204
        error_of(browser.get("/api/jobs"), 401, "unauthorized")


def test_a_forged_or_expired_session_is_refused_and_not_counted(
        make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": "alice"})
    live = make_server(keys=keys)
    alice = keys.lookup("key-a")
    assert alice is not None
    key_id = alice.key_id
    expired, _ = keys.sessions.issue(key_id, now=time.time() - 7200)
    foreign, _ = SessionSigner([b"another server's keys"]).issue(key_id)
    genuine, _ = keys.sessions.issue(key_id)
    forged = genuine.rsplit(".", 1)[0] + "." + secrets.token_urlsafe(32)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        def with_cookie(token: str) -> httpx.Response:
            cookie = f"{SESSION_COOKIE}={token}".encode("latin-1")
            return http.get("/api/jobs", headers=[(b"cookie", cookie)])

        for token in [expired, foreign, forged, "v1", "v1.ü.1.x"] * 4:
            error = error_of(with_cookie(token), 401, "unauthorized")
            assert "session" in error["message"]
        assert with_cookie(genuine).status_code == 200
        assert http.get("/api/jobs", headers={"Authorization": "Bearer guess"}
                        ).status_code == 401  # the failures above were not counted


def test_operations_data_needs_an_admin_key(make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": "alice", "key-b": "bob", "key-ops": Caller("ops", admin=True)})
    live = make_server(keys=keys)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        # Bob runs two jobs and keeps a stream open; alice runs nothing.
        jobs = [submit(http, "add", headers=BOB, x=i) for i in range(2)]
        for job in jobs:
            assert finished(http, job["id"], headers=BOB)["status"] == "succeeded"
        slow = submit(http, "slow", headers=BOB, seconds=60)
        with http.stream("GET", f"/api/jobs/{slow['id']}/events", headers=BOB) as stream:
            assert stream.status_code == 200

            error_of(http.get("/metrics"), 401, "unauthorized")
            error = error_of(http.get("/metrics", headers=ALICE), 403, "forbidden")
            assert "admin" in error["message"]
            metrics = http.get("/metrics", headers=OPS)
            assert metrics.status_code == 200
            assert 'genq_jobs_finished_total{function="add",status="succeeded"} 2.0' \
                in metrics.text

            alice = http.get("/api/stats", headers=ALICE).json()
            assert alice["functions"]["add"]["totals"] == {}
            assert alice["functions"]["add"]["throughput_per_min"] == 0
            assert alice["functions"]["add"]["latency_p50"] is None
            assert alice["streams"] == 0
            bob = http.get("/api/stats", headers=BOB).json()
            assert bob["functions"]["add"]["totals"] == {"succeeded": 2}
            assert bob["streams"] == 1
            ops = http.get("/api/stats", headers=OPS).json()
            assert ops["functions"]["add"]["totals"] == {"succeeded": 2}
            assert ops["streams"] == 1

            # Liveness and readiness answer anyone; the cluster figures only an admin.
            assert http.get("/healthz").json() == {"status": "ok"}
            assert http.get("/healthz", headers=ALICE).json() == {"status": "ok"}
            assert http.get("/healthz", headers=OPS).json()["worker"] is not None
            # Per-function states for a probe too, with no error text or cluster figures.
            served = {name: {"state": "ready", "ready": 1, "loading": 0, "failed": 0}
                      for name in http_app.app.functions}
            assert http.get("/readyz").json() == {"status": "ready", "functions": served}
            assert http.get("/readyz", headers=ALICE).json() == {"status": "ready",
                                                                 "functions": served}
            assert http.get("/readyz", headers=OPS).json()["workers"] == 1
        http.post(f"/api/jobs/{slow['id']}/cancel", headers=BOB)


def test_an_open_loopback_server_shows_everything(make_server: ServerFactory) -> None:
    live = make_server()
    with httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.get("/metrics").status_code == 200
        assert "worker" in http.get("/healthz").json()
        assert "workers" in http.get("/readyz").json()


def test_the_python_client_waits_out_a_rate_limit(make_server: ServerFactory) -> None:
    keys = ApiKeys({"key-a": Caller("alice", rate=Rate(2.0, burst=2))})
    live = make_server(keys=keys)
    with genq.Client(live.url, api_key="key-a") as client:
        started = time.monotonic()
        results = [client.run("add", x=i, y=1) for i in range(3)]
        elapsed = time.monotonic() - started
    assert results == [1, 2, 3]  # every call answered, none refused
    # 3 runs are at least 6 requests at 2/s with a burst of 2: the client slept on 429s.
    assert elapsed >= 1.0
    with genq.Client(live.url, api_key="key-a", retry_for=0.5) as impatient:
        with pytest.raises(genq.RateLimited) as refused:
            for i in range(10):
                impatient.submit("add", x=i)
        assert refused.value.retry_after >= 1
