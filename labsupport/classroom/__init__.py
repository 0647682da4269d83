"""Classroom instruments: what the notebooks measure, show and check with.

The service students read lives in `labsupport`; this package holds what a
class needs around it: exercise checks, figures, display widgets, the demo
apps of the blocking lesson, the seed's pitfalls, a load generator and `need`.
It may import anything; nothing in the service imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["checks", "contention", "demos", "display", "loadgen", "need", "pitfalls", "plots"]

_MODULES = frozenset({"checks", "contention", "demos", "display", "loadgen", "pitfalls", "plots"})

if TYPE_CHECKING:
    from labsupport.classroom import checks, contention, demos, display, loadgen, pitfalls, plots
    from labsupport.classroom.need import need


def __getattr__(name: str) -> Any:
    # Modules load on first use: `import labsupport.classroom` pulls in neither
    # matplotlib nor FastAPI.
    if name in _MODULES:
        value = importlib.import_module(f"labsupport.classroom.{name}")
    elif name == "need":
        value = importlib.import_module("labsupport.classroom.need").need
    else:
        msg = f"module 'labsupport.classroom' has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
