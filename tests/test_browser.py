"""The workbook in a real JupyterLab, driven through its menus by headless Chromium.

nbval and the Run All replay talk to a kernel directly; this test goes through
everything a student's browser does: JupyterLab's front end, the menu, the
confirmation dialog, the output renderers and the widgets.  For each notebook
it runs *Kernel > Restart Kernel and Run All Cells...* and checks that

* every cell ran (Run All stopped nowhere and dropped no cell),
* no cell shows a traceback, except the cells tagged ``raises-exception``,
  which must show theirs,
* every figure stored in the ``.ipynb`` is drawn on the page, as a loaded image.

It also checks the rebuild notebook's progress bar and that ``/docs`` of a
service started from a notebook lists every operation of the OpenAPI schema.

One JupyterLab and one browser serve the whole module; the notebooks are
copies in a temporary folder (the run autosaves).  A full-page screenshot of
each notebook goes to ``tests/artifacts/browser/`` (or ``$LABSUPPORT_ARTIFACTS``).
Needs Debian's Chromium and Playwright for Python; skips without them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import (
    LabServer,
    NotebookRun,
    OfflineContext,
    StoredNotebook,
    copy_without_outputs,
    fetch_json,
    launch_chromium,
    open_notebook,
    openapi_operations,
    run_all,
    run_cell,
    start_lab,
    swagger_operations,
    wait_for_output,
    why_no_browser,
    write_notebook,
)

from labsupport.classroom.workbook import notebook_paths

if (missing := why_no_browser()) is not None:
    pytest.skip(f"{missing}; skipping the browser test", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = notebook_paths(REPO / "notebooks")
RUN_TIMEOUT = 120.0  # seconds per notebook, from the click on "Restart" to an idle kernel


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """The folder for screenshots: ``$LABSUPPORT_ARTIFACTS`` or ``tests/artifacts/browser``."""
    default = Path(__file__).parent / "artifacts" / "browser"
    folder = Path(os.environ.get("LABSUPPORT_ARTIFACTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def workbook(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, StoredNotebook]]:
    """Output-free copies of the notebooks, and what each file promised when copied."""
    root = tmp_path_factory.mktemp("notebooks")
    results = Path("benchmarks", "results", "latest.json")  # notebook 07 looks for it from here up
    (root / results).parent.mkdir(parents=True)
    shutil.copyfile(REPO / results, root / results)
    return root, copy_without_outputs(NOTEBOOKS, root)


@pytest.fixture(scope="module")
def lab(
    workbook: tuple[Path, dict[str, StoredNotebook]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """JupyterLab serving the copies."""
    server = start_lab(workbook[0], tmp_path_factory.mktemp("jupyter"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineContext]:
    """Headless Chromium with a fresh profile, allowed to reach 127.0.0.1 only."""
    with (
        sync_api.sync_playwright() as playwright,
        launch_chromium(playwright, tmp_path_factory.mktemp("chromium-profile")) as ctx,
    ):
        yield ctx


@pytest.fixture(scope="module")
def ran(lab: LabServer, browser: OfflineContext, artifacts: Path) -> Callable[[str], NotebookRun]:
    """Run a notebook through the menu once and remember the result for later tests."""
    runs: dict[str, NotebookRun] = {}

    def get(name: str) -> NotebookRun:
        if name not in runs:
            runs[name] = run_all(browser, lab, name, artifacts, timeout=RUN_TIMEOUT)
        return runs[name]

    return get


def problems(run: NotebookRun, stored: StoredNotebook) -> list[str]:
    """Return one line per thing the page shows wrong, naming the notebook and cell."""
    name = run.name
    if len(run.cells) != stored.n_cells:
        return [f"{name}: the page shows {len(run.cells)} cells, the file has {stored.n_cells}"]
    found = []
    if not run.finished:
        found.append(f"{name}: cells {run.pending} still pending after {RUN_TIMEOUT:.0f} s")
    never_ran = []
    for cell in run.cells:
        where = f"{name} cell {cell.index}"
        if cell.index in stored.raises:
            if not cell.errors:
                found.append(f"{where} is tagged raises-exception but shows no error")
        elif cell.errors:
            found.append(f"{where} shows an error: {cell.error_summary}")
        elif cell.index in stored.code_cells and not cell.ran:
            never_ran.append(cell.index)
        if any(width == 0 for width in cell.image_widths):
            found.append(f"{where} shows an image that did not load")
    if never_ran:
        found.append(f"{name}: cells {never_ran} never ran (Run All stopped before them)")
    images = sum(len(c.image_widths) for c in run.cells)
    if images < stored.png_outputs:
        found.append(
            f"{name}: {images} images on the page, the file stores {stored.png_outputs} figures"
        )
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_restart_and_run_all_in_jupyterlab(
    path: Path,
    workbook: tuple[Path, dict[str, StoredNotebook]],
    ran: Callable[[str], NotebookRun],
) -> None:
    stored = workbook[1][path.name]
    run = ran(path.name)
    found = problems(run, stored)
    assert not found, "\n".join([*found, f"screenshot: {run.screenshot}"])
    assert run.screenshot.stat().st_size > 0


def test_rebuild_notebook_shows_a_widget_progress_bar(
    ran: Callable[[str], NotebookRun],
) -> None:
    run = ran("03_background_rebuild.ipynb")
    assert run.finished, f"03_background_rebuild did not finish; cells {run.pending} pending"
    bars = [c.index for c in run.cells if c.progress_bars]
    assert bars, "no ipywidgets progress bar in 03_background_rebuild's outputs after Run All"
    # ...and it moved while a rebuild ran: a reading short of 100 % before its cell ended
    percents = [int(p) for text in run.live_bars for p in re.findall(r"(\d+)%", text)]
    assert any(0 <= p < 100 for p in percents), (
        f"no progress bar was seen part-way while its cell ran; live readings: {run.live_bars}"
    )


DOCS_CELLS = [
    """\
from labsupport.api import create_app
from labsupport.data import catalogue_movies, demo_ratings
from labsupport.server import serve_in_thread
from labsupport.store import MemoryStore

store = MemoryStore()
store.add_movies((m.title, m.year, m.genre) for m in catalogue_movies())
store.add_ratings(demo_ratings(n_users=40, seed=0))
server = serve_in_thread(create_app(store))
print("serving at", server.url)
""",
    """\
server.stop()
print("stopped:", not server.is_running)
""",
]


def test_docs_page_of_a_notebook_served_app_lists_every_operation(
    lab: LabServer, browser: OfflineContext, artifacts: Path
) -> None:
    write_notebook(lab.root_dir / "docs_scratch.ipynb", DOCS_CELLS)
    page = open_notebook(browser, lab, "docs_scratch.ipynb", timeout=60)
    try:
        run_cell(page, 0)
        url = wait_for_output(page, 0, r"serving at (http://127\.0\.0\.1:\d+)", timeout=60)[1]
        try:
            expected = openapi_operations(fetch_json(f"{url}/openapi.json"))
            shown, blocked = swagger_operations(browser, f"{url}/docs", artifacts / "docs.png")
        finally:  # stop the service from the notebook's second cell, whatever happened
            run_cell(page, 1)
            stopped = wait_for_output(page, 1, r"stopped: (True|False)", timeout=30)[1]
    finally:
        page.close()
        lab.shut_down_kernels()

    assert stopped == "True", "the second cell did not stop the service"
    assert ("GET", "/health") in expected, f"unexpected OpenAPI schema: {sorted(expected)}"
    assert shown, f"{url}/docs rendered no operation; requests blocked offline: {blocked}"
    assert expected <= shown, f"missing from {url}/docs: {sorted(expected - shown)}"
