"""Section ``workbook``: how long each notebook takes to run, and its slowest cells.

Every notebook in ``notebooks/`` is copied, with the rest of that folder, to
a temporary directory and executed there (never in place) with
:func:`labsupport.classroom.workbook.run_cells`, as
:func:`~labsupport.classroom.workbook.execute_notebook` does (fresh ``python3`` kernel,
working directory = the notebook's folder; the timeout per cell is
``DEFAULTS["timeout"]``), but with ``record_timing=True`` so each cell's
metadata carries the kernel's timestamps: a cell's time is
``shell.execute_reply - iopub.execute_input``.
The floor is what any notebook pays: a kernel that runs one empty cell, and
one that imports the stack the workbook uses.
"""

from __future__ import annotations

import datetime as _dt
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import REPO_ROOT, Column, fmt
from labsupport.classroom.workbook import notebook_paths, run_cells

__all__ = ["COLUMNS", "DEFAULTS", "FLOOR_IMPORTS", "run", "time_notebook"]

DEFAULTS: dict[str, Any] = {"folder": "notebooks", "timeout": 300}

TOTAL_TARGET = 60.0
CELL_TARGET = 5.0

FLOOR_IMPORTS = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse
import fastapi
import httpx
import labsupport
from labsupport import api, data, recommender, retry, server, store, tasks
from labsupport.classroom import plots
"""

COLUMNS: list[Column] = [
    ("notebook", "notebook", fmt("")),
    ("cells", "code cells", fmt("d")),
    ("seconds", "wall s", fmt(".1f")),
    ("cells_seconds", "in cells s", fmt(".1f")),
    ("slowest_cell", "slowest cell", fmt("")),
    ("slowest_seconds", "slowest s", fmt(".2f")),
    ("over_limit", "cells > 5 s", fmt("d")),
    ("status", "status", lambda s: s if len(s) <= 50 else s[:47] + "..."),
]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _stamp(value: str) -> float:
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def time_notebook(path: Path, *, timeout: int = 300) -> dict[str, Any]:
    """Execute ``path`` where it is (pass a copy!) and return wall and per-cell times.

    Returns:
        ``seconds`` (wall, kernel start to last reply), ``cells`` (one
        ``{index, id, seconds}`` per code cell that ran) and ``status``
        (``"ok"`` or the error).
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    status = "ok"
    started = time.perf_counter()
    try:
        run_cells(nb, path.parent, timeout=timeout, record_timing=True)
    except Exception as exc:  # a failing notebook is reported, not fatal
        last = _ANSI.sub("", str(exc)).strip().splitlines()[-1]
        status = f"failed: {last[:200]}"
    wall = time.perf_counter() - started
    cells = []
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type != "code" or "shell.execute_reply" not in timing:
            continue
        begin = timing.get("iopub.execute_input") or timing.get("iopub.status.busy")
        seconds = _stamp(timing["shell.execute_reply"]) - _stamp(begin)
        cells.append({"index": index, "id": cell.get("id"), "seconds": round(seconds, 3)})
    return {"seconds": round(wall, 2), "cells": cells, "status": status}


def _floor_notebook(folder: Path, name: str, source: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    path = folder / name
    nbformat.write(nb, path)
    return path


def _row(name: str, timed: dict[str, Any], n_code: int) -> dict[str, Any]:
    cells = timed["cells"]
    slowest = max(cells, key=lambda c: c["seconds"]) if cells else None
    return {
        "notebook": name,
        "cells": n_code,
        "seconds": timed["seconds"],
        "cells_seconds": round(sum(c["seconds"] for c in cells), 2),
        "slowest_cell": f"#{slowest['index']} ({slowest['id']})" if slowest else None,
        "slowest_seconds": slowest["seconds"] if slowest else None,
        "over_limit": sum(c["seconds"] > CELL_TARGET for c in cells),
        "cell_seconds": cells,
        "status": timed["status"],
    }


def run(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time the floor and every notebook on temporary copies; return the section's result."""
    import nbformat

    cfg = {**DEFAULTS, **(settings or {})}
    source = REPO_ROOT / cfg["folder"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workbook-") as tmp:
        copy = Path(tmp) / "notebooks"
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        results = Path("benchmarks", "results", "latest.json")  # notebook 07 finds it from here up
        (Path(tmp) / results).parent.mkdir(parents=True)
        shutil.copyfile(REPO_ROOT / results, Path(tmp) / results)
        floors = {
            "(floor: kernel only)": "pass",
            "(floor: kernel + imports)": FLOOR_IMPORTS,
        }
        for i, (name, code) in enumerate(floors.items()):
            path = _floor_notebook(Path(tmp), f"floor{i}.ipynb", code)
            rows.append(_row(name, time_notebook(path, timeout=cfg["timeout"]), 1))
            print(f"  {name}: {rows[-1]['seconds']} s", flush=True)
        for path in notebook_paths(copy):
            n_code = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
            rows.append(_row(path.name, time_notebook(path, timeout=cfg["timeout"]), n_code))
            print(f"  {path.name}: {rows[-1]['seconds']} s ({rows[-1]['status']})", flush=True)
    notebooks = [r for r in rows if not r["notebook"].startswith("(")]
    total = round(sum(r["seconds"] for r in notebooks), 1)
    worst = max((c["seconds"] for r in notebooks for c in r["cell_seconds"]), default=0.0)
    slow_cells = [
        f"{r['notebook']} cell #{c['index']} ({c['id']}): {c['seconds']:.1f} s"
        for r in notebooks
        for c in r["cell_seconds"]
        if c["seconds"] > CELL_TARGET
    ]
    failed = [r["notebook"] for r in notebooks if r["status"] != "ok"]
    return {
        "title": "The workbook: wall time per notebook (executed on copies)",
        "settings": cfg,
        "rows": rows,
        "total_seconds": total,
        "slowest_cell_seconds": worst,
        "slow_cells": slow_cells,
        "failed": failed,
        "targets": [
            {
                "name": f"whole workbook ({len(notebooks)} notebooks)",
                "target": f"about {TOTAL_TARGET:.0f} s",
                "measured": f"{total:.1f} s"
                + (f" (partial: {len(failed)} failed part-way)" if failed else ""),
                "value": total,
                "met": total <= TOTAL_TARGET * 1.25 and not failed,  # "about": within 25 %
            },
            {
                "name": "slowest single cell",
                "target": f"<= {CELL_TARGET:.0f} s",
                "measured": f"{worst:.2f} s",
                "value": worst,
                "met": worst <= CELL_TARGET,
            },
        ],
        "notes": [f"failed to run: {', '.join(failed)}"] if failed else [],
    }
