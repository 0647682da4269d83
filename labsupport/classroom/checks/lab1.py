"""Checks for Lab 1 in your own app: the builder, the background rebuild, its quick test.

Call them from a notebook cell, in the lesson's order, with the folder that
holds your `app/` package (default `"app"`, relative to the notebook's folder;
see `labsupport.classroom.checks.lab`):

    from labsupport.classroom import checks
    checks.lab1.check_recommender()          # app/recommender.py, in process
    checks.lab1.check_rebuild_endpoint()     # app/main.py, over real HTTP
    checks.lab1.check_quick_test()           # tests/test_recommender_task.py, with pytest
    checks.lab1.check_demo_flow()            # the lesson's curl steps 2-5

Each prints one `✔` sentence or raises `CheckFailed` with one sentence
saying what is wrong and what to change. `check_rebuild_endpoint` and
`check_demo_flow` serve your app on a free 127.0.0.1 port; pass
`url="http://127.0.0.1:8000"` to test the server you started yourself
(`uvicorn app.main:app --reload`) instead. All times are in seconds.
"""

from __future__ import annotations

import ast
import gc
import inspect
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from labsupport.classroom.checks import CheckFailed, passed, require
from labsupport.classroom.checks.lab import (
    StudentApp,
    app_folder,
    quiet,
    served,
    student_module,
    tested,
)
from labsupport.classroom.checks.labhttp import (
    FAST,
    STALL,
    TIMEOUT,
    RebuildTrial,
    accepted_task,
    poll,
    run_rebuild_trial,
    talking_to,
)

__all__ = [
    "QUICK_TEST",
    "RATINGS",
    "check_demo_flow",
    "check_quick_test",
    "check_rebuild_endpoint",
    "check_recommender",
]

QUICK_TEST = (
    resources.files("labsupport.labapp") / "solution" / "tests" / "test_recommender_task.py"
).read_text(encoding="utf-8")
"""The lesson's quick test, `tests/test_recommender_task.py`, exactly as the lesson prints it."""

# (user, movie, score): users 10-40 like movies 101-103, users 50-80 like 104-106;
# a few low scores across the groups keep the two blocks from being exact.
# fmt: off
RATINGS: list[tuple[int, int, int]] = [
    (10, 101, 5), (10, 102, 4), (10, 104, 1),
    (20, 101, 4), (20, 102, 5), (20, 103, 5),
    (30, 101, 5), (30, 102, 4), (30, 103, 4), (30, 105, 1),
    (40, 102, 5), (40, 103, 5), (40, 101, 4),
    (50, 104, 5), (50, 105, 4), (50, 102, 1),
    (60, 104, 4), (60, 105, 5), (60, 106, 5),
    (70, 104, 5), (70, 105, 4), (70, 106, 4), (70, 103, 1),
    (80, 105, 5), (80, 106, 5), (80, 104, 4),
]
# fmt: on
"""The check's ratings: two taste groups of four users over six movies."""

_FAVOURITES = {10: 103, 50: 106}  # user -> their group's favourite they have not rated
_SMALL_K = 2
_FULL_K = 6  # min(users, movies): the whole matrix back
_ALLOWED = {"numpy", "app", "__future__"}
_SEED_RESHAPE = (
    "that is the seed's bug: the `.reshape(...)` of a `(users, 1)` product (the matrix "
    "times a column of ones) cannot make a (users, movies) table; compute the scores with "
    "`scores = (u[:, :k] * s[:k]) @ vt[:k]`, already (users, movies)"
)
_SERVED = "over real HTTP, the check serving your app on 127.0.0.1"
_TRUNCATE = "keep the first k singular values: `scores = (u[:, :k] * s[:k]) @ vt[:k]`"


def _foreign_imports(student: StudentApp) -> list[str]:
    """Top-level packages `app/recommender.py` imports besides numpy and the standard library."""
    source = Path(student.module.__file__ or "").read_text(encoding="utf-8")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return sorted(found - _ALLOWED - set(sys.stdlib_module_names))


def _build(student: StudentApp, build: Callable[..., Any], k: int | None) -> dict[int, list[int]]:
    """Call `build_model(ratings, k=k)` and copy its answer (the seed returns its cache)."""
    rows = [{"user_id": u, "movie_id": m, "score": s} for u, m, s in RATINGS]
    call = "build_model(ratings)" if k is None else f"build_model(ratings, k={k})"
    try:
        model = build(rows) if k is None else build(rows, k=k)
    except Exception as exc:
        hint = _SEED_RESHAPE if "reshape" in str(exc) else "fix build_model and run again"
        raise student.failure(call, exc, hint) from None
    require(
        isinstance(model, Mapping),
        f"{call} returned {type(model).__name__}; return the mapping "
        "{user_id: [movie ids, best first]} it built",
    )
    users = {u for u, _, _ in RATINGS}
    require(
        users <= set(model),
        f"{call} should have every user id as a key: users {sorted(users)}, "
        f"keys {sorted(model)[:10]}",
    )
    try:
        return {int(u): [int(m) for m in ranked] for u, ranked in model.items()}
    except (TypeError, ValueError):
        msg = f"{call} should map each user id to a list of movie ids, best first"
        raise CheckFailed(msg) from None


def _takes_k(build: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: let the call decide
    return "k" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_ranking(small: dict[int, list[int]], full: dict[int, list[int]]) -> None:
    """With a small k each group's favourite comes first; full rank must rank differently."""
    require(
        small != full,
        f"build_model ranks the same with k={_SMALL_K} as with k={_FULL_K} (full rank): it "
        "ignores k, and full rank returns the input, so every unrated movie scores 0; " + _TRUNCATE,
    )
    for user, favourite in _FAVOURITES.items():
        rated = {m for u, m, _ in RATINGS if u == user}
        unrated = [m for m in small[user] if m not in rated]
        first = unrated[0] if unrated else None
        require(
            first == favourite,
            f"with k={_SMALL_K} user {user}'s first unrated movie should be {favourite}, the "
            f"favourite of their taste group, not {first} (their ranking: {small[user]}): rank "
            "by the truncated scores, highest first (`np.argsort(-scores[i])`), with " + _TRUNCATE,
        )


def check_recommender(app_dir: str | Path = "app") -> None:
    """Check Lab 1's `build_model(ratings, k)` in `app/recommender.py`, in process.

    It runs on eight users in two taste groups and must return
    `{user_id: [movie ids, best first]}`, not crash (the seed's `.reshape`
    does), use numpy only, take a rank `k`, and with `k=2` rank each group's
    favourite first among a user's unrated movies, which full rank cannot:
    a full-rank SVD gives the input back, so every unrated movie scores 0.

    Args:
        app_dir: The folder holding your `app/` package.

    Raises:
        CheckFailed: naming the mistake, such as the seed's `.reshape(...)` crash
            or a `k` that changes nothing.
    """
    missing = "there is no app/recommender.py: your app should have one since Session 08"
    with (
        student_module(app_dir, "app.recommender", missing=missing) as student,
        tested("in process, on 8 users in two taste groups"),
    ):
        build: Any = getattr(student.module, "build_model", None)
        require(
            callable(build),
            "app/recommender.py has no build_model(ratings, k) yet: add the lesson's builder "
            "(Lab 1, 'Update app/recommender.py') returning {user_id: [movie ids, best first]}",
        )
        takes_k = _takes_k(build)
        small = _build(student, build, _SMALL_K if takes_k else None)  # the seed's crash first
        foreign = _foreign_imports(student)
        require(
            not foreign,
            f"app/recommender.py imports {', '.join(foreign)}: the lab's builder uses numpy only "
            "(np.linalg.svd), so drop it",
        )
        require(
            takes_k,
            "build_model takes no `k`: add `k: int = 10` and " + _TRUNCATE + ", since full rank "
            "returns the input, so every unrated movie scores 0",
        )
        _check_ranking(small, _build(student, build, _FULL_K))
    passed(
        f"build_model(ratings, k={_SMALL_K}) ranks each taste group's favourite first among a "
        "user's unrated movies, where full rank would not, using numpy only (tested in process)"
    )


def _diagnose_start(trial: RebuildTrial, remote: bool) -> None:
    """The mistakes that show in how the POST and the event loop behaved: (c), (a), (b)."""
    log = trial.log
    not_callable = log.error_with("callable") if log else None
    handed = "a coroutine that is never awaited" if trial.is_async else "None"
    require(
        not_callable is None,
        "`background.add_task(run_rebuild_task(task_id))` calls the function right away and "
        f"hands add_task its result ({handed}) instead of the function, so the server "
        f'logged "{not_callable}": write `background.add_task(run_rebuild_task, task_id)`',
    )
    require(
        trial.took < FAST,
        f"POST /recommender/rebuild took {trial.took:.2f} s, as long as the build itself: the "
        "build runs inside the request; return at once and hand the function to "
        "`background.add_task(run_rebuild_task, task_id)`"
        + ("; if the server logged a TypeError, pass the function, not a call" if remote else ""),
    )
    require(
        trial.statuses[0] == "queued",
        f"the POST answered status {trial.statuses[0]!r}; it should answer 'queued' (the task "
        "starts only after the response has gone out)",
    )
    cause = (
        "`async def run_rebuild_task` runs its blocking time.sleep and build on the event loop, "
        "which freezes every other request; make it a plain `def` (FastAPI then runs it in a "
        "worker thread)"
    )
    if not trial.is_async:
        cause = "something blocks the event loop (is run_rebuild_task an `async def`?): " + cause
    require(
        trial.health < STALL,
        f"while the rebuild ran, GET /health from a second client waited {trial.health:.2f} s: "
        + cause,
    )


def _diagnose_end(trial: RebuildTrial, never_awaited: str | None = None) -> None:
    """The mistakes that show in where polling ended: (d), and the lesson's other criteria.

    `never_awaited` is Python's warning about a coroutine dropped unawaited, if one came.
    """
    final = trial.statuses[-1]
    error = trial.log.error_with() if trial.log else None
    look = f"the server logged {error}" if error else "look in the server's log for a traceback"
    if final == "failed":
        raise CheckFailed(
            f"the rebuild ended 'failed' ({look}): fix build_model (check_recommender)"
        )
    if final == "running":
        require(
            error is not None,
            f"the task still reads 'running' {TIMEOUT:.0f} s after the POST: "
            "run_rebuild_task never sets TASK_STATUS[task_id] = 'complete' after the build",
        )
        raise CheckFailed(
            f"the rebuild raised {error}, so TASK_STATUS never reaches 'complete' and reads "
            "'running' for ever: fix the build (check_recommender), and catch its exceptions "
            "in run_rebuild_task to set 'failed'"
        )
    if final == "queued" and never_awaited:
        raise CheckFailed(
            f"the task still reads 'queued' {TIMEOUT:.0f} s after the POST, and Python warned "
            f'"RuntimeWarning: {never_awaited}": calling an `async def` function only makes a '
            "coroutine, which runs nothing until it is awaited; hand the function itself to "
            "`background.add_task(run_rebuild_task, task_id)`, and make it a plain `def`"
        )
    if final == "queued":
        raise CheckFailed(
            f"the task still reads 'queued' {TIMEOUT:.0f} s after the POST, so the "
            f"background task never ran ({look}): is "
            "`background.add_task(run_rebuild_task, task_id)` reached, with the function?"
        )
    seen = list(dict.fromkeys(trial.statuses))
    require(
        final == "complete",
        f"polling ended on status {final!r}; a rebuild goes queued → running → complete",
    )
    require(
        seen == ["queued", "running", "complete"],
        f"polling saw {' → '.join(seen)}, never 'running': set TASK_STATUS[task_id] = "
        "'running' when the task starts, and keep the lesson's time.sleep(0.5) so it shows",
    )
    require(
        trial.unknown_code == 404,
        f"GET /recommender/rebuild/<an unknown id> answered {trial.unknown_code} "
        f"{trial.unknown_body}: answer 404 for an id TASK_STATUS does not hold "
        "(`raise HTTPException(status_code=404, ...)`) instead of status 'unknown'",
    )
    require(
        trial.before != trial.after,
        f"/recommendations/{trial.user} answered {trial.after} both before and after the "
        "rebuild: the rebuild should replace recommender.MODEL_CACHE, /recommendations should "
        "read it, and no request should build the model itself",
    )


def check_rebuild_endpoint(app_dir: str | Path = "app", *, url: str | None = None) -> None:
    """Check Lab 1's background rebuild over real HTTP, with the lesson's success criteria.

    A new user rates a movie, then `POST /recommender/rebuild` must answer 202
    at once with a `task_id` and status `queued`, a second client's
    `GET /health` must not wait while the build runs, polling
    `GET /recommender/rebuild/{task_id}` must see `queued → running → complete`
    (Starlette's TestClient would wait for the task, hiding `running`), an
    unknown id must get 404, and the user's recommendations must change.

    Args:
        app_dir: The folder holding your `app/` package; the check serves its
            app on a free 127.0.0.1 port, captures the server's log and stops it.
        url: Test the server running there instead (such as
            `"http://127.0.0.1:8000"`); the check then cannot read its log.

    Raises:
        CheckFailed: naming the mistake: the build inside the request, an
            `async def` task that blocks the loop, `add_task` handed a call, a
            status that never reaches `complete`, 200 for an unknown id...
    """
    if url is not None:
        user = random.randint(10_000, 99_999)  # a user the running server has not seen
        where = f"over real HTTP at {url}"
        with quiet(), tested(where):
            trial = run_rebuild_trial(url, user=user, log=None, is_async=False)
            _diagnose_start(trial, remote=True)
            _diagnose_end(trial)
    else:
        with student_module(app_dir) as student, tested(_SERVED):
            with served(student) as (base, log):
                task = getattr(student.module, "run_rebuild_task", None)
                is_async = inspect.iscoroutinefunction(task)
                trial = run_rebuild_trial(base, user=7, log=log, is_async=is_async)
            gc.collect()  # a coroutine dropped unawaited warns when it is collected
            never_awaited = next(
                (str(w.message) for w in student.caught if "never awaited" in str(w.message)),
                None,
            )
            _diagnose_start(trial, remote=False)  # after the stop: the whole log is in
            _diagnose_end(trial, never_awaited)
        where = f"over real HTTP, the check serving your app at {base}"
    passed(
        f"POST /recommender/rebuild answered 202 'queued' in {trial.took * 1000:.0f} ms while "
        "/health stayed responsive, polling saw queued → running → complete, an unknown task id "
        f"got 404 and /recommendations/{trial.user} changed after the rebuild (tested {where})"
    )


def _pytest_failure(output: str) -> str:
    """`"at tests/x.py line 19 (`code`) with KeyError: 'task_id'"` from pytest's short report."""
    place = code = ""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"^(tests[/\\]\S+\.py):(\d+): ", line)
        if found:
            place = f" at {found[1]} line {found[2]}"
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
    error = next((line[1:].strip() for line in lines if line.startswith("E ")), "")
    shown = f" (`{code}`)" if code and not code.startswith(("E ", "^")) else ""
    return f"{place}{shown} with {error}" if error else place or " (see pytest's output)"


def check_quick_test(app_dir: str | Path = "app", *, timeout: float = 60.0) -> None:
    """Run the lesson's quick test, `tests/test_recommender_task.py`, with pytest.

    pytest runs in a subprocess in your app's folder (its TestClient tests the
    app in process there), with `python -m pytest -q tests/test_recommender_task.py`
    and only the anyio plugin (for async tests) loaded.

    Args:
        app_dir: The folder holding your `app/` package and `tests/`.
        timeout: The longest the test may take.

    Raises:
        CheckFailed: the file is missing (the message holds the lesson's test
            to copy), the test fails (the message quotes the failing line) or
            it runs too long.
    """
    folder = app_folder(app_dir)
    test = Path("tests") / "test_recommender_task.py"
    if not (folder / test).is_file():
        raise CheckFailed(
            f"{folder / test} does not exist yet: create it with the lesson's quick test, "
            f"copied verbatim:\n\n{QUICK_TEST}"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # Only the plugins a FastAPI test needs: the workbook's own environment has
    # heavy ones (nbval, schemathesis, hypothesis) that add seconds to startup.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "--tb=short",
        "-p",
        "no:cacheprovider",
        "-p",
        "anyio.pytest_plugin",  # async tests, as FastAPI's documentation writes them
        "--color=no",
    ]
    try:
        done = subprocess.run(
            [*command, test.as_posix()],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        msg = (
            f"the quick test did not finish within {timeout:.0f} s: does a loop wait for a "
            "status that never comes (check_rebuild_endpoint shows why)?"
        )
        raise CheckFailed(msg) from None
    output = done.stdout + done.stderr
    summary = (output.strip().splitlines() or ["no output"])[-1].strip(" =")
    require(
        done.returncode == 0,
        f"the quick test fails{_pytest_failure(output)}: run check_rebuild_endpoint() to see "
        "what the rebuild does wrong (tested by pytest in a subprocess)",
    )
    passed(
        f"the lesson's quick test passes ({summary}; pytest ran it in a subprocess, "
        "its TestClient testing the app in process)"
    )


def _demo(base: str) -> tuple[list[str], Any]:
    """The lesson's curl steps 2-5; return the statuses polled and the recommendations."""
    with talking_to(base) as http:
        rating = http.post("/ratings", json={"movie_id": 1, "user_id": 7, "score": 5})
        require(
            rating.status_code == 201,
            f"step 2, POST /ratings {{movie_id: 1, user_id: 7, score: 5}}, answered "
            f"{rating.status_code} {rating.text[:120]}: the server needs a movie 1 (POST /movies)",
        )
        answer = http.post("/recommender/rebuild")
        task_id, first = accepted_task(answer, None)
        statuses = [first, *poll(http, task_id, timeout=5.0)]
        require(
            statuses[-1] == "complete",
            f"step 4, polling /recommender/rebuild/{task_id}, saw "
            f"{' → '.join(dict.fromkeys(statuses))} and never 'complete': "
            "run check_rebuild_endpoint() to see why",
        )
        recs = http.get("/recommendations/7", params={"limit": 3})
    body = recs.json() if recs.status_code == 200 else None
    require(
        isinstance(body, list) and len(body) <= 3 and all(isinstance(m, int) for m in body),
        f"step 5, GET /recommendations/7?limit=3, answered {recs.status_code} {recs.text[:120]}: "
        "it should be a list of at most 3 movie ids",
    )
    return list(dict.fromkeys(statuses)), body


def check_demo_flow(url: str | None = None, *, app_dir: str | Path = "app") -> None:
    """Run the lesson's demo flow (curl steps 2-5) against a running server, over real HTTP.

    User 7 rates movie 1 with 5, a rebuild is posted and polled until
    `complete`, then `/recommendations/7?limit=3` must be a list of movie ids.

    Args:
        url: Your server, started with `uvicorn app.main:app --reload` (such as
            `"http://127.0.0.1:8000"`); by default the check serves the app
            of `app_dir` on a free 127.0.0.1 port.
        app_dir: The folder holding your `app/` package (when `url` is None).

    Raises:
        CheckFailed: naming the step that went wrong.
    """
    if url is not None:
        with quiet(), tested(f"over real HTTP at {url}"):
            seen, recs = _demo(url)
        where = url
    else:
        with (
            student_module(app_dir) as student,
            tested(_SERVED),
            served(student) as (base, _log),
        ):
            seen, recs = _demo(base)
        where = f"{base}, the check serving your app"
    passed(
        f"the lesson's demo flow works over real HTTP at {where}: POST /ratings 201, POST "
        f"/recommender/rebuild 202, polling saw {' → '.join(seen)}, and "
        f"/recommendations/7?limit=3 answered {recs}"
    )
