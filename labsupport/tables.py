"""Small tables for notebooks and terminals: HTML with escaped cells, aligned text.

Models use them for their own summary (`Model._repr_html_`); the classroom
widgets use them for recommendation lists. This module imports nothing from
the package, so anything may use it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

__all__ = ["about_seconds", "html_table", "text_table"]


def html_table(
    rows: Iterable[Sequence[object]],
    *,
    header: Sequence[str] | None = None,
    caption: str | None = None,
) -> str:
    """Return a small HTML table; every cell, header and the caption are escaped.

    Args:
        rows: One sequence of cells per row; each cell is shown with `str()`.
        header: Column names, or `None` for a table of label/value rows
            (the first cell of each row is then a row header).
        caption: A line above the table.

    Returns:
        The `<table>` element, ready for `_repr_html_`.
    """
    parts = ["<table>"]
    if caption:
        parts.append(f'<caption style="text-align:left">{html.escape(caption)}</caption>')
    if header is not None:
        cells = "".join(f"<th>{html.escape(str(name))}</th>" for name in header)
        parts.append(f"<thead><tr>{cells}</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<th style="text-align:left">{html.escape(str(cell))}</th>'
            if header is None and i == 0
            else f'<td style="text-align:left">{html.escape(str(cell))}</td>'
            for i, cell in enumerate(row)
        )
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def text_table(
    rows: Iterable[Sequence[object]],
    *,
    header: Sequence[str],
    caption: str | None = None,
) -> str:
    """Return the same table as plain text, columns aligned with spaces.

    Args:
        rows: One sequence of cells per row.
        header: Column names.
        caption: A first line above the table.

    Returns:
        The lines of the table, joined by newlines (no trailing newline).
    """
    table = [[str(name) for name in header], *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    return "\n".join([caption, *lines] if caption else lines)


def about_seconds(seconds: float) -> str:
    """Describe a duration the same way on every run of a small notebook.

    Args:
        seconds: A measured duration.

    Returns:
        `"under 1 s"` below one second (a notebook's tiny builds always
        are), otherwise the seconds to one decimal, such as `"17.3 s"`.
    """
    return "under 1 s" if seconds < 1 else f"{seconds:.1f} s"
