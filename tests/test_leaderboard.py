"""The leaderboard: the significance rule on hand-made numbers, the headline choice, the ranking, the
files (JSON, CSV) and the terminal table, from hand-written scores.json files."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from curate import leaderboard
from curate.leaderboard import build, headline_metric, welch


def test_welch_on_hand_made_numbers() -> None:
    # means 0.30 vs 0.20, variances 1e-4 and 4e-4 over 3 seeds: se = sqrt((1e-4 + 4e-4) / 3) = 0.01291
    found = welch([0.29, 0.30, 0.31], [0.18, 0.20, 0.22])
    assert found is not None
    assert found.diff == pytest.approx(0.10)
    assert found.t == pytest.approx(0.10 / math.sqrt(5e-4 / 3))  # 7.746
    # Welch-Satterthwaite: (5e-4/3)^2 / ((1e-4/3)^2/2 + (4e-4/3)^2/2) = 2.941
    assert found.df == pytest.approx((5e-4 / 3) ** 2 / ((1e-4 / 3) ** 2 / 2 + (4e-4 / 3) ** 2 / 2))
    assert found.p == pytest.approx(0.0024, abs=2e-4) and found.beats  # scipy.stats.t.sf(7.746, 2.941)
    # the same difference within wide seed noise: not beyond it
    noisy = welch([0.20, 0.30, 0.40], [0.10, 0.20, 0.30])
    assert noisy is not None and noisy.diff == pytest.approx(0.10)
    assert noisy.p == pytest.approx(0.1439, abs=1e-3) and not noisy.beats  # t = 1.2247, df = 4
    worse = welch([0.10, 0.11], [0.20, 0.21])
    assert worse is not None and worse.p > 0.99 and not worse.beats
    assert welch([0.5], [0.1, 0.2]) is None and welch([0.5, 0.6], [0.1]) is None  # no noise estimate
    flat = welch([0.1, 0.1], [0.1, 0.1])  # chance level on both sides, no spread: not better
    assert flat is not None and flat.p == 1.0 and not flat.beats and flat.t is None
    up = welch([0.2, 0.2], [0.1, 0.1])
    assert up is not None and up.p == 0.0 and up.beats


def test_headline_is_imagenet_then_openclipart_then_average() -> None:
    assert headline_metric(["cifar10", "imagenet1k", "openclipart"])[0] == "imagenet1k"
    assert headline_metric(["mnist", "openclipart"])[0] == "openclipart"
    assert headline_metric(["mnist"])[0] == "Average"


def _scores(mnist: float, openclipart: float) -> dict[str, Any]:
    return {
        "aggregates": {"Average": {"score": mnist, "covered": "1/38", "partial": True, "missing": []}},
        "tasks": {"mnist": {"dataset": "MNIST", "main_metric": mnist}},
        "extra": {"openclipart": {"dataset": "openclipart", "main_metric": openclipart}},
    }


def _board(tmp_path: Path, results: dict[str, list[tuple[float, float]]], seeds: list[int]) -> dict[str, Any]:
    for strategy, per_seed in results.items():
        for seed, (mnist, oc) in zip(seeds, per_seed, strict=True):
            out = tmp_path / "sweep" / "eval" / strategy / f"seed{seed}"
            out.mkdir(parents=True)
            (out / "scores.json").write_text(json.dumps(_scores(mnist, oc)))
        (tmp_path / "subsets").mkdir(exist_ok=True)
        count = {"no_filter": 400, "top": 200, "lucky": 100}[strategy]
        (tmp_path / "subsets" / f"{strategy}.json").write_text(json.dumps({"rows": 400, "count": count}))
    about = {"pipeline": "p", "scale": "smoke", "official": False}
    keys = ["mnist", "openclipart"]
    return build(tmp_path / "sweep", tmp_path / "subsets", list(results), seeds, keys, "no_filter", about)


def test_board_ranks_by_headline_and_compares_with_the_baseline(tmp_path: Path) -> None:
    board = _board(
        tmp_path,
        {
            "no_filter": [(0.10, 0.20), (0.10, 0.22), (0.10, 0.18)],
            "top": [(0.12, 0.30), (0.10, 0.31), (0.11, 0.29)],
            "lucky": [(0.10, 0.45), (0.10, 0.05), (0.10, 0.40)],
        },
        seeds=[0, 1, 2],
    )
    assert board["headline"]["metric"] == "openclipart" and board["metrics"] == [
        "openclipart",
        "mnist",
        "Average",
    ]
    assert [r["strategy"] for r in board["rows"]] == ["top", "lucky", "no_filter"]  # by mean openclipart
    top, lucky, base = board["rows"]
    assert top["subset_size"] == 200 and top["pool_rows"] == 400 and top["seeds"] == [0, 1, 2]
    assert top["scores"]["openclipart"]["per_seed"] == [0.30, 0.31, 0.29]
    assert top["scores"]["openclipart"]["mean"] == pytest.approx(0.30)
    assert top["scores"]["openclipart"]["std"] == pytest.approx(0.01)
    assert top["scores"]["mnist"]["mean"] == pytest.approx(0.11)
    assert top["average_covered"] == "1/38" and top["average_partial"] is True
    assert top["versus_baseline"]["beats"] is True and top["versus_baseline"]["p"] < 0.01
    assert lucky["scores"]["openclipart"]["mean"] > base["scores"]["openclipart"]["mean"]
    assert lucky["versus_baseline"]["beats"] is False  # a higher mean, inside the seed noise
    assert base["versus_baseline"] is None
    assert "Welch" in board["rule"] and board["baseline"] == "no_filter"

    json_path, csv_path = leaderboard.write(board, tmp_path / "sweep")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(board))
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["strategy"] for r in rows] == ["top", "lucky", "no_filter"] and rows[0]["rank"] == "1"
    assert rows[0]["openclipart_per_seed"] == "0.3;0.31;0.29" and rows[0]["beats_baseline"] == "True"
    assert float(rows[1]["p_value"]) > 0.05 and rows[2]["beats_baseline"] == ""

    console = Console(width=200, record=True)
    console.print(leaderboard.table(board))
    text = console.export_text()
    assert "openclipart (headline)" in text and "(baseline)" in text and "yes (p=" in text
    assert "0.3000 ± 0.0100" in text and "(partial, 1/38)" in text and "UNOFFICIAL" in text


def test_one_seed_has_no_noise_estimate(tmp_path: Path) -> None:
    board = _board(tmp_path, {"no_filter": [(0.1, 0.2)], "top": [(0.1, 0.3)]}, seeds=[5])
    top = board["rows"][0]
    assert top["strategy"] == "top" and top["scores"]["openclipart"]["std"] is None
    assert top["versus_baseline"] is None
    assert leaderboard.verdict(top, "no_filter") == "n/a (< 2 seeds)"
