"""Self-checks for the workbook's exercises: one sentence of help when an answer is off.

Each topic has its own module (`labsupport.classroom.checks.svd`...). A check prints a
short confirmation when the answer is right and raises `CheckFailed`
with a hint (what was expected, what to look at) when it is not. In a
notebook IPython shows just that hint, not a traceback through the checker.
"""

from __future__ import annotations

from typing import NoReturn

from labsupport.classroom._lazy import submodule_loader
from labsupport.errors import LabError

__all__ = ["CheckFailed", "Unsolved", "passed", "require", "unsolved"]


class CheckFailed(LabError, AssertionError):
    """An exercise answer is not right yet; the message says what to look at."""


class Unsolved(LabError):
    """A student-edition exercise cell still holds its stub instead of a solution."""


UNSOLVED = (
    "This exercise is not solved yet, so Run All stops here: replace this cell's "
    "last line with your solution, then run the check cell below it."
)


def unsolved() -> NoReturn:
    """Stop a stub cell of the student edition with one sentence saying why."""
    raise Unsolved(UNSOLVED)


def require(condition: bool, hint: str) -> None:
    """Raise `CheckFailed` with `hint` unless `condition` holds."""
    if not condition:
        raise CheckFailed(hint)


def passed(message: str) -> None:
    """Print the confirmation a student sees when a check passes."""
    print(f"\u2714 {message}")


# Topic modules (`checks.svd`...) load on first use.
__getattr__ = submodule_loader(__name__, __path__)
