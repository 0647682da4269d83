"""A small catalogue of real films, and a few hundred ratings of them.

`CATALOGUE` holds 72 well-known films, six per genre; `catalogue_movies`
turns it into `Movie` objects and `demo_ratings` draws ratings of it from a
planted taste model (see `labsupport.data.synthetic`) in which films of one
genre are liked by the same people. Notebooks and the `--demo` server use
them.
"""

from __future__ import annotations

from labsupport._types import Movie, RatingArrays
from labsupport.data.synthetic import _check_positive, synthetic_ratings

__all__ = ["CATALOGUE", "catalogue_movies", "demo_ratings"]

#: Real films as `(title, year, primary genre)`, six per genre, grouped by
#: genre so a heatmap of the demo ratings shows the genre bands.
CATALOGUE: tuple[tuple[str, int, str], ...] = (
    ("The Matrix", 1999, "Sci-Fi"),
    ("Blade Runner", 1982, "Sci-Fi"),
    ("2001: A Space Odyssey", 1968, "Sci-Fi"),
    ("Inception", 2010, "Sci-Fi"),
    ("Interstellar", 2014, "Sci-Fi"),
    ("Arrival", 2016, "Sci-Fi"),
    ("The Shawshank Redemption", 1994, "Drama"),
    ("Forrest Gump", 1994, "Drama"),
    ("12 Angry Men", 1957, "Drama"),
    ("Good Will Hunting", 1997, "Drama"),
    ("Whiplash", 2014, "Drama"),
    ("Moonlight", 2016, "Drama"),
    ("Groundhog Day", 1993, "Comedy"),
    ("The Big Lebowski", 1998, "Comedy"),
    ("Airplane!", 1980, "Comedy"),
    ("Monty Python and the Holy Grail", 1975, "Comedy"),
    ("Some Like It Hot", 1959, "Comedy"),
    ("The Grand Budapest Hotel", 2014, "Comedy"),
    ("Die Hard", 1988, "Action"),
    ("Mad Max: Fury Road", 2015, "Action"),
    ("The Dark Knight", 2008, "Action"),
    ("Gladiator", 2000, "Action"),
    ("Terminator 2: Judgment Day", 1991, "Action"),
    ("John Wick", 2014, "Action"),
    ("Toy Story", 1995, "Animation"),
    ("Spirited Away", 2001, "Animation"),
    ("The Lion King", 1994, "Animation"),
    ("Finding Nemo", 2003, "Animation"),
    ("WALL-E", 2008, "Animation"),
    ("My Neighbor Totoro", 1988, "Animation"),
    ("The Silence of the Lambs", 1991, "Thriller"),
    ("Se7en", 1995, "Thriller"),
    ("Rear Window", 1954, "Thriller"),
    ("Vertigo", 1958, "Thriller"),
    ("Memento", 2000, "Thriller"),
    ("Gone Girl", 2014, "Thriller"),
    ("Casablanca", 1942, "Romance"),
    ("Titanic", 1997, "Romance"),
    ("Notting Hill", 1999, "Romance"),
    ("When Harry Met Sally...", 1989, "Romance"),
    ("Before Sunrise", 1995, "Romance"),
    ("Roman Holiday", 1953, "Romance"),
    ("The Shining", 1980, "Horror"),
    ("Psycho", 1960, "Horror"),
    ("The Exorcist", 1973, "Horror"),
    ("Halloween", 1978, "Horror"),
    ("Get Out", 2017, "Horror"),
    ("A Nightmare on Elm Street", 1984, "Horror"),
    ("Hoop Dreams", 1994, "Documentary"),
    ("Bowling for Columbine", 2002, "Documentary"),
    ("March of the Penguins", 2005, "Documentary"),
    ("An Inconvenient Truth", 2006, "Documentary"),
    ("Man on Wire", 2008, "Documentary"),
    ("Free Solo", 2018, "Documentary"),
    ("The Lord of the Rings: The Fellowship of the Ring", 2001, "Fantasy"),
    ("Pan's Labyrinth", 2006, "Fantasy"),
    ("The Princess Bride", 1987, "Fantasy"),
    ("The Wizard of Oz", 1939, "Fantasy"),
    ("Edward Scissorhands", 1990, "Fantasy"),
    ("Big Fish", 2003, "Fantasy"),
    ("The Godfather", 1972, "Crime"),
    ("Pulp Fiction", 1994, "Crime"),
    ("Goodfellas", 1990, "Crime"),
    ("The Usual Suspects", 1995, "Crime"),
    ("Fargo", 1996, "Crime"),
    ("The Departed", 2006, "Crime"),
    ("Raiders of the Lost Ark", 1981, "Adventure"),
    ("Jurassic Park", 1993, "Adventure"),
    ("The Goonies", 1985, "Adventure"),
    ("Lawrence of Arabia", 1962, "Adventure"),
    ("Cast Away", 2000, "Adventure"),
    ("Life of Pi", 2012, "Adventure"),
)


_DEMO_DENSITY = 0.2
_DEMO_POPULARITY_EXPONENT = 0.5
_DEMO_RANK = 4


def catalogue_movies() -> list[Movie]:
    """Return `CATALOGUE` as `Movie` objects with ids 1 to n, in order.

    Returns:
        A new list on every call, so callers may change it freely.
    """
    return [
        Movie(id=i, title=title, year=year, genre=genre)
        for i, (title, year, genre) in enumerate(CATALOGUE, start=1)
    ]


def demo_ratings(*, n_users: int = 40, seed: int = 0) -> RatingArrays:
    """Return a few hundred ratings of the `CATALOGUE` films.

    About 20 % of the user x movie cells are rated; tastes follow genres, and
    popularity is only mildly skewed so nearly every film gets ratings. The
    truth behind them is `planted_model(n_users, len(CATALOGUE), rank=4,
    seed=seed, popularity_exponent=0.5, genres=[g for _, _, g in CATALOGUE])`.

    Args:
        n_users: Number of users (ids 1 to `n_users`).
        seed: Seed; the same seed gives the same ratings.

    Returns:
        Ratings with movie ids 1 to `len(CATALOGUE)`, sorted by user.

    Raises:
        ValueError: if `n_users` is not positive.
    """
    n_movies = len(CATALOGUE)
    _check_positive(n_users=n_users)
    return synthetic_ratings(
        n_users,
        n_movies,
        max(n_users, round(_DEMO_DENSITY * n_users * n_movies)),
        rank=_DEMO_RANK,
        seed=seed,
        popularity_exponent=_DEMO_POPULARITY_EXPONENT,
        genres=[genre for _, _, genre in CATALOGUE],
    )
