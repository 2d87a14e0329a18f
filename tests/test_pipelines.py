"""The shipped pipelines: all validate; DataComp's stop before any work when their inputs are offline."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config

PIPELINES = sorted(Path(__file__).parents[1].joinpath("pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("scale", ["small", "medium", "large", "xlarge"])
def test_datacomp_pipeline_stops_before_work_without_metadata(scale: str, tmp_path: Path) -> None:
    path = Path(__file__).parents[1] / "pipelines" / f"datacomp_{scale}.yaml"
    cfg = load_config(path)
    assert cfg.download.number_sample_per_shard == 10_000 and cfg.download.image_size == 512
    assert cfg.train is not None and cfg.train.scale == scale
    run_dir = tmp_path / "run"
    args = ["run", str(path), f"run_dir={run_dir}", f"pool.metadata={tmp_path / 'no-metadata'}"]
    if scale == "small":  # once as a user runs it, in a fresh interpreter
        proc = subprocess.run(
            [sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, timeout=120
        )
        code, stderr = proc.returncode, proc.stderr
    else:  # the same command in this process: no 10-40 s of imports per scale
        result = CliRunner().invoke(app, args)
        code, stderr = result.exit_code, " ".join(result.output.split())
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert f"curate pool fetch --scale {scale}" in stderr
    assert "needs network access to the Hugging Face hub" in stderr
    assert not run_dir.exists(), "nothing is written when a run cannot start"


def test_openclipart_demo_downloads_over_loopback_http(tmp_path: Path) -> None:
    """The demo pipeline end to end on its first 150 images, then a rerun that does nothing."""
    path = Path(__file__).parents[1] / "pipelines" / "openclipart_demo.yaml"
    run_dir = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "curate.cli",
        "run",
        str(path),
        f"run_dir={run_dir}",
        "pool.max_samples=150",
        "download.number_sample_per_shard=100",
        "download.threads=4",
        "train=",  # training the tiny scale takes minutes: the train and evaluate stages have their own tests
        "evaluate=",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"]["download"]
    assert stage["counts"]["count"] == 150 and stage["counts"]["successes"] >= 145
    meta = pq.read_table(run_dir / "metadata" / "00000000.parquet")
    assert meta.num_rows == 100 and meta["url"][0].as_py().startswith("file:///usr/share/openclipart/")
    assert {"uid", "text", "original_width", "status", "sha256", "title", "keywords"} <= set(
        meta.column_names
    )
    shards = pq.read_table(run_dir / "shards" / "00000000.parquet")
    assert shards["url"].to_pylist() == meta["url"].to_pylist(), "the pool's URLs, not the loopback ones"
    with tarfile.open(run_dir / "shards" / "00000000.tar") as tf:
        sample = json.loads(tf.extractfile(next(m for m in tf if m.name.endswith(".json"))).read())
    assert (
        sample["url"].startswith("file:///usr/share/openclipart/")
        and sample["uid"] in meta["uid"].to_pylist()
    )

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "all 2 shards already done" in again.stderr
