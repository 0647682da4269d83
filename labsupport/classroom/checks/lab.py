"""What the lab checks share: your own app, imported afresh, served, and listened to.

The labs of Session 09 are coding in your own app, the folder that
`python -m labsupport lab-app DIR` wrote (`notebooks/app` after `make lab`).
Every lab check takes that folder as `app_dir`: the folder that *holds* the
`app/` package (and `tests/`, `pyproject.toml`), not the package itself. The
default `"app"` is relative to the current folder, which in JupyterLab is the
notebook's folder `notebooks/`, so `check_recommender()` checks
`notebooks/app/app/recommender.py`. (Passing the package folder itself,
`"app/app"`, works too.)

The checks themselves live in `labsupport.classroom.checks.lab1` (Lab 1: the
builder, the rebuild endpoint, the quick test, the demo flow) and
`labsupport.classroom.checks.lab2` (Lab 2: retries, idempotency keys, the
shutdown); `labsupport.classroom.checks.labhttp` holds the rebuild trial the
HTTP checks run. Each imports your app afresh (so an edit counts without a kernel
restart), keeps every warning and log line of your code out of the notebook,
and answers with one sentence.

For your own experiments, `load_app` imports the app the same way and hands
you its `app.main` module.

A notebook names the app its lab cells use once, in its Setup:

    LAB_APP = checks.lab.your_app()          # notebooks/app, the starter written if missing
    # LAB_APP = checks.lab.reference_app()   # yours is broken? the finished app instead

The environment variable `LABSUPPORT_LAB_APP` (a folder) overrides `your_app`:
the workbook's regression run points it at a copy of the finished app, and an
instructor can present the labs with `LABSUPPORT_LAB_APP=DIR make lab`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import logging
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from labsupport.classroom.checks import CheckFailed, require
from labsupport.labapp import write_lab_app
from labsupport.server import ServerStartError, serve_in_thread

__all__ = [
    "LAB_APP_ENV",
    "LogCapture",
    "StudentApp",
    "app_folder",
    "capture_logs",
    "describe",
    "fastapi_app",
    "load_app",
    "quiet",
    "reference_app",
    "served",
    "student_module",
    "tested",
    "your_app",
]

_PACKAGE = "app"
# Loggers a lab app's errors go to: uvicorn's (an exception in a request or a
# background task) and the app's own (`logging.getLogger("app")` or `__name__`).
_LOGGERS = ("uvicorn.error", "app")
_LONGEST = 240  # characters of an error message quoted in a hint


LAB_APP_ENV = "LABSUPPORT_LAB_APP"
"""The environment variable that points every notebook's lab cells at another app folder."""


def your_app(app_dir: str | Path = "app") -> Path:
    """The folder of the app the lab cells check: yours, with the starter written the first time.

    Args:
        app_dir: Your app's folder (default `"app"`, next to the notebooks).
            When it does not exist yet, or is empty, the starter app is written
            there, as `make lab` does; an app already there is never touched.

    Returns:
        `app_dir`, or the folder named by `LABSUPPORT_LAB_APP` when that is set.
    """
    override = os.environ.get(LAB_APP_ENV)
    if override:
        return Path(override)
    folder = Path(app_dir)
    if not folder.exists() or not any(folder.iterdir()):
        write_lab_app(folder)
    return folder


def reference_app() -> Path:
    """A fresh copy of the finished lab app, for the rest of a notebook when yours is broken.

    The copy lives in a temporary folder that is removed when the kernel
    stops; your own app is left as it is, to come back to.

    Returns:
        The folder holding the copy's `app/` package.
    """
    folder = Path(tempfile.mkdtemp(prefix="labsupport-reference-app-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    write_lab_app(folder, solution=True)
    return folder


def app_folder(app_dir: str | Path = "app") -> Path:
    """The folder holding your `app/` package, checked to exist.

    Args:
        app_dir: The folder `python -m labsupport lab-app` wrote (default
            `"app"`, relative to the current folder), or the `app/` package in it.

    Returns:
        The absolute folder that contains `app/main.py`.

    Raises:
        CheckFailed: there is no `app/main.py` there.
    """
    folder = Path(app_dir).expanduser().resolve()
    if not (folder / _PACKAGE).is_dir() and folder.name == _PACKAGE:
        folder = folder.parent  # the package itself was passed
    require(
        (folder / _PACKAGE / "main.py").is_file(),
        f"there is no app/main.py in {folder}: pass the folder that holds your app/ package "
        "(the one `python -m labsupport lab-app DIR` wrote), e.g. app_dir='app' from notebooks/",
    )
    return folder


def describe(exc: BaseException) -> str:
    """`"ValueError: the message"` on one line, shortened if it is long."""
    text = " ".join(str(exc).split())
    if len(text) > _LONGEST:
        text = text[: _LONGEST - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(exc: BaseException, folder: Path) -> str:
    """`" (app/recommender.py line 37)"`: the last line of your app the error passed."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.is_relative_to(folder):
            found = f" ({path.relative_to(folder).as_posix()} line {frame.lineno})"
    return found


def _import_failure(exc: Exception, folder: Path) -> CheckFailed:
    if isinstance(exc, SyntaxError):
        name = Path(exc.filename or "?")
        shown = name.relative_to(folder).as_posix() if name.is_relative_to(folder) else name
        return CheckFailed(
            f"{shown} line {exc.lineno} is not valid Python (SyntaxError: {exc.msg}): "
            "fix that line and run the check again"
        )
    place = _where(exc, folder).strip(" ()") or "import time"
    return CheckFailed(
        f"importing your app failed at {place} with {describe(exc)}: "
        "fix that line and run the check again"
    )


def _app_modules() -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if name == _PACKAGE or name.startswith(f"{_PACKAGE}.")
    }


def _import_fresh(folder: Path, name: str) -> ModuleType:
    """Import `name` from `folder`, forgetting any `app` imported before."""
    for stale in _app_modules():
        del sys.modules[stale]
    entry = str(folder)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except Exception as exc:  # SyntaxError, NameError, ImportError...: the student's code
        raise _import_failure(exc, folder) from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def load_app(app_dir: str | Path = "app") -> ModuleType:
    """Import your app afresh (after an edit, no restart needed) and return `app.main`.

    The `app` modules stay imported, so `from app import repository` in the
    next cell gives the repository this `app.main` uses. Warnings your code
    raises while importing (such as FastAPI's about `on_event`) are hidden;
    `check_shutdown` names them.

    Args:
        app_dir: The folder holding your `app/` package (default `"app"`,
            relative to the notebook's folder).

    Returns:
        The module `app.main`; `load_app().app` is your FastAPI app.

    Raises:
        CheckFailed: the folder has no `app/main.py`, or importing it failed
            (the message names the file and line).
    """
    folder = app_folder(app_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _import_fresh(folder, f"{_PACKAGE}.main")


@dataclass
class StudentApp:
    """One check's fresh import of your app.

    Attributes:
        folder: The folder holding `app/`.
        module: The module the check asked for (`app.main`, `app.recommender`...).
        caught: Every warning raised since the import started (the check's own too).
        import_warnings: The messages of the warnings raised by the import itself.
    """

    folder: Path
    module: ModuleType
    caught: list[warnings.WarningMessage]
    import_warnings: list[str] = field(default_factory=list)

    def where(self, exc: BaseException) -> str:
        """`" (app/main.py line 12)"` for an error that passed through your code, else `""`."""
        return _where(exc, self.folder)

    def failure(self, what: str, exc: BaseException, hint: str) -> CheckFailed:
        """A `CheckFailed`: `what` raised the error (quoted, with its line), then `hint`."""
        return CheckFailed(f"{what} raised {describe(exc)}{self.where(exc)}: {hint}")


@contextlib.contextmanager
def student_module(
    app_dir: str | Path = "app", name: str = "app.main", *, missing: str | None = None
) -> Iterator[StudentApp]:
    """Import `name` from your app afresh for one check, and put everything back afterwards.

    While the block runs, every warning is recorded instead of shown and
    whatever your code prints is swallowed; afterwards the `app` modules
    imported before (by you, or by `load_app`) are restored.

    Args:
        app_dir: The folder holding your `app/` package.
        name: The module to import, such as `"app.recommender"`.
        missing: The hint when that module's file does not exist yet.

    Yields:
        The imported module with its folder and the warnings caught.

    Raises:
        CheckFailed: the file is missing or does not import.
    """
    folder = app_folder(app_dir)
    relative = Path(*name.split(".")).with_suffix(".py")
    require(
        (folder / relative).is_file(),
        missing or f"there is no {relative.as_posix()} in {folder} yet: create it",
    )
    saved = _app_modules()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("always")
        try:
            module = _import_fresh(folder, name)
            messages = [str(w.message).strip() for w in caught]
            yield StudentApp(folder, module, caught, messages)
        finally:
            for fresh in _app_modules():
                del sys.modules[fresh]
            sys.modules.update(saved)
            gc.collect()  # a coroutine never awaited warns now, inside catch_warnings


class LogCapture(logging.Handler):
    """Keeps the warnings and errors your app and uvicorn log, instead of printing them.

    Attributes:
        errors: Each logged exception as `"TypeError: ... (app/main.py line 9)"`.
        messages: The other log messages, in order.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(logging.WARNING)
        self.folder = folder
        self.errors: list[str] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record as text (never the exception object, which holds frames)."""
        try:
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                self.errors.append(describe(exc) + _where(exc, self.folder))
            else:
                self.messages.append(record.getMessage())
        except Exception:
            self.handleError(record)

    def error_with(self, text: str = "") -> str | None:
        """The first logged exception containing `text`, or None."""
        return next((error for error in self.errors if text in error), None)


@contextlib.contextmanager
def capture_logs(folder: Path) -> Iterator[LogCapture]:
    """Send uvicorn's and your app's log records to a `LogCapture`, not the notebook.

    Attach it after the server started: uvicorn reconfigures its loggers when
    a server is created.
    """
    handler = LogCapture(folder)
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    propagate = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield handler
    finally:
        for logger, before in zip(loggers, propagate, strict=True):
            logger.removeHandler(handler)
            logger.propagate = before


def fastapi_app(student: StudentApp) -> Any:
    """The `app` object of `app.main`, checked to be an ASGI application."""
    app = getattr(student.module, "app", None)
    require(
        callable(app),
        "app/main.py defines no `app`: keep `app = FastAPI(...)` at the top of the module",
    )
    return app


@contextlib.contextmanager
def served(
    student: StudentApp, wrap: Callable[[Any], Any] | None = None
) -> Iterator[tuple[str, LogCapture]]:
    """Serve your app with uvicorn on a free 127.0.0.1 port, with its log captured.

    Args:
        student: The imported app.
        wrap: An ASGI middleware factory the check puts around your app (to
            count requests or inject a failure), or None to serve it as it is.

    Yields:
        The base URL and the log records; the server is stopped (its lifespan
        shutdown included) before the block ends.

    Raises:
        CheckFailed: the server would not start.
    """
    try:
        app = fastapi_app(student)
        handle = serve_in_thread(app if wrap is None else wrap(app), host="127.0.0.1", timeout=5.0)
    except ServerStartError as exc:
        raise CheckFailed(str(exc)) from None
    try:
        with capture_logs(student.folder) as log:
            try:
                yield handle.url, log
            finally:
                handle.stop(timeout=3.0)  # inside: the shutdown's log lines are captured too
    finally:
        handle.stop(timeout=3.0)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep warnings (of the check's own HTTP calls) out of the notebook."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def tested(how: str) -> Iterator[None]:
    """Say how the check tested in any `CheckFailed` the block raises: `"... (tested how)"`."""
    try:
        yield
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} (tested {how})") from None
