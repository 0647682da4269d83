"""``python -m labsupport serve`` as a real process, driven as the seed's demo flow.

The demo flow, the restart and the SIGKILL tests run on both file and server
stores: a SQLite file, and a database in a throwaway PostgreSQL (see conftest).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import httpx
import pytest
from conftest import free_port, serve_command, stop_process, wait_healthy

from labsupport.store import open_store


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url


def start(db: Path | str, *extra: str) -> Served:
    port = free_port()
    proc = subprocess.Popen(
        serve_command(port, db, *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, lambda: proc.stdout.read() if proc.stdout else "")
    return Served(proc, url)


def stop(served: Served) -> int:
    code = stop_process(served.proc)
    if served.proc.stdout:
        served.proc.stdout.close()
    return code


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where `serve --db` keeps its data: a SQLite file, or an empty PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path / "served.db"


@pytest.fixture
def demo(db: Path | str) -> Iterator[Served]:
    served = start(db, "--demo")
    yield served
    stop(served)


def test_seed_demo_flow(demo: Served) -> None:
    with httpx.Client(base_url=demo.url, timeout=5) as http:
        # 2. record a rating
        r = http.post("/ratings", json={"movie_id": 1, "user_id": 7, "score": 5})
        assert r.status_code == 201
        # 3. kick off a rebuild
        r = http.post("/recommender/rebuild")
        assert r.status_code == 202
        task_id = r.json()["task_id"]
        # 4. poll until complete
        deadline = time.monotonic() + 20
        status = {}
        while time.monotonic() < deadline:
            status = http.get(f"/recommender/rebuild/{task_id}").json()
            if status["status"] == "complete":
                break
            time.sleep(0.2)
        assert status["status"] == "complete"
        assert len(status["sample"]) == 3
        # 5. fetch recommendations
        recs = http.get("/recommendations/7", params={"limit": 3}).json()
        assert len(set(recs)) == 3 and all(isinstance(m, int) for m in recs)
        # a new user's rating shows up once the next rebuild completes
        http.post("/ratings", json={"movie_id": 5, "user_id": 4242, "score": 5})
        task_id = http.post("/recommender/rebuild").json()["task_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if http.get(f"/recommender/rebuild/{task_id}").json()["status"] == "complete":
                break
            time.sleep(0.2)
        assert http.get("/recommendations/4242", params={"limit": 3}).json()[0] == 5


def test_state_survives_restart_and_sigterm_exits_cleanly(db: Path | str) -> None:
    first = start(db, "--demo")
    with httpx.Client(base_url=first.url, timeout=5) as http:
        http.post("/movies", json={"title": "Paddington 2", "year": 2017, "genre": "Comedy"})
        http.post("/ratings", json={"movie_id": 1, "user_id": 999, "score": 4})
        n_movies = len(http.get("/movies", params={"limit": 1000}).json())
    t0 = time.monotonic()
    # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM
    assert stop(first) in (0, -signal.SIGTERM)
    assert time.monotonic() - t0 < 10
    second = start(db)
    try:
        with httpx.Client(base_url=second.url, timeout=5) as http:
            assert len(http.get("/movies", params={"limit": 1000}).json()) == n_movies
            assert http.get("/recommender").json()["n_ratings"] > 0
            assert 1 in http.get("/recommendations/999", params={"limit": 1}).json()
    finally:
        stop(second)


def test_help_lists_serve() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "labsupport", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in out


# --- the scale-out plugin (an entry point of the group labsupport.cli) ---------------------


def test_the_scaleout_plugin_is_found_and_adds_its_options_and_worker() -> None:
    from labsupport.__main__ import PLUGIN_GROUP

    found = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    assert found.get("scaleout") == "labsupport.scaleout.cli:plugin", "pip install -e . again"

    def help_of(*command: str) -> str:
        argv = [sys.executable, "-m", "labsupport", *command, "--help"]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    serve = help_of("serve")
    assert "--redis URL" in serve and "--queue {none,rq}" in serve and "--lease-ttl" in serve
    assert serve.index("--rebuild-rate") < serve.index("--redis") < serve.index("--log-level")
    assert "worker" in help_of()
    assert "--burst" in help_of("worker")


@pytest.mark.parametrize("installed", [[], ["labsupport.no_such_module:plugin"]])
def test_without_a_working_plugin_redis_is_a_one_sentence_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], installed: list[str]
) -> None:
    import labsupport.__main__ as cli

    eps = [EntryPoint("scaleout", value, cli.PLUGIN_GROUP) for value in installed]
    monkeypatch.setattr(cli, "entry_points", lambda group: eps)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--redis", "redis://127.0.0.1:6379/0"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "error: --redis needs the scale-out plugin" in err
    assert ("failed to load (ModuleNotFoundError" in err) is bool(installed)
    assert "Traceback" not in err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "--redis" not in capsys.readouterr().out


# (the start-up build takes the delay too: keep the long one just past the grace)
@pytest.mark.parametrize(("build_delay", "final"), [(1.0, "complete"), (4.0, "interrupted")])
def test_sigterm_drains_refuses_new_rebuilds_and_exits_within_grace(
    tmp_path: Path, build_delay: float, final: str
) -> None:
    grace = 2.0
    served = start(
        tmp_path / "term.db", "--demo", "--grace", str(grace), "--build-delay", str(build_delay)
    )
    with httpx.Client(base_url=served.url, timeout=5) as http:
        task_id = http.post("/recommender/rebuild").json()["task_id"]
        deadline = time.monotonic() + 5
        while http.get(f"/recommender/rebuild/{task_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        refused = http.post("/recommender/rebuild")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert http.get("/health").json() == {"status": "shutting down"}
        served.proc.wait(grace + 5)
        assert time.monotonic() - t0 < grace + 3
    assert stop(served) in (0, -signal.SIGTERM)
    after = start(tmp_path / "term.db")
    try:
        with httpx.Client(base_url=after.url, timeout=5) as http:
            assert http.get(f"/recommender/rebuild/{task_id}").json()["status"] == final
    finally:
        stop(after)


def test_sigkill_mid_rebuild_loses_no_acknowledged_rating(db: Path | str) -> None:
    # the build delay keeps the rebuild surely running when it is killed (and slows the
    # start-up build as much: keep it short)
    served = start(db, "--demo", "--build-delay", "3")
    acknowledged = []
    with httpx.Client(base_url=served.url, timeout=5) as http:
        for movie in range(1, 21):
            body = {"movie_id": movie, "user_id": 5000, "score": 1 + movie % 5}
            if http.post("/ratings", json=body).status_code == 201:
                acknowledged.append((5000, movie, 1 + movie % 5))
        task_id = http.post("/recommender/rebuild").json()["task_id"]
        deadline = time.monotonic() + 5
        while http.get(f"/recommender/rebuild/{task_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    served.proc.kill()  # SIGKILL: no shutdown code runs at all
    served.proc.wait(5)
    stop(served)
    after = start(db)
    try:
        with httpx.Client(base_url=after.url, timeout=5) as http:
            status = http.get(f"/recommender/rebuild/{task_id}").json()
            assert status["status"] == "interrupted" and status["error"]
            recs = http.get("/recommendations/5000", params={"limit": 20}).json()
            top_rated = {m for _, m, s in acknowledged if s == 5}
            assert top_rated <= set(recs[: len(top_rated)])
            new_id = http.post("/recommender/rebuild").json()["task_id"]
            deadline = time.monotonic() + 20
            while http.get(f"/recommender/rebuild/{new_id}").json()["status"] != "complete":
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        stop(after)
    with open_store(db) as store:
        stored = {(r["user_id"], r["movie_id"], r["score"]) for r in store.list_ratings()}
    assert set(acknowledged) <= stored


# --- where the service listens, and its per-client rebuild limit -----------------------


def test_default_bind_is_loopback_only(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    served = start(tmp_path / "bind.db")  # no --host: the default
    try:
        listening = {
            conn.laddr.ip
            for conn in psutil.Process(served.proc.pid).net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}
    finally:
        served.proc.send_signal(signal.SIGTERM)
        out = served.proc.communicate(timeout=15)[0]
        stop(served)
    assert f"Movie API on {served.url}" in out
    assert "binding to" not in out and "Traceback" not in out


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("0.0.0.0", "127.0.0.1"),
        pytest.param(
            "::",
            "[::1]",
            marks=pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_binding_all_interfaces_warns_on_stderr(tmp_path: Path, host: str, loopback: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        serve_command(port, tmp_path / "open.db", "--host", host),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The warning is not an error: the server starts. Stop it as soon as it answers.
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{loopback}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        started = proc.poll() is None and time.monotonic() < deadline
    finally:
        proc.kill()  # by its PID, at once: it listened on every interface
        out, err = proc.communicate(timeout=10)
    assert started, f"the server did not start:\n{out}\n{err}"
    assert f"WARNING: labsupport: binding to {host} (all interfaces)" in err
    assert "use --host 127.0.0.1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.0.0.2", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.20", True),
        ("lab-machine.example", True),
    ],
)
def test_only_hosts_beyond_loopback_are_warned_about(
    caplog: pytest.LogCaptureFixture, host: str, warned: bool
) -> None:
    from labsupport.__main__ import _warn_if_exposed

    with caplog.at_level("WARNING", logger="labsupport"):
        _warn_if_exposed(host)
    messages = [r.getMessage() for r in caplog.records]
    assert bool(messages) is warned
    assert all(m.startswith(f"binding to {host}") for m in messages)


def test_rebuild_rate_option_limits_rebuilds(tmp_path: Path) -> None:
    served = start(tmp_path / "rate.db", "--demo", "--rebuild-rate", "1,30")
    try:
        with httpx.Client(base_url=served.url, timeout=5) as http:
            first = http.post("/recommender/rebuild")
            assert first.status_code == 202
            deadline = time.monotonic() + 20
            while http.get(first.headers["Location"]).json()["status"] != "complete":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            refused = http.post("/recommender/rebuild")
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["Retry-After"]) <= 2  # 30 a minute: one per 2 s
            assert refused.json()["detail"].startswith("too many rebuilds from this client")
    finally:
        stop(served)


@pytest.mark.parametrize("value", ["0,30", "10", "10,0", "ten,30", "10,inf"])
def test_bad_rebuild_rate_is_a_usage_error(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "labsupport", "serve", "--rebuild-rate", value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "expected BURST,PER_MINUTE such as 10,30 (or off)" in result.stderr
    assert "Traceback" not in result.stderr
