"""Notebook tooling: regenerate outputs, make the student edition, replay "Run All".

Command line (added to `python -m labsupport` by `labsupport.classroom.cli`):

    python -m labsupport notebooks run notebooks/              # re-execute in place
    python -m labsupport notebooks run-all notebooks/X.ipynb   # replay JupyterLab's Run All
    python -m labsupport student-edition OUT/                  # solutions replaced by stubs

Solutions sit in the cell right after their exercise, tagged `solution`, and
the exercise's check cell comes right after its solution.

The lab cells check the app `checks.lab.your_app()` names. Regenerating and
replaying the workbook points them at a fresh copy of the finished app
(`solution_lab_app`), so the stored outputs are the finished app's and a
student's half-done `notebooks/app` never leaks into them.

`labsupport.classroom.need` is the one piece a notebook imports; it lives in
the package.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SOLUTION_STUB",
    "CellReply",
    "execute_notebook",
    "notebook_parameters",
    "notebook_paths",
    "replay_run_all",
    "run_cells",
    "solution_lab_app",
    "student_edition",
]

SOLUTION_STUB = (
    "# Your solution goes in this cell: write it, run it, then run the check cell below.\n"
    "# Run All stops at the next line until you replace it.\n"
    "checks.unsolved()\n"
)
"""What a solution cell holds in the student edition."""

STUDENT_TEXT = "student_edition"
"""Markdown cell metadata: the cell's text in the student edition, where it differs."""

# A call of an exercise or lab check: `checks.svd.check_rank_k(...)`.
_CHECK_CALL = re.compile(r"\bchecks\.\w+\.check_\w+\(")

KERNEL_NAME = "python3"

# A live widget's view: useless in a saved notebook, whose widget state is dropped.
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def notebook_paths(folder: str | Path) -> list[Path]:
    """Return the workbook's notebooks in teaching order (`NN_name.ipynb`)."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Return the values set by a notebook's cell tagged `parameters`.

    Tests use it to recompute a notebook's key results with the notebook's
    own sizes and seeds, so a regression explains itself.

    Raises:
        LookupError: the notebook has no `parameters` cell.
    """
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in _tags(cell):
            namespace: dict[str, Any] = {}
            exec(cell.source, namespace)  # the notebook's own, trusted, parameters
            return {k: v for k, v in namespace.items() if not k.startswith("__")}
    msg = f"{path} has no cell tagged 'parameters'"
    raise LookupError(msg)


def run_cells(
    nb: Any, folder: str | Path, *, timeout: int = 120, record_timing: bool = False
) -> None:
    """Execute a notebook object's cells in a fresh kernel, in place.

    The kernel starts in `folder` (as JupyterLab starts it in the notebook's
    own folder). With `record_timing` each code cell's metadata gets nbclient's
    `execution` timestamps.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell not tagged
            `raises-exception` failed; the cells before it keep their outputs.
    """
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(folder)}},
        record_timing=record_timing,
    )
    # The kernel process's own log (not cell output) would only add ipykernel's
    # note about unencrypted local TCP; cells' stderr still reaches the notebook.
    client.execute(stderr=subprocess.DEVNULL)


def execute_notebook(path: str | Path, *, timeout: int = 120) -> None:
    """Run a notebook top to bottom in a fresh kernel and save it with its outputs.

    Cells tagged `raises-exception` may fail; any other error stops the run
    and raises, leaving the file untouched. Volatile metadata (timings,
    widget state) is dropped so that diffs show only real changes; without
    its state a widget cannot be drawn again, so its outputs keep only their
    text form (JupyterLab would otherwise show "Error displaying widget").

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed unexpectedly.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    run_cells(nb, path.parent, timeout=timeout)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": KERNEL_NAME,
    }
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(_WIDGET_VIEW, None)
    nbformat.write(nb, path)


@contextlib.contextmanager
def solution_lab_app() -> Iterator[Path]:
    """Point the lab cells of every kernel started inside at a fresh copy of the finished app.

    Sets `LABSUPPORT_LAB_APP` (see `checks.lab.your_app`) for the block, unless
    it is set already, in which case that folder is kept.

    Yields:
        The app folder the lab cells will check.
    """
    from labsupport.classroom.checks.lab import LAB_APP_ENV
    from labsupport.labapp import write_lab_app

    if os.environ.get(LAB_APP_ENV):
        yield Path(os.environ[LAB_APP_ENV])
        return
    with tempfile.TemporaryDirectory(prefix="labsupport-solution-app-") as tmp:
        write_lab_app(tmp, solution=True)
        os.environ[LAB_APP_ENV] = tmp
        try:
            yield Path(tmp)
        finally:
            del os.environ[LAB_APP_ENV]


def _is_check(cell: Any, previous: Any | None) -> bool:
    """An exercise's check (the cell after its solution) or a lab step's check cell."""
    after_solution = previous is not None and "solution" in _tags(previous)
    return cell.cell_type == "code" and (after_solution or bool(_CHECK_CALL.search(cell.source)))


def _clear(cell: Any) -> None:
    cell.outputs = []
    cell.execution_count = None


def student_edition(source: str | Path, out: str | Path) -> list[Path]:
    """Write the workbook a student works in: stubs for solutions, nothing given away.

    In each copy every `solution` cell becomes `SOLUTION_STUB` (tag kept, no
    longer collapsed); check cells, and every code cell after the first stub,
    keep no stored output (a stored ✔ would answer the exercise); a markdown
    cell with `student_edition` text in its metadata gets that text. The
    starter lab app is written to `out/app` when that folder is missing, so
    the edition's lab cells check the student's app, not the solution.

    Returns:
        The notebooks written.
    """
    import nbformat

    from labsupport.labapp import write_lab_app

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebook_paths(source):
        nb = nbformat.read(path, as_version=4)
        stubbed, previous = False, None
        for cell in nb.cells:
            if cell.cell_type == "markdown" and STUDENT_TEXT in cell.metadata:
                cell.source = cell.metadata.pop(STUDENT_TEXT)
            elif cell.cell_type == "code":
                if "solution" in _tags(cell):
                    cell.source = SOLUTION_STUB
                    cell.metadata.pop("jupyter", None)
                    stubbed = True
                    _clear(cell)
                elif stubbed or _is_check(cell, previous):
                    _clear(cell)
            previous = cell
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    if not (out / "app").exists():
        write_lab_app(out / "app")
    return written


@dataclass(frozen=True)
class CellReply:
    """The kernel's reply to one cell of a replayed "Run All"."""

    index: int
    status: str
    tags: tuple[str, ...]
    error: str | None = None


def replay_run_all(path: str | Path, *, timeout: float = 180.0) -> list[CellReply]:
    """Send every code cell to one kernel at once, as JupyterLab's "Run All" does.

    nbval and nbclient send a cell, wait for its reply, then send the next;
    JupyterLab queues them all first. Some bugs (the archived nest_asyncio
    under ipykernel 7 dropping queued cells) only show up this way. Cells
    tagged `raises-exception` are sent with `stop_on_error=False`, exactly
    as JupyterLab does.

    Returns:
        One reply per code cell, in order (`status` is `ok`, `error`,
        `aborted` or `missing` when no reply came before the timeout).
    """
    import nbformat
    from jupyter_client.manager import start_new_kernel

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    km, kc = start_new_kernel(
        kernel_name=KERNEL_NAME, cwd=str(path.parent), stderr=subprocess.DEVNULL
    )
    try:
        ids = {}
        for i, cell in cells:
            stop = "raises-exception" not in _tags(cell)
            ids[kc.execute(cell.source, stop_on_error=stop)] = i
        replies: dict[int, CellReply] = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(cells) and time.monotonic() < deadline:
            try:
                msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            index = ids.get(msg["parent_header"].get("msg_id"))
            if index is None:
                continue
            content = msg["content"]
            error = (
                f"{content.get('ename')}: {content.get('evalue')}"
                if content["status"] == "error"
                else None
            )
            replies[index] = CellReply(
                index, content["status"], tuple(_tags(nb.cells[index])), error
            )
        return [replies.get(i, CellReply(i, "missing", tuple(_tags(c)))) for i, c in cells]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
