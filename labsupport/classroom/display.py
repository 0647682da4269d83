"""Show rebuilds and their results readably: a live progress bar and small HTML tables.

- `ProgressBar` (usually through `poll_task(..., progress=progress_bar)`
  or `progress_bar`) follows a rebuild task from 0 to 100 %, driven by
  the `progress` field of each status body. It is a `tqdm.auto` bar: a
  widget in JupyterLab, a line of text on stderr in a terminal.
- `recommendation_table` turns a top-k list into a
  `Recommendations` list, which a notebook shows as a table of titles
  (`_repr_html_`) and `print` shows as aligned text.
- `html_table` and `text_table` draw both kinds of table; models
  use them for their own summary (`Model._repr_html_`).

Every piece of text that reaches HTML is escaped with `html.escape`:
movie titles come from users.

Stored notebook outputs stay the same on every run: a bar's text form is a
fixed sentence (the live widget is not saved), and a model shows its build
time only as "under 1 s" or in tenths of a second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import IO, Any

import numpy as np

from labsupport.recommender import Model, recommend
from labsupport.tables import html_table, text_table

__all__ = [
    "ProgressBar",
    "Recommendations",
    "progress_bar",
    "recommendation_table",
]

_TOTAL = 100
"""A bar counts percent: 0 to 100."""

# No rate, no elapsed or remaining time: those change from run to run.
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}|"
# What a saved notebook shows in place of the live widget (its state is not saved).
_BAR_FALLBACK = "{desc}: a live progress bar, 0 to 100 %, drawn while the cell runs"


# --- tables -----------------------------------------------------------------------


# --- recommendations ----------------------------------------------------------------


def _movie_fields(value: Any) -> tuple[str, str, str]:
    """Return `(title, year, genre)` of a Movie, a dict, a title string or `None`."""
    if value is None:
        return "(not in the catalogue)", "", ""
    if isinstance(value, str):
        return value, "", ""
    if isinstance(value, Mapping):
        get: Callable[[str], Any] = value.get
    else:

        def get(name: str) -> Any:
            return getattr(value, name, None)

    year, genre = get("year"), get("genre")
    return str(get("title")), "" if year is None else str(year), "" if genre is None else str(genre)


def _lookup(movies: Any) -> Callable[[int], Any]:
    """Turn a store, a mapping, a DataFrame or an iterable of movies into `id -> movie`."""
    get_movie = getattr(movies, "get_movie", None)
    if callable(get_movie):  # a labsupport Store
        return lambda movie_id: get_movie(movie_id)
    if hasattr(movies, "columns") and hasattr(movies, "to_dict"):  # a DataFrame indexed by id
        movies = movies.to_dict("index")
    if isinstance(movies, Mapping):
        table = movies
        return lambda movie_id: table.get(movie_id)
    by_id = {movie.id: movie for movie in movies}
    return by_id.get


class Recommendations(list[int]):
    """Movie ids, best first, that a notebook shows as a table of titles.

    For everything else it is the plain list of ids: it compares equal to
    `[45, 44, ...]`, indexes, slices and serialises to JSON like one.
    Make one with `recommendation_table`.

    Attributes:
        caption: The line above the table.
        rows: One `(rank, id, title, year, genre, their rating)` tuple per
            movie, all strings; the last is the user's own score, or `""`.
    """

    caption: str
    rows: list[tuple[str, ...]]

    _HEADER = ("#", "id", "title", "year", "genre", "their rating")

    def _columns(self) -> tuple[Sequence[str], list[tuple[str, ...]]]:
        """Drop the last column when the user rated none of the movies."""
        if any(row[-1] for row in self.rows):
            return self._HEADER, self.rows
        return self._HEADER[:-1], [row[:-1] for row in self.rows]

    def _repr_html_(self) -> str:
        header, rows = self._columns()
        return html_table(rows, header=header, caption=self.caption)

    def __repr__(self) -> str:
        header, rows = self._columns()
        return text_table(rows, header=header, caption=self.caption)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def recommendation_table(
    source: Model | Iterable[int],
    movies: Any,
    user_id: int | None = None,
    *,
    limit: int = 5,
    exclude_rated: bool = False,
    rated: Mapping[int, float] | None = None,
    caption: str | None = None,
) -> Recommendations:
    """Return a top-k list that displays as a table of titles.

    Given a model, the list is `recommend(model, user_id, limit,
    exclude_rated)` and the "their rating" column shows the user's own scores
    from the model's ratings. Given ids (say, the JSON of
    `GET /recommendations/{user_id}`), they are shown as they are.

    Args:
        source: A `Model`, or movie ids best first.
        movies: Where titles come from: a `Store`,
            the list of `catalogue_movies`, a mapping
            of id to movie (or to a title), or a DataFrame indexed by id with
            `title`, `year` and `genre` columns.
        user_id: Whose list it is; needed with a model.
        limit: How many ids to ask the model for.
        exclude_rated: With a model, leave out movies the user already rated.
        rated: The user's own scores by movie id, for the "their rating" column
            (with a model they are read from it unless given).
        caption: The line above the table; by default it names the user and
            the model version.

    Returns:
        The ids as a `Recommendations` list.

    Raises:
        ValueError: a model was given without a `user_id`.
    """
    version = None
    if isinstance(source, Model):
        if user_id is None:
            msg = "recommendation_table(model, movies, user_id) needs the user_id to recommend for"
            raise ValueError(msg)
        ids = recommend(source, user_id, limit, exclude_rated=exclude_rated)
        version = source.version
        if rated is None:
            rated = _own_ratings(source, user_id)
    else:
        ids = [int(movie_id) for movie_id in source]
    own = rated or {}
    find = _lookup(movies)
    table = Recommendations(ids)
    table.rows = [
        (str(rank), str(movie_id), *_movie_fields(find(movie_id)), _score(own.get(movie_id)))
        for rank, movie_id in enumerate(ids, start=1)
    ]
    if caption is None:
        whose = "Recommendations" if user_id is None else f"Recommendations for user {user_id}"
        model = "" if version is None else f", model version {version}"
        unseen = ", rated movies left out" if exclude_rated else ""
        caption = f"{whose}{model}{unseen}"
    table.caption = caption
    return table


def _own_ratings(model: Model, user_id: int) -> dict[int, float]:
    """Return the scores `user_id` gave, by movie id, as stored in the model."""
    row = int(np.searchsorted(model.user_ids, user_id))
    if row == len(model.user_ids) or model.user_ids[row] != user_id:
        return {}
    start, stop = model.rated.indptr[row], model.rated.indptr[row + 1]
    movie_ids = model.movie_ids[model.rated.indices[start:stop]].tolist()
    return dict(zip(movie_ids, model.rated.data[start:stop].tolist(), strict=True))


def _score(value: float | None) -> str:
    return "" if value is None else f"{float(value):g}"


# --- progress bars -----------------------------------------------------------------


@functools.cache
def _bar_class() -> type[Any]:
    """`tqdm.auto.tqdm` without its monitor thread (imported on first use only)."""
    from tqdm.auto import tqdm

    class Bar(tqdm):  # type: ignore[misc]  # tqdm ships no type hints: its class is Any
        # The monitor thread only tunes refresh rates; it would outlive the bar.
        monitor_interval = 0

    return Bar


def _is_widget_bar(cls: type[Any]) -> bool:
    return any(base.__module__ == "tqdm.notebook" for base in cls.__mro__)


class ProgressBar:
    """A 0 to 100 % bar that follows a rebuild task: call it with each status body.

    It reads `progress` (0 to 1) and `status` from every body, shows
    `"<task id> <status>"` as its description, and jumps to 100 % on
    `complete`. Pass it as `on_status` to
    `poll_task`, or let `poll_task(...,
    progress=progress_bar)` make one for the wait. Closing it leaves the bar on screen: green
    at 100 %, red if the task stopped short (failed or interrupted).

    In JupyterLab the bar is an ipywidgets widget; the saved notebook keeps a
    fixed sentence in its place, so stored outputs do not change between
    runs. In a terminal it is a text line on stderr (or on `file`).

    Args:
        desc: The description before the first status arrives.
        leave: Keep the bar on screen once closed.
        file: Where a text bar writes (default: stderr); ignored by the widget.

    Attributes:
        statuses: Every status seen, in order.
    """

    def __init__(
        self, desc: str = "rebuild", *, leave: bool = True, file: IO[str] | None = None
    ) -> None:
        cls = _bar_class()
        options: dict[str, Any] = {
            "total": _TOTAL,
            "desc": desc,
            "leave": leave,
            "file": file,
            "bar_format": _BAR_FORMAT,
        }
        self.statuses: list[str] = []
        if _is_widget_bar(cls):
            self._bar = cls(display=False, **options)
            self._show_widget(_BAR_FALLBACK.format(desc=desc))
        else:
            self._bar = cls(**options)

    def _show_widget(self, fallback: str) -> None:
        """Display the widget with a fixed text form, the one a saved notebook keeps."""
        from IPython.display import display

        bundle = dict(self._bar.container._repr_mimebundle_())
        bundle["text/plain"] = fallback
        display(bundle, raw=True)  # type: ignore[no-untyped-call]  # IPython's display is untyped
        self._bar.displayed = True

    @property
    def n(self) -> int:
        """Where the bar is, in percent."""
        return int(self._bar.n)

    @property
    def closed(self) -> bool:
        """Whether `close` has run."""
        return bool(self._bar.disable)  # tqdm disables a bar as it closes it

    def __call__(self, body: Mapping[str, Any]) -> None:
        """Move the bar to a status body's `progress` and show its status."""
        status = str(body.get("status", "?"))
        self.statuses.append(status)
        progress = body.get("progress")
        if status == "complete":
            percent = _TOTAL
        elif isinstance(progress, int | float):
            percent = round(min(max(float(progress), 0.0), 1.0) * _TOTAL)
        else:
            percent = self.n
        task_id = body.get("task_id")
        self._bar.set_description_str(
            status if task_id is None else f"{task_id} {status}", refresh=False
        )
        self._bar.n = percent
        self._bar.refresh()

    def close(self) -> None:
        """Stop updating the bar; calling it twice is harmless."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ProgressBar {self.n}% {self.statuses[-1] if self.statuses else 'waiting'}>"


def progress_bar(
    desc: str = "rebuild", *, leave: bool = True, file: IO[str] | None = None
) -> ProgressBar:
    """Return a `ProgressBar`; use it in a `with` block so it is closed.

    Either way shows the bar for one wait:

        with progress_bar() as bar:
            poll_task(http, status_url, on_status=bar)

        poll_task(http, status_url, progress=progress_bar)

    Args:
        desc: The description before the first status arrives.
        leave: Keep the bar on screen once closed.
        file: Where a text bar writes (default: stderr).

    Returns:
        The bar, already on screen at 0 %.
    """
    return ProgressBar(desc, leave=leave, file=file)
