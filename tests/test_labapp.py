"""The labs' student app: `python -m labsupport lab-app [--solution] DIR`.

The starter is the course's movie API as Session 09 begins; the solution is
the same app at the end of the session. The lesson's quick test must pass on
the solution and fail on the starter, and both must run under uvicorn from
their own folder, as a student runs them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import uvicorn_in

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed"
LESSON = SEED / "session-09-async-jobs-and-recommendation-refresh.md"


def lab_app(tmp_path: Path, *flags: str) -> Path:
    folder = tmp_path / "my-app"
    done = subprocess.run(
        [sys.executable, "-m", "labsupport", "lab-app", *flags, str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"to {folder}" in done.stdout
    return folder


def pytest_in(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def quick_test() -> str:
    """The lesson's quick test, exactly as the lesson prints it."""
    if not LESSON.is_file():
        pytest.skip(f"the lesson plan is not at {LESSON}")
    text = LESSON.read_text(encoding="utf-8")
    section = text[text.index("## Quick Test to Verify the Background Task") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_solution_passes_the_lessons_quick_test_verbatim(tmp_path: Path) -> None:
    app = lab_app(tmp_path, "--solution")
    (app / "tests" / "test_recommender_task.py").write_text(quick_test(), encoding="utf-8")
    done = pytest_in(app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "warning" not in done.stdout.lower()


def test_the_starter_fails_the_quick_test_and_passes_its_own(tmp_path: Path) -> None:
    app = lab_app(tmp_path)
    assert not (app / "app" / "retry_client.py").exists()
    done = pytest_in(app)
    assert done.returncode == 0, done.stdout + done.stderr  # the starter's own tests
    (app / "tests" / "test_recommender_task.py").write_text(quick_test(), encoding="utf-8")
    done = pytest_in(app)
    assert done.returncode == 1
    assert "1 failed" in done.stdout


def test_lab_app_never_overwrites_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "main.py").write_text("# my work\n")
    done = subprocess.run(
        [sys.executable, "-m", "labsupport", "lab-app", str(tmp_path / "mine")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "already holds files" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "mine" / "main.py").read_text() == "# my work\n"


@pytest.mark.parametrize("flags", [(), ("--solution",)], ids=["starter", "solution"])
def test_the_app_runs_under_uvicorn_from_its_folder(tmp_path: Path, flags: tuple[str]) -> None:
    app = lab_app(tmp_path, *flags)
    with uvicorn_in(app) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert http.post("/ratings", json={"movie_id": 1, "user_id": 7, "score": 5}).is_success
        answer = http.post("/recommender/rebuild")
        if not flags:
            assert answer.status_code in (404, 405)  # the lab adds it
            return
        assert answer.status_code == 202
        status_url = answer.headers["Location"]
        statuses = [answer.json()["status"]]
        deadline = time.monotonic() + 10
        while statuses[-1] != "complete" and time.monotonic() < deadline:
            time.sleep(0.1)
            statuses.append(http.get(status_url).json()["status"])
        assert statuses[0] == "queued" and "running" in statuses
        assert statuses[-1] == "complete"
        assert http.get("/recommendations/7", params={"limit": 3}).json()[0] == 1
        assert http.get("/recommender/rebuild/no-such-task").status_code == 404


# --- which app the notebooks' lab cells check ---------------------------------------------


def test_your_app_writes_the_starter_once_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labsupport.classroom.checks.lab import LAB_APP_ENV, your_app

    monkeypatch.delenv(LAB_APP_ENV, raising=False)
    folder = your_app(tmp_path / "app")
    main = folder / "app" / "main.py"
    assert "/recommender/rebuild" not in main.read_text(encoding="utf-8")  # the starter
    main.write_text("# the student's own work\n", encoding="utf-8")
    assert your_app(tmp_path / "app") == folder
    assert main.read_text(encoding="utf-8") == "# the student's own work\n"


def test_the_environment_points_the_lab_cells_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labsupport.classroom.checks.lab import LAB_APP_ENV, your_app

    monkeypatch.setenv(LAB_APP_ENV, str(tmp_path / "elsewhere"))
    assert your_app(tmp_path / "app") == tmp_path / "elsewhere"
    assert not (tmp_path / "app").exists()  # nothing written where it was not asked


def test_the_one_line_fallback_is_the_finished_app(capsys: pytest.CaptureFixture[str]) -> None:
    from labsupport.classroom import checks

    folder = checks.lab.reference_app()
    assert "/recommender/rebuild" in (folder / "app" / "main.py").read_text(encoding="utf-8")
    checks.lab1.check_recommender(folder)
    assert capsys.readouterr().out.startswith("✔")


def test_solution_lab_app_sets_and_restores_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from labsupport.classroom.checks.lab import LAB_APP_ENV
    from labsupport.classroom.workbook import solution_lab_app

    monkeypatch.delenv(LAB_APP_ENV, raising=False)
    with solution_lab_app() as folder:
        assert os.environ[LAB_APP_ENV] == str(folder)
        assert (folder / "tests" / "test_recommender_task.py").is_file()
    assert LAB_APP_ENV not in os.environ and not folder.exists()
    monkeypatch.setenv(LAB_APP_ENV, "/somewhere/else")
    with solution_lab_app() as folder:
        assert str(folder) == "/somewhere/else"  # an instructor's choice is kept
    assert os.environ[LAB_APP_ENV] == "/somewhere/else"


def test_a_stub_stops_with_one_sentence() -> None:
    from labsupport.classroom import checks

    with pytest.raises(checks.Unsolved) as caught:
        checks.unsolved()
    (line,) = caught.value._render_traceback_()
    assert "Run All stops here" in line and line.count(". ") == 0
