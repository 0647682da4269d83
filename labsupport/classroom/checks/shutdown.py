"""Self-checks for notebook 05: graceful shutdown, restarts and the model cache.

Each `check_*` function takes the student's function, runs it on cases whose
answer is known, prints a confirmation when it is right and raises
`CheckFailed` with one sentence of help when not.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from labsupport.classroom.checks import CheckFailed, passed, require
from labsupport.data import CATALOGUE, demo_ratings
from labsupport.recommender import Model, recommend
from labsupport.scaleout.cache import MemoryCache
from labsupport.store import MemoryStore

__all__ = [
    "FakeRebuildClient",
    "check_expected_state",
    "check_rebuild_until_complete",
    "check_warm_start",
]

# (build_seconds, running_for, grace) -> the state the task ends in.
_STATE_CASES = [
    ((2.0, 0.1, 0.5), "interrupted"),
    ((2.0, 0.1, 5.0), "complete"),
    ((2.0, 1.8, 0.5), "complete"),
    ((10.0, 3.0, 5.0), "interrupted"),
    ((1.0, 0.0, 1.5), "complete"),
    ((30.0, 29.0, 0.5), "interrupted"),
]


def check_expected_state(expected_state: Callable[[float, float, float], str]) -> None:
    """Check `expected_state(build_seconds, running_for, grace)` predicts the final state.

    A build that has run `running_for` of its `build_seconds` when the
    server is stopped completes if what is left fits in the grace period and
    is interrupted otherwise.

    Raises:
        CheckFailed: a prediction is wrong or is not `"complete"`/`"interrupted"`.
    """
    for (build, running, grace), want in _STATE_CASES:
        got = expected_state(build, running, grace)
        require(
            got in ("complete", "interrupted"),
            f"expected_state({build}, {running}, {grace}) returned {got!r}; "
            "return the string 'complete' or 'interrupted'",
        )
        require(
            got == want,
            f"a {build} s build stopped after {running} s with a {grace} s grace ends "
            f"{want!r}, not {got!r}: compare the time the build still needs "
            "(build_seconds - running_for) with the grace",
        )
    passed("expected_state predicts every case: the grace only has to cover what is left")


class _FakeResponse:
    """Just enough of an `httpx.Response` for `poll_task` and a student's code."""

    def __init__(self, status_code: int, body: Mapping[str, Any], headers: dict[str, str]) -> None:
        self.status_code = status_code
        self._body = dict(body)
        self.headers = headers

    def json(self, **kwargs: Any) -> Any:
        return dict(self._body)

    def raise_for_status(self) -> _FakeResponse:
        return self

    def __repr__(self) -> str:
        return f"<FakeResponse [{self.status_code}] {self._body}>"


class FakeRebuildClient:
    """A stand-in for `httpx.Client` talking to a server whose first rebuild is interrupted.

    `POST /recommender/rebuild` creates a task (or, with an `Idempotency-Key`
    or `X-Task-Id` it has seen, returns that key's task, as the real API
    does). `GET /recommender/rebuild/<id>` walks each task through
    `queued -> running` and then a final state: the first task ends
    `interrupted` (the server was restarted), later ones `complete`.

    Attributes:
        created: Task ids created, in order.
        posts: Number of POSTs received.
    """

    _LIMIT = 50  # GETs of one task before we conclude the caller is stuck

    def __init__(self, *, interrupted: int = 1) -> None:
        self._interrupted = interrupted
        self._ids = (f"task-{i}" for i in itertools.count(1))
        self._keys: dict[str, str] = {}
        self._polls: dict[str, int] = {}
        self.created: list[str] = []
        self.posts = 0

    def _status(self, task_id: str, polls: int) -> str:
        if polls < 1:
            return "queued"
        if polls < 2:
            return "running"
        return "interrupted" if self.created.index(task_id) < self._interrupted else "complete"

    def _body(self, task_id: str) -> dict[str, Any]:
        status = self._status(task_id, self._polls[task_id])
        done = status in ("complete", "interrupted")
        return {
            "task_id": task_id,
            "status": status,
            "error": "the service shut down before this rebuild finished"
            if status == "interrupted"
            else None,
            "model_version": 1 if status == "complete" else None,
            "sample": [1, 2, 3] if status == "complete" else [],
            "progress": 1.0 if status == "complete" else 0.0,
            "queued_at": 0.0,
            "started_at": None,
            "finished_at": None if not done else 1.0,
        }

    def post(self, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        """Answer `POST /recommender/rebuild` with 202 and a task id."""
        require(
            url.rstrip("/").endswith("/recommender/rebuild"),
            f"POST {url!r}: ask for a rebuild with POST /recommender/rebuild",
        )
        self.posts += 1
        if self.posts > self._LIMIT:
            msg = (
                f"you sent more than {self._LIMIT} POSTs; ask again only after the task "
                "you are waiting for has reached a final state"
            )
            raise CheckFailed(msg)
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        key = lowered.get("idempotency-key") or lowered.get("x-task-id")
        if key is not None and key in self._keys:
            task_id = self._keys[key]
        else:
            task_id = next(self._ids)
            self.created.append(task_id)
            self._polls[task_id] = -1
            if key is not None:
                self._keys[key] = task_id
        status = "queued" if self._polls[task_id] < 0 else self._body(task_id)["status"]
        location = {"Location": f"/recommender/rebuild/{task_id}"}
        return _FakeResponse(202, {"task_id": task_id, "status": status}, location)

    def get(self, url: str, **kwargs: Any) -> Any:
        """Answer `GET /recommender/rebuild/<task_id>` with the task's next state."""
        task_id = url.rstrip("/").rpartition("/")[2]
        if task_id not in self._polls:
            return _FakeResponse(404, {"detail": f"no rebuild task {task_id!r}"}, {})
        self._polls[task_id] += 1
        if self._polls[task_id] > self._LIMIT:
            msg = (
                f"you polled {task_id} more than {self._LIMIT} times after it reached a final "
                "state; a final state never changes, so stop polling and POST a new rebuild"
            )
            raise CheckFailed(msg)
        body = self._body(task_id)
        done = body["status"] in ("complete", "interrupted")
        return _FakeResponse(200, body, {} if done else {"Retry-After": "0"})


def check_rebuild_until_complete(rebuild_until_complete: Callable[..., Any]) -> None:
    """Check `rebuild_until_complete(client)` asks again after an `interrupted` task.

    The function is called with a `FakeRebuildClient` whose first
    rebuild ends `interrupted`; it should return the final JSON body of a
    `complete` task, having created exactly two tasks.

    Raises:
        CheckFailed: it returned the interrupted task, reused its idempotency
            key, polled a final task forever, or created too many tasks.
    """
    client = FakeRebuildClient(interrupted=1)
    result = rebuild_until_complete(client)
    require(
        client.posts > 0,
        "the function never sent POST /recommender/rebuild; start by asking for a rebuild",
    )
    require(
        not (client.posts > 1 and len(client.created) == 1),
        "your second POST reused the first request's Idempotency-Key, so the server returned "
        "the same interrupted task; a new attempt needs a new key (or none)",
    )
    require(
        isinstance(result, Mapping),
        f"return the final status body (a dict), got {type(result).__name__}",
    )
    status = result.get("status")
    require(
        status == "complete",
        f"the function returned a task whose status is {status!r}; when a task ends "
        "'interrupted', POST /recommender/rebuild again and poll the new task",
    )
    require(
        len(client.created) == 2,
        f"the function created {len(client.created)} tasks; one interrupted task needs "
        "exactly one more request, so stop once a task completes",
    )
    passed(
        f"interrupted {client.created[0]}, asked again, {client.created[1]} completed: "
        "2 requests in all"
    )


def _demo_store(n_users: int, seed: int) -> MemoryStore:
    store = MemoryStore()
    store.add_movies(CATALOGUE)
    store.add_ratings(demo_ratings(n_users=n_users, seed=seed))
    return store


def check_warm_start(
    warm_start: Callable[[Any, Any], tuple[Model, str]], *, n_users: int = 20, seed: int = 0
) -> None:
    """Check `warm_start(cache, store)` reuses a cached model and builds only when it must.

    On an empty `MemoryCache` it must build a
    model from the store, save it to the cache and return `(model, "built")`;
    called again (a restarted process) it must return `(model, "cache")`
    with the same recommendations.

    Raises:
        CheckFailed: the source label, the cache contents or the model is wrong.
    """
    store = _demo_store(n_users, seed)
    cache = MemoryCache(reason="the check's own cache")
    first = warm_start(cache, store)
    require(
        isinstance(first, tuple) and len(first) == 2,
        f"return a pair (model, source), got {type(first).__name__}",
    )
    model, source = first
    require(
        isinstance(model, Model),
        f"the first element should be a labsupport Model, got {type(model).__name__}",
    )
    require(
        source == "built",
        f"with an empty cache the source should be 'built', got {source!r}: "
        "cache.load_model() returns None when nothing is cached",
    )
    require(
        model.n_ratings == store.count_ratings(),
        f"the model knows {model.n_ratings} ratings but the store holds "
        f"{store.count_ratings()}: build it from store.rating_arrays()",
    )
    require(
        cache.current_version() is not None,
        "nothing was saved: after building, call cache.save_model(model) so the next "
        "process can start from it",
    )
    again, source = warm_start(cache, store)
    require(
        source == "cache",
        f"the second call found a cached model but reported {source!r}; return "
        "(cached_model, 'cache') without building",
    )
    users = range(1, n_users + 1)
    same = all(recommend(again, u, 5) == recommend(model, u, 5) for u in users)
    require(same, "the cached model recommends differently from the one you built and saved")
    passed("first start built and cached the model; the restart read it back from the cache")
