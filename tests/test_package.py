"""The package surface: re-exports, ``__all__`` everywhere, no import side effects."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import labsupport


def test_reexports_are_sorted_and_resolve() -> None:
    assert labsupport.__all__ == sorted(labsupport.__all__)
    for name in labsupport.__all__:
        obj = getattr(labsupport, name)
        home = importlib.import_module(obj.__module__)
        assert name in home.__all__


def test_every_public_module_declares_all() -> None:
    for info in pkgutil.walk_packages(labsupport.__path__, "labsupport."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        assert isinstance(getattr(module, "__all__", None), list), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.{name}"


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, threading, random, numpy as np;"
        "before = random.getstate(); np_before = np.random.get_state()[1].copy();"
        "import labsupport;"
        "assert random.getstate() == before;"
        "assert (np.random.get_state()[1] == np_before).all();"
        "assert threading.active_count() == 1;"
        "assert 'matplotlib.pyplot' not in sys.modules;"
        "assert 'labsupport.api' not in sys.modules;"
        "print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean"


def test_classroom_loads_its_modules_on_first_use_and_need_is_the_function() -> None:
    code = (
        "import sys;"
        "import labsupport.classroom.need;"  # the module first, as a test might
        "from labsupport.classroom import checks, need, plots;"
        "assert callable(need), need;"
        "assert 'matplotlib' not in sys.modules and 'fastapi' not in sys.modules;"
        "assert checks.lab1.__name__ == 'labsupport.classroom.checks.lab1';"
        "assert plots.backoff.__name__ == 'labsupport.classroom.plots.backoff';"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
