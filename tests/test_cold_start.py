"""The cold start: what users with no ratings get, and that it holds up on held-out users.

The chart is most-rated (ties by damped mean), chosen by measurement
(`benchmarks/quality.py`, table `cold_start`). Known users never see it: their
lists come from their factors. The MovieLens tests skip when the shared copy
is absent.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labsupport.data import demo_ratings, find_movielens, load_movielens, synthetic_ratings
from labsupport.recommender import build_model, precision_recall_at_k, recommend

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ sits next to the package but is not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402


def rows(*triples: tuple[int, int, float]) -> list[dict[str, float]]:
    return [{"user_id": u, "movie_id": m, "score": s} for u, m, s in triples]


def test_users_without_ratings_get_the_most_rated_movies() -> None:
    # Movie 1: one 5; movies 2 and 3: twenty ratings each (4.5s and 2s); movie 4: five 5s.
    triples = [(u, 2, 4.5) for u in range(20)] + [(u, 3, 2.0) for u in range(20, 40)]
    model = build_model(rows((100, 1, 5.0), *[(200 + u, 4, 5.0) for u in range(5)], *triples))
    assert model.popular.tolist() == [2, 3, 4, 1]  # by count; the 20-20 tie by damped mean
    assert recommend(model, 12345, limit=2) == [2, 3]
    assert recommend(model, 12345, limit=2, exclude_rated=True) == [2, 3]


def test_known_users_never_fall_back_to_the_chart() -> None:
    model = build_model(demo_ratings(), rank=8)
    reversed_chart = dataclasses.replace(model, popular=model.popular[::-1].copy())
    for user in model.user_ids.tolist():
        for exclude in (False, True):
            assert recommend(model, user, 10, exclude) == recommend(
                reversed_chart, user, 10, exclude
            )
    assert recommend(reversed_chart, 12345, 3) == model.popular[::-1][:3].tolist()


def test_cold_start_rows_score_every_candidate_on_users_absent_from_training() -> None:
    ratings = synthetic_ratings(80, 40, 1500, seed=2)
    # users join one after another: the later ones are absent before the time cut
    times = ratings.user_ids * 1000 + np.random.default_rng(2).integers(0, 5000, len(ratings))
    found = quality.cold_start_rows(ratings, times, k=5)
    assert {r["split"] for r in found} == {"time", "users"}
    for row in found:
        assert 0.0 <= row["ndcg"] <= 1.0 and 0.0 <= row["precision"] <= 1.0
        assert row["users"] > 0
    users = [r for r in found if r["split"] == "users"]
    assert users[0]["users"] == 16  # 20 % of the 80 users
    shipped = [r for r in found if r["candidate"].startswith("model.popular")]
    targets = quality._cold_start_targets([{"dataset": "tiny", **r} for r in found])
    assert len(shipped) == len(targets) == 2


def test_drift_rows_compare_stale_fold_in_and_rebuild() -> None:
    ratings = synthetic_ratings(60, 40, 1200, seed=3)
    times = np.arange(len(ratings))
    found = quality.drift_rows(ratings, times, new_shares=(0.05, 0.2), k=5)
    assert [r["new_share"] for r in found] == [0.05, 0.2]
    assert found[0]["new_ratings"] < found[1]["new_ratings"]
    for row in found:
        for variant in ("stale", "fold_in", "rebuild"):
            assert 0.0 <= row[f"{variant}_ndcg"] <= 1.0
            assert 0.0 <= row[f"{variant}_precision"] <= 1.0
    assert found[0]["rebuild_ndcg"] == found[1]["rebuild_ndcg"]  # one rebuild for every share


def movielens(name: str) -> Path:
    folder = find_movielens(name)
    if folder is None:
        pytest.skip(f"{name} not found (../shared/data/movielens/{name} or $LABSUPPORT_MOVIELENS)")
    return folder


@pytest.fixture(scope="module")
def ml100k_cold_start() -> list[dict[str, Any]]:
    folder = movielens("ml-100k")
    ratings = load_movielens(folder).ratings
    return quality.cold_start_rows(ratings, quality._timestamps(folder), k=10, seed=0)


@pytest.mark.movielens
@pytest.mark.parametrize("split", ["time", "users"])
def test_ml100k_cold_start_is_at_least_as_good_as_most_rated(
    ml100k_cold_start: list[dict[str, Any]], split: str
) -> None:
    by_name = {r["candidate"]: r for r in ml100k_cold_start if r["split"] == split}
    shipped = next(r for name, r in by_name.items() if name.startswith("model.popular"))
    most_rated = by_name["most rated"]
    former = next(r for name, r in by_name.items() if name.startswith("damped mean (10"))
    assert shipped["users"] > 100  # users absent from training, scored on all their ratings
    assert shipped["ndcg"] >= most_rated["ndcg"]
    assert shipped["precision"] >= most_rated["precision"]
    assert shipped["ndcg"] > former["ndcg"] + 0.1  # the former chart: 0.26 against 0.45


@pytest.mark.movielens
def test_ml100k_ranking_for_known_users_is_unchanged() -> None:
    from labsupport.data import split_per_user

    train, test = split_per_user(load_movielens(movielens("ml-100k")).ratings, seed=0)
    assert precision_recall_at_k(build_model(train), train, test)["precision@10"] >= 0.42
