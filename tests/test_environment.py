"""One environment everywhere: pyproject ranges, exact pins, the conda file and the venv agree."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11; the pins target 3.11+")

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PINS = [
    Requirement(line)
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def declared() -> dict[str, Requirement]:
    """Every requirement pyproject declares, runtime and extras, by canonical name."""
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in PYPROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return {canonicalize_name(r.name): r for r in reqs}


def test_every_pin_is_exact_and_within_the_declared_range() -> None:
    ranges = declared()
    for pin in PINS:
        (spec,) = list(pin.specifier)
        assert spec.operator == "==", f"{pin} should pin an exact version"
        name = canonicalize_name(pin.name)
        if name in ranges:
            assert ranges[name].specifier.contains(spec.version), f"{pin} vs {ranges[name]}"


def test_every_declared_package_is_pinned() -> None:
    pinned = {canonicalize_name(p.name) for p in PINS}
    missing = set(declared()) - pinned
    assert not missing, f"add exact pins for {sorted(missing)} to requirements/constraints.txt"


def test_this_environment_has_the_pinned_versions() -> None:
    for pin in PINS:
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        (spec,) = list(pin.specifier)
        assert metadata.version(pin.name) == spec.version, f"installed {pin.name} != {pin}"


def test_conda_environment_installs_the_same_pins() -> None:
    text = (ROOT / "environment.yml").read_text()
    assert "-c requirements/constraints.txt" in text
    # the same extras as `make setup`, less the developer tools
    make_extras = re.search(r"^EXTRAS\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    conda_extras = re.search(r"-e \.\[([\w,]+)\]", text)
    assert make_extras is not None and conda_extras is not None
    assert set(conda_extras.group(1).split(",")) == set(make_extras.group(1).split(",")) - {"dev"}
    python = re.search(r"- python=(\d+\.\d+)", text)
    assert python is not None
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(python.group(1) + ".0")
