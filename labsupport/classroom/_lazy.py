"""Load a package's submodules on first use: `checks.svd` without importing every topic."""

from __future__ import annotations

import importlib
import pkgutil
import types
from collections.abc import Callable, Iterable

__all__ = ["submodule_loader"]


def submodule_loader(package: str, path: Iterable[str]) -> Callable[[str], types.ModuleType]:
    """Return a module-level `__getattr__` that imports `package`'s submodules when asked.

    The submodules are read from the package's folder, so a new topic module
    needs no list to be kept up to date.

    Args:
        package: The package's name (`__name__` in its `__init__`).
        path: Its `__path__`.

    Returns:
        The function to assign to `__getattr__`.
    """
    names = frozenset(info.name for info in pkgutil.iter_modules(path))

    def load(name: str) -> types.ModuleType:
        if name in names:
            return importlib.import_module(f"{package}.{name}")  # also sets the attribute
        msg = f"module {package!r} has no attribute {name!r}"
        raise AttributeError(msg)

    return load
