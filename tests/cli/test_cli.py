"""The ``genq`` command, run as a subprocess against a real server: output, files and the
documented exit codes (0 ok, 1 failed, 2 usage/invalid input, 3 not found, 4 cancelled,
130 interrupted)."""

from __future__ import annotations

import contextlib
import inspect
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import http_app, model_app, retry_app
from tests.cli.support import genq, serving
from tests.support.http_fixtures import (
    GENQ_BIN,
    LiveServer,
    ServerFactory,
    cli_env,
    finished,
    free_port,
    submit,
    wait_until,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_run_streams_text_to_stdout(server: LiveServer) -> None:
    done = genq("run", "--server", server.url, "tokens", "--n", "5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "t0 t1 t2 t3 t4"
    assert "job " in done.stderr and "started" in done.stderr

    done = genq("run", "--server", server.url, "add", "--x", "1", "--y=41")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_run_marks_where_a_retried_job_started_over(make_server: ServerFactory) -> None:
    """stdout cannot take back the lost run's 39 tokens; a line on stderr, between them
    and the new run's 100 (seen in order with both streams on one pipe), says they were
    discarded, and the exit code is the job's."""
    server = make_server(retry_app.app)
    lost, kept = "".join(retry_app.lost_chunks()), "".join(retry_app.kept_chunks())
    done = subprocess.run([str(GENQ_BIN), "run", "--server", server.url, "flaky_tokens",
                           "--tag", "cli"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout
    notice = "— attempt 2 restarted, output so far discarded —"
    retried = "retrying (attempt 2) in "
    assert f"{lost}\n{retried}" in done.stdout  # a note starts a line of its own
    assert f"\n{notice}\n" in done.stdout
    assert done.stdout.index(lost) < done.stdout.index(notice) < done.stdout.index(kept)
    assert done.stdout.rstrip().endswith(kept.rstrip())


def follow_until_loaded(args: list[str], gate: Path) -> str:
    """Run ``genq ARGS`` (stdout and stderr on one pipe, in order); once it says why the
    job waits, let the model load (``gate``); its whole output."""
    lines: list[str] = []
    with subprocess.Popen([str(GENQ_BIN), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=cli_env(),
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line)
                if "waiting for a worker" in line:
                    gate.touch()
                    break
            lines += proc.stdout.readlines()
            assert proc.wait(60) == 0, "".join(lines)
        finally:
            proc.kill()
    return "".join(lines)


def test_run_and_watch_say_why_a_job_waits_until_it_starts(
        make_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job queued behind a loading model: the CLI says so (polling the job view while
    it is queued), then shows the start and the result, and says nothing more of it."""
    monkeypatch.setenv("GENQ_TEST_MODEL_GATE", str(tmp_path / "gate"))
    server = make_server(model_app.app)
    output = follow_until_loaded(["run", "--server", server.url, "scale", "--x", "21"],
                                 tmp_path / "gate")
    note = "waiting for a worker: model loading ("
    assert note in output and "s so far)" in output
    assert output.index(note) < output.index("started (attempt 1)")
    assert output.count(note) == 1  # the seconds ticking by are not new notes
    assert output.rstrip().endswith("42")

    (tmp_path / "gate").unlink()
    server.restart()  # a new engine loads the model again, behind the gate again
    with httpx.Client(base_url=server.url) as http:
        job_id = submit(http, "chat", message="hello there")["id"]
    output = follow_until_loaded(["watch", "--server", server.url, job_id], tmp_path / "gate")
    assert output.index(note) < output.index("started (attempt 1)")
    assert "echo: hello there" in output


def test_run_exit_codes(server: LiveServer) -> None:
    invalid = genq("run", "--server", server.url, "add", "--x", "abc")
    assert invalid.returncode == 2
    assert "invalid input" in invalid.stderr and "x:" in invalid.stderr

    missing = genq("run", "--server", server.url, "add")
    assert missing.returncode == 2 and "x:" in missing.stderr

    unknown = genq("run", "--server", server.url, "nope", "--x", "1")
    assert unknown.returncode == 3
    assert "nope" in unknown.stderr

    failed = genq("run", "--server", server.url, "fail", "--message", "kaputt")
    assert failed.returncode == 1
    assert "ValueError: kaputt" in failed.stderr

    with httpx.Client(base_url=server.url) as http:  # only the successful-looking ones ran
        assert {j["function"] for j in http.get("/api/jobs").json()["jobs"]} == {"fail"}


def test_result_saves_an_artifact(server: LiveServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url) as http:
        job = submit(http, "image", side=6)
        finished(http, job["id"])
    target = tmp_path / "out.png"
    done = genq("result", job["id"], "--server", server.url, "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == http_app.image(side=6).data
    assert target.read_bytes().startswith(PNG_SIGNATURE)
    assert "image/png" in done.stderr

    # The same through `run -o`, and a JSON result printed by `result`.
    run_target = tmp_path / "run.png"
    done = genq("run", "--server", server.url, "-o", str(run_target), "image", "--side", "6")
    assert done.returncode == 0, done.stderr
    assert run_target.read_bytes() == target.read_bytes()
    # After the function name, only inputs: genq run's own -o is not one.
    late = genq("run", "--server", server.url, "image", "--side", "6", "-o", "x.png")
    assert late.returncode == 2
    assert "-o after the function name" in late.stderr and "before it" in late.stderr
    assert genq("result", "nope", "--server", server.url).returncode == 3


def test_jobs_watch_and_cancel(server: LiveServer, idle_server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        tokens = submit(http, "tokens", n=4)
        failed = submit(http, "fail")
        finished(http, tokens["id"])
        finished(http, failed["id"])

    # A narrow terminal: each id is still printed whole, ready for the other commands.
    listing = genq("jobs", "--server", server.url, COLUMNS="40")
    assert listing.returncode == 0, listing.stderr
    header, *lines = listing.stdout.splitlines()
    assert header.split() == ["id", "function", "status", "attempts", "created"]
    rows = {line.split()[1]: line.split() for line in lines}
    assert rows["tokens"][:3] == [tokens["id"], "tokens", "succeeded"]
    assert rows["fail"][:3] == [failed["id"], "fail", "failed"]
    only_failed = genq("jobs", "--server", server.url, "--status", "failed")
    assert failed["id"] in only_failed.stdout and tokens["id"] not in only_failed.stdout

    watched = genq("watch", rows["tokens"][0], "--server", server.url)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.strip() == "t0 t1 t2 t3"
    assert genq("watch", rows["fail"][0], "--server", server.url).returncode == 1
    shown = genq("result", rows["tokens"][0], "--server", server.url)
    assert shown.returncode == 0 and shown.stdout.split() == ["t0", "t1", "t2", "t3"]
    assert genq("watch", "nope", "--server", server.url).returncode == 3

    with httpx.Client(base_url=idle_server.url) as http:
        queued = submit(http, "add", x=1)
        cancelled = genq("cancel", queued["id"], "--server", idle_server.url)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.split() == [queued["id"], "cancelled"]
        assert http.get(f"/api/jobs/{queued['id']}").json()["status"] == "cancelled"
    assert genq("watch", queued["id"], "--server", idle_server.url).returncode == 4
    assert genq("cancel", "nope", "--server", idle_server.url).returncode == 3


def test_ctrl_c_cancels_the_job_and_exits_130(server: LiveServer) -> None:
    proc = subprocess.Popen([str(GENQ_BIN), "run", "--server", server.url, "slow",
                             "--seconds", "120"], env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=server.url) as http:
            def running() -> list[dict[str, Any]]:
                jobs: list[dict[str, Any]] = http.get(
                    "/api/jobs", params={"function": "slow", "status": "running"}
                ).json()["jobs"]
                return jobs

            job = wait_until(running, 30, what="the job to run")[0]
            time.sleep(0.2)  # let the CLI be inside its event stream
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 130, stderr
            assert "interrupted" in stderr and job["id"] in stderr
            assert "Traceback" not in stderr and "Error" not in stderr, stderr  # clean exit
            assert finished(http, job["id"])["status"] == "cancelled"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- genq serve ----------------------------------------------------------------------------
def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    done = genq("serve", "apps.http_app:app", "--host", "0.0.0.0", "--port", str(free_port()),
                "--db", str(tmp_path / "db.sqlite3"), timeout=30)
    assert done.returncode == 2
    assert "refusing" in done.stderr and "GENQ_API_KEYS" in done.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # it stopped before opening anything


@pytest.mark.parametrize("how", ["insecure-public", "api-keys"])
def test_serve_on_a_public_address_with_keys_or_insecure_public(tmp_path: Path,
                                                                 how: str) -> None:
    port = free_port()
    args = ["apps.http_app:app", "--host", "0.0.0.0", "--port", str(port),
            "--db", str(tmp_path / "db.sqlite3"), "--log-level", "warning"]
    env = cli_env()
    if how == "insecure-public":
        args.append("--insecure-public")
    else:
        env["GENQ_API_KEYS"] = "key-a=alice"
    # Bound on 0.0.0.0; tested over loopback only.
    with serving(port, *args, env=env) as served:
        url = served.url
        if how == "api-keys":
            assert served.http.get("/api/jobs").status_code == 401
            ran = genq("run", "--server", url, "--api-key", "key-a", "add", "--x", "2")
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == "2"
            denied = genq("run", "--server", url, "add", "--x", "2")
            assert denied.returncode != 0 and "API key" in denied.stderr
        else:
            ran = genq("run", "--server", url, "tokens", "--n", "3")
            assert ran.returncode == 0 and ran.stdout.strip() == "t0 t1 t2"
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert served.proc.returncode in (0, -signal.SIGTERM), served.stderr
    assert f"http://0.0.0.0:{port}" in served.stderr


def test_serve_exposure_and_connection_options(tmp_path: Path) -> None:
    """--allowed-hosts, $GENQ_ALLOWED_ORIGINS, --header-timeout and
    --max-connections-per-client reach the server; the genq CLI is unaffected."""
    port = free_port()
    with serving(port, "apps.http_app:app", "--port", str(port), "--log-level", "warning",
                 "--db", str(tmp_path / "db.sqlite3"), "--allowed-hosts", "genq.example.com",
                 "--header-timeout", "3", "--max-connections-per-client", "3",
                 env=cli_env(GENQ_ALLOWED_ORIGINS="https://app.example")) as served:
        http = served.http
        assert http.get("/api/jobs", headers={"Host": "genq.example.com"}).status_code == 200
        refused = http.get("/api/jobs", headers={"Host": "other.example"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "host_not_allowed"
        job = {"function": "add", "input": {"x": 1}}
        ok = http.post("/api/jobs", json=job, headers={"Origin": "https://app.example"})
        assert ok.status_code == 201, ok.text
        evil = http.post("/api/jobs", json=job, headers={"Origin": "https://evil.example"})
        assert evil.json()["error"]["code"] == "origin_not_allowed"
        ran = genq("run", "--server", served.url, "add", "--x", "2", "--y", "3")
        assert ran.returncode == 0 and ran.stdout.strip() == "5", ran.stderr

        def from_neighbour() -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=30,
                                            source_address=("127.0.0.2", 0))

        with contextlib.ExitStack() as stack:
            held = [stack.enter_context(from_neighbour()) for _ in range(3)]
            for sock in held:
                sock.sendall(b"GET /api/jobs HTTP/1.1\r\n")
            with from_neighbour() as fourth:  # one more than the address may hold
                assert fourth.recv(4096).startswith(b"HTTP/1.1 429 ")
            for sock in held:  # the half-sent requests are cut off after 3 s
                assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")


def test_serve_refuses_an_allowed_origin_that_is_none(tmp_path: Path) -> None:
    done = genq("serve", "apps.http_app:app", "--port", str(free_port()), "--db",
                str(tmp_path / "db.sqlite3"), "--allowed-origins", "app.example", timeout=30)
    assert done.returncode == 2
    assert "--allowed-origins" in done.stderr and "not an origin" in done.stderr


def test_serve_defaults_are_the_servers() -> None:
    """The limits `genq serve --help` shows are the ones a server made in code gets."""
    from genq.cli import serve
    from genq.server.connections import ConnectionLimits

    defaults = ConnectionLimits()
    params = inspect.signature(serve).parameters
    assert params["header_timeout"].default == defaults.header_timeout
    assert params["body_timeout"].default == defaults.body_timeout
    assert params["max_connections_per_client"].default == defaults.max_per_client


# -- retention -------------------------------------------------------------------------------
def test_serve_retain_deletes_finished_jobs_after_the_window(tmp_path: Path) -> None:
    port = free_port()
    with serving(port, "apps.http_app:app", "--port", str(port), "--db",
                 str(tmp_path / "db.sqlite3"), "--log-level", "warning",
                 "--retain", "2s") as served:
        http = served.http
        job = submit(http, "add", x=2)
        assert finished(http, job["id"])["result"] == 2
        assert [j["id"] for j in http.get("/api/jobs").json()["jobs"]] == [job["id"]]
        # Housekeeping (once a second) deletes it once it ended 2 s ago.
        wait_until(lambda: http.get(f"/api/jobs/{job['id']}").status_code == 404, 20,
                   interval=0.2, what="the finished job to be deleted")
        assert http.get("/api/jobs").json()["jobs"] == []
        gone = http.get(f"/api/jobs/{job['id']}/events")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"
    assert "keeping finished jobs 2s" in served.stderr


def test_retain_must_be_a_duration(tmp_path: Path) -> None:
    done = genq("worker", "apps.http_app:app", "--db", str(tmp_path / "db.sqlite3"),
                "--retain", "soon", timeout=30)
    assert done.returncode == 2
    assert "--retain" in done.stderr and "7d" in done.stderr
    done = genq("worker", "apps.http_app:app", "--store",
                f"sqlite:///{tmp_path}/db.sqlite3?retain=later", timeout=30)
    assert done.returncode == 2 and "later" in done.stderr


def test_serve_refuses_a_bad_rate_limit_or_key_entry(tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite3")
    done = genq("serve", "apps.http_app:app", "--db", db, "--rate-limit", "lots",
                timeout=30)
    assert done.returncode == 2
    assert "--rate-limit" in done.stderr and "20/s" in done.stderr
    keys = tmp_path / "keys"
    keys.write_text("key-a=alice superuser\n")
    done = genq("serve", "apps.http_app:app", "--db", db, "--api-keys-file", str(keys),
                timeout=30)
    assert done.returncode == 2 and "superuser" in done.stderr


# -- API keys as generators print them, and the addresses wrong keys count against ---------
# Two keys as `openssl rand -base64 16` prints them: both end in "==".
PADDED_KEYS = ["q0Zb3kJx9u1mYc2LwQe7Hg==", "Zr8TQp2vN5sXoA1dK3yUeQ=="]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_serve_keeps_padded_keys_apart(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "db.sqlite3"
    env = cli_env(GENQ_API_KEYS=",".join(PADDED_KEYS))
    with serving(port, "apps.http_app:app", "--port", str(port), "--db", str(db),
                 "--log-level", "warning", env=env) as served:
        http = served.http
        first, second = (_bearer(key) for key in PADDED_KEYS)
        job = submit(http, "add", headers=first, x=20, y=22)
        assert finished(http, job["id"], headers=first)["result"] == 42
        # Two owners: neither sees the other's jobs.
        assert [j["id"] for j in http.get("/api/jobs", headers=first).json()["jobs"]] == [
            job["id"]]
        assert http.get("/api/jobs", headers=second).json()["jobs"] == []
        assert http.get(f"/api/jobs/{job['id']}", headers=second).status_code == 404
        # What the old parser made of them (the key cut at its padding) is no key.
        for wrong in ("q0Zb3kJx9u1mYc2LwQe7Hg", "="):
            assert http.get("/api/jobs", headers=_bearer(wrong)).status_code == 401
        assert http.get("/api/jobs", params={"api_key": ""}).status_code == 401
        owners = [http.post("/api/session", headers=h).json()["owner"]
                  for h in (first, second)]
        assert owners[0] != owners[1] and all(o.startswith("key-") for o in owners)
    # Owners are stored, shown in /api/stats and dashboards: never the key itself.
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite3*"))
    assert job["id"].encode() in stored
    for key in PADDED_KEYS:
        assert key.rstrip("=").encode() not in stored


def test_serve_refuses_key_entries_it_cannot_read(tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite3")
    ambiguous = genq("serve", "apps.http_app:app", "--db", db, timeout=30,
                     GENQ_API_KEYS=f"{PADDED_KEYS[1]} owner=bob, q0Zb3kJx9u1mYc2LwQe7Hg==alice")
    assert ambiguous.returncode == 2
    assert "GENQ_API_KEYS entry 2" in ambiguous.stderr
    assert "KEY owner=NAME" in ambiguous.stderr
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# team\n{PADDED_KEYS[0]} owner=alice\n{PADDED_KEYS[0]} owner=bob\n")
    repeated = genq("serve", "apps.http_app:app", "--db", db, "--api-keys-file", str(keys),
                    timeout=30)
    assert repeated.returncode == 2
    assert "keys.txt line 3" in repeated.stderr and "line 2" in repeated.stderr
    empty = genq("serve", "apps.http_app:app", "--db", db, timeout=30,
                 GENQ_API_KEYS="k1 owner=alice, =bob")
    assert empty.returncode == 2 and "entry 2" in empty.stderr and "empty" in empty.stderr
    for done in (ambiguous, repeated, empty):
        assert "Traceback" not in done.stderr
        assert "q0Zb3kJx9u1mYc2LwQe7Hg" not in done.stderr  # no key in the message
    assert not Path(db).exists()


def _wrong_key_answers(http: httpx.Client, count: int, forwarded_for: str) -> list[int]:
    headers = {"Authorization": "Bearer guess", "X-Forwarded-For": forwarded_for}
    return [http.get("/api/jobs", headers=headers).status_code for _ in range(count)]


def test_forwarded_for_is_believed_only_from_configured_proxies(tmp_path: Path) -> None:
    args = ["apps.http_app:app", "--db", str(tmp_path / "db.sqlite3"), "--log-level",
            "warning"]
    port = free_port()
    env = cli_env(GENQ_API_KEYS="key-a owner=alice")
    with serving(port, *args, "--port", str(port), env=env) as served:
        # No proxy configured: a loopback client cannot choose its address; the ten tries
        # are spent by this connection's address whatever the header claims.
        answers = [_wrong_key_answers(served.http, 1, f"10.0.0.{i}")[0] for i in range(11)]
        assert answers == [401] * 10 + [429]
        assert _wrong_key_answers(served.http, 1, "10.9.9.9") == [429]
    port = free_port()
    env = cli_env(GENQ_API_KEYS="key-a owner=alice", GENQ_FORWARDED_ALLOW_IPS="127.0.0.1")
    with serving(port, *args, "--port", str(port), env=env) as served:
        # Behind a configured proxy, each forwarded address has its own count.
        assert _wrong_key_answers(served.http, 11, "10.0.0.1") == [401] * 10 + [429]
        assert _wrong_key_answers(served.http, 10, "10.0.0.2") == [401] * 10
        assert _wrong_key_answers(served.http, 1, "10.0.0.1") == [429]
        # The proxy's X-Forwarded-Proto: https makes the UI's cookie Secure.
        signed_in = served.http.post("/api/session", headers={
            "Authorization": "Bearer key-a", "X-Forwarded-Proto": "https"})
        assert "secure" in signed_in.headers["set-cookie"].lower()
    port = free_port()
    with serving(port, *args, "--port", str(port), "--forwarded-allow-ips", "10.1.0.0/16",
                 env=cli_env(GENQ_API_KEYS="key-a owner=alice")) as served:
        # A proxy list that does not name this client: its header is ignored again.
        assert [_wrong_key_answers(served.http, 1, f"10.0.0.{i}")[0]
                for i in range(11)] == [401] * 10 + [429]


def test_python_dash_m_genq_is_the_same_cli(server: LiveServer) -> None:
    done = subprocess.run([sys.executable, "-m", "genq", "run", "--server", server.url, "add",
                           "--x", "2", "--y", "3"], capture_output=True, text=True,
                          timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    usage = subprocess.run([sys.executable, "-m", "genq", "--help"], capture_output=True,
                           text=True, timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    assert usage.returncode == 0 and "python -m genq" in usage.stdout
    for command in ("serve", "worker", "demo", "run", "watch", "jobs", "cancel", "result"):
        assert command in usage.stdout


# -- sharing ---------------------------------------------------------------------------------
def test_serve_owner_quotas_from_the_environment_or_options(tmp_path: Path) -> None:
    port = free_port()
    with serving(port, "apps.http_app:app", "--port", str(port), "--db",
                 str(tmp_path / "db.sqlite3"), "--log-level", "warning", "--no-workers",
                 env=cli_env(GENQ_OWNER_MAX_QUEUED="1")) as served:
        http = served.http
        submit(http, "add", x=1)
        refused = http.post("/api/jobs", json={"function": "add", "input": {"x": 2}})
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        error = refused.json()["error"]
        assert error["code"] == "owner_quota" and error["limit"] == 1
        # `genq run` says so and exits as for a full queue
        done = genq("run", "--server", served.url, "add", "--x", "3")
        assert done.returncode == 7
        assert "over quota" in done.stderr and "owner local has 1 queued jobs" in done.stderr
    done = genq("serve", "apps.http_app:app", "--db", str(tmp_path / "db.sqlite3"),
                "--owner-max-running", "0", timeout=30)
    assert done.returncode == 2 and "--owner-max-running" in done.stderr
