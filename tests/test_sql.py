"""`curate sql`: views over a real small run (download over loopback + filter stage), every named query
of sql/ answered and checked against the run's own files, read-only refusal, outputs and errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate import sql
from curate.cli import app
from curate.errors import CurateError
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import uid


@pytest.fixture(scope="module")
def run(small_run: Path) -> Path:
    return small_run


def _rows(run: Path, text: str, **params: str) -> list[dict]:
    query = sql.resolve_query(text)
    con, views = sql.connect(run, wanted=query.text)
    cursor = sql.execute(con, views, query, sql.bind_params(query, params))
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def test_views_hold_every_table_of_the_run(run: Path) -> None:
    assert _rows(run, "SELECT count(*) AS n FROM samples")[0]["n"] == 10
    parts = {r["part"] for r in _rows(run, "SELECT DISTINCT part FROM samples")}
    assert parts == {"00000000", "00000001", "00000002"}
    shards = _rows(run, "SELECT shard, successes FROM shards ORDER BY shard")
    assert [s["successes"] for s in shards] == [4, 4, 1]
    decided = _rows(run, "SELECT strategy, count(*) AS n FROM decisions GROUP BY ALL ORDER BY strategy")
    assert decided == [{"strategy": "basic", "n": 10}, {"strategy": "top", "n": 10}]
    top = sorted(r["uid"] for r in _rows(run, "SELECT uid FROM subsets WHERE strategy = 'top'"))
    assert top == array_to_uids(read_subset(run / "subsets" / "top.npy"))
    ev = _rows(run, "SELECT strategy, key, main_metric FROM eval ORDER BY key")
    assert ev == [
        {"strategy": "top", "key": "cifar10", "main_metric": 0.25},
        {"strategy": "top", "key": "fairness/fairface", "main_metric": None},
    ]
    assert _rows(run, "stage_timings") == [
        {"stage": "download", "status": "done", "shards": 1, "seconds": 2.5, "items_per_s": None}
    ]


def test_funnel_matches_the_decision_files(run: Path) -> None:
    rows = {(r["strategy"], r["step"]): r for r in _rows(run, "funnel")}
    assert set(rows) == {("top", "clip_score"), ("basic", "basic_filter")}
    decisions = pa.concat_tables(
        pq.read_table(p) for p in sorted((run / "decisions" / "top").glob("*.parquet"))
    )
    keep = decisions.column("clip_score.keep").to_pylist()
    top = rows[("top", "clip_score")]
    assert top["rows"] == 10 and top["downloaded"] == 9
    assert top["removed_alone"] == keep.count(False) == 4  # DataComp's fraction cut keeps >= the 6th score
    assert top["kept"] == len(read_subset(run / "subsets" / "top.npy")) == 5  # 4..8; 9 was not downloaded


def test_named_queries_answer_what_the_rows_say(run: Path) -> None:
    hist = _rows(run, "clip_score_histogram", width="0.25")
    assert [(h["bin_start"], h["rows"]) for h in hist] == [(0.0, 3), (0.25, 2), (0.5, 3), (0.75, 2)]
    words = {r["words"]: r["rows"] for r in _rows(run, "caption_lengths")}
    assert words == {"null": 1, "empty": 1, "1-2 words": 3, "3-5 words": 1, "6-10 words": 4}
    langs = {r["language"]: r["sampled_rows"] for r in _rows(run, "languages")}
    assert langs["en"] >= 5 and langs["fr"] == 1 and langs["(empty)"] == 2
    dups = _rows(run, "duplicate_groups")
    assert len(dups) == 1 and dups[0]["rows"] == 2 and dups[0]["first_uids"] == [uid(0), uid(6)]
    assert _rows(run, "url_hosts") == [{"host": "127.0.0.1", "rows": 10, "pct": 100.0}]
    small = {r["size_class"]: 0 for r in _rows(run, "small_images")}
    for r in _rows(run, "small_images", min_side="200"):
        small[r["size_class"]] += r["rows"]
    assert small == {"under min_side": 3, "at least min_side": 7}  # 150, 199 and 50 are under 200
    extremes = _rows(run, "extreme_scores", n="2")
    assert [(e["end_"], e["uid"]) for e in extremes] == [
        ("highest", uid(9)),
        ("highest", uid(8)),
        ("lowest", uid(0)),
        ("lowest", uid(1)),
    ]
    both = _rows(run, "strategy_overlap", a="top", b="basic")[0]
    basic = set(array_to_uids(read_subset(run / "subsets" / "basic.npy")))
    top = set(array_to_uids(read_subset(run / "subsets" / "top.npy")))
    assert (both["size_a"], both["size_b"], both["shared"]) == (len(top), len(basic), len(top & basic))
    assert _rows(run, "eval_scores")[0] == {
        "strategy": "top",
        "key": "cifar10",
        "dataset": "CIFAR-10",
        "main_metric": 0.25,
    }


def test_sweep_results_per_strategy_and_seed(run: Path) -> None:
    rows = _rows(run, "SELECT strategy, seed, key, main_metric FROM sweep_eval ORDER BY strategy, seed")
    assert [(r["strategy"], r["seed"], r["main_metric"]) for r in rows] == [
        ("basic", 0, 0.1),
        ("basic", 1, 0.2),
        ("top", 0, 0.25),
        ("top", 1, 0.35),
    ]
    scores = _rows(run, "sweep_scores")
    assert [(r["strategy"], r["seeds"], r["mean"], r["std"]) for r in scores] == [
        ("top", 2, 0.3, 0.0707),
        ("basic", 2, 0.15, 0.0707),
    ]


def test_every_named_query_is_tested_here() -> None:
    source = Path(__file__).read_text()
    assert [name for name in sql.library() if f'"{name}"' not in source] == []


def test_a_plain_metadata_directory_has_samples(run: Path) -> None:
    con, views = sql.connect(metadata=str(run / "metadata"))
    assert views.present == ["samples"]
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (10,)


def test_only_select_runs_and_missing_tables_are_explained(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    for text in (f"COPY (SELECT 1) TO '{target}'", "CREATE TABLE t AS SELECT 1", "ATTACH 'x.db'"):
        with pytest.raises(CurateError, match="only SELECT"):
            _rows(run, text)
    assert not target.exists()
    with pytest.raises(CurateError, match="exactly one SQL statement"):
        _rows(run, "SELECT 1; SELECT 2")
    empty = tmp_path / "fresh"
    (empty / "metadata").mkdir(parents=True)
    with pytest.raises(CurateError, match="decisions has no .* yet \\(written by the filter stage\\)"):
        _rows(empty, "funnel")
    with pytest.raises(CurateError, match="give --param a=VALUE"):
        sql.bind_params(sql.parse_query("q", "SELECT $a"), {})
    with pytest.raises(CurateError, match="unknown parameter"):
        sql.bind_params(sql.resolve_query("funnel"), {"nope": "1"})


def test_cli_outputs_and_errors(run: Path, tmp_path: Path) -> None:
    cli = CliRunner()
    shown = cli.invoke(
        app, ["sql", "--run", str(run), "SELECT uid FROM samples ORDER BY uid", "--limit", "3"]
    )
    assert shown.exit_code == 0, shown.output
    assert uid(2) in shown.output and uid(3) not in shown.output and "more exist" in shown.output
    for fmt in ("csv", "parquet", "json"):
        out = tmp_path / f"funnel.{fmt}"
        res = cli.invoke(
            app, ["sql", "--run", str(run), "sql/funnel.sql", "--format", fmt, "--out", str(out)]
        )
        assert res.exit_code == 0, res.output
        assert "2 rows" in res.output and out.stat().st_size > 0
    assert pq.read_table(tmp_path / "funnel.parquet").num_rows == 2
    assert len((tmp_path / "funnel.json").read_text().splitlines()) == 2
    listed = cli.invoke(app, ["sql", "--list"])
    assert listed.exit_code == 0 and "strategy_overlap" in listed.output
    for args, message in (
        (["sql", "--run", str(run), "SELEC nonsense"], "does not parse"),
        (["sql", "--run", str(run), "SELECT * FROM nowhere"], "nowhere"),
        (["sql", "--run", str(tmp_path), "funnel"], "not a run directory"),
        (["sql", "--run", str(run), "funnel", "--format", "xml", "--out", "x"], "--format xml"),
        (["sql", "--run", str(run), "missing.sql"], "no such file"),
        (["sql", "--run", str(run), "strategy_overlap", "--param", "a"], "expected NAME=VALUE"),
    ):
        res = cli.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)
