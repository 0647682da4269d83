"""The student's own app for the labs: write the starter or the finished solution.

Session 09's labs are guided coding in the course's movie API. `write_lab_app`
copies that app as it stands when the session starts (`starter`: movies,
ratings, a most-rated recommender, its tests) or as it stands at the end
(`solution`: the truncated-SVD builder, the background rebuild with its status
endpoint, idempotency keys, the `lifespan` shutdown, the retry client and the
lesson's quick test). The solution is the starter with some files replaced or
added, so the two never drift apart.

From a terminal: `python -m labsupport lab-app DIR` (add `--solution` for the
finished app).
"""

from __future__ import annotations

import shutil
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from labsupport.errors import LabError

__all__ = ["LabAppExistsError", "write_lab_app"]


class LabAppExistsError(LabError, FileExistsError):
    """The folder for a fresh app already holds files; nothing was overwritten."""


def _files(root: Traversable, prefix: Path = Path()) -> dict[Path, Traversable]:
    found: dict[Path, Traversable] = {}
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue  # caches a tool left in the package (ruff, pytest, Python)
        if entry.is_dir():
            found.update(_files(entry, prefix / entry.name))
        else:
            found[prefix / entry.name] = entry
    return found


def write_lab_app(dest: str | Path, *, solution: bool = False) -> list[Path]:
    """Write the lab app into `dest` and return the files written, sorted.

    Args:
        dest: A folder that does not exist yet or is empty.
        solution: Write the app of the end of the session instead of the starter.

    Returns:
        The paths written.

    Raises:
        LabAppExistsError: `dest` already holds files (yours are never overwritten).
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        msg = f"{dest} already holds files: pass a new or empty folder (nothing was overwritten)"
        raise LabAppExistsError(msg)
    here = resources.files(__name__)
    files = _files(here / "starter")
    if solution:
        files.update(_files(here / "solution"))
    written = []
    for relative, source in sorted(files.items()):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as src, target.open("wb") as out:
            shutil.copyfileobj(src, out)
        written.append(target)
    return written
