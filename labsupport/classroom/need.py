"""Guard a notebook cell that uses what earlier cells define.

Running a cell too early then says which cells to run, instead of raising a
bare `NameError` from deep inside the cell.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from labsupport.errors import LabError

__all__ = ["NotDefinedYetError", "need"]


class NotDefinedYetError(LabError, NameError):
    """A cell needs a name that an earlier cell defines, and that cell has not run yet."""


def need(*names: str, namespace: Mapping[str, Any] | None = None) -> None:
    """Check that earlier cells have defined `names`; say which cells to run if not.

    Put it first in a cell that students often reach by jumping ahead:

        need("http", "server")

    Args:
        names: The variables the cell uses, defined by cells above it.
        namespace: Where to look; by default the caller's globals, which in
            a notebook are the kernel's variables.

    Raises:
        NotDefinedYetError: a name is missing; a `NameError` too.
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals  # the calling cell's variables
    missing = [name for name in names if name not in namespace]
    if not missing:
        return
    listed = " and ".join(f"`{name}`" for name in missing)
    verb = "is" if len(missing) == 1 else "are"
    msg = f"Run the cells above first (from 'Setup' down): {listed} {verb} not defined yet."
    raise NotDefinedYetError(msg, name=missing[0])
