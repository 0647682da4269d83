"""Self-checks for the workbook's exercises: one sentence of help when an answer is off.

Each topic has its own module (`labsupport.classroom.checks.svd`...). A check prints a
short confirmation when the answer is right and raises `CheckFailed`
with a hint (what was expected, what to look at) when it is not. In a
notebook IPython shows just that hint, not a traceback through the checker.
"""

from __future__ import annotations

import importlib
import types

from labsupport.errors import LabError

__all__ = ["CheckFailed", "passed", "require"]


class CheckFailed(LabError, AssertionError):
    """An exercise answer is not right yet; the message says what to look at."""


def require(condition: bool, hint: str) -> None:
    """Raise `CheckFailed` with `hint` unless `condition` holds."""
    if not condition:
        raise CheckFailed(hint)


def passed(message: str) -> None:
    """Print the confirmation a student sees when a check passes."""
    print(f"\u2714 {message}")


_TOPICS = frozenset(
    {
        "blocking",
        "exercise3",
        "lab",
        "lab1",
        "lab2",
        "labhttp",
        "rebuild",
        "retry",
        "scaling",
        "shutdown",
        "svd",
    }
)


def __getattr__(name: str) -> types.ModuleType:
    # `checks.svd` works after `from labsupport.classroom import checks`: topic
    # modules load on first use.
    if name in _TOPICS:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
