"""The workbook as a whole: structure, "Run All" replay and the student edition."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from browser_support import why_no_browser

from labsupport.classroom.workbook import (
    SOLUTION_STUB,
    notebook_parameters,
    notebook_paths,
    replay_run_all,
    student_edition,
)

NOTEBOOKS = notebook_paths(Path(__file__).parent.parent / "notebooks")
ids = [p.stem for p in NOTEBOOKS]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def test_the_workbook_has_its_notebooks() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert names[0] == "00_start_here"
    assert len(names) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_skeleton(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "You will learn" in text
    assert "Setup" in text and "Recap" in text
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "%matplotlib inline" in code[0].source
    assert any("parameters" in tags(c) for c in code)
    assert "sys.path" not in "\n".join(c.source for c in code)
    # The Setup cell holds every import, and the seed's quick test is kept verbatim;
    # every other cell stays projector-sized.
    teaching = [c for c in code[1:] if "def test_rebuild_flow" not in c.source]
    long_cells = [c.source for c in teaching if len(c.source.splitlines()) > 15]
    assert not long_cells, "code cells should stay projector-sized (about 12 lines)"
    notebook_parameters(path)  # the parameters cell runs on its own


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_exercise_has_a_collapsed_solution_and_a_check(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    solutions = [i for i, c in enumerate(nb.cells) if "solution" in tags(c)]
    assert solutions, "each notebook has exercises with solutions"
    for i in solutions:
        cell = nb.cells[i]
        assert cell.cell_type == "code"
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True
        before = nb.cells[i - 1]
        assert before.cell_type == "markdown" and "★" in before.source, "an exercise comes first"
        after = nb.cells[i + 1]
        assert after.cell_type == "code" and "check" in after.source, "a self-check follows"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_run_all_replay_every_cell_replies_ok(path: Path) -> None:
    # The stand-in for tests/test_browser.py where no browser can run: it sends every
    # cell at once, as JupyterLab's Run All does. Where the browser test runs, it
    # checks the same through the real menu (every cell ran, only raises-exception
    # cells show an error, and those do), and this would only repeat it.
    if why_no_browser() is None:
        pytest.skip("tests/test_browser.py runs Run All in a real JupyterLab here")
    replies = replay_run_all(path)
    bad = [r for r in replies if r.status != "ok" and "raises-exception" not in r.tags]
    assert not bad, f"cells failed or were dropped under Run All: {bad}"
    raising = [r for r in replies if "raises-exception" in r.tags]
    assert all(r.status == "error" for r in raising), "raises-exception cells really raise"


def test_start_here_reaches_its_core_sections_before_the_first_exercise() -> None:
    # A stub of the student edition stops Run All, and 00's exercises sit in its last,
    # optional section: only the Recap and the clean-up may come after the first one.
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "solution" in tags(c))
    late = [c.source.splitlines()[0] for c in nb.cells[first:] if "core" in tags(c)]
    assert late == ["## Recap", "## Clean up"]


@pytest.fixture(scope="module")
def edition() -> Iterator[Path]:
    # Inside the workbook, as `python -m labsupport student-edition student/` is run:
    # notebook 07 finds the benchmark results in a folder above its own.
    build = NOTEBOOKS[0].parent.parent / "build"  # git-ignored
    build.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="student-", dir=build) as out:
        written = student_edition(NOTEBOOKS[0].parent, out)
        assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
        yield Path(out)


def _is_check(cell: nbformat.NotebookNode, previous: nbformat.NotebookNode | None) -> bool:
    after_solution = previous is not None and "solution" in tags(previous)
    return cell.cell_type == "code" and (after_solution or ".check_" in cell.source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_student_edition_gives_nothing_away(edition: Path, path: Path) -> None:
    original = nbformat.read(path, as_version=4)
    student = nbformat.read(edition / path.name, as_version=4)
    assert len(original.cells) == len(student.cells)
    stubbed, previous = False, None
    for a, b in zip(original.cells, student.cells, strict=True):
        if "solution" in tags(a):
            assert b.source == SOLUTION_STUB and b.outputs == []
            assert b.execution_count is None and "jupyter" not in b.metadata  # not collapsed
            assert "below" in b.source  # the check cell comes after the answer
            stubbed = True
        elif a.cell_type == "markdown":
            assert b.source == a.metadata.get("student_edition", a.source)
            assert "student_edition" not in b.metadata
            assert "collapsed" not in b.source  # no solution to expand in this edition
        else:
            assert a.source == b.source
            if stubbed or _is_check(a, previous):
                assert b.outputs == [] and b.execution_count is None, b.source[:80]
            else:
                assert b.outputs == a.outputs
        previous = a


def test_student_edition_works_on_the_starter_app(edition: Path) -> None:
    main = (edition / "app" / "app" / "main.py").read_text(encoding="utf-8")
    assert "FastAPI" in main and "/recommender/rebuild" not in main


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_student_edition_run_all_ends_or_says_why_it_stopped(
    edition: Path, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labsupport.classroom.checks.lab import LAB_APP_ENV

    monkeypatch.delenv(LAB_APP_ENV, raising=False)  # the edition's own starter app
    replies = replay_run_all(edition / path.name)
    failed = [r for r in replies if r.status != "ok" and "raises-exception" not in r.tags]
    if not failed:
        return  # Run All reached the last cell
    first = failed[0]
    assert first.status == "error", f"cell {first.index} {first.status}, not stopped by an error"
    name, _, sentence = (first.error or "").partition(": ")
    assert name in ("Unsolved", "CheckFailed"), f"cell {first.index} stopped by {first.error}"
    assert sentence and "\n" not in sentence.strip()
    after = [r for r in replies if r.index > first.index]
    assert all(r.status == "aborted" for r in after), "Run All stops at that cell"


def labsupport_imports(source: str) -> set[str]:
    """The labsupport modules a cell imports from (`from labsupport import x`: `labsupport`)."""
    import ast

    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    found = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "labsupport"}


def test_the_notebooks_import_from_one_surface() -> None:
    # Service names from `labsupport`, instruments from `labsupport.classroom`,
    # and only the Redis preview's module besides.
    used = set()
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                used |= labsupport_imports(cell.source)
    assert {"labsupport", "labsupport.classroom"} <= used
    assert used <= {"labsupport", "labsupport.classroom", "labsupport.scaleout"}, used


def test_the_import_finder_reads_magics_and_every_form() -> None:
    cell = "%matplotlib inline\nimport labsupport.classroom.plots\nfrom labsupport.api import app\n"
    assert labsupport_imports(cell) == {"labsupport.classroom.plots", "labsupport.api"}


def test_run_all_command_reports_where_the_student_edition_stops(edition: Path) -> None:
    import subprocess
    import sys

    notebook = edition / "07_scaling.ipynb"
    command = [sys.executable, "-m", "labsupport", "notebooks", "run-all", "--own-app"]
    done = subprocess.run([*command, str(notebook)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{notebook}: ") and "cells ok" in lines[0]
    assert "error Unsolved: This exercise is not solved yet" in lines[1]
    assert "cells after it not run" in lines[2]
