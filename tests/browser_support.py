"""A real JupyterLab and a real Chromium, for ``tests/test_browser.py``.

The browser test does what a student does: it opens each notebook in
JupyterLab, picks *Kernel > Restart Kernel and Run All Cells...* from the menu,
confirms the dialog and reads what the page shows.  This module holds the
plumbing so the test itself reads as a list of checks:

* :func:`start_lab` runs ``python -m jupyter lab`` from this venv on a free
  loopback port, with a random token and its own settings, config, data and
  runtime folders, so nothing from the user's own JupyterLab leaks in;
* :func:`launch_chromium` starts Debian's Chromium through Playwright (never a
  browser that Playwright downloads) and refuses every request that does not
  go to 127.0.0.1, so the page can never reach the internet;
* :func:`run_all` opens one notebook, runs it through the menu and returns a
  :class:`NotebookRun`: what every cell shows once the kernel is idle again.

All times are in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
from conftest import free_port, stop_process

__all__ = [
    "CHROMIUM",
    "CellView",
    "LabNotReadyError",
    "LabServer",
    "NotebookRun",
    "OfflineContext",
    "StoredNotebook",
    "copy_without_outputs",
    "fetch_json",
    "launch_chromium",
    "open_notebook",
    "openapi_operations",
    "read_cells",
    "rendered_operations",
    "run_all",
    "run_cell",
    "start_lab",
    "swagger_operations",
    "wait_for_output",
    "why_no_browser",
    "write_notebook",
]

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright, Route, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium; Playwright drives it instead of downloading its own build."""


def why_no_browser() -> str | None:
    """Why the browser test cannot run here, in one sentence; None when it can."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (the 'test' extra)"
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",  # we run as root in a container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 16_000  # Chromium cannot paint a much taller page in one go
POLL = 0.25  # seconds between two looks at the page while cells run

# JupyterLab 4 only renders the cells near the scroll position of a long
# notebook ("windowing"); with "none" every cell is in the page, so every
# output can be read and every figure counted.  The other settings keep the
# news and update pop-ups (and their requests) away.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "scrollPastEnd": False},
    "@jupyterlab/apputils-extension/notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
}
SERVER_CONFIG = {
    "LabApp": {
        "news_url": None,
        "extension_manager": "readonly",
        "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
    },
}

# What the page shows for each cell, read in one go (see CellView).  JupyterLab
# renders a traceback as "application/vnd.jupyter.stderr", like anything a cell
# writes to stderr; the workbook writes nothing else there, so both count as errors.
_READ_CELLS_JS = """
() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell')).map((cell) => ({
  kind: cell.classList.contains('jp-CodeCell') ? 'code'
      : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
  prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
  errors: Array.from(cell.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
  )).map((node) => node.innerText),
  text: Array.from(cell.querySelectorAll('.jp-OutputArea-output')).map(
    (node) => node.innerText).join('\\n'),
  imageWidths: Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).map(
    (img) => img.naturalWidth),
  progressBars: cell.querySelectorAll(
    '.jp-OutputArea-output .jupyter-widgets.widget-hprogress,'
    + ' .jp-OutputArea-output .jupyter-widgets.widget-vprogress'
  ).length,
}))
"""

# The execution indicator says "idle" before any kernel exists; the kernel is
# ready once the toolbar names it and the indicator says "idle".
_KERNEL_READY_JS = """
() => {
  const name = document.querySelector(
    ".jp-NotebookPanel-toolbar [data-jp-item-name='kernelName']")?.textContent.trim();
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
  return Boolean(name) && name !== 'No Kernel' && status === 'idle';
}
"""

_KERNEL_STATUS_JS = """
() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status ?? 'missing'
"""


class LabNotReadyError(RuntimeError):
    """JupyterLab, the kernel or the page did not get ready in time."""


# ---------------------------------------------------------------- the notebooks


@dataclass(frozen=True)
class StoredNotebook:
    """What a notebook file promises: which cells may fail and how many figures it draws.

    Attributes:
        n_cells: Number of cells, of every kind.
        code_cells: Indices of the code cells that have some source.
        raises: Indices of the cells tagged ``raises-exception``.
        png_outputs: Number of ``image/png`` outputs stored in the file.
    """

    n_cells: int
    code_cells: tuple[int, ...]
    raises: frozenset[int]
    png_outputs: int

    @classmethod
    def of(cls, nb: nbformat.NotebookNode) -> StoredNotebook:
        """Read the promises of the notebook ``nb``."""
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        return cls(
            n_cells=len(nb.cells),
            code_cells=tuple(i for i, c in code if c.source.strip()),
            raises=frozenset(
                i for i, c in code if "raises-exception" in c.metadata.get("tags", [])
            ),
            png_outputs=sum(
                "image/png" in out.get("data", {}) for _, c in code for out in c.outputs
            ),
        )


def copy_without_outputs(notebooks: list[Path], folder: Path) -> dict[str, StoredNotebook]:
    """Copy ``notebooks`` into ``folder`` with every output and execution count removed.

    The browser run autosaves, so it must work on copies.  Without the stored
    outputs, any figure or traceback on the page was made by this run.

    Returns:
        What each notebook promised when it was copied, by file name (read
        from the same bytes as the copy, even if the file changes later).
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored = {}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        stored[path.name] = StoredNotebook.of(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nbformat.write(nb, folder / path.name)
    return stored


# ------------------------------------------------------------------- the server


@dataclass
class LabServer:
    """A JupyterLab server started by :func:`start_lab`.

    Attributes:
        url: The base URL, for example ``"http://127.0.0.1:8123"``.
        token: The token every request needs.
        root_dir: The folder JupyterLab serves.
        process: The ``jupyter lab`` process.
        log_path: Where the server and its kernels write their logs.
    """

    url: str
    token: str
    root_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def page_url(self, notebook: str) -> str:
        """Return the address that opens ``notebook`` in a fresh workspace."""
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API and return the decoded JSON answer (or None)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """End every kernel session, so the next notebook gets both cores."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the server log, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (and so its kernels): terminate, then kill after ``grace``."""
        stop_process(self.process, grace)


def start_lab(root_dir: Path, home: Path, *, timeout: float = 60.0) -> LabServer:
    """Start JupyterLab on ``root_dir`` and return once its REST API answers.

    Settings, config, data, runtime and IPython folders all live under
    ``home``, and the server's output (with the kernels' stderr) goes to
    ``home / "lab.log"``, never to the test log.

    Raises:
        LabNotReadyError: the server exited or did not answer within ``timeout``.
    """
    dirs = {name: home / name for name in ("config", "data", "runtime", "settings", "ipython")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    for plugin, values in LAB_SETTINGS.items():
        settings_file = dirs["settings"] / f"{plugin}.jupyterlab-settings"
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(values))
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG))

    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(dirs["ipython"]),
    }
    port, token = free_port(), secrets.token_hex(24)
    command = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log_path = home / "lab.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=root_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    lab = LabServer(f"http://127.0.0.1:{port}", token, root_dir, process, log_path)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError):  # not listening yet (URLError is an OSError)
            lab.api("GET", "/api/status")
            return lab
        time.sleep(POLL)
    lab.stop()
    msg = (
        f"JupyterLab did not answer on {lab.url} within {timeout} s "
        f"(exit code {process.returncode}); its log ends with:\n{lab.log_tail()}"
    )
    raise LabNotReadyError(msg)


# ------------------------------------------------------------------ the browser


@dataclass
class OfflineContext:
    """A Chromium browser context that only reaches 127.0.0.1.

    Attributes:
        context: The Playwright browser context (one profile, many pages).
        blocked: Every URL the pages asked for and did not get, in order.
    """

    context: BrowserContext
    blocked: list[str] = field(default_factory=list)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if re.match(r"https?://(127\.0\.0\.1|localhost)(:\d+)?/", url):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")


@contextlib.contextmanager
def launch_chromium(playwright: Playwright, profile: Path) -> Iterator[OfflineContext]:
    """Start Debian's Chromium with a fresh profile in ``profile``; close it afterwards."""
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=list(CHROMIUM_ARGS),
        headless=True,
        viewport=VIEWPORT,
    )
    offline = OfflineContext(context)
    try:
        context.route("**/*", offline._route)
        context.set_default_timeout(30_000)  # milliseconds, for every click and wait
        yield offline
    finally:
        context.close()


# ------------------------------------------------------------ running notebooks


@dataclass(frozen=True)
class CellView:
    """What one cell shows on the page.

    Attributes:
        index: Position in the notebook (the same as in the ``.ipynb`` file).
        kind: ``"code"``, ``"markdown"`` or ``"raw"``.
        prompt: The input prompt: ``"[3]:"`` once run, ``"[*]:"`` while
            queued or running, ``"[ ]:"`` or ``""`` when never run.
        errors: The text of each traceback (or stderr output) the cell shows.
        text: All the cell's output text.
        image_widths: ``naturalWidth`` of each image in the outputs (0: not loaded).
        progress_bars: How many ipywidgets progress bars the outputs show.
    """

    index: int
    kind: str
    prompt: str
    errors: tuple[str, ...]
    text: str
    image_widths: tuple[int, ...]
    progress_bars: int

    @property
    def ran(self) -> bool:
        """Whether the cell shows an execution count."""
        return bool(re.fullmatch(r"\[\d+\]:", self.prompt))

    @property
    def error_summary(self) -> str:
        """One line about the first error: a traceback's last line, or a stderr text's first."""
        for error in self.errors:
            lines = [line.strip() for line in error.splitlines() if line.strip()]
            if lines and "Traceback" in error:
                return lines[-1][:300]  # "ValueError: ..."
            if lines:
                return f"(on stderr) {lines[0][:300]}"  # a warning, say
        return ""


@dataclass(frozen=True)
class NotebookRun:
    """The outcome of one "Restart Kernel and Run All Cells" in the browser.

    Attributes:
        name: The notebook's file name.
        cells: What every cell shows once the kernel went idle.
        finished: Whether every cell left the ``[*]`` state before the deadline.
        screenshot: The full-page screenshot of the notebook.
        live_bars: The output texts of cells showing a progress bar, read while
            those cells were still running.
    """

    name: str
    cells: tuple[CellView, ...]
    finished: bool
    screenshot: Path
    live_bars: tuple[str, ...] = ()

    @property
    def pending(self) -> list[int]:
        """Indices of the cells still queued or running."""
        return [c.index for c in self.cells if c.prompt == "[*]:"]


def open_notebook(ctx: OfflineContext, lab: LabServer, name: str, *, timeout: float) -> Page:
    """Open ``name`` in a new page and return once its kernel is idle.

    Raises:
        LabNotReadyError: the notebook or its kernel did not get ready in time.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page = ctx.context.new_page()
    page.goto(lab.page_url(name))
    try:
        page.wait_for_function(_KERNEL_READY_JS, timeout=timeout * 1000)
    except PlaywrightTimeoutError as exc:
        page.close()
        msg = (
            f"{name}: the notebook or its kernel was not ready within {timeout} s; "
            f"server log:\n{lab.log_tail()}"
        )
        raise LabNotReadyError(msg) from exc
    return page


def choose_menu(page: Page, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then the item that runs ``command``."""
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(f"^{menu}$")).click()
    page.locator(f".lm-Menu-item[data-command='{command}']").click()


def read_cells(page: Page) -> tuple[CellView, ...]:
    """Return what every cell of the open notebook shows right now."""
    raw: list[dict[str, Any]] = page.evaluate(_READ_CELLS_JS)
    return tuple(
        CellView(
            index=i,
            kind=cell["kind"],
            prompt=cell["prompt"],
            errors=tuple(cell["errors"]),
            text=cell["text"],
            image_widths=tuple(cell["imageWidths"]),
            progress_bars=cell["progressBars"],
        )
        for i, cell in enumerate(raw)
    )


def wait_until_idle(page: Page, *, timeout: float, seen_bars: list[str] | None = None) -> bool:
    """Wait until some cell has run, none is queued or running, and the kernel is idle.

    Args:
        page: The notebook's page.
        timeout: How long to wait, in seconds.
        seen_bars: If given, every distinct output text of a cell that shows a
            progress bar while that cell is still running is appended to it:
            what a student sees the bar say during a rebuild.

    Returns:
        True when that happened within ``timeout``, False otherwise.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cells = read_cells(page)
        if seen_bars is not None:
            for cell in cells:
                live = cell.prompt == "[*]:" and cell.progress_bars
                if live and cell.text not in seen_bars:
                    seen_bars.append(cell.text)
        prompts = [c.prompt for c in cells if c.kind == "code"]
        started = any(p not in ("", "[ ]:") for p in prompts)
        if started and "[*]:" not in prompts and page.evaluate(_KERNEL_STATUS_JS) == "idle":
            return True
        page.wait_for_timeout(POLL * 1000)
    return False


def save_screenshot(page: Page, path: Path) -> Path:
    """Save the whole notebook as one PNG: the page is made as tall as the notebook first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The notebook's whole height plus the menu bar, toolbar and status bar around it.
    needed = page.evaluate(
        """() => {
             const scroller = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
             if (!scroller) return 0;
             scroller.scrollTop = 0;
             return scroller.scrollHeight + window.innerHeight - scroller.clientHeight;
           }"""
    )
    height = min(max(needed, VIEWPORT["height"]), MAX_SCREENSHOT_HEIGHT)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.wait_for_timeout(300)  # one layout pass at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    return path


def run_all(
    ctx: OfflineContext, lab: LabServer, name: str, artifacts: Path, *, timeout: float = 120.0
) -> NotebookRun:
    """Open ``name``, run *Restart Kernel and Run All Cells* from the menu, read the result.

    The page is closed and the kernel shut down afterwards, whatever happens.

    Args:
        ctx: The browser.
        lab: The JupyterLab server.
        name: The notebook's file name in ``lab.root_dir``.
        artifacts: Where the screenshot goes (``<stem>.png``).
        timeout: How long the run may take, from the click on *Restart*.

    Raises:
        LabNotReadyError: the notebook or its kernel did not get ready.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page = open_notebook(ctx, lab, name, timeout=60.0)
    try:
        # A collapsed input (the solution cells) shows no execution count:
        # expand them all so every prompt can say whether its cell ran.
        choose_menu(page, "View", "notebook:show-all-cell-code")
        choose_menu(page, "Kernel", "runmenu:restart-and-run-all")
        page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()  # "Restart"
        live_bars: list[str] = []
        finished = wait_until_idle(page, timeout=timeout, seen_bars=live_bars)
        # A figure is an <img> with a data: URL; give each a moment to decode
        # (one that never does shows naturalWidth 0, which the test reports).
        with contextlib.suppress(PlaywrightTimeoutError):
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.jp-OutputArea-output img'))"
                ".every((img) => img.complete)",
                timeout=10_000,
            )
        cells = read_cells(page)
        screenshot = save_screenshot(page, artifacts / f"{Path(name).stem}.png")
        return NotebookRun(name, cells, finished, screenshot, tuple(live_bars))
    finally:
        page.close()
        lab.shut_down_kernels()


def run_cell(page: Page, index: int) -> None:
    """Select cell ``index`` by clicking its prompt and run it with *Run > Run Selected Cell*."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputArea-prompt").click()
    choose_menu(page, "Run", "notebook:run-cell")


def wait_for_output(page: Page, index: int, pattern: str, *, timeout: float) -> re.Match[str]:
    """Wait until cell ``index``'s output matches the regular expression ``pattern``.

    Raises:
        LabNotReadyError: it did not within ``timeout``; the message shows the output.
    """
    deadline = time.monotonic() + timeout
    while True:
        cell = read_cells(page)[index]
        found = re.search(pattern, cell.text)
        if found:
            return found
        if time.monotonic() >= deadline:
            msg = (
                f"cell {index} did not print {pattern!r} within {timeout} s; "
                f"it shows: {cell.text[-500:]!r}"
            )
            raise LabNotReadyError(msg)
        page.wait_for_timeout(POLL * 1000)


def write_notebook(path: Path, cells: list[str]) -> None:
    """Write a notebook of code cells with the given sources (for scratch notebooks)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def openapi_operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    """Return every ``(METHOD, path)`` pair an OpenAPI schema declares."""
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        (method.upper(), path)
        for path, item in schema.get("paths", {}).items()
        for method in item
        if method in methods
    }


def fetch_json(url: str) -> Any:
    """GET ``url`` (a loopback address) and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def swagger_operations(
    ctx: OfflineContext, docs_url: str, screenshot: Path, *, timeout: float = 15.0
) -> tuple[set[tuple[str, str]], list[str]]:
    """Open Swagger UI at ``docs_url`` in a new page and read the operations it lists.

    A screenshot of the page goes to ``screenshot``.

    Returns:
        The ``(METHOD, path)`` of every operation on the page (empty when
        Swagger UI could not start), and the URLs refused to the page
        meanwhile (a CDN, say).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    blocked_before = len(ctx.blocked)
    page = ctx.context.new_page()
    try:
        page.goto(docs_url)  # returns after the load event: every script ran or failed
        if page.evaluate("() => typeof SwaggerUIBundle !== 'undefined'"):
            with contextlib.suppress(PlaywrightTimeoutError):
                page.wait_for_selector(".opblock .opblock-summary-path", timeout=timeout * 1000)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        return rendered_operations(page), ctx.blocked[blocked_before:]
    finally:
        page.close()


def rendered_operations(page: Page) -> set[tuple[str, str]]:
    """Return the ``(METHOD, path)`` of every operation Swagger UI rendered on ``page``."""
    raw: list[list[str]] = page.evaluate(
        """() => Array.from(document.querySelectorAll('.opblock')).map((block) => {
             const method = block.querySelector('.opblock-summary-method');
             const path = block.querySelector('.opblock-summary-path');
             return [method?.textContent ?? '',
                     path?.dataset.path ?? path?.textContent ?? ''];
           })"""
    )
    return {(method.strip().upper(), path.replace("\u200b", "").strip()) for method, path in raw}
