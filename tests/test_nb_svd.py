"""Key results of notebooks/02_svd_recommender.ipynb, its self-checks and its figures.

The notebook's own parameters are read from its ``parameters`` cell, so a
change there (or in ``labsupport.recommender``) that moves a key result fails
here with a readable message, not only as an nbval output diff.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from labsupport import RatingArrays, data
from labsupport import recommender as rec
from labsupport.classroom.checks import CheckFailed
from labsupport.classroom.checks import svd as checks
from labsupport.classroom.plots import matrices
from labsupport.classroom.workbook import notebook_parameters

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_svd_recommender.ipynb"


@cache
def params() -> dict[str, Any]:
    return notebook_parameters(NOTEBOOK)


@cache
def synthetic() -> tuple[RatingArrays, RatingArrays]:
    """Rebuild the notebook's step-5 ratings ("watched" by taste) and its train/test split."""
    p = params()
    rng = np.random.default_rng(p["SEED"])
    truth = data.planted_model(p["N_USERS"], p["N_MOVIES"], rank=p["PLANTED_RANK"], seed=p["SEED"])
    pool = data.synthetic_ratings(
        p["N_USERS"],
        p["N_MOVIES"],
        p["N_POOL"],
        rank=p["PLANTED_RANK"],
        noise=p["RATING_NOISE"],
        seed=p["SEED"],
    )
    users, items = pool.user_ids - 1, pool.movie_ids - 1
    taste = np.einsum("ij,ij->i", truth.user_factors[users], truth.item_factors[items])
    watched = rng.random(len(pool)) < 1 / (1 + np.exp(-p["TASTE_SELECTION"] * taste))
    ratings = RatingArrays(pool.user_ids[watched], pool.movie_ids[watched], pool.scores[watched])
    return data.split_per_user(ratings, seed=p["SEED"])


@cache
def chosen_k() -> int:
    """The notebook's step-6 choice: best validation precision@10 of PureSVD."""
    p = params()
    train, _ = synthetic()
    return checks.reference_choose_k(train, p["K_GRID"], seed=p["SEED"], top_n=p["TOP_N"])


def stars_rmse(model: rec.Model, held_out: RatingArrays) -> float:
    """The notebook's ``stars_rmse``: a model's scores read as star ratings."""
    scores = rec.score_matrix(model)
    if model.method == "biased":
        scores = scores + model.global_mean + model.user_bias[:, None]
    rows = np.searchsorted(model.user_ids, held_out.user_ids)
    cols = np.searchsorted(model.movie_ids, held_out.movie_ids).clip(max=model.n_movies - 1)
    known = model.movie_ids[cols] == held_out.movie_ids
    predicted = np.where(known, np.clip(scores[rows, cols], 1, 5), model.global_mean)
    return float(np.sqrt(np.mean((predicted - held_out.scores) ** 2)))


def notebook_text() -> str:
    """Return every stored text output of the notebook, joined."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def demo_matrix() -> np.ndarray:
    """The demo ratings as the seed's dense matrix (0 where missing)."""
    demo = data.demo_ratings(n_users=params()["N_DEMO_USERS"], seed=params()["SEED"])
    frame = pd.DataFrame({"u": demo.user_ids, "m": demo.movie_ids, "s": demo.scores})
    return frame.pivot_table(index="u", columns="m", values="s").fillna(0).to_numpy(float)


# --- key results -------------------------------------------------------------------


def test_chosen_k_is_near_the_planted_rank_and_matches_the_notebook() -> None:
    p = params()
    chosen = chosen_k()
    assert abs(chosen - p["PLANTED_RANK"]) <= 4, f"chosen k {chosen} far from the planted rank"
    recorded = re.search(r"chosen k: (\d+)", notebook_text())
    assert recorded is not None, "the notebook's stored outputs do not print 'chosen k: N'"
    assert int(recorded.group(1)) == chosen, "re-run the notebook: its chosen k is stale"


def test_centred_predicts_stars_best_and_raw_ranks_best() -> None:
    p = params()
    train, test = synthetic()
    chosen = chosen_k()
    rmse, precision = {}, {}
    for method in rec.METHODS:
        model = rec.build_model(train, rank=chosen, method=method, seed=p["SEED"])
        rmse[method] = stars_rmse(model, test)
        key = f"precision@{p['TOP_N']}"
        precision[method] = rec.precision_recall_at_k(model, train, test, k=p["TOP_N"])[key]
    assert min(rmse, key=rmse.__getitem__) == "biased"
    assert rmse["biased"] < 0.8 < 2.0 < min(rmse["puresvd"], rmse["binary"])
    assert min(precision["puresvd"], precision["binary"]) > 2 * precision["biased"]


def test_the_seed_reshape_fails_and_full_rank_copies_the_input() -> None:
    matrix = demo_matrix()
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    summed = np.matmul(np.matmul(u * s, vt), np.ones((matrix.shape[1], 1)))
    with pytest.raises(ValueError, match="cannot reshape"):
        summed.reshape(matrix.shape)
    one_movie = matrix[:, :1]
    u1, s1, vt1 = np.linalg.svd(one_movie, full_matrices=False)
    one_summed = (u1 * s1) @ vt1 @ np.ones((1, 1))  # the one-movie case reshapes fine
    assert np.allclose(one_summed.reshape(one_movie.shape), one_movie)
    reconstruction = (u * s) @ vt
    assert np.abs(reconstruction - matrix).max() < 1e-12
    assert np.all(np.abs(reconstruction[matrix == 0]) < 1e-12)


def test_inline_truncated_svd_and_labsupport_puresvd_agree() -> None:
    """labsupport's (randomized) rank-k fit is as good as the exact one; lists nearly match."""
    p = params()
    matrix = demo_matrix()
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    k, top_n = p["K_DEMO"], p["TOP_N"]
    demo = data.demo_ratings(n_users=p["N_DEMO_USERS"], seed=p["SEED"])
    model = rec.build_model(demo, rank=k, method="puresvd", seed=p["SEED"])
    ours, theirs = (u[:, :k] * s[:k]) @ vt[:k], rec.score_matrix(model)
    assert np.linalg.norm(matrix - theirs) <= 1.001 * np.linalg.norm(matrix - ours)
    shared = 0
    for row, user in enumerate(model.user_ids.tolist()):
        masked = np.where(matrix[row] > 0, -np.inf, ours[row])
        inline = model.movie_ids[np.argsort(-masked, kind="stable")[:top_n]].tolist()
        shared += len(set(inline) & set(rec.recommend(model, user, top_n, exclude_rated=True)))
    assert shared >= 0.9 * top_n * model.n_users


# --- self-checks -------------------------------------------------------------------


def right_fixed_scores(matrix: np.ndarray) -> np.ndarray:
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    return (u * s) @ vt


def test_check_fixed_scores(capsys: pytest.CaptureFixture[str]) -> None:
    checks.check_fixed_scores(right_fixed_scores)
    assert "✔" in capsys.readouterr().out

    def seed_version(matrix: np.ndarray) -> np.ndarray:
        n_users, n_movies = matrix.shape
        return (right_fixed_scores(matrix) @ np.ones((n_movies, 1))).reshape(n_users, n_movies)

    with pytest.raises(CheckFailed, match="raised ValueError"):
        checks.check_fixed_scores(seed_version)
    with pytest.raises(CheckFailed, match="ones vector"):
        checks.check_fixed_scores(lambda m: right_fixed_scores(m) @ np.ones((m.shape[1], 1)))
    with pytest.raises(CheckFailed, match="U \\* S @ Vt"):
        checks.check_fixed_scores(lambda m: right_fixed_scores(m) + 1)


def test_check_rank_k(capsys: pytest.CaptureFixture[str]) -> None:
    checks.check_rank_k(checks.reference_rank_k)
    assert "✔" in capsys.readouterr().out

    def smallest(matrix: np.ndarray, k: int) -> np.ndarray:
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        return (u[:, -k:] * s[-k:]) @ vt[-k:]

    with pytest.raises(CheckFailed, match="LARGEST"):
        checks.check_rank_k(smallest)
    with pytest.raises(CheckFailed, match="has rank"):
        checks.check_rank_k(lambda m, k: right_fixed_scores(m))
    with pytest.raises(CheckFailed, match="shape"):
        checks.check_rank_k(lambda m, k: m[:, :k])


def test_check_choose_k(capsys: pytest.CaptureFixture[str]) -> None:
    train = data.demo_ratings(n_users=30, seed=1)
    ks = (1, 2, 4)

    def right(ratings: RatingArrays, ks: tuple[int, ...], *, seed: int) -> int:
        return checks.reference_choose_k(ratings, ks, seed=seed)

    checks.check_choose_k(right, train, ks, seed=0)
    assert "✔" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="one of the candidate ranks"):
        checks.check_choose_k(lambda r, ks, *, seed: 99, train, ks, seed=0)
    wrong = next(k for k in ks if k != checks.reference_choose_k(train, ks, seed=0))
    with pytest.raises(CheckFailed, match="validation precision@10"):
        checks.check_choose_k(lambda r, ks, *, seed: wrong, train, ks, seed=0)


def test_check_rank_unseen(capsys: pytest.CaptureFixture[str]) -> None:
    matrix = demo_matrix()[:6]
    scores = checks.reference_rank_k(matrix, 2)
    user_ids, movie_ids = list(range(1, 7)), list(range(1, matrix.shape[1] + 1))

    def ranking(
        scores: np.ndarray,
        matrix: np.ndarray,
        users: list[int],
        movies: list[int],
        *,
        skip_seen: bool = True,
        reverse: bool = True,
    ) -> dict[int, list[int]]:
        result = {}
        for row, user in enumerate(users):
            order = np.argsort(scores[row])
            order = order[::-1] if reverse else order
            result[user] = [movies[j] for j in order if not (skip_seen and matrix[row, j])]
        return result

    checks.check_rank_unseen(ranking, scores, matrix, user_ids, movie_ids)
    assert "✔" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="already rated"):
        checks.check_rank_unseen(
            lambda *a: ranking(*a, skip_seen=False), scores, matrix, user_ids, movie_ids
        )
    with pytest.raises(CheckFailed, match="not sorted by score"):
        checks.check_rank_unseen(
            lambda *a: ranking(*a, reverse=False), scores, matrix, user_ids, movie_ids
        )
    with pytest.raises(CheckFailed, match="one entry per user"):
        checks.check_rank_unseen(lambda *a: [], scores, matrix, user_ids, movie_ids)
    with pytest.raises(CheckFailed, match=r"got NoneType$"):  # forgot to return: no len()
        checks.check_rank_unseen(lambda *a: None, scores, matrix, user_ids, movie_ids)


# --- figures -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def labelled(fig: Figure) -> bool:
    """True when every image/plot axis (not colour bars) has both axis labels."""
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return (
        bool(axes) and all(ax.get_xlabel() for ax in axes) and any(ax.get_ylabel() for ax in axes)
    )


def test_rating_heatmap_marks_missing_cells() -> None:
    frame = pd.DataFrame([[5.0, np.nan, 1.0], [np.nan, 3.0, np.nan]])
    fig = matrices.rating_heatmap(frame, column_groups=["a", "a", "b"])
    assert isinstance(fig, Figure) and labelled(fig)
    assert "50%" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="one label per column"):
        matrices.rating_heatmap(frame, column_groups=["a"])


def test_reconstruction_panel_states_the_finding() -> None:
    matrix = demo_matrix()[:5, :8]
    fig = matrices.reconstruction_panel(matrix, right_fixed_scores(matrix))
    assert labelled(fig) and "IS the input" in fig.get_suptitle()
    fig = matrices.reconstruction_panel(matrix, checks.reference_rank_k(matrix, 1))
    assert "differs from the input" in fig.get_suptitle()
    with pytest.raises(ValueError, match="shape"):
        matrices.reconstruction_panel(matrix, matrix[:, :2])


def test_spectrum_and_score_heatmaps() -> None:
    s = np.linalg.svd(demo_matrix(), compute_uv=False)
    fig = matrices.spectrum({"demo": s, "twice": 2 * s}, planted_rank=4, max_components=10)
    assert labelled(fig) and fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].lines[0].get_xdata()) == 10
    with pytest.raises(ValueError, match="positive"):
        matrices.spectrum([])
    panels = {1: demo_matrix(), "full": demo_matrix()}
    fig = matrices.score_heatmaps(panels)
    assert labelled(fig) and [ax.get_title() for ax in fig.axes[:2]] == ["k = 1", "full"]
    with pytest.raises(ValueError, match="one shape"):
        matrices.score_heatmaps({1: np.zeros((2, 2)), 2: np.zeros((2, 3))})


def test_k_curve_names_the_best_points() -> None:
    df = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "k": [1, 2, 1, 2],
            "rmse": [1.0, 0.9, 3.0, 2.0],
            "precision@10": [0.1, 0.05, 0.2, 0.3],
        }
    )
    fig = matrices.k_curve(df, chosen_k=2)
    assert labelled(fig)
    assert fig.axes[0].get_title() == "Lowest RMSE: a, 0.900 at k = 2"
    assert fig.axes[1].get_title() == "Highest precision@10: b, 0.300 at k = 2"
    with pytest.raises(ValueError, match="precision@N"):
        matrices.k_curve(df.drop(columns="precision@10"))
