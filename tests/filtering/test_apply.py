"""Applying strategies: shared fits, decisions named by leaf path, funnel, subsets, determinism."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import ConfigError, PreflightError
from curate.filtering.apply import apply_part, fit_filters, fit_key, funnel, load_fits
from curate.filtering.compose import parse_strategies
from curate.filtering.metadata import MetadataSource
from curate.filtering.standalone import filter_metadata, resolve_strategy
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import ENGLISH, rows, uid, write_part

MEDIAN = "tests.filtering.toy_filters:AboveMedian"
NAN = float("nan")


def _pool(tmp_path: Path) -> Path:
    """Two parts, 10 rows: uid i has L/14 score SCORES[i]; rows 1, 4 and 7 fail basic_filter."""
    scores = [0.9, 0.8, 0.1, 0.5, 0.5, 0.2, NAN, 0.7, 0.3, 0.5]
    texts = [ENGLISH] * 10
    texts[1], texts[4] = "two words", None
    widths = [300] * 10
    widths[7] = 150
    meta = tmp_path / "metadata"
    for stem, lo, hi in (("p0", 0, 5), ("p1", 5, 10)):
        part = rows(
            hi - lo, clip_l14_similarity_score=scores[lo:hi], text=texts[lo:hi], original_width=widths[lo:hi]
        )
        part["uid"] = [uid(i) for i in range(lo, hi)]
        part["status"] = ["success"] * (hi - lo)
        write_part(meta, stem, part)
    return meta


def _uids(path: Path) -> list[str]:
    return array_to_uids(read_subset(path))


CLIP30 = {"clip_score": {"model": "l14", "fraction": 0.3}}


def test_intersection_equals_the_and_of_each_baseline(tmp_path: Path) -> None:
    meta = _pool(tmp_path)
    # fraction 0.3 of 10: n = 3, sorted .9 .8 .7 .5 .5 .5 ... -> threshold 0.5 over the WHOLE pool
    filter_metadata(str(meta), "clip", CLIP30, tmp_path / "clip.npy", workers=1)
    assert _uids(tmp_path / "clip.npy") == [uid(i) for i in (0, 1, 3, 4, 7, 9)]
    filter_metadata(str(meta), "basic", "basic_filter", tmp_path / "basic.npy", workers=1)
    assert _uids(tmp_path / "basic.npy") == [uid(i) for i in (0, 2, 3, 5, 6, 8, 9)]
    both = {"all": [CLIP30, "basic_filter"]}
    summary = filter_metadata(str(meta), "both", both, tmp_path / "both.npy", workers=1)
    assert _uids(tmp_path / "both.npy") == [uid(i) for i in (0, 3, 9)]
    reverse = {"all": ["basic_filter", CLIP30]}
    filter_metadata(str(meta), "rev", reverse, tmp_path / "rev.npy", workers=1)
    assert (tmp_path / "rev.npy").read_bytes() == (tmp_path / "both.npy").read_bytes()
    assert summary["funnel"] == [
        {
            "step": "all.0.clip_score: clip_score(model=l14, fraction=0.3)",
            "removed_alone": 4,
            "removed_in_sequence": 4,
            "left": 6,
        },
        {
            "step": "all.1.basic_filter: basic_filter()",
            "removed_alone": 3,
            "removed_in_sequence": 3,
            "left": 3,
        },
    ]


def test_same_input_gives_byte_identical_subsets(tmp_path: Path) -> None:
    meta = _pool(tmp_path)
    both = {"all": [CLIP30, "basic_filter"]}
    filter_metadata(str(meta), "a", both, tmp_path / "a.npy", workers=1, decisions=tmp_path / "d1")
    filter_metadata(
        str(meta), "a", both, tmp_path / "b.npy", workers=2, decisions=tmp_path / "d2", rows_per_worker=1
    )
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    for stem in ("p0", "p1"):
        assert (tmp_path / "d1" / "a" / f"{stem}.parquet").read_bytes() == (
            tmp_path / "d2" / "a" / f"{stem}.parquet"
        ).read_bytes()


def test_decisions_columns_and_not_downloaded(tmp_path: Path) -> None:
    meta = _pool(tmp_path)
    table = pq.read_table(meta / "p1.parquet")
    status = ["success", "failed_to_download", "success", "success", "skipped"]
    pq.write_table(
        table.drop(["status"]).append_column("status", pa.array(status)),
        meta / "p1.parquet",
    )
    strategies = parse_strategies({"both": {"all": [CLIP30, "basic_filter"]}})
    source = MetadataSource(str(meta))
    fit_filters(strategies.values(), source, tmp_path / "fit")
    load_fits(strategies.values(), [tmp_path / "fit"])
    result = apply_part(strategies, source, "p1", tmp_path / "decisions", status_column="status")["both"]
    got = pq.read_table(tmp_path / "decisions" / "both" / "p1.parquet")
    assert got.column_names == [
        "uid",
        "keep",
        "reason",
        "downloaded",
        "all.0.clip_score.keep",
        "all.0.clip_score.score",
        "all.0.clip_score.reason",
        "all.1.basic_filter.keep",
        "all.1.basic_filter.score",
        "all.1.basic_filter.reason",
    ]
    # uids 5..9: scores .2 nan .7 .3 .5; 7 is 150 px wide; 6 failed to download, 9 was skipped
    assert got.column("keep").to_pylist() == [False, False, False, False, False]
    assert got.column("reason").to_pylist() == [
        "all.0.clip_score: clip_l14_similarity_score < 0.5",
        "not downloaded",
        "all.1.basic_filter: image side < 200 px (or size unknown)",
        "all.0.clip_score: clip_l14_similarity_score < 0.5",
        "not downloaded",
    ]
    assert got.column("downloaded").to_pylist() == [True, False, True, True, False]
    assert got.column("all.0.clip_score.keep").to_pylist() == [False, False, True, False, True]
    assert result.steps == [
        ["not downloaded", 2, 2],
        ["all.0.clip_score: clip_score(model=l14, fraction=0.3)", 3, 2],
        ["all.1.basic_filter: basic_filter()", 1, 1],
    ]
    assert funnel([result.stats()])["funnel"][-1]["left"] == 0


def test_fits_are_shared_resumed_and_never_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = _pool(tmp_path)
    log = tmp_path / "log.txt"
    monkeypatch.setenv("CURATE_TEST_LOG", str(log))
    strategies = parse_strategies(
        {
            "a": {MEDIAN: None},
            "b": {"all": [{MEDIAN: {}}, "basic_filter"]},  # same filter, same params: one fit
            "c": {MEDIAN: {"column": "clip_b32_similarity_score"}},  # other params: its own fit
        }
    )
    root = tmp_path / "fit"
    stale = root / f".{fit_key(strategies['a'].leaves()[0].filter)}.abc"  # a fit killed half-way
    stale.mkdir(parents=True)
    dirs = fit_filters(strategies.values(), MetadataSource(str(meta)), root)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        d.name for d in dirs.values()
    )
    assert len(dirs) == 2 and log.read_text().splitlines() == ["fit", "fit"]
    fit_filters(strategies.values(), MetadataSource(str(meta)), root)  # present: skipped
    assert log.read_text().splitlines() == ["fit", "fit"]
    assert all((d / "_fit.json").exists() for d in dirs.values())


def test_preflight_names_missing_columns_before_any_fit(tmp_path: Path) -> None:
    meta = _pool(tmp_path)
    with pytest.raises(PreflightError) as exc:
        filter_metadata(
            str(meta), "x", {"clip_score": {"model": "h14", "threshold": 0.3}}, tmp_path / "x.npy"
        )
    (problem,) = exc.value.problems
    assert problem.startswith(
        "--strategy clip_score: needs column clip_h14_similarity_score, which the metadata in"
    )
    assert "available: " in problem and "clip_l14_similarity_score" in problem
    assert not (tmp_path / "x.fit").exists() and not (tmp_path / "x.npy").exists()


def test_strategy_argument_forms(tmp_path: Path) -> None:
    assert resolve_strategy("basic_filter") == ("basic_filter", "basic_filter")
    assert resolve_strategy("clip_score_l14_30") == ("clip_score_l14_30", CLIP30)  # pipelines/datacomp_small
    assert resolve_strategy("{clip_score: {model: l14, fraction: 0.3}}") == ("strategy", CLIP30)
    assert resolve_strategy("tests.filtering.toy_filters:AboveMedian") == ("strategy", MEDIAN)
    one = tmp_path / "top.yaml"
    one.write_text("all: [basic_filter, {clip_score: {model: b32, threshold: 0.28}}]\n")
    assert resolve_strategy(str(one))[0] == "top"
    pipeline = Path(__file__).parents[2] / "pipelines" / "datacomp_small.yaml"
    assert resolve_strategy(f"{pipeline}:clip_score_b32_30")[1] == {
        "clip_score": {"model": "b32", "fraction": 0.3}
    }
    for bad, message in [
        (str(tmp_path / "nope.yaml"), "no such file"),
        (f"{pipeline}:nope", "has no strategy 'nope'"),
        ("{clip_score: [", "not valid YAML"),
        ("[1, 2]", "expected a built-in filter name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_strategy(bad)
