"""A pytest plugin: the notebooks' lab cells check the finished app under test.

The workbook's regression run (`make test`: nbval, the Run All replay) loads
it with `-p labsupport.classroom.nbval_app` (see `pyproject.toml`). For the
whole session it points `LABSUPPORT_LAB_APP` at a fresh copy of the finished
lab app, so the lab check cells compare against the finished app's stored
outputs and a student's own `notebooks/app` is never read. Kernels started
by nbval inherit the variable.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["pytest_configure", "pytest_unconfigure"]

_session = contextlib.ExitStack()


def pytest_configure(config: Any) -> None:
    """Write the finished app and point the lab cells at it."""
    from labsupport.classroom.workbook import solution_lab_app

    _session.enter_context(solution_lab_app())


def pytest_unconfigure(config: Any) -> None:
    """Remove the copy and restore the environment."""
    _session.close()
