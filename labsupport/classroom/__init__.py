"""Classroom instruments: what the notebooks measure, show and check with.

The service students read lives in `labsupport`; this package holds what a
class needs around it: exercise checks, figures, display widgets, the demo
apps of the blocking lesson, the seed's pitfalls, a load generator and `need`.
It may import anything; nothing in the service imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labsupport.classroom._lazy import submodule_loader

# Bound here, so the name is the function even once the `need` module is imported.
from labsupport.classroom.need import need

__all__ = ["checks", "contention", "demos", "display", "loadgen", "need", "pitfalls", "plots"]

if TYPE_CHECKING:
    from labsupport.classroom import checks, contention, demos, display, loadgen, pitfalls, plots

# The other modules load on first use: `import labsupport.classroom` pulls in
# neither matplotlib nor FastAPI.
__getattr__ = submodule_loader(__name__, __path__)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
