"""Behaviour tests for labsupport.data: catalogue, synthetic ratings, MovieLens, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labsupport import data
from labsupport._types import RatingArrays
from labsupport.data import (
    CATALOGUE,
    SHAPES,
    MovieLens,
    catalogue_movies,
    demo_ratings,
    find_movielens,
    load_movielens,
    load_movielens_fold,
    planted_model,
    split_per_user,
    synthetic_ratings,
    synthetic_shape,
)

ML_100K = find_movielens("ml-100k")
ML_SMALL = find_movielens("ml-latest-small")
needs_100k = pytest.mark.skipif(
    ML_100K is None, reason="ml-100k not found (set LABSUPPORT_MOVIELENS or see data/movielens.py)"
)
needs_small = pytest.mark.skipif(
    ML_SMALL is None,
    reason="ml-latest-small not found (set LABSUPPORT_MOVIELENS or see data/movielens.py)",
)


def pair_keys(ratings: RatingArrays, n_movies: int) -> np.ndarray:
    return ratings.user_ids * n_movies + ratings.movie_ids


def assert_same(a: RatingArrays, b: RatingArrays) -> None:
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.movie_ids, b.movie_ids)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.fixture(scope="module")
def ml100k_shaped() -> RatingArrays:
    return synthetic_ratings(seed=3)


# --- catalogue -------------------------------------------------------------


def test_catalogue_holds_sane_unique_films() -> None:
    titles = [title for title, _, _ in CATALOGUE]
    genres = {genre for _, _, genre in CATALOGUE}

    assert 60 <= len(CATALOGUE) <= 80
    assert len(set(titles)) == len(titles)
    assert all(1900 <= year <= 2025 for _, year, _ in CATALOGUE)
    assert len(genres) >= 8
    assert ("The Matrix", 1999, "Sci-Fi") in CATALOGUE


def test_catalogue_movies_numbers_entries_from_one_in_order() -> None:
    movies = catalogue_movies()

    assert [m.id for m in movies] == list(range(1, len(CATALOGUE) + 1))
    assert [(m.title, m.year, m.genre) for m in movies] == list(CATALOGUE)
    assert movies[0].to_dict() == {"id": 1, "title": "The Matrix", "year": 1999, "genre": "Sci-Fi"}
    assert catalogue_movies() is not movies


# --- synthetic ratings ------------------------------------------------------


def test_synthetic_ratings_are_deterministic_per_seed() -> None:
    a = synthetic_ratings(200, 300, 5000, seed=7)
    b = synthetic_ratings(200, 300, 5000, seed=7)
    c = synthetic_ratings(200, 300, 5000, seed=8)

    assert_same(a, b)
    assert not np.array_equal(pair_keys(a, 300), pair_keys(c, 300))


def test_synthetic_ratings_have_the_asked_shape(ml100k_shaped: RatingArrays) -> None:
    r = ml100k_shaped
    keys = pair_keys(r, 1682)

    assert len(r) == 100_000
    assert (r.user_ids.dtype, r.movie_ids.dtype, r.scores.dtype) == (
        np.int64,
        np.int64,
        np.float32,
    )
    assert r.movie_ids.min() >= 1 and r.movie_ids.max() <= 1682
    np.testing.assert_array_equal(np.unique(r.user_ids), np.arange(1, 944))
    assert set(np.unique(r.scores).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.unique(keys).size == keys.size  # no (user, movie) pair twice
    assert np.all(np.diff(keys) > 0)  # sorted by user, then movie


def test_popularity_and_activity_are_heavy_tailed(ml100k_shaped: RatingArrays) -> None:
    per_movie = np.sort(np.bincount(ml100k_shaped.movie_ids, minlength=1683)[1:])[::-1]
    per_user = np.bincount(ml100k_shaped.user_ids)[1:]

    assert per_movie[: 1682 // 10].sum() > 0.3 * len(ml100k_shaped)  # top 10% of films
    assert per_user.min() >= 5
    assert per_user.max() > 5 * np.median(per_user)


def test_scores_look_like_movielens(ml100k_shaped: RatingArrays) -> None:
    counts = np.bincount(ml100k_shaped.scores.astype(np.int64), minlength=6)[1:]

    assert 3.3 < ml100k_shaped.scores.mean() < 3.7
    assert counts.argmax() + 1 in (3, 4)
    assert counts.min() > 0


def test_planted_model_explains_the_scores() -> None:
    ratings = synthetic_ratings(1000, 400, 40_000, seed=5)
    truth = planted_model(1000, 400, seed=5)

    predicted = truth.predict(ratings.user_ids, ratings.movie_ids)

    assert np.corrcoef(predicted, ratings.scores)[0, 1] > 0.7
    assert np.mean(np.abs(np.clip(predicted, 1, 5) - ratings.scores)) < 0.8


def test_planted_structure_is_recoverable_by_truncated_svd() -> None:
    n_users, n_movies, rank = 300, 200, 4
    ratings = synthetic_ratings(n_users, n_movies, 24_000, rank=rank, seed=2, noise=0.3)
    truth = planted_model(n_users, n_movies, rank=rank, seed=2)
    filled = np.zeros((n_users, n_movies))
    filled[ratings.user_ids - 1, ratings.movie_ids - 1] = ratings.scores - ratings.scores.mean()

    _, _, vt = np.linalg.svd(filled, full_matrices=False)
    learnt = vt[: rank + 1].T  # +1 for the item-bias direction
    fitted, *_ = np.linalg.lstsq(learnt, truth.item_factors, rcond=None)
    residual = truth.item_factors - learnt @ fitted

    assert np.sum(residual**2) < 0.5 * np.sum(truth.item_factors**2)


def test_planted_model_is_deterministic_and_items_ignore_user_count() -> None:
    a = planted_model(50, 80, seed=1)
    b = planted_model(60, 80, seed=1)

    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.user_factors, b.user_factors[:50])
    assert a.item_popularity.sum() == pytest.approx(1.0)
    assert a.user_activity.sum() == pytest.approx(1.0)
    assert (a.n_users, a.n_movies, a.rank) == (50, 80, 8)
    assert "n_users=50" in repr(a)


def test_genres_correlate_item_factors() -> None:
    genres = [genre for _, _, genre in CATALOGUE]
    model = planted_model(10, len(CATALOGUE), seed=0, genres=genres)
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    labels = np.asarray(genres)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    other = labels[:, None] != labels[None, :]

    assert cosine[same].mean() > cosine[other].mean() + 0.3


def test_medium_size_runs() -> None:
    n_users, n_movies, n_ratings = SHAPES["ml-1m"]

    ratings = synthetic_shape("ml-1m")
    keys = pair_keys(ratings, n_movies)

    assert len(ratings) == n_ratings
    assert np.all(np.diff(keys) > 0)
    assert np.unique(ratings.user_ids).size == n_users


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, "n_users must be a positive"),
        ({"n_users": 10, "n_movies": 10, "n_ratings": 5}, "every user needs a rating"),
        ({"n_users": 10, "n_movies": 10, "n_ratings": 60}, "more than half"),
        ({"noise": -1.0}, "noise must be >= 0"),
        ({"popularity_exponent": -1.0}, "popularity_exponent"),
        ({"n_movies": 3, "n_ratings": 1000, "genres": ["Drama"]}, "one entry per movie"),
    ],
)
def test_synthetic_ratings_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_ratings(**kwargs)  # type: ignore[arg-type]  # wrong values on purpose


def test_synthetic_shape_names_the_known_shapes() -> None:
    with pytest.raises(ValueError, match="ml-100k, ml-1m"):
        synthetic_shape("ml-20m")


def test_predict_rejects_unknown_ids() -> None:
    with pytest.raises(IndexError, match="between 1 and 5"):
        planted_model(5, 5).predict([6], [1])


# --- demo ratings -----------------------------------------------------------


def test_demo_ratings_cover_the_catalogue_sparsely() -> None:
    ratings = demo_ratings()
    n_cells = 40 * len(CATALOGUE)

    assert 0.15 <= len(ratings) / n_cells <= 0.25
    assert ratings.movie_ids.min() >= 1 and ratings.movie_ids.max() <= len(CATALOGUE)
    np.testing.assert_array_equal(np.unique(ratings.user_ids), np.arange(1, 41))
    assert_same(ratings, demo_ratings())
    assert not np.array_equal(ratings.movie_ids, demo_ratings(seed=1).movie_ids)
    assert len(demo_ratings(n_users=5)) == round(0.2 * 5 * len(CATALOGUE))


def test_demo_truth_is_the_documented_planted_model() -> None:
    genres = [genre for _, _, genre in CATALOGUE]
    truth = planted_model(
        40, len(CATALOGUE), rank=4, seed=2, popularity_exponent=0.5, genres=genres
    )
    ratings = demo_ratings(seed=2)

    predicted = truth.predict(ratings.user_ids, ratings.movie_ids)

    assert np.corrcoef(predicted, ratings.scores)[0, 1] > 0.7


# --- split_per_user ---------------------------------------------------------


def test_split_per_user_holds_out_a_share_of_each_user() -> None:
    ratings = RatingArrays.from_columns(
        [1] * 8 + [2] * 2 + [3] + [4] * 4,
        [*range(1, 9), 1, 2, 5, 1, 2, 3, 4],
        np.arange(15) % 5 + 1,
    )

    train, test = split_per_user(ratings, test_fraction=0.25, seed=1)

    assert np.bincount(test.user_ids, minlength=5).tolist() == [0, 2, 1, 0, 1]
    assert np.bincount(train.user_ids, minlength=5).tolist() == [0, 6, 1, 1, 3]
    assert sorted(rows(train) + rows(test)) == sorted(rows(ratings))


def rows(r: RatingArrays) -> list[tuple[int, int, float]]:
    return list(zip(r.user_ids.tolist(), r.movie_ids.tolist(), r.scores.tolist(), strict=True))


def test_split_per_user_is_deterministic_and_keeps_users_in_train(
    ml100k_shaped: RatingArrays,
) -> None:
    train, test = split_per_user(ml100k_shaped, seed=4)
    again, _ = split_per_user(ml100k_shaped, seed=4)
    other, _ = split_per_user(ml100k_shaped, seed=5)

    assert_same(train, again)
    assert not np.array_equal(train.movie_ids, other.movie_ids)
    assert len(test) / len(ml100k_shaped) == pytest.approx(0.25, abs=0.01)
    assert set(np.unique(test.user_ids)) <= set(np.unique(train.user_ids))
    assert np.intersect1d(pair_keys(train, 1682), pair_keys(test, 1682)).size == 0


def test_split_per_user_edge_cases() -> None:
    empty = RatingArrays.from_columns([], [], [])
    train, test = split_per_user(empty)
    assert len(train) == len(test) == 0

    one_each = RatingArrays.from_columns([1, 2, 3], [1, 1, 1], [5, 4, 3])
    train, test = split_per_user(one_each, test_fraction=0.9)
    assert (len(train), len(test)) == (3, 0)

    _, test = split_per_user(demo_ratings(), test_fraction=0.0)
    assert len(test) == 0

    with pytest.raises(ValueError, match="test_fraction"):
        split_per_user(one_each, test_fraction=1.0)


# --- MovieLens --------------------------------------------------------------


def write_tiny_ml100k(folder: Path) -> None:
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t5\t881250949\n2\t1\t3\t891717742\n")
    genres = "unknown|0\nAction|1\nComedy|2\n\n"
    (folder / "u.genre").write_text(genres)
    items = "1|Caf\xe9 Film (1995)|01-Jan-1995||http://x|0|0|1\n2|unknown||||1|0|0\n"
    (folder / "u.item").write_bytes(items.encode("latin-1"))


def test_load_movielens_reads_the_ml100k_layout(tmp_path: Path) -> None:
    write_tiny_ml100k(tmp_path / "ml-tiny")

    ml = load_movielens(tmp_path / "ml-tiny")

    assert isinstance(ml, MovieLens)
    assert ml.name == "ml-tiny"
    assert ml.ratings.user_ids.tolist() == [1, 2]
    assert ml.ratings.scores.dtype == np.float32
    assert ml.movies["title"].tolist() == ["Caf\xe9 Film", "unknown"]
    assert ml.movies["year"].tolist()[0] == 1995
    assert ml.movies["year"].isna().tolist() == [False, True]
    assert ml.movies["genre"].tolist() == ["Comedy", "unknown"]


def test_load_movielens_reads_the_csv_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ml-csv"
    folder.mkdir()
    (folder / "ratings.csv").write_bytes(
        b"userId,movieId,rating,timestamp\r\n1,10,4.5,964982703\r\n2,20,0.5,964981247\r\n"
    )
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995) ",Comedy|Drama\n'
        "20,Black Mirror,(no genres listed)\n",
        encoding="utf-8",
    )

    ml = load_movielens(folder)

    assert ml.ratings.scores.tolist() == [4.5, 0.5]
    assert list(ml.movies.columns) == ["id", "title", "year", "genre"]
    assert ml.movies["title"].tolist() == ["American President, The", "Black Mirror"]
    assert ml.movies["year"].dtype == pd.Int64Dtype()
    assert ml.movies["genre"].tolist() == ["Comedy", "unknown"]


def test_wrong_path_explains_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_movielens(tmp_path / "nowhere")

    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "u.data" in message and "ratings.csv" in message
    assert "redistributed" in message and "download" in message


def test_parent_folder_error_suggests_the_release_inside(tmp_path: Path) -> None:
    write_tiny_ml100k(tmp_path / "ml-100k")

    with pytest.raises(FileNotFoundError, match=r"did you mean .*ml-100k"):
        load_movielens(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"u1\.base"):
        load_movielens_fold(tmp_path / "ml-100k", 1)
    with pytest.raises(ValueError, match="fold must be"):
        load_movielens_fold(tmp_path / "ml-100k", 6)


def test_find_movielens_checks_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_ml100k(tmp_path / "ml-tiny")
    monkeypatch.setenv("LABSUPPORT_MOVIELENS", str(tmp_path))

    assert find_movielens("ml-tiny") == tmp_path / "ml-tiny"
    assert find_movielens("ml-does-not-exist") is None


def test_find_movielens_looks_next_to_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABSUPPORT_MOVIELENS", raising=False)
    shared = Path(data.__file__).resolve().parents[3] / "shared" / "data" / "movielens"
    expected = shared / "ml-100k" if (shared / "ml-100k" / "u.data").is_file() else None

    assert find_movielens("ml-100k") == expected


@pytest.mark.movielens
@needs_100k
def test_load_ml100k() -> None:
    assert ML_100K is not None
    ml = load_movielens(ML_100K)

    assert len(ml.ratings) == 100_000
    assert np.unique(ml.ratings.user_ids).size == 943
    assert len(ml.movies) == 1682 == np.unique(ml.ratings.movie_ids).size
    assert np.bincount(ml.ratings.scores.astype(np.int64))[1:].tolist() == [
        6110,
        11370,
        27145,
        34174,
        21201,
    ]
    toy_story = ml.movies.iloc[0]
    assert (toy_story["title"], toy_story["year"], toy_story["genre"]) == (
        "Toy Story",
        1995,
        "Animation",
    )


@pytest.mark.movielens
@needs_100k
def test_load_ml100k_folds() -> None:
    assert ML_100K is not None
    train, test = load_movielens_fold(ML_100K, 1)
    _, test_a = load_movielens_fold(ML_100K, "a")

    assert (len(train), len(test)) == (80_000, 20_000)
    assert np.all(np.bincount(test_a.user_ids)[1:] == 10)


@pytest.mark.movielens
@needs_small
def test_load_ml_latest_small() -> None:
    assert ML_SMALL is not None
    ml = load_movielens(ML_SMALL)

    assert len(ml.ratings) == 100_836
    assert np.unique(ml.ratings.user_ids).size == 610
    assert len(ml.movies) == 9742
    assert 0.5 in ml.ratings.scores and 4.5 in ml.ratings.scores  # half stars
    assert ml.movies["year"].notna().mean() > 0.99
    assert "ml-latest-small" in repr(ml)
