"""Self-checks for notebook 03 (Lab 1: the background rebuild), and the seed's success criteria.

Each `check_*` function prints one `✔` line when an exercise answer is
right and raises `CheckFailed` with one sentence
of help when it is not. `check_success_criteria` goes further: it
exercises a running server over HTTP and verifies the lesson's three
student success criteria.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from labsupport.classroom.checks import passed, require

__all__ = [
    "check_hand_polling",
    "check_idempotent_retry",
    "check_new_user_recommendations",
    "check_refuses_without_ratings",
    "check_success_criteria",
]

_STATUSES = frozenset({"queued", "running", "complete", "failed", "interrupted", "unknown"})


def check_hand_polling(states: Sequence[str], n_polls: int) -> None:
    """Check the ★ exercise: a hand-written polling loop and its poll count.

    Args:
        states: The `status` of every poll, in order.
        n_polls: How many GET requests the loop made.

    Raises:
        CheckFailed: if the loop did not end on `complete`, missed
            `running`, or the count does not match the list.
    """
    require(
        isinstance(states, (list, tuple)) and all(isinstance(s, str) for s in states),
        "hand_states should be a list of status strings, one per poll, "
        "e.g. ['running', 'complete']",
    )
    require(
        isinstance(n_polls, int) and n_polls == len(states),
        f"n_polls ({n_polls!r}) should equal the number of statuses you collected "
        f"({len(states)}): count one per GET",
    )
    unknown = sorted(set(states) - _STATUSES)
    require(not unknown, f"{unknown} are not task statuses: append response.json()['status']")
    require(
        bool(states) and states[-1] == "complete",
        "the loop should stop at the first 'complete' (and append it); "
        f"your last status is {states[-1] if states else None!r}",
    )
    require(
        "running" in states,
        "no 'running' among your polls: poll every POLL_INTERVAL seconds, starting right "
        "after the POST, so the one-second build is caught while it runs",
    )
    passed("polled by hand until 'complete', and caught the task while 'running'")


def check_new_user_recommendations(
    before: Sequence[int], after: Sequence[int], rated: Collection[int]
) -> None:
    """Check the ★★ exercise: a new user's recommendations change after a rebuild.

    Args:
        before: `/recommendations/{user}` ids fetched before the rebuild.
        after: The same request's ids after the rebuild completed.
        rated: The movie ids the new user rated.

    Raises:
        CheckFailed: if the lists are not id lists, are equal, or ignore the
            user's own ratings.
    """
    for name, value in (("ex_before", before), ("ex_after", after)):
        require(
            isinstance(value, list) and all(isinstance(m, int) for m in value),
            f"{name} should be the JSON list of movie ids from GET /recommendations/<user>",
        )
    require(bool(rated), "ex_rated should hold the movie ids your new user rated")
    require(
        list(before) != list(after),
        "the recommendations did not change: fetch ex_before before POST /recommender/rebuild, "
        "and ex_after only once polling says 'complete'",
    )
    require(
        bool(set(after) & set(rated)),
        "ex_after contains none of the movies the user rated: did the ratings go to the same "
        "user id (201 answers) before the rebuild started?",
    )
    passed("the rebuilt model knows the new user: their recommendations changed")


def check_idempotent_retry(first: Mapping[str, Any], retry: Mapping[str, Any]) -> None:
    """Check the ★★ exercise: retrying a POST with the same `Idempotency-Key`.

    Args:
        first: JSON of the first `POST /recommender/rebuild`.
        retry: JSON of the retry, sent after the first task completed.

    Raises:
        CheckFailed: if the retry made a new task or came too early to prove anything.
    """
    for name, value in (("first", first), ("retry", retry)):
        require(
            isinstance(value, Mapping) and "task_id" in value,
            f"{name} should be the JSON answer of POST /recommender/rebuild (with a task_id)",
        )
    require(
        first["task_id"] == retry["task_id"],
        f"the retry created a new task ({retry['task_id']!r} instead of {first['task_id']!r}): "
        "send the same Idempotency-Key header on both POSTs",
    )
    require(
        retry.get("status") == "complete",
        "the retry answered status "
        f"{retry.get('status')!r}: wait for the first task to complete (poll_task) before "
        "retrying, so a key-less POST could not have joined a queued task by chance",
    )
    passed("the retry returned the same, already complete task: no second rebuild")


def check_refuses_without_ratings(make_app: Callable[[Any], Any]) -> None:
    """Check the ★★★ exercise: a rebuild endpoint that refuses an empty store with 422.

    Calls `make_app` twice, with a fresh empty
    `MemoryStore` and with one holding a single
    rating, and posts to each app's `/recommender/rebuild` through
    `TestClient`.

    Args:
        make_app: A function from a store to an ASGI app (a FastAPI instance).

    Raises:
        CheckFailed: if the empty store is not refused with 422 and a human
            `detail`, or a store with ratings is refused.
    """
    from fastapi.testclient import TestClient

    from labsupport.store import MemoryStore

    require(
        callable(make_app), "pass your function itself: check_refuses_without_ratings(refusing_app)"
    )
    empty = MemoryStore()
    r = TestClient(make_app(empty)).post("/recommender/rebuild")
    require(
        r.status_code == 422,
        f"with no ratings the POST answered {r.status_code}, expected 422: check "
        "store.count_ratings() before anything is queued",
    )
    is_json = r.headers.get("content-type", "").startswith("application/json")
    detail = r.json().get("detail") if is_json else None
    require(
        isinstance(detail, str) and bool(detail),
        "the 422 should carry a human detail string: "
        "raise HTTPException(422, 'no ratings yet ...')",
    )
    require(
        empty.load_tasks() == [],
        "the refused request left a task record behind: refuse before registering the task",
    )
    rated = MemoryStore()
    rated.add_movie("Async Demo", 2024, "Sci-Fi")
    rated.add_rating(1, 1, 5)
    r = TestClient(make_app(rated)).post("/recommender/rebuild")
    require(
        r.status_code == 202 and "task_id" in r.json(),
        f"with one rating the POST answered {r.status_code}, expected 202 with a task_id: "
        "only the empty store should be refused",
    )
    passed("no ratings: 422 with a reason, and nothing queued; with ratings: 202")


def check_success_criteria(
    client: Any,
    *,
    user_id: int,
    ratings: Mapping[int, int],
    fast: float = 0.2,
    interval: float = 0.1,
    timeout: float = 30.0,
) -> None:
    """Verify the seed's three student success criteria against a live server, over HTTP.

    1. `POST /recommender/rebuild` returns at once (within `fast`
       seconds) with 202 and a task id.
    2. Polling its status URL shows `queued` (the POST's own answer), then
       `running`, then `complete`.
    3. `/recommendations/{user_id}` returns ids influenced by the rebuild:
       `user_id` first rates `ratings` (so the serving model does not
       know them yet), and the answer after the rebuild differs from the one
       before and carries the new model's version.

    Prints one `✔` line per criterion.

    Args:
        client: An `httpx.Client` whose `base_url` is the server.
        user_id: A user id with no ratings yet.
        ratings: `{movie_id: score}` for that user.
        fast: What "immediately" means, in seconds.
        interval: Seconds between polls (keep it well below the build time).
        timeout: The longest wait for the rebuild, in seconds.

    Raises:
        CheckFailed: naming the criterion that is not met and what to look at.
    """
    from labsupport.retry.poll import poll_task

    codes = [
        client.post("/ratings", json={"movie_id": m, "user_id": user_id, "score": s}).status_code
        for m, s in ratings.items()
    ]
    require(all(c == 201 for c in codes), f"recording the ratings answered {codes}, expected 201s")
    before = client.get(f"/recommendations/{user_id}")

    start = time.perf_counter()
    answer = client.post("/recommender/rebuild")
    took = time.perf_counter() - start
    body = answer.json()
    require(
        answer.status_code == 202 and "task_id" in body and took < fast,
        f"criterion 1: POST /recommender/rebuild should answer 202 with a task_id within "
        f"{fast} s; it answered {answer.status_code} after {took:.2f} s "
        "(is the build awaited in the endpoint?)",
    )
    passed("POST /recommender/rebuild returns immediately (202) with a task id")

    statuses = [str(body["status"])]
    final = poll_task(
        client,
        answer.headers["Location"],
        interval=interval,
        max_interval=interval,
        timeout=timeout,
        on_status=lambda payload: statuses.append(str(payload["status"])),
    )
    seen = list(dict.fromkeys(statuses))
    require(
        seen == ["queued", "running", "complete"],
        f"criterion 2: polling saw {seen}, expected ['queued', 'running', 'complete']; "
        "give the app a build_delay longer than the polling interval",
    )
    passed("polling /recommender/rebuild/{task_id} moves queued → running → complete")

    after = client.get(f"/recommendations/{user_id}")
    version = after.headers.get("X-Model-Version")
    require(
        version == str(final["model_version"]) and after.json() != before.json(),
        f"criterion 3: after the rebuild /recommendations/{user_id} should come from model "
        f"{final['model_version']} (X-Model-Version: {version}) and differ from the answer "
        "before it; fetch it only once polling says 'complete'",
    )
    passed(f"/recommendations/{user_id} returns movie ids from the rebuilt model")
