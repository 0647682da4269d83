"""Load the MovieLens ratings, which you download yourself.

GroupLens's releases may not be redistributed, so the workbook does not ship
them: `find_movielens` looks in the usual places for an unzipped release,
`load_movielens` reads an `ml-100k` or `ml-latest-small` folder (ratings and
a movie table), and `load_movielens_fold` one of ml-100k's ready-made
train/test splits. When the files are missing, `MovieLensNotFoundError`
says what to download and where to put it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labsupport._types import RatingArrays
from labsupport.errors import LabError

__all__ = [
    "MovieLens",
    "MovieLensNotFoundError",
    "find_movielens",
    "load_movielens",
    "load_movielens_fold",
]

_ML100K_FILES = ("u.data", "u.item")
_LATEST_FILES = ("ratings.csv", "movies.csv")
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_ENV_VAR = "LABSUPPORT_MOVIELENS"
_DOWNLOAD_HINT = (
    "download MovieLens from https://grouplens.org/datasets/movielens/ (it may not be "
    "redistributed, so this workbook does not ship it), unzip it and pass the unzipped "
    f"folder, or set {_ENV_VAR} to the folder that holds it."
)


class MovieLensNotFoundError(LabError, FileNotFoundError):
    """No MovieLens files where a loader looked; the message says what to download."""


@dataclass(frozen=True, eq=False)
class MovieLens:
    """One MovieLens release loaded by `load_movielens`.

    Attributes:
        name: The folder's name, such as `"ml-100k"`.
        ratings: All ratings, in file order; `ml-latest-small` has half stars.
        movies: One row per movie with columns `id`, `title` (without the
            trailing year), `year` (nullable `Int64`) and `genre` (the
            first listed genre, `"unknown"` when none is).
    """

    name: str
    ratings: RatingArrays
    movies: pd.DataFrame

    def __repr__(self) -> str:
        return (
            f"MovieLens(name={self.name!r}, ratings={len(self.ratings)}, "
            f"users={np.unique(self.ratings.user_ids).size}, movies={len(self.movies)})"
        )


def find_movielens(name: str) -> Path | None:
    """Look for an unzipped MovieLens release called `name`, such as `"ml-100k"`.

    Checks `$LABSUPPORT_MOVIELENS/<name>` first, then
    `../shared/data/movielens/<name>` next to this repository.

    Args:
        name: The release's folder name.

    Returns:
        The folder, or `None` when neither place holds that release's files.
    """
    candidates = []
    if env := os.environ.get(_ENV_VAR):
        candidates.append(Path(env).expanduser() / name)
    repo_root = Path(__file__).resolve().parents[2]
    candidates.append(repo_root.parent / "shared" / "data" / "movielens" / name)
    for folder in candidates:
        if _layout(folder) is not None:
            return folder
    return None


def load_movielens(path: str | os.PathLike[str]) -> MovieLens:
    """Load an unzipped `ml-100k` or `ml-latest-small` folder.

    The format is detected from the files present: `u.data` and `u.item`
    (with `u.genre` for genre names), or `ratings.csv` and `movies.csv`.

    Args:
        path: The folder holding the files.

    Returns:
        The ratings and the movie table.

    Raises:
        MovieLensNotFoundError: if the folder or the expected files are
            missing (a `FileNotFoundError`); the message says what to download.
    """
    folder = Path(path)
    layout = _layout(folder)
    if layout == "ml-100k":
        ratings = _read_ml100k_ratings(folder / "u.data")
        movies = _read_ml100k_movies(folder)
    elif layout == "latest":
        ratings = _read_csv_ratings(folder / "ratings.csv")
        movies = _read_csv_movies(folder / "movies.csv")
    else:
        raise MovieLensNotFoundError(_missing_message(folder))
    return MovieLens(name=folder.resolve().name, ratings=ratings, movies=movies)


def load_movielens_fold(
    path: str | os.PathLike[str], fold: int | str
) -> tuple[RatingArrays, RatingArrays]:
    """Load one of ml-100k's ready-made train/test splits.

    Folds 1 to 5 (`u1.base`/`u1.test` ...) are a 5-fold cross-validation
    with 80,000 training ratings each; folds `"a"` and `"b"` hold out
    exactly 10 ratings per user.

    Args:
        path: The unzipped `ml-100k` folder.
        fold: 1 to 5, `"a"` or `"b"`.

    Returns:
        `(train, test)`.

    Raises:
        ValueError: if `fold` is not one of those.
        MovieLensNotFoundError: if the fold's files are missing.
    """
    if str(fold) not in {"1", "2", "3", "4", "5", "a", "b"}:
        msg = f"fold must be 1 to 5, 'a' or 'b', got {fold!r}"
        raise ValueError(msg)
    folder = Path(path)
    base, test = folder / f"u{fold}.base", folder / f"u{fold}.test"
    if not (base.is_file() and test.is_file()):
        msg = (
            f"No ml-100k fold {fold} in {folder} (it needs {base.name} and {test.name}); "
            f"{_DOWNLOAD_HINT}"
        )
        raise MovieLensNotFoundError(msg)
    return _read_ml100k_ratings(base), _read_ml100k_ratings(test)


def _layout(folder: Path) -> str | None:
    if all((folder / f).is_file() for f in _ML100K_FILES):
        return "ml-100k"
    if all((folder / f).is_file() for f in _LATEST_FILES):
        return "latest"
    return None


def _missing_message(folder: Path) -> str:
    """One sentence: what is wrong with `folder`, what a release holds, how to get one."""
    if not folder.exists():
        problem = f"{folder} does not exist"
    elif not folder.is_dir():
        problem = f"{folder} is a file, not a folder"
    else:
        inner = [d for d in sorted(folder.iterdir()) if d.is_dir() and _layout(d)]
        if inner:  # the parent of a release: the fix is one folder down
            return f"{folder} holds no MovieLens files; did you mean {inner[0]}, the release in it?"
        problem = f"{folder} holds no MovieLens files"
    expected = (
        f"{' and '.join(_ML100K_FILES)} for ml-100k, or "
        f"{' and '.join(_LATEST_FILES)} for ml-latest-small"
    )
    return f"{problem} (a MovieLens folder holds {expected}); {_DOWNLOAD_HINT}"


def _read_ml100k_ratings(file: Path) -> RatingArrays:
    frame = pd.read_csv(
        file,
        sep="\t",
        header=None,
        names=["user_id", "movie_id", "score", "timestamp"],
        usecols=["user_id", "movie_id", "score"],
        dtype={"user_id": np.int64, "movie_id": np.int64, "score": np.float32},
    )
    return RatingArrays.from_columns(frame["user_id"], frame["movie_id"], frame["score"])


def _read_csv_ratings(file: Path) -> RatingArrays:
    frame = pd.read_csv(
        file,
        usecols=["userId", "movieId", "rating"],
        dtype={"userId": np.int64, "movieId": np.int64, "rating": np.float32},
    )
    return RatingArrays.from_columns(frame["userId"], frame["movieId"], frame["rating"])


def _read_ml100k_movies(folder: Path) -> pd.DataFrame:
    genre_file = folder / "u.genre"
    genres: tuple[str, ...] = _ML100K_GENRES
    if genre_file.is_file():
        lines = genre_file.read_text(encoding="latin-1").splitlines()
        genres = tuple(line.rsplit("|", 1)[0] for line in lines if line.strip())
    frame = pd.read_csv(
        folder / "u.item",
        sep="|",
        header=None,
        encoding="latin-1",
        names=["id", "title", "date", "video_date", "url", *genres],
        usecols=["id", "title", "date", *genres],
        dtype={"id": np.int64, "title": str, "date": str, **dict.fromkeys(genres, np.int8)},
        keep_default_na=False,
    )
    flags = frame[list(genres)].to_numpy()
    first = np.where(flags.any(axis=1), flags.argmax(axis=1), 0)
    genre = pd.Series(np.asarray(genres, dtype=object)[first], index=frame.index)
    date_year = frame["date"].str.extract(r"(\d{4})\s*$", expand=False)
    return _movie_table(frame["id"], frame["title"], genre, date_year)


def _read_csv_movies(file: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        file,
        dtype={"movieId": np.int64, "title": str, "genres": str},
        keep_default_na=False,
    )
    genre = frame["genres"].str.split("|").str[0].replace("(no genres listed)", "unknown")
    return _movie_table(frame["movieId"], frame["title"], genre, None)


_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


def _movie_table(
    ids: pd.Series, titles: pd.Series, genres: pd.Series, fallback_year: pd.Series | None
) -> pd.DataFrame:
    """Build the `id, title, year, genre` table, taking the year off the title."""
    year = titles.str.extract(_YEAR_SUFFIX, expand=False)
    if fallback_year is not None:
        year = year.fillna(fallback_year)
    return pd.DataFrame(
        {
            "id": ids.astype(np.int64),
            "title": titles.str.replace(_YEAR_SUFFIX, "", regex=True).str.strip(),
            "year": pd.to_numeric(year).astype("Int64"),
            "genre": genres.astype(str),
        }
    )
