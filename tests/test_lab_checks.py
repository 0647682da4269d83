"""The lab checks on the student's own app: the solution passes, each planted mistake is named.

Every check runs on `write_lab_app(tmp, solution=True)`, and on copies of it
with one mistake planted by string replacement (the mistakes of the lesson's
seed code, and a few more a student makes). The starter fails the Lab 1
checks with a hint saying what to add. Servers bind 127.0.0.1 only, every
wait is bounded, and no server thread outlives its test.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, uvicorn_in

from labsupport.classroom import checks
from labsupport.classroom.checks import CheckFailed, lab, lab1, lab2
from labsupport.labapp import write_lab_app
from labsupport.server import running_servers

LESSON = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "seed"
    / "session-09-async-jobs-and-recommendation-refresh.md"
)

Edit = tuple[str, str, str]  # (file in the app folder, text there, its replacement)

MAIN = "app/main.py"
RECOMMENDER = "app/recommender.py"
RETRY = "app/retry_client.py"

SOLUTION_SCORES = "scores = (u[:, :k] * s[:k]) @ vt[:k]"
SEED_SCORES = (
    "scores = np.matmul(np.matmul(u * s, vt), np.ones((len(movie_ids), 1)))"
    ".reshape(len(user_ids), len(movie_ids))"
)
POLL_GET = """with_backoff(
            lambda: client.get(f"/recommender/rebuild/{task_id}")
        ).json()"""
ADD_TASK = "background.add_task(run_rebuild_task, task_id)"
SYNC_TASK = "def run_rebuild_task(task_id: str) -> None:"
ON_SHUTDOWN = """

@app.on_event("shutdown")
def on_shutdown() -> None:
    if any(status == "running" for status in TASK_STATUS.values()):
        print("Warning: recommendation rebuild still running; consider persisting interim state")
"""
SEED_WITH_BACKOFF = """import random
import time
from typing import Callable

import httpx


def with_backoff(
    func: Callable[[], httpx.Response],
    *,
    retries: int = 5,
    backoff_factor: float = 0.5,
    jitter: float = 0.2,
) -> httpx.Response:
    for attempt in range(retries):
        try:
            response = func()
            response.raise_for_status()
            return response
        except httpx.HTTPError as exc:
            sleep_for = backoff_factor * (2 ** attempt) + random.uniform(0, jitter)
            print(f"Attempt {attempt + 1} failed ({exc}). Sleeping {sleep_for:.2f}s")
            time.sleep(sleep_for)
    return func()
"""


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("labsupport-server-")]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """No server, server thread, `app` module or `sys.path` entry survives a test."""
    path = list(sys.path)
    yield
    assert running_servers() == []
    assert server_threads() == []
    assert not [name for name in sys.modules if name == "app" or name.startswith("app.")]
    assert sys.path == path


def make_app(tmp_path: Path, *edits: Edit, solution: bool = True) -> Path:
    """Write the lab app to a new folder and plant `edits` in it, each checked to apply."""
    folder = tmp_path / "my-app"
    write_lab_app(folder, solution=solution)
    for file, old, new in edits:
        path = folder / file
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        assert old in text, f"{old!r} is not in {file}: the planted mistake needs updating"
        path.write_text(text.replace(old, new, 1) if old else new, encoding="utf-8")
    return folder


def failure(check: Callable[..., None], folder: Path) -> str:
    """The one-sentence hint the check raises on `folder`, with no warning escaping."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckFailed) as failed:
            check(folder)
    assert [str(w.message) for w in caught] == []
    return str(failed.value)


CHECKS: list[Callable[..., None]] = [
    lab1.check_recommender,
    lab1.check_rebuild_endpoint,
    lab1.check_quick_test,
    lab1.check_demo_flow,
    lab2.check_retry_client,
    lab2.check_polling,
    lab2.check_idempotency,
    lab2.check_shutdown,
]


@pytest.fixture(scope="module")
def solution(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("solution") / "my-app"
    write_lab_app(folder, solution=True)
    return folder


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_every_check_passes_on_the_solution(
    solution: Path, check: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if check is lab1.check_demo_flow:
            check(app_dir=solution)
        else:
            check(solution)
    assert [str(w.message) for w in caught] == []
    out = capsys.readouterr()
    assert out.out.startswith("✔ ") and out.out.count("\n") == 1, out.out
    assert "in process" in out.out or "over real HTTP" in out.out
    assert out.err == ""


def test_the_topics_load_lazily() -> None:
    assert checks.lab1 is lab1 and checks.lab2 is lab2 and checks.lab is lab


# (check, edits, words the hint must contain)
MISTAKES: dict[str, tuple[Callable[..., None], list[Edit], list[str]]] = {
    # Lab 1, app/recommender.py
    "seed-reshape": (
        lab1.check_recommender,
        [(RECOMMENDER, SOLUTION_SCORES, SEED_SCORES)],
        ["ValueError", "reshape", "(users, 1)", "(u[:, :k] * s[:k]) @ vt[:k]", "line"],
    ),
    "full-rank": (
        lab1.check_recommender,
        [(RECOMMENDER, "k = min(k, len(s))", "k = len(s)")],
        ["ignores k", "full rank", "scores 0"],
    ),
    "no-k": (
        lab1.check_recommender,
        [
            (RECOMMENDER, ", k: int = 10)", ")"),
            (RECOMMENDER, "k = min(k, len(s))", "k = len(s)"),
        ],
        ["takes no `k`", "(u[:, :k] * s[:k]) @ vt[:k]"],
    ),
    "not-numpy-only": (
        lab1.check_recommender,
        [(RECOMMENDER, "import numpy as np\n", "import numpy as np\nimport scipy.linalg\n")],
        ["scipy", "numpy only"],
    ),
    "worst-first": (
        lab1.check_recommender,
        [(RECOMMENDER, "np.argsort(-scores[i]", "np.argsort(scores[i]")],
        ["first unrated movie should be 103", "favourite"],
    ),
    # Lab 1, app/main.py: the background rebuild
    "build-in-request": (
        lab1.check_rebuild_endpoint,
        [(MAIN, ADD_TASK, "run_rebuild_task(task_id)")],
        ["took", "inside the request", ADD_TASK],
    ),
    "async-task-blocks-loop": (
        lab1.check_rebuild_endpoint,
        [(MAIN, SYNC_TASK, f"async {SYNC_TASK}")],
        ["async def run_rebuild_task", "GET /health", "event loop", "plain `def`"],
    ),
    "add-task-of-a-call": (
        lab1.check_rebuild_endpoint,
        [(MAIN, ADD_TASK, "background.add_task(run_rebuild_task(task_id))")],
        ["add_task(run_rebuild_task(task_id))", "(None)", "TypeError:", "callable"],
    ),
    "coroutine-never-awaited": (
        lab1.check_rebuild_endpoint,
        [(MAIN, SYNC_TASK, "async " + SYNC_TASK), (MAIN, ADD_TASK, "run_rebuild_task(task_id)")],
        ["still reads 'queued'", "RuntimeWarning: coroutine 'run_rebuild_task' was never awaited"],
    ),
    "add-task-of-a-coroutine": (
        lab1.check_rebuild_endpoint,
        [
            (MAIN, SYNC_TASK, f"async {SYNC_TASK}"),
            (MAIN, ADD_TASK, "background.add_task(run_rebuild_task(task_id))"),
        ],
        ["add_task(run_rebuild_task(task_id))", "coroutine", "TypeError:", "callable"],
    ),
    "never-complete": (
        lab1.check_rebuild_endpoint,
        [(MAIN, 'TASK_STATUS[task_id] = "complete"', "pass  # forgot")],
        ["still reads 'running'", "never sets", "'complete'"],
    ),
    "build-fails": (
        lab1.check_rebuild_endpoint,
        [(RECOMMENDER, SOLUTION_SCORES, SEED_SCORES)],
        ["ended 'failed'", "ValueError: cannot reshape", "app/recommender.py line"],
    ),
    "build-raises-uncaught": (
        lab1.check_rebuild_endpoint,
        [
            (RECOMMENDER, SOLUTION_SCORES, SEED_SCORES),
            (MAIN, "    except Exception:\n", "    except KeyError:\n"),
        ],
        ["raised ValueError: cannot reshape", "'running'", "never reaches 'complete'"],
    ),
    "unknown-id-200": (
        lab1.check_rebuild_endpoint,
        [
            (
                MAIN,
                'raise HTTPException(status_code=404, detail=f"no rebuild task {task_id}")',
                'status = "unknown"',
            )
        ],
        ["answered 200", "404", "'unknown'"],
    ),
    "post-not-202": (
        lab1.check_rebuild_endpoint,
        [
            (
                MAIN,
                '@app.post("/recommender/rebuild", status_code=202)',
                '@app.post("/recommender/rebuild")',
            )
        ],
        ["answered 200, not 202", "status_code=202"],
    ),
    "import-syntax-error": (
        lab1.check_rebuild_endpoint,
        [(MAIN, "lifespan=lifespan)", "lifespan=lifespan")],
        ["app/main.py line", "SyntaxError"],
    ),
    "import-name-error": (
        lab2.check_idempotency,
        [(MAIN, "REBUILD_DELAY = 0.5", "REBUILD_DELAY = DELAY")],
        ["NameError: name 'DELAY' is not defined", "app/main.py line 26"],
    ),
    # Lab 2, app/retry_client.py
    "transport-error-not-retried": (
        lab2.check_retry_client,
        [(RETRY, "except httpx.TransportError as exc:", "except httpx.TimeoutException as exc:")],
        ["gave up on an httpx.ConnectError", "TransportError"],
    ),
    "404-retried": (
        lab2.check_retry_client,
        [
            (
                RETRY,
                "if response.status_code not in RETRY_STATUSES or last_try:",
                "if response.is_success or last_try:",
            )
        ],
        ["retried a 404", "raise_for_status()"],
    ),
    "seed-return-func": (
        lab2.check_retry_client,
        [
            (RETRY, "for attempt in range(retries + 1):", "for attempt in range(retries):"),
            (
                RETRY,
                'raise AssertionError("unreachable: the last attempt returns or raises")',
                "return func()",
            ),
        ],
        ["returned the last 503", "return func()", "raise"],
    ),
    "too-many-calls": (
        lab2.check_retry_client,
        [
            (RETRY, "for attempt in range(retries + 1):", "for attempt in range(retries + 2):"),
            (RETRY, "last_try = attempt == retries\n", "last_try = attempt == retries + 1\n"),
        ],
        ["made 4 calls", "retries + 1 = 3"],
    ),
    "retry-after-ignored": (
        lab2.check_retry_client,
        [(RETRY, "wait = max(asked, backoff_factor", "wait = (backoff_factor")],
        ["ignored `Retry-After: 2`", "waited 0.10 s"],
    ),
    "no-wait": (
        lab2.check_retry_client,
        [(RETRY, "        sleep(wait)\n", "")],
        ["waited []", "backoff_factor * 2 ** attempt"],
    ),
    "seed-with-backoff": (
        lab2.check_retry_client,
        [(RETRY, "", SEED_WITH_BACKOFF)],
        ["retried a 404 (2 calls)"],
    ),
    # Lab 2, app/retry_client.py: polling your own rebuild with it
    "poll-without-backoff": (
        lab2.check_polling,
        [(RETRY, POLL_GET, 'client.get(f"/recommender/rebuild/{task_id}").json()')],
        ["stopped at the one 503", "through your with_backoff", "KeyError"],
    ),
    "poll-raises-on-503": (
        lab2.check_polling,
        [
            (
                RETRY,
                POLL_GET,
                'client.get(f"/recommender/rebuild/{task_id}").raise_for_status().json()',
            )
        ],
        ["stopped at the one 503", "HTTPStatusError", "retry_client.py line"],
    ),
    "poll-returns-unfinished": (
        lab2.check_polling,
        [(RETRY, 'if body["status"] not in UNFINISHED:', "if True:")],
        ["returned while the task was still", "keep polling"],
    ),
    "poll-never-stops": (
        lab2.check_polling,
        [(RETRY, 'if body["status"] not in UNFINISHED:', 'if body["status"] == "done":')],
        ["had not returned after 5 s", "neither 'queued' nor 'running'"],
    ),
    "poll-without-pause": (
        lab2.check_polling,
        [(RETRY, "        time.sleep(interval)\n", "")],
        ["ms after a 'queued' or 'running' answer", "sleep between polls"],
    ),
    "import-no-wait-for-rebuild": (
        lab2.check_polling,
        [(RETRY, "def wait_for_rebuild(", "def wait_until_done(")],
        ["no wait_for_rebuild(client, task_id) yet"],
    ),
    # Lab 2, app/main.py: idempotency keys
    "key-ignored": (
        lab2.check_idempotency,
        [(MAIN, "if idempotency_key in TASK_BY_KEY:", "if False:")],
        ["two task ids", "Idempotency-Key", "Header()"],
    ),
    "key-builds-twice": (
        lab2.check_idempotency,
        [
            (
                MAIN,
                "task_id = TASK_BY_KEY[idempotency_key]\n",
                f"task_id = TASK_BY_KEY[idempotency_key]\n        {ADD_TASK}\n",
            )
        ],
        ["one task id but started 2 builds", "add_task only when the key is new"],
    ),
    "key-required": (
        lab2.check_idempotency,
        [(MAIN, "Annotated[str | None, Header()] = None", "Annotated[str, Header()]")],
        ["without an Idempotency-Key answered 422", "optional"],
    ),
    # Lab 2, app/main.py: the shutdown
    "on-event-shutdown": (
        lab2.check_shutdown,
        [
            (MAIN, 'FastAPI(title="Movie API", lifespan=lifespan)', 'FastAPI(title="Movie API")'),
            (
                MAIN,
                '    return {"task_id": task_id, "status": status}\n',
                '    return {"task_id": task_id, "status": status}\n' + ON_SHUTDOWN,
            ),
        ],
        ["@app.on_event(", "DeprecationWarning: on_event is deprecated", "lifespan"],
    ),
    "no-lifespan": (
        lab2.check_shutdown,
        [(MAIN, 'FastAPI(title="Movie API", lifespan=lifespan)', 'FastAPI(title="Movie API")')],
        ["no lifespan", "FastAPI(lifespan=lifespan)"],
    ),
    "shutdown-leaves-running": (
        lab2.check_shutdown,
        [(MAIN, 'TASK_STATUS[task_id] = "interrupted"', "pass")],
        ["still read 'queued' and 'running'", "'interrupted'"],
    ),
    "shutdown-forgets-tasks": (
        lab2.check_shutdown,
        [(MAIN, 'TASK_STATUS[task_id] = "interrupted"', "del TASK_STATUS[task_id]")],
        ["removed the unfinished tasks", "'interrupted'"],
    ),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_planted_mistake_is_named(tmp_path: Path, name: str) -> None:
    check, edits, words = MISTAKES[name]
    folder = make_app(tmp_path, *edits)
    start = time.monotonic()
    message = failure(check, folder)
    assert time.monotonic() - start < 8  # every wait is bounded
    assert "\n" not in message
    if not name.startswith("import-"):  # nothing was tested when the import fails
        assert "(tested in process" in message or "(tested over real HTTP" in message
    for word in words:
        assert word in message, f"{word!r} not in: {message}"


@pytest.mark.parametrize(
    "edits",
    [
        [
            (RETRY, "    sleep: Callable[[float], None] = time.sleep,\n", ""),
            (RETRY, "        sleep(wait)\n", "        time.sleep(wait)\n"),
        ],
        [
            (RETRY, "    sleep: Callable[[float], None] = time.sleep,\n", ""),
            (RETRY, "import time\n", "import time\nfrom time import sleep\n"),
        ],
    ],
    ids=["time.sleep", "from-time-import-sleep"],
)
def test_the_retry_check_never_really_sleeps(
    tmp_path: Path, edits: list[Edit], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_app(tmp_path, *edits)
    start = time.monotonic()
    lab2.check_retry_client(folder)
    assert time.monotonic() - start < 1.5  # Retry-After alone would sleep 2 s
    assert capsys.readouterr().out.startswith("✔ with_backoff retries")


@pytest.mark.parametrize(
    ("check", "words"),
    [
        (lab1.check_recommender, ["no build_model(ratings, k) yet", "Update app/recommender.py"]),
        (lab1.check_rebuild_endpoint, ["answered 404", "does not exist yet", ADD_TASK]),
        (lab1.check_demo_flow, ["answered 404", "does not exist yet"]),
        (lab2.check_retry_client, ["no app/retry_client.py yet"]),
        (lab2.check_polling, ["no app/retry_client.py yet"]),
        (lab2.check_idempotency, ["does not exist yet"]),
        (lab2.check_shutdown, ["no lifespan"]),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_the_starter_fails_with_a_hint_saying_what_to_add(
    tmp_path: Path, check: Callable[..., None], words: list[str]
) -> None:
    folder = make_app(tmp_path, solution=False)
    message = failure(
        lambda d: check(app_dir=d) if check is lab1.check_demo_flow else check(d), folder
    )
    for word in words:
        assert word in message, f"{word!r} not in: {message}"


def lesson_code(heading: str) -> str:
    """The first Python block after `heading` in the lesson plan (skip if it is not there)."""
    if not LESSON.is_file():
        pytest.skip(f"the lesson plan is not at {LESSON}")
    text = LESSON.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_lessons_own_builder_is_told_its_defects_one_by_one(tmp_path: Path) -> None:
    seed = lesson_code("### Update `app/recommender.py`")
    folder = make_app(tmp_path, (RECOMMENDER, "", seed))
    message = failure(lab1.check_recommender, folder)  # the seed does not even compile
    assert "app/recommender.py line 14 is not valid Python (SyntaxError" in message
    bracket = '[int(row["movie_id")] ]'
    assert bracket in seed
    (folder / RECOMMENDER).write_text(seed.replace(bracket, '[int(row["movie_id"])]'))
    message = failure(lab1.check_recommender, folder)
    assert "build_model(ratings) raised ValueError: cannot reshape" in message
    assert "the seed's bug" in message


def test_the_quick_test_check_gives_the_lessons_test_when_it_is_missing(tmp_path: Path) -> None:
    message = failure(lab1.check_quick_test, make_app(tmp_path, solution=False))
    assert "test_recommender_task.py does not exist yet" in message
    assert message.endswith(lab1.QUICK_TEST)


def test_the_quick_test_check_quotes_the_failing_line(tmp_path: Path) -> None:
    test = "tests/test_recommender_task.py"
    folder = make_app(tmp_path, (test, "", lab1.QUICK_TEST), solution=False)
    message = failure(lab1.check_quick_test, folder)
    assert f"fails at {test} line 19" in message
    assert "KeyError: 'task_id'" in message and "check_rebuild_endpoint()" in message


def test_the_quick_test_is_the_lessons_verbatim() -> None:
    assert lesson_code("## Quick Test to Verify the Background Task") == lab1.QUICK_TEST


def test_the_http_checks_test_a_server_the_student_runs(
    solution: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with uvicorn_in(solution) as url:
        lab1.check_rebuild_endpoint(url=url)
        lab1.check_demo_flow(url)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("✔ ") for line in lines)
    assert f"over real HTTP at {url}" in lines[0] and f"over real HTTP at {url}" in lines[1]


def test_the_http_checks_say_when_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for check in (lab1.check_rebuild_endpoint, lab1.check_demo_flow):
        with pytest.raises(CheckFailed, match="nothing answers at"):
            check(url=url)


def test_load_app_imports_the_app_afresh(solution: Path) -> None:
    try:
        main: Any = lab.load_app(solution)
        assert main.__file__ == str(solution / "app" / "main.py")
        assert sys.modules["app.main"] is main and callable(main.app)
        assert lab.load_app(solution / "app") is not main  # the package folder works too
    finally:
        for name in [n for n in sys.modules if n == "app" or n.startswith("app.")]:
            del sys.modules[name]


def test_a_check_restores_the_app_the_notebook_imported(solution: Path) -> None:
    try:
        main = lab.load_app(solution)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lab2.check_shutdown(solution)
        assert sys.modules["app.main"] is main
    finally:
        for name in [n for n in sys.modules if n == "app" or n.startswith("app.")]:
            del sys.modules[name]


def test_a_folder_without_the_app_gets_a_hint(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match=r"there is no app/main\.py in"):
        lab1.check_recommender(tmp_path)
