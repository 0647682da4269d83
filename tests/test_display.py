"""Readable objects: progress bars for rebuilds, HTML tables for models and top-k lists."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from IPython.lib.pretty import pretty

from labsupport.api import create_app
from labsupport.classroom import display
from labsupport.classroom.display import (
    ProgressBar,
    Recommendations,
    progress_bar,
    recommendation_table,
)
from labsupport.classroom.workbook import execute_notebook
from labsupport.data import catalogue_movies, demo_ratings
from labsupport.recommender import Model, build_model, recommend
from labsupport.retry import TaskFailedError, poll_task
from labsupport.store import MemoryStore
from labsupport.tables import about_seconds, html_table, text_table
from labsupport.tasks import counter_ids

HOSTILE = "<script>alert('x')</script> & Co"


@pytest.fixture(scope="module")
def model() -> Model:
    return build_model(demo_ratings(n_users=40, seed=0), rank=8, seed=0)


def demo_store() -> MemoryStore:
    store = MemoryStore()
    store.add_movies((m.title, m.year, m.genre) for m in catalogue_movies())
    store.add_ratings(demo_ratings(n_users=40, seed=0))
    return store


def scripted(*bodies: dict[str, Any]) -> Iterator[httpx.Response]:
    """Status answers a server would give, in order, as real httpx responses."""
    return iter(httpx.Response(200, json=body) for body in bodies)


# --- tables ---------------------------------------------------------------------------


def test_html_table_escapes_every_piece_of_text() -> None:
    page = html_table([(HOSTILE, 1)], header=["<b>", "n"], caption=HOSTILE)
    assert "<script>" not in page and "<b>" not in page
    assert page.count("&lt;script&gt;") == 2
    assert "&amp; Co" in page


def test_label_value_tables_use_row_headers() -> None:
    page = html_table([("version", 3)])
    assert "<thead>" not in page
    assert '<th style="text-align:left">version</th><td style="text-align:left">3</td>' in page


def test_text_table_aligns_columns() -> None:
    text = text_table([(1, "Psycho"), (10, "Up")], header=["#", "title"], caption="Top 2")
    assert text.splitlines() == ["Top 2", "#   title", "1   Psycho", "10  Up"]


def test_about_seconds_is_stable_below_a_second() -> None:
    assert about_seconds(0.004) == about_seconds(0.97) == "under 1 s"
    assert about_seconds(17.26) == "17.3 s"


# --- the model ------------------------------------------------------------------------


def test_model_repr_is_one_readable_line(model: Model) -> None:
    text = repr(model)
    assert text == "Model(version=1, users=40, movies=72, ratings=576, rank=8, method='scaled')"
    assert pretty(model) == text  # IPython's plain-text form


def test_model_html_lists_its_facts(model: Model) -> None:
    page = model._repr_html_()
    for label, value in [
        ("version", "1"),
        ("users", "40"),
        ("movies", "72"),
        ("ratings", "576"),
        ("rank", "8"),
        ("method", "scaled"),
        ("build time", "under 1 s"),
    ]:
        cell = f'<th style="text-align:left">{label}</th><td style="text-align:left">{value}</td>'
        assert cell in page
    assert "Model version 1" in page


# --- recommendation lists ------------------------------------------------------------


def test_a_recommendation_table_is_still_the_list_of_ids(model: Model) -> None:
    table = recommendation_table(model, catalogue_movies(), 7)
    ids = recommend(model, 7, 5)
    assert isinstance(table, Recommendations) and isinstance(table, list)
    assert table == ids
    assert json.loads(json.dumps(table)) == ids
    assert table[:2] == ids[:2]


def test_a_model_table_shows_titles_and_the_users_own_ratings(model: Model) -> None:
    table = recommendation_table(model, catalogue_movies(), 7)
    by_id = {m.id: m for m in catalogue_movies()}
    text = repr(table)
    assert text.splitlines()[0] == "Recommendations for user 7, model version 1"
    assert text.splitlines()[1].split() == ["#", "id", "title", "year", "genre", "their", "rating"]
    first = by_id[table[0]]
    assert first.title in text.splitlines()[2]
    page = table._repr_html_()
    assert f'<td style="text-align:left">{first.genre}</td>' in page
    assert "<th>their rating</th>" in page  # user 7's top of the list is their own favourites
    assert pretty(table) == text


def test_unrated_movies_only_drops_the_rating_column(model: Model) -> None:
    table = recommendation_table(model, catalogue_movies(), 7, exclude_rated=True, limit=3)
    assert table == recommend(model, 7, 3, exclude_rated=True)
    assert "their rating" not in repr(table)
    assert repr(table).splitlines()[0].endswith("rated movies left out")


@pytest.mark.parametrize("kind", ["store", "catalogue", "mapping", "titles", "dataframe"])
def test_titles_come_from_any_kind_of_movie_source(kind: str) -> None:
    movies = catalogue_movies()
    sources: dict[str, Any] = {
        "store": demo_store(),
        "catalogue": movies,
        "mapping": {m.id: m for m in movies},
        "titles": {m.id: m.title for m in movies},
        "dataframe": pd.DataFrame([m.to_dict() for m in movies]).set_index("id"),
    }
    table = recommendation_table([44, 43], sources[kind], 101)
    assert [row[2] for row in table.rows] == ["Psycho", "The Shining"]
    assert table.caption == "Recommendations for user 101"


def test_user_titles_are_escaped_and_unknown_ids_are_marked() -> None:
    table = recommendation_table([1, 999], {1: HOSTILE}, rated={1: 4.5})
    page = table._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "(not in the catalogue)" in page
    assert table.rows[0][-1] == "4.5"
    assert table.caption == "Recommendations"


def test_a_model_needs_a_user(model: Model) -> None:
    with pytest.raises(ValueError, match="user_id"):
        recommendation_table(model, catalogue_movies())


# --- progress bars ---------------------------------------------------------------------


def test_status_bodies_drive_the_bar_to_100() -> None:
    out = io.StringIO()
    with progress_bar(file=out) as bar:
        for status, progress in [("queued", 0.0), ("running", 0.25), ("running", 0.5)]:
            bar({"task_id": "task-7", "status": status, "progress": progress})
            assert bar.n == round(progress * 100)
        bar({"task_id": "task-7", "status": "complete"})  # no progress field: complete is 100
    assert bar.n == 100 and bar.closed
    assert bar.statuses == ["queued", "running", "running", "complete"]
    assert "task-7 complete: 100%" in out.getvalue()
    assert "it/s" not in out.getvalue()  # no rate or time in the text bar


def test_progress_moves_from_0_to_1_during_a_real_build_and_the_bar_ends_at_100() -> None:
    app = create_app(demo_store(), build_delay=0.5, task_id_factory=counter_ids())
    with TestClient(app) as client:
        location = client.post("/recommender/rebuild").headers["Location"]
        seen: list[float] = []
        with progress_bar(file=io.StringIO()) as bar:
            final = poll_task(
                client,
                location,
                interval=0.02,
                max_interval=0.02,
                timeout=30,
                on_status=lambda body: (seen.append(body["progress"]), bar(body)),
            )
    assert final["status"] == "complete"
    assert seen[0] < 0.5 and seen[-1] == 1.0
    assert seen == sorted(seen), "progress never goes backwards"
    assert any(0 < p < 1 for p in seen), "some poll caught the build half-way"
    assert bar.n == 100 and bar.statuses[-1] == "complete"


def test_poll_task_draws_and_closes_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    answers = scripted(
        {"task_id": "task-1", "status": "queued", "progress": 0.0},
        {"task_id": "task-1", "status": "running", "progress": 0.4},
        {"task_id": "task-1", "status": "complete", "progress": 1.0},
    )
    final = poll_task(lambda: next(answers), interval=0.001, progress=progress_bar)
    assert final["status"] == "complete"
    err = capsys.readouterr().err
    assert "task-1 running:  40%" in err
    assert err.rstrip().endswith("task-1 complete: 100%|██████████|")


def test_a_failed_task_leaves_the_bar_short_and_closed() -> None:
    bars: list[ProgressBar] = []

    def keep(*args: Any, **kwargs: Any) -> ProgressBar:
        bars.append(ProgressBar(*args, file=io.StringIO(), **kwargs))
        return bars[-1]

    answers = scripted(
        {"task_id": "task-2", "status": "running", "progress": 0.3},
        {"task_id": "task-2", "status": "failed", "progress": 0.3, "error": "boom"},
    )
    with pytest.raises(TaskFailedError):
        poll_task(lambda: next(answers), interval=0.001, progress=keep)
    assert bars[0].closed and bars[0].n == 30
    assert bars[0].statuses == ["running", "failed"]


def test_no_bar_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    answers = scripted({"task_id": "t", "status": "complete", "progress": 1.0})
    poll_task(lambda: next(answers), interval=0.001)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_in_a_notebook_the_bar_is_a_widget_with_a_stable_text_form(tmp_path: Path) -> None:
    """Run a real kernel: the widget's text form is fixed, and saved notebooks keep only it."""
    source = (
        "import httpx\n"
        "from labsupport.classroom.display import progress_bar\n"
        "from labsupport.retry import poll_task\n"
        "answers = iter([httpx.Response(200, json={'task_id': 'task-1', 'status': s, "
        "'progress': p}) for s, p in [('running', 0.5), ('complete', 1.0)]])\n"
        "poll_task(lambda: next(answers), interval=0.01, progress=progress_bar)['status']"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    path = tmp_path / "bar.ipynb"
    nbformat.write(nb, path)
    from labsupport.classroom.workbook import run_cells

    live = nbformat.read(path, as_version=4)
    run_cells(live, tmp_path)
    shown = live.cells[0].outputs[0]
    assert shown.output_type == "display_data"
    assert "application/vnd.jupyter.widget-view+json" in shown.data  # a real widget bar
    assert shown.data["text/plain"] == display._BAR_FALLBACK.format(desc="rebuild")
    assert [o.output_type for o in live.cells[0].outputs] == ["display_data", "execute_result"]

    execute_notebook(path)  # what `make notebooks` saves
    saved = nbformat.read(path, as_version=4).cells[0].outputs
    assert saved[0].data == {"text/plain": display._BAR_FALLBACK.format(desc="rebuild")}
    assert saved[1].data["text/plain"] == "'complete'"
    assert "widgets" not in nbformat.read(path, as_version=4).metadata


def test_importing_display_does_not_import_tqdm() -> None:
    code = (
        "import sys, labsupport.classroom.display, labsupport.retry;"
        "print('tqdm' in sys.modules, 'IPython' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
