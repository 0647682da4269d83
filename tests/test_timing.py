"""The session's timing: every `##` section is tagged and timed, and the sums fit 135 minutes.

Every `##` section of a notebook (a markdown cell whose source starts with `## `; `###`
subsections belong to it) carries exactly one of the cell tags `core`, `optional` and
`homework` on its heading cell, and states its minutes on the line right under its
heading, for example `*Core · ⏱ 4 min*`. The core path must fit the agenda's 135
teaching minutes; each notebook's **Time:** line and the table in `notebooks/README.md`
quote the same sums.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labsupport.classroom.workbook import notebook_paths

ROOT = Path(__file__).parent.parent
NOTEBOOKS = notebook_paths(ROOT / "notebooks")
TEACHING_MINUTES = 135  # the agenda without the warm-up chat and the break
KINDS = ("core", "optional", "homework")
MARK = re.compile(r"⏱\s*(\d+)\s*min\b")
LABEL_LINE = re.compile(r"^\*(Core|Optional|Homework) · ⏱ (\d+) min\*$")


class TimingError(ValueError):
    """A notebook, Time line or table that does not state its timing as agreed."""


@dataclass(frozen=True)
class Section:
    heading: str
    kind: str
    minutes: int


def _source(cell: Any) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def sections(cells: list[Any]) -> list[Section]:
    """The `##` sections of a notebook's cells, or `TimingError` listing every bad heading."""
    found, problems = [], []
    for cell in cells:
        text = _source(cell)
        if cell["cell_type"] != "markdown" or not text.startswith("## "):
            continue
        lines = text.splitlines()
        heading = lines[0]
        kinds = [t for t in cell.get("metadata", {}).get("tags", []) if t in KINDS]
        marks = MARK.findall(text)
        label = LABEL_LINE.match(lines[1]) if len(lines) > 1 else None
        if len(kinds) != 1:
            problems.append(f"{heading!r}: tags {kinds}, want exactly one of {KINDS}")
        elif len(marks) != 1:
            problems.append(f"{heading!r}: {len(marks)} '⏱ N min' marks, want one")
        elif label is None:
            problems.append(f"{heading!r}: line 2 should read like '*Core · ⏱ 4 min*'")
        elif label.group(1).lower() != kinds[0]:
            problems.append(f"{heading!r}: says {label.group(1)}, but is tagged {kinds[0]}")
        elif int(marks[0]) < 1:
            problems.append(f"{heading!r}: ⏱ {marks[0]} min, want at least 1")
        else:
            found.append(Section(heading, kinds[0], int(marks[0])))
    if problems:
        raise TimingError("; ".join(problems))
    return found


def totals(found: list[Section]) -> dict[str, int]:
    """Minutes per kind."""
    return {kind: sum(s.minutes for s in found if s.kind == kind) for kind in KINDS}


def stated_time(intro: str) -> dict[str, int]:
    """The three sums an intro cell's `**Time:**` line quotes."""
    lines = [line for line in intro.splitlines() if line.startswith("**Time:**")]
    if len(lines) != 1:
        raise TimingError(f"want one '**Time:**' line in the intro, found {len(lines)}")
    stated = {}
    for kind in KINDS:
        match = re.search(rf"(\d+) min {kind}\b", lines[0])
        if match is None:
            raise TimingError(f"the Time line does not say 'N min {kind}': {lines[0]!r}")
        stated[kind] = int(match.group(1))
    return stated


def _cells(row: str) -> list[str]:
    return [c.strip().strip("*`").strip() for c in row.strip().strip("|").split("|")]


def readme_table(text: str, columns: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """The first Markdown table whose header holds `columns`: its first column to those numbers."""
    lines = text.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("|") and set(columns) <= set(_cells(line))
        ),
        None,
    )
    if start is None:
        raise TimingError(f"no table with the columns {columns}")
    header = _cells(lines[start])
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        try:
            rows[cells[0]] = {c: int(cells[header.index(c)]) for c in columns}
        except ValueError as exc:
            raise TimingError(f"not a number in {line!r}") from exc
    return rows


def read(path: Path) -> list[Any]:
    return list(nbformat.read(path, as_version=4).cells)


SECTIONS = {path.stem: sections(read(path)) for path in NOTEBOOKS}
TOTALS = {stem: totals(found) for stem, found in SECTIONS.items()}
OVERALL = {kind: sum(t[kind] for t in TOTALS.values()) for kind in KINDS}
ids = [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_section_is_tagged_and_timed(path: Path) -> None:
    found = sections(read(path))  # raises, naming every section that is not
    headings = [_source(c).splitlines()[0] for c in read(path) if _source(c).startswith("## ")]
    assert [s.heading for s in found] == headings
    assert any(s.kind == "core" for s in found) or path.stem == "07_scaling"


def test_the_core_path_fits_the_teaching_minutes() -> None:
    assert OVERALL["core"] <= TEACHING_MINUTES, TOTALS
    assert TOTALS["07_scaling"]["core"] == 0, "07 is optional as a whole"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_the_intro_quotes_the_sums(path: Path) -> None:
    assert stated_time(_source(read(path)[0])) == TOTALS[path.stem]


def test_the_notebooks_readme_table_shows_the_sums() -> None:
    text = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
    columns = ("core min", "optional min", "homework min")
    table = readme_table(text, columns)
    expected = {stem: dict(zip(columns, t.values(), strict=True)) for stem, t in TOTALS.items()}
    expected["total"] = dict(zip(columns, OVERALL.values(), strict=True))
    assert table == expected


def test_the_top_readme_shows_the_core_minutes() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    workbook = text[text.index("## The workbook") :]
    table = readme_table(workbook, ("core min",))
    expected = {stem: {"core min": t["core"]} for stem, t in TOTALS.items()}
    assert table == {**expected, "total": {"core min": OVERALL["core"]}}
    assert f"takes {OVERALL['core']} of the session's {TEACHING_MINUTES}" in workbook


# The parsers themselves, on synthetic notebooks and tables: they can say no.


def heading(text: str, *tags: str) -> Any:
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": list(tags)})


def test_the_parser_sums_sections_and_ignores_subsections() -> None:
    cells = [
        nbformat.v4.new_markdown_cell(
            "# Title\n\n**Time:** 5 min core, 6 min optional, 0 min homework."
        ),
        heading("## Setup\n*Core · ⏱ 1 min*\n\nImports.", "core"),
        nbformat.v4.new_code_cell("import os"),
        heading("## 1. Step\n*Core · ⏱ 4 min*", "solution-free", "core"),
        nbformat.v4.new_markdown_cell("### Exercise ★ inside step 1 (no tag of its own)"),
        heading("## 2. More\n*Optional · ⏱ 6 min*", "optional"),
    ]
    found = sections(cells)
    assert [s.minutes for s in found] == [1, 4, 6]
    assert totals(found) == {"core": 5, "optional": 6, "homework": 0}
    assert stated_time(_source(cells[0])) == totals(found)


@pytest.mark.parametrize(
    ("cell", "complaint"),
    [
        (heading("## 1. Step\n*Core · ⏱ 4 min*"), "want exactly one"),
        (heading("## 1. Step\n*Core · ⏱ 4 min*", "core", "homework"), "want exactly one"),
        (heading("## 1. Step\n\nNo minutes here.", "core"), "marks, want one"),
        (heading("## 1. Step\n\n*Core · ⏱ 4 min*", "core"), "line 2 should read"),
        (heading("## 1. Step\n*Optional · ⏱ 4 min*", "core"), "but is tagged core"),
        (heading("## 1. Step\n*Core · ⏱ 0 min*", "core"), "at least 1"),
    ],
)
def test_the_parser_refuses_a_bad_heading(cell: Any, complaint: str) -> None:
    with pytest.raises(TimingError, match=re.escape(complaint)):
        sections([cell])


def test_the_time_line_and_table_parsers_refuse_what_does_not_match() -> None:
    with pytest.raises(TimingError, match="Time"):
        stated_time("# Title\n\n**Time:** about 45 minutes.")
    with pytest.raises(TimingError, match="one"):
        stated_time("# Title\n\nNo time stated.")
    table = "| notebook | core min |\n| --- | ---: |\n| `00_x` | 3 |\n| **total** | **3** |\n"
    assert readme_table(table, ("core min",)) == {"00_x": {"core min": 3}, "total": {"core min": 3}}
    with pytest.raises(TimingError, match="not a number"):
        readme_table(table.replace("| 3 |", "| 3 min |"), ("core min",))
    with pytest.raises(TimingError, match="no table"):
        readme_table(table, ("homework min",))
