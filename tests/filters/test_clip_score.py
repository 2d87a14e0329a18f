"""clip_score (reference §2.7): inclusive float32 threshold, pool-wide fraction cut, ties kept, NaN never."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curate.errors import ConfigError
from curate.filtering.compose import parse_strategy
from curate.filtering.standalone import filter_metadata
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import batch, rows, uid, write_part

NAN = float("nan")


def _subset(tmp_path: Path, expr: dict, name: str = "s") -> list[str]:
    out = tmp_path / f"{name}.npy"
    filter_metadata(str(tmp_path / "metadata"), name, expr, out, workers=1)
    return array_to_uids(read_subset(out))


def _two_parts(tmp_path: Path, scores: list[float]) -> None:
    """Scores split over two parts (DataComp's fraction is over the whole pool, not per part)."""
    half = len(scores) // 2
    first = rows(half, clip_l14_similarity_score=scores[:half])
    second = rows(len(scores) - half, clip_l14_similarity_score=scores[half:])
    second["uid"] = [uid(i) for i in range(half, len(scores))]
    write_part(tmp_path / "metadata", "part0", first)
    write_part(tmp_path / "metadata", "part1", second)


def test_threshold_is_inclusive_and_nan_fails() -> None:
    strategy = parse_strategy("s", {"clip_score": {"model": "l14", "threshold": 0.25}})
    ev = strategy.evaluate(batch(rows(4, clip_l14_similarity_score=[0.25, 0.2499, 0.3, NAN])))
    assert ev.keep.tolist() == [True, False, True, False]
    verdict = ev.leaves["clip_score"]
    assert verdict.reason.tolist() == [
        None,
        "clip_l14_similarity_score < 0.25",
        None,
        "clip_l14_similarity_score is missing (NaN)",
    ]
    assert np.isnan(verdict.score[3]) and verdict.score[0] == np.float32(0.25)


def test_threshold_compares_in_float32_like_the_reference() -> None:
    # float32(0.7) < 0.7: numpy 1.23 compares a float32 column with a float32 threshold, so it is kept
    assert float(np.float32(0.7)) < 0.7
    strategy = parse_strategy("s", {"clip_score": {"model": "b32", "threshold": 0.7}})
    ev = strategy.evaluate(batch(rows(2, clip_b32_similarity_score=[0.7, 0.6999999])))
    assert ev.keep.tolist() == [True, False]


def test_fraction_cut_over_the_whole_pool_keeps_ties(tmp_path: Path) -> None:
    # N=10, fraction 0.3: n = 3; sorted descending (NaN last): .9 .8 .5 .5 .5 .3 .2 .1 nan nan;
    # the element at index 3 is 0.5, so every 0.5 is kept: 5 rows although 30% is 3.
    scores = [0.9, 0.5, 0.5, NAN, 0.1, 0.5, 0.3, 0.2, 0.8, NAN]
    _two_parts(tmp_path, scores)
    got = _subset(tmp_path, {"clip_score": {"model": "l14", "fraction": 0.3}})
    assert got == [uid(i) for i in (0, 1, 2, 5, 8)]
    # fraction 0.1: n = 1 -> threshold 0.8 (the 2nd largest): two rows
    assert _subset(tmp_path, {"clip_score": {"model": "l14", "fraction": 0.1}}, "t") == [uid(0), uid(8)]
    # fraction 0.29: n = int(2.9) = 2 (floor) -> 0.5 again
    assert len(_subset(tmp_path, {"clip_score": {"model": "l14", "fraction": 0.29}}, "u")) == 5


def test_fraction_cut_landing_on_nan_keeps_nothing(tmp_path: Path) -> None:
    # n = 5; the 6th largest is NaN (only two real scores): the threshold is NaN, nothing passes
    _two_parts(tmp_path, [NAN] * 8 + [0.1, 0.2])
    assert _subset(tmp_path, {"clip_score": {"model": "l14", "fraction": 0.5}}) == []


def test_fraction_one_keeps_every_scored_row(tmp_path: Path) -> None:
    _two_parts(tmp_path, [0.1, NAN, 0.3, 0.2])
    assert _subset(tmp_path, {"clip_score": {"model": "l14", "fraction": 1.0}}) == [uid(0), uid(2), uid(3)]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"model": "l14"}, "clip_score: give exactly one of threshold or fraction"),
        ({"model": "l14", "threshold": 0.3, "fraction": 0.3}, "clip_score: give exactly one"),
        ({"model": "l14", "fraction": 0}, "clip_score.fraction: Input should be greater than 0"),
        ({"model": "l14", "fraction": 1.5}, "clip_score.fraction: Input should be less than or equal to 1"),
        ({"model": "L/14", "threshold": 0.3}, "clip_score.model: String should match pattern"),
        ({"threshold": 0.3}, "clip_score: give exactly one of model or column"),
        (
            {"model": "l14", "column": "x", "threshold": 0.3},
            "clip_score: give exactly one of model or column",
        ),
        ({"model": "l14", "threshold": 0.3, "arch": "l14"}, "clip_score.arch: unknown parameter"),
    ],
)
def test_bad_params_name_the_key(params: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_strategy("s", {"clip_score": params})
    assert any(p.startswith(f"strategies.s.{problem}") for p in exc.value.problems), exc.value.problems


def test_any_embed_model_name_or_column() -> None:
    strategy = parse_strategy("s", {"clip_score": {"model": "tiny", "threshold": 0.5}})
    assert strategy.columns() == ["clip_tiny_similarity_score"]
    pool_own = {"clip_score": {"column": "pool_clip_l14_similarity_score", "threshold": 0.5}}
    ev = parse_strategy("s", pool_own).evaluate(batch(rows(2, pool_clip_l14_similarity_score=[0.5, 0.4])))
    assert ev.keep.tolist() == [True, False]
