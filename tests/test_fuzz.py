"""Property-based fuzzing of the movie API against its own OpenAPI schema.

Schemathesis reads ``/openapi.json`` from the app in process (its ASGI
transport, no server, no sockets) and, for every operation in the schema, runs
its three phases: examples (the schema has none), coverage (boundary values,
each invalid variant of each constraint, undeclared HTTP methods) and
Hypothesis fuzzing (positive and negative data). Every response goes through
every built-in check: ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance``, ``response_headers_conformance``,
``response_schema_conformance``, ``positive_data_acceptance``,
``negative_data_rejection``, ``missing_required_header``,
``unsupported_method`` and ``allow_header_conformance`` (plus the stateful and
auth checks, which have nothing to act on in single requests to an API without
auth). ``Case.validate_response()`` without ``checks=`` runs every check the
config enables, and the default ``schemathesis.Config()`` passed explicitly
enables all of them; passing it also keeps a stray ``schemathesis.toml`` from
weakening the run.

Each operation gets a fresh app (six movies, a few ratings, a built model), so an
operation's cases depend neither on the order of the tests nor on what other
operations did: ``-k "test_openapi_fuzz and ratings"`` replays exactly what the
full run sends to ``POST /ratings``. Generation is derandomized: the same cases
on every run, in CI too.

Defects found
-------------
The first run found five places where the app contradicted its own schema (an
undocumented 422 shape and 400, integral floats such as ``2016.0`` rejected,
the int64 id bound published as a float, an incomplete ``Allow`` header). They
are fixed in `labsupport/api/`; each keeps a small regression test below,
with the exact request that found it.

The ``test_fuzzing_ran_enough_cases`` test at the end counts the cases actually
sent and fails if there are fewer than ``MIN_TOTAL_CASES``, so the run cannot
shrink unnoticed.
"""

from __future__ import annotations

import collections
import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import allow_header_conformance  # v4's OpenAPI checks
from starlette.types import Receive, Scope, Send

from labsupport.api import MAX_ID, create_app
from labsupport.store import MemoryStore
from labsupport.tasks import counter_ids

MAX_EXAMPLES = 300
"""Hypothesis examples per operation (coverage-phase cases come on top)."""
MIN_TOTAL_CASES = 1000
"""The fewest cases the whole run may send; ``test_fuzzing_ran_enough_cases`` checks."""

settings.register_profile(
    "api-fuzz",
    max_examples=MAX_EXAMPLES,
    deadline=None,  # a case's time includes the app; the first one pays for imports and warm-up
    derandomize=True,  # the same cases on every run: a red CI run is reproducible locally
    database=None,  # nothing to replay when derandomized; and write no .hypothesis/ folder
    print_blob=False,
    # Generating a whole HTTP request takes long enough for Hypothesis's timing check
    # to fire on a slow or busy CI machine; it measures the machine, not the app. The
    # other health checks do not fire here and would point at a real generation problem.
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ_SETTINGS = settings.get_profile("api-fuzz")  # applied per test below, never loaded globally


class CurrentApp:
    """An ASGI app that forwards to the app of the test now running.

    Schemathesis binds a schema to one ASGI app at import time, and its pytest
    plugin runs that app's lifespan per test: it ends the lifespan after each test
    and starts it again on the next request. The movie API's shutdown is final (it
    closes the rebuild service for good), so one app shared by all operations
    would answer every rebuild after the first test with 503. This entry point
    lets the ``fresh_app`` fixture give each test an app of its own.
    """

    def __init__(self) -> None:
        self.app = create_app()  # serves /openapi.json to the loader below

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


ENTRY = CurrentApp()
schema = schemathesis.openapi.from_asgi("/openapi.json", ENTRY, config=schemathesis.Config())
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, methods in ENTRY.app.openapi()["paths"].items()
    for method in methods
)
"""Every operation the app documents (from its own schema, not from schemathesis)."""


@pytest.fixture(autouse=True)
def fresh_app(store: MemoryStore) -> Iterator[FastAPI]:
    """Give each test a new app on conftest's seeded store, with a model already built."""
    before = set(threading.enumerate())
    app = create_app(store, task_id_factory=counter_ids())
    app.state.service.rebuild_now()  # recommendations come from a model, not the fallback
    ENTRY.app = app
    yield app
    # What the lifespan does at shutdown (idempotent if schemathesis already ran it);
    # then make sure no rebuild worker outlives the test.
    app.state.service.shutdown(grace=10)
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("rebuild-")]
    for worker in workers:
        worker.join(10)
    assert not [t.name for t in workers if t.is_alive()], "rebuild workers left running"


def _published_maximum(model: str, field: str) -> Decimal:
    """A body field's maximum as the schema's text says it (how validators read it)."""
    value = schema.raw_schema["components"]["schemas"][model]["properties"][field]["maximum"]
    return Decimal(repr(value))


# -- the fuzzing ----------------------------------------------------------------------

CASES: collections.Counter[str] = collections.Counter()
"""Cases sent (and answered), per operation."""
DISTINCT: dict[str, set[tuple[Any, ...]]] = collections.defaultdict(set)
"""The distinct requests among them, per operation."""


def _fingerprint(response: schemathesis.Response) -> tuple[Any, ...]:
    request = response.request
    headers = sorted(
        (k.lower(), v)
        for k, v in request.headers.items()
        if k.lower() != "x-schemathesis-testcaseid"
    )
    return (request.method, request.url, request.body, tuple(headers))


@schema.parametrize()
@settings(FUZZ_SETTINGS)
def test_openapi_fuzz(case: schemathesis.Case) -> None:
    response = case.call()
    CASES[case.operation.label] += 1
    DISTINCT[case.operation.label].add(_fingerprint(response))
    case.validate_response(response)  # every enabled check: all of them
    _assert_no_internals(response.text)


_INTERNALS = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\"|/labsupport/")


def _assert_no_internals(body: str) -> None:
    """No response may show a traceback or a path inside the server."""
    found = _INTERNALS.search(body)
    assert found is None, f"the response shows server internals: {found.group(0)!r} in {body!r}"


def test_the_internals_check_catches_a_traceback() -> None:
    with pytest.raises(AssertionError, match="server internals"):
        _assert_no_internals('Traceback (most recent call last):\n  File "/x/api.py", line 1')
    _assert_no_internals('{"detail": "movie 99 does not exist; add it first or check the id"}')


def test_fuzzing_ran_enough_cases(request: pytest.FixtureRequest) -> None:
    """Every operation was fuzzed and the run sent at least ``MIN_TOTAL_CASES`` cases."""
    selected = {
        name.removeprefix("test_openapi_fuzz[").removesuffix("]")
        for name in (item.name for item in request.session.items)
        if name.startswith("test_openapi_fuzz[")
    }
    if selected != set(OPERATIONS):
        pytest.skip("only part of the fuzzing was selected; the case count needs all of it")
    report = ", ".join(
        f"{label}: {CASES[label]} ({len(DISTINCT[label])} distinct)" for label in OPERATIONS
    )
    assert sorted(CASES) == OPERATIONS, f"operations not fuzzed: {set(OPERATIONS) - set(CASES)}"
    assert sum(CASES.values()) >= MIN_TOTAL_CASES, report
    assert sum(len(requests) for requests in DISTINCT.values()) >= MIN_TOTAL_CASES, report


# -- regression tests: the requests that found each defect --------------------------------


def test_task_status_422_matches_schema() -> None:
    case = schema["/recommender/rebuild/{task_id}"]["GET"].Case(
        path_parameters={"task_id": "0" * 256}
    )
    response = case.call()
    assert response.status_code == 422
    case.validate_response(response)


@pytest.mark.parametrize("path", ["/movies", "/ratings"])
def test_unparseable_body_status_is_documented(path: str) -> None:
    case = schema[path]["POST"].Case(body=b"\xff", media_type="application/json")
    response = case.call()
    assert response.status_code == 400
    case.validate_response(response)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/movies", {"title": "Arrival", "year": 2016.0, "genre": "Sci-Fi"}),
        ("/ratings", {"movie_id": 6.0, "user_id": 4.0, "score": 5.0}),
    ],
)
def test_integral_floats_are_accepted(path: str, body: dict[str, Any]) -> None:
    # JSON Schema's "integer" includes 2016.0; 4.5 and "5" are still refused elsewhere.
    response = schema[path]["POST"].Case(body=body).call()
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("field", ["movie_id", "user_id"])
def test_published_id_bound_is_exact(field: str) -> None:
    # Found with {"movie_id": 1, "score": 1, "user_id": 9223372036854775999}: valid
    # for a maximum published as 9.223372036854776e+18, refused by the app.
    assert _published_maximum("RatingIn", field) == MAX_ID


@pytest.mark.parametrize("documented", ["GET", "POST"])
def test_allow_header_lists_every_method(documented: str) -> None:
    case = schema["/movies"][documented].Case(method="OPTIONS")
    response = case.call()
    assert response.status_code == 405
    allowed = sorted(m.strip() for m in response.headers["allow"][0].split(","))
    assert allowed == ["GET", "POST"]
    case.validate_response(response, checks=[allow_header_conformance])
