"""The benchmark code runs on tiny inputs, and the committed results have the agreed shape.

Nothing here asserts a timing: the benchmarks measure, tests only check that
the measuring code works. Figures and checks of notebook 07 are tested on the
committed results file.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ sits next to the package but is not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import SECTIONS, quality, rebuild, responsiveness  # noqa: E402
from benchmarks import workbook as wb_section  # noqa: E402
from benchmarks.__main__ import main as bench_main  # noqa: E402
from benchmarks._child import measure_build, measure_store_path  # noqa: E402
from benchmarks._common import (  # noqa: E402
    RESULTS_PATH,
    emit_child_result,
    format_table,
    machine_facts,
    parse_child_result,
)
from benchmarks._postgres import why_unavailable  # noqa: E402
from benchmarks._serve import FirstThenBuild  # noqa: E402
from benchmarks._wrk import WrkMissingError, lua_script, require_wrk  # noqa: E402
from labsupport.classroom.checks import CheckFailed  # noqa: E402
from labsupport.classroom.checks import scaling as checks  # noqa: E402
from labsupport.classroom.plots import scaling as figs  # noqa: E402
from labsupport.data import split_per_user, synthetic_ratings  # noqa: E402
from labsupport.recommender import build_model, precision_recall_at_k  # noqa: E402

TINY = (60, 40, 900)  # users, movies, ratings


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return figs.load_results(RESULTS_PATH)


@pytest.fixture
def close_figures() -> Iterator[None]:
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


# -- the measuring code, on tiny inputs ------------------------------------------------


@pytest.mark.parametrize("design", ["sparse", "seed"])
def test_measure_build_reports_times_and_memory(design: str) -> None:
    out = measure_build(TINY, design, repeats=2)
    assert out["design"] == design
    assert out["n_ratings"] == TINY[2]
    assert len(out["seconds"]) == 2 and all(t >= 0 for t in out["seconds"])
    assert out["peak_rss_mib"] > 0


def test_measure_build_rejects_unknown_design() -> None:
    with pytest.raises(ValueError, match="design must be one of"):
        measure_build(TINY, "dense")


STORE_KEYS = {"load_seconds", "read_seconds", "build_seconds", "reread_seconds"}


def test_store_path_times_read_and_build_separately() -> None:
    out = measure_store_path(TINY)
    assert out["backend"] == "sqlite"
    assert out["n_ratings"] == TINY[2]
    assert 0.0 <= out["read_share"] <= 1.0
    assert set(out) >= STORE_KEYS
    assert 0.0 <= out["reread_share"] <= 1.0


def test_store_path_on_a_throwaway_postgres() -> None:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(f"no throwaway PostgreSQL: {reason}")
    sqlite = measure_store_path(TINY)
    out = measure_store_path(TINY, backend="postgres")
    assert out["backend"] == "postgres"
    assert set(out) == set(sqlite)  # the same row as SQLite's
    assert out["n_ratings"] == TINY[2]
    assert 0.0 <= out["read_share"] <= 1.0 and 0.0 <= out["reread_share"] <= 1.0


def test_store_path_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        measure_store_path(TINY, backend="mysql")


def test_rebuild_records_postgres_as_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_child(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("no child may run when no cluster can be had")

    monkeypatch.setattr(rebuild, "why_unavailable", lambda: "no initdb/pg_ctl found (test)")
    monkeypatch.setattr(rebuild, "run_json_child", no_child)
    out = rebuild.run({"shapes": [], "store_backends": ["postgres"]})
    assert "SKIPPED: no initdb/pg_ctl found (test)" in capsys.readouterr().out
    assert out["store_postgres"]["skipped"] == "no initdb/pg_ctl found (test)"
    assert out["store"] == {}
    (target,) = out["targets"]
    assert target["name"].startswith("PostgreSQL:") and target["name"].endswith("ML-1M")
    assert target["met"] is None  # not judged, and not a failure
    assert target["measured"] == "skipped: no initdb/pg_ctl found (test)"


def test_postgres_target_is_judged_on_the_incremental_share() -> None:
    row = {
        "shape": "ml-1m",
        "read_seconds": 0.9,
        "read_share": 0.75,
        "reread_seconds": 0.02,
        "build_seconds": 0.3,
        "reread_share": 0.062,
    }
    (met,) = rebuild._targets({}, {}, row)
    assert met["met"] is True and met["value"] == 0.062
    assert "0.020 s" in met["measured"] and "0.30 s build" in met["measured"]
    assert "0.90 s = 75%" in met["measured"]
    (missed,) = rebuild._targets({}, {}, {**row, "reread_share": 0.6})
    assert missed["met"] is False
    (failed,) = rebuild._targets({}, {}, {"shape": "ml-1m", "error": "exit code 1: boom"})
    assert failed["met"] is False and "boom" in failed["measured"]


def test_ranking_metrics_by_hand() -> None:
    from labsupport._types import RatingArrays

    test = RatingArrays.from_columns([1, 1, 2], [10, 11, 12], [5, 4, 3])
    lists = {1: [10, 99, 11], 2: [98, 97, 96]}
    m = quality.ranking_metrics(lists, test, k=3)
    assert m["users"] == 2
    assert m["precision"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["recall"] == pytest.approx((1 + 0) / 2)
    dcg = 1 + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / (1 + 1 / math.log2(3)) / 2)
    assert m["map"] == pytest.approx((1 + 2 / 3) / 2 / 2)


def test_quality_on_a_tiny_synthetic_split() -> None:
    train, test = split_per_user(synthetic_ratings(*TINY, seed=1), seed=1)
    rows = quality.evaluate(train, test, k=5)
    assert [r["method"] for r in rows] == quality.DEFAULTS["methods"]
    for row in rows:
        for name in ("precision", "recall", "ndcg", "map"):
            assert 0.0 <= row[name] <= 1.0
    default = rows[0]
    package = precision_recall_at_k(build_model(train), train, test, k=5)
    assert default["precision"] == pytest.approx(package["precision@5"], abs=1e-4)
    assert default["rmse"] > 0


def test_lua_script_names_the_target(tmp_path: Path) -> None:
    text = lua_script(tmp_path, target="recommendations", n_users=42, seed=3).read_text()
    assert "local n_users = 42" in text and "math.randomseed(3)" in text
    assert "/recommendations/" in text and "done = function" in text


def test_missing_wrk_is_reported_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(WrkMissingError, match="apt-get install -y wrk"):
        require_wrk()
    out = responsiveness.run({"shapes": {}})
    assert "wrk is not installed" in out["skipped"]


def test_responsiveness_row_summarises_repetitions() -> None:
    def wrk(p99: float | None, rps: float, t0: float) -> dict[str, Any]:
        return {
            "p50_ms": None if p99 is None else p99 / 4,
            "p99_ms": p99,
            "max_ms": p99,
            "rps": rps,
            "requests": int(rps),
            "errors": 0,
            "wrk_cpu_share": 0.1,
            "started_at": t0,
            "finished_at": t0 + 1,
        }

    run = {
        "idle": wrk(10.0, 1000.0, 0.0),
        "busy": wrk(15.0, 800.0, 2.0),
        "build_status": "complete",
        "build_seconds": 3.0,
        "inside": True,
        "coverage": 1.0,
        "builds": 2,
        "server_cpu_share": 0.9,
        "child_cpu_share": 0.0,
    }
    row = responsiveness._row("thread", [run, run, run])
    assert row["p99_ratio"] == pytest.approx(1.5)
    assert row["rps_ratio"] == pytest.approx(0.8)
    assert row["meets"] is True
    blocked = {**run, "busy": wrk(None, 0.0, 2.0)}
    assert responsiveness._row("seed-async", [blocked])["meets"] is False
    outside = {**run, "inside": False, "coverage": 0.5}
    assert responsiveness._row("thread", [outside])["meets"] is None  # no verdict


def test_coverage_of_the_window_by_builds() -> None:
    builds: list[dict[str, Any]] = [
        {"started_at": 0.0, "finished_at": 1.0},
        {"started_at": 1.1, "finished_at": 2.5},
        {"started_at": 2.6, "finished_at": None},  # still running
    ]
    assert responsiveness.coverage(builds, 0.5, 3.0) == pytest.approx((0.5 + 1.4 + 0.4) / 2.5)


def test_first_then_build_installs_then_rebuilds() -> None:
    ratings = synthetic_ratings(*TINY, seed=2)
    prebuilt = build_model(ratings)
    build = FirstThenBuild(prebuilt, "thread")
    first = build(ratings, version=7, progress=lambda f: None)
    assert first.version == 7 and first.user_factors is prebuilt.user_factors
    second = build(ratings, version=8, progress=lambda f: None)
    assert second.version == 8 and second.user_factors is not prebuilt.user_factors


def test_time_notebook_records_each_cell(tmp_path: Path) -> None:
    path = wb_section._floor_notebook(tmp_path, "tiny.ipynb", "x = 1")
    out = wb_section.time_notebook(path, timeout=60)
    assert out["status"] == "ok"
    assert len(out["cells"]) == 1 and out["cells"][0]["seconds"] >= 0


def test_format_table_aligns_columns() -> None:
    from benchmarks._common import fmt

    text = format_table(
        [{"a": "x", "b": 1.5}, {"a": "long", "b": None}],
        [("a", "name", fmt("")), ("b", "value", fmt(".1f"))],
    )
    lines = text.splitlines()
    assert lines[0].startswith("name") and len({len(line) for line in lines}) == 1
    assert lines[-1].rstrip().endswith("-")


def test_child_result_survives_the_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    emit_child_result({"ports": {"thread": 8000}, "pid": 7})
    line = capsys.readouterr().out.strip()
    assert parse_child_result(line) == {"ports": {"thread": 8000}, "pid": 7}
    assert parse_child_result("INFO: Started server process") is None


def test_machine_facts_name_the_machine() -> None:
    facts = machine_facts()
    assert {"cpu_count", "cpu_model", "python", "versions", "date"} <= set(facts)
    assert facts["versions"]["numpy"]


# -- the committed results file ---------------------------------------------------------


def test_committed_results_follow_the_schema(results: dict[str, Any]) -> None:
    assert RESULTS_PATH.is_file()
    assert results["schema"] == 1
    machine = results["machine"]
    for key in ("cpu_count", "cpu_model", "python", "date", "versions"):
        assert machine[key], key
    assert {"numpy", "scipy"} <= set(machine["versions"])
    assert set(results["sections"]) == set(SECTIONS)
    for name, section in results["sections"].items():
        assert section.get("rows") or section.get("skipped"), name
        for target in section["targets"]:
            assert {"name", "target", "measured", "met"} <= set(target), name
    json.dumps(results)  # machine-readable all the way down


def test_print_shows_every_committed_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--print"]) == 0
    out = capsys.readouterr().out
    for name in SECTIONS:
        assert f"== {name}: " in out
    assert "From SQLite to a model:" in out and "recommend() in-process" in out


def test_committed_store_rows_keep_their_keys(results: dict[str, Any]) -> None:
    section = results["sections"]["rebuild"]
    assert STORE_KEYS | {"read_share", "reread_share"} <= set(section["store"])  # notebook 07
    postgres = section["store_postgres"]
    assert postgres.get("skipped") or STORE_KEYS | {"reread_share"} <= set(postgres)
    names = [t["name"] for t in section["targets"]]
    assert any(name.startswith("PostgreSQL: incremental read") for name in names)


def test_committed_rebuild_rows_cover_the_four_shapes(results: dict[str, Any]) -> None:
    rows = results["sections"]["rebuild"]["rows"]
    shapes = {r["shape"] for r in rows if r["design"] == "sparse"}
    assert shapes == {"ml-100k", "ml-1m", "ml-10m", "ml-25m"}
    assert {r["shape"] for r in rows if r["design"] == "seed"} == {"ml-100k", "ml-1m"}


# -- notebook 07's figures and checks ---------------------------------------------------


@pytest.mark.usefixtures("close_figures")
@pytest.mark.parametrize("make", [figs.rebuild_figure, figs.latency_figure])
def test_figures_are_labelled(make: Any, results: dict[str, Any]) -> None:
    fig = make(results)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_tables_have_the_documented_columns(results: dict[str, Any]) -> None:
    assert list(figs.build_table(results).columns) == [
        "shape",
        "design",
        "ratings",
        "seconds",
        "peak_mib",
    ]
    assert "p99_x_idle" in figs.latency_table(results).columns
    assert "precision@10" in figs.quality_table(results).columns
    cold = figs.cold_start_table(results)
    assert cold.index[-1].startswith("damped mean (10 pseudo-ratings")  # the former chart last
    shipped = next(name for name in cold.index if name.startswith("model.popular"))
    assert (cold.loc[shipped] >= cold.loc["most rated"] - 1e-9).all()


@pytest.mark.usefixtures("close_figures")
def test_the_fold_in_drift_figure_has_a_panel_per_data_set(results: dict[str, Any]) -> None:
    fig = figs.fold_in_drift_figure(results)
    datasets = {r["dataset"] for r in results["sections"]["quality"]["fold_in_drift"]}
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(datasets)
    assert all(len(ax.get_lines()) == 3 for ax in fig.axes)


def test_load_results_explains_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make bench"):
        figs.load_results(tmp_path / "nope.json")


def test_check_speedup(results: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    right = checks.expected_speedup(results)
    checks.check_speedup(right, results)
    assert capsys.readouterr().out.startswith("\u2714")
    with pytest.raises(CheckFailed, match="inverse"):
        checks.check_speedup(1 / right, results)
    with pytest.raises(CheckFailed, match="expected about"):
        checks.check_speedup(right * 2, results)
    with pytest.raises(CheckFailed, match="one number"):
        checks.check_speedup("fast", results)


def test_check_growth_exponent(results: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    right = checks.expected_growth_exponent(results)
    checks.check_growth_exponent(right, results)
    assert "slope" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="log10"):
        checks.check_growth_exponent(right + 0.5, results)


def test_notebook_answers_pass_their_checks(results: dict[str, Any]) -> None:
    import numpy as np

    from labsupport.classroom.workbook import notebook_parameters
    from labsupport.data import SHAPES

    params = notebook_parameters(ROOT / "notebooks" / "07_scaling.ipynb")
    assert params["RESULTS_FILE"] is None
    assert params["FOCUS"] in SHAPES
    table = figs.build_table(results)
    at = table[table["shape"] == params["FOCUS"]].set_index("design")["seconds"]
    checks.check_speedup(float(at["seed"] / at["sparse"]), results)
    sparse = table[table["design"] == "sparse"]
    slope = np.polyfit(np.log10(sparse["ratings"]), np.log10(sparse["seconds"]), 1)[0]
    checks.check_growth_exponent(float(slope), results)
