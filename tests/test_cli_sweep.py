"""`curate sweep pipelines/openclipart_sweep.yaml` for real on CPU, small: the first 240 candidates of
the openclipart pool, the filtering network trained first by openclipart_dfn.yaml (its run started by
the sweep), two strategies (no_filter and the network's top half) x two seeds at the `smoke` scale,
evaluated on the held-out openclipart task and digits; then a rerun that trains nothing. Argument
errors stop before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app

PIPELINE = Path(__file__).parents[1] / "pipelines" / "openclipart_sweep.yaml"
_openclipart = pytest.mark.skipif(
    not Path("/usr/share/openclipart/png").is_dir(),
    reason="needs apt-get install openclipart-png openclipart-svg",
)


def needs_openclipart(test: Any) -> Any:
    """The real sweep: openclipart installed, and time for both runs in the first test's setup (two
    pipelines, five trainings, four evaluations: a loaded 2-core machine takes several minutes)."""
    return pytest.mark.timeout(1500)(_openclipart(test))


SMALL = [
    "pool.max_samples=240",
    "download.number_sample_per_shard=240",
    "download.threads=4",
    "ray.num_cpus=2",
]
STRATEGIES = ["no_filter", "dfn_top50"]


def _command(tmp: Path) -> list[str]:
    dfn = [
        f"run_dir={tmp / 'dfn'}",
        *SMALL,
        "train.scale=smoke",
        "train.num_checkpoints=1",
        "train.workers=0",
    ]
    return [
        sys.executable,
        "-m",
        "curate.cli",
        "sweep",
        str(PIPELINE),
        f"run_dir={tmp / 'sweep'}",
        *SMALL,
        f"embed.models.0.from_pipeline.overrides=[{', '.join(dfn)}]",
        "train.num_checkpoints=1",
        "train.workers=0",
        "evaluate.generate_per_class=5",
        "--seeds",
        "2",
        "--scale",
        "smoke",
        "--strategies",
        ",".join(STRATEGIES),
    ]


@cache
def _sweep(tmp: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The sweep, then the same command again (once per session)."""
    first = subprocess.run(_command(tmp), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run(_command(tmp), capture_output=True, text=True, timeout=300)
    return first, again


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    tmp = tmp_path_factory.mktemp("sweep")
    first, again = _sweep(tmp)
    return tmp, first, again


@needs_openclipart
def test_sweep_trains_each_strategy_per_seed_and_ranks_them(swept: tuple[Path, Any, Any]) -> None:
    tmp, first, _ = swept
    run = tmp / "sweep"
    assert "Traceback" not in first.stderr
    board = json.loads((run / "sweep" / "leaderboard.json").read_text())
    assert board["scale"] == "smoke" and board["official"] is False and board["seeds"] == [0, 1]
    assert board["headline"]["metric"] == "openclipart" and board["baseline"] == "no_filter"
    assert board["metrics"] == ["openclipart", "mnist", "Average"]
    rows = {r["strategy"]: r for r in board["rows"]}
    assert sorted(rows) == sorted(STRATEGIES)
    for row in rows.values():
        for metric in board["metrics"]:
            values = row["scores"][metric]["per_seed"]
            assert len(values) == 2 and all(isinstance(v, float) and 0 <= v <= 1 for v in values), metric
        assert row["average_covered"] == "1/38" and row["average_partial"] is True
    means = [r["scores"]["openclipart"]["mean"] for r in board["rows"]]
    assert means == sorted(means, reverse=True)
    downloaded = rows["no_filter"]["subset_size"]
    assert 230 <= downloaded <= 240 and rows["no_filter"]["pool_rows"] == 240
    assert 121 <= rows["dfn_top50"]["subset_size"] <= 130  # int(240 x 0.5) + 1, and ties at the cut
    assert (
        rows["dfn_top50"]["versus_baseline"]["p"] is not None and rows["no_filter"]["versus_baseline"] is None
    )
    csv_rows = (run / "sweep" / "leaderboard.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and csv_rows[0].startswith("rank,strategy,subset_size,seeds,openclipart_mean")
    assert "openclipart (headline)" in first.stdout and "(baseline)" in first.stdout

    for strategy in STRATEGIES:
        for seed in (0, 1):
            info = json.loads((run / "sweep/train" / strategy / f"seed{seed}" / "info.json").read_text())
            assert info["status"] == "done" and info["scale"] == "smoke" and info["official"] is False
            assert info["argv"][info["argv"].index("--seed") + 1] == str(seed)
            assert info["data_dir"] == str(run / "resharded" / strategy)
            scores = json.loads((run / "sweep/eval" / strategy / f"seed{seed}" / "scores.json").read_text())
            assert scores["model"]["checkpoint"] == info["checkpoint"]
            assert set(scores["extra"]) == {"openclipart"} and scores["tasks"]["mnist"]["samples"] == 50
    assert not (run / "train").exists() and not (run / "eval").exists(), "curate run's folders are left alone"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert list(stages) == ["download", "embed", "filter", "reshard", "sweep_train", "sweep_evaluate"]
    assert len(stages["sweep_train"]["shards"]) == 4 and stages["sweep_evaluate"]["status"] == "done"


@needs_openclipart
def test_the_filtering_network_is_trained_first_and_scores_the_pool(swept: tuple[Path, Any, Any]) -> None:
    tmp, first, _ = swept
    dfn = tmp / "dfn"
    checkpoint = dfn / "train" / "trusted" / "checkpoints" / "epoch_latest.pt"
    assert checkpoint.is_file()
    dfn_stages = json.loads((dfn / "manifest.json").read_text())["stages"]
    assert list(dfn_stages) == ["download", "filter", "reshard", "train"]  # up to train, nothing else
    (model,) = yaml.safe_load((tmp / "sweep" / "config.yaml").read_text())["embed"]["models"]
    assert model["pretrained"] == str(checkpoint)
    assert model["from_pipeline"]["trained"] == dfn_stages["train"]["config_hash"]
    assert "embed.models.0 (dfn): the model of strategy 'trusted' of openclipart_dfn" in first.stderr
    part = pq.read_table(tmp / "sweep" / "metadata" / "00000000.parquet")
    scores = part["clip_dfn_similarity_score"].to_numpy(zero_copy_only=False)
    assert np.isfinite(scores).sum() >= 230 and np.nanstd(scores) > 0
    assert "dfn_img" in np.load(tmp / "sweep" / "metadata" / "00000000.npz").files


@needs_openclipart
def test_rerun_trains_and_evaluates_nothing(swept: tuple[Path, Any, Any]) -> None:
    tmp, first, again = swept
    assert again.returncode == 0, again.stderr[-3000:]
    out = " ".join(again.stderr.split())
    assert (
        "sweep_train: all 4 shards already done" in out and "sweep_evaluate: all 4 shards already done" in out
    )
    assert "train: all 1 shards already done" in out  # the filtering network's training
    assert "training curate-tiny-vit64" not in out
    for strategy in STRATEGIES:
        info = json.loads((tmp / "sweep/sweep/train" / strategy / "seed1" / "info.json").read_text())
        assert len(info["launches"]) == 1
    board = json.loads((tmp / "sweep/sweep/leaderboard.json").read_text())
    assert [r["strategy"] for r in board["rows"]] and "openclipart (headline)" in again.stdout


@needs_openclipart
def test_the_report_shows_the_leaderboard(swept: tuple[Path, Any, Any]) -> None:
    tmp, _, _ = swept
    result = CliRunner().invoke(app, ["report", str(tmp / "sweep")])
    assert result.exit_code == 0, result.output
    html = (tmp / "sweep" / "report" / "index.html").read_text()
    assert "Sweep leaderboard" in html and "dfn_top50" in html and "(baseline)" in html
    assert "openclipart (headline)" in html


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "--seeds: must be at least 1 (got 0)"),
        (
            ["--strategies", "no_filter,nope"],
            "--strategies: unknown strategy 'nope' (valid: no_filter, basic_filter",
        ),
        (["--scale", "huge"], "--scale: unknown training scale 'huge'"),
        (["--baseline", "text_based", "--strategies", "no_filter"], "--baseline: 'text_based' is not among"),
    ],
)
def test_argument_errors_stop_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sweep", str(PIPELINE), f"run_dir={tmp_path / 'run'}", *args])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and "openclipart_sweep: cannot sweep" in output and message in output
    assert "Traceback" not in output and not (tmp_path / "run").exists()
