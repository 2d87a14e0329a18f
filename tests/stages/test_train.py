"""The train stage: one real CPU training per strategy from resharded/<strategy>/, skip when done, GPUs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from curate.config import ConfigError, PipelineConfig, load_config
from curate.errors import CurateError
from curate.rundir import RunDir
from curate.runner import build_stages
from curate.stages.base import ShardTask
from curate.stages.train import TrainStage
from curate.training.scales import Scale
from tests.training.shards import write_resharded

SCALE = Scale("test", "curate-tiny-vit64", 8, 1e-3, 1, 16, log_every_n_steps=1)  # 2 steps in all


def _config(tmp_path: Path, strategies: dict[str, Any] | None = None, **train: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "train-test",
            "run_dir": str(tmp_path / "run"),
            "pool": {"source": "parquet", "paths": [str(tmp_path / "pool.parquet")]},
            "strategies": {"s": "basic_filter"} if strategies is None else strategies,
            "train": {"scale": "tiny", "num_checkpoints": 1, "workers": 0, **train},
        }
    )


def test_trains_each_strategy_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    run = RunDir(Path(cfg.run_dir or ""))
    stage = TrainStage(cfg, run, scale=SCALE)
    assert stage.preflight() == []
    assert stage.plan() == [ShardTask("s", 16, {})]
    with pytest.raises(CurateError, match="no resharded data"):
        stage.run_shard(ShardTask("s", 16, {}))
    data = write_resharded(run.resharded / "s", 16, per_shard=8)
    stage.place(0.0)
    stats = stage.run_shard(ShardTask("s", 16, {}))
    assert stats["samples_seen"] == 16 and stats["official"] is False
    assert all(p.exists() for p in stage.shard_outputs("s"))
    info = json.loads((run.train / "s" / "info.json").read_text())
    assert info["status"] == "done" and info["train_data"] == f"{data}/{{00000000..00000001}}.tar"
    assert info["checkpoint"] == str(run.train / "s" / "checkpoints" / "epoch_latest.pt")
    printed = capsys.readouterr().out
    assert "train[s]: UNOFFICIAL scale 'test'" in printed and "train[s]: epoch 0 100%" in printed
    assert f"log: {run.train / 's' / 'out.log'}" in printed

    stage.run_shard(ShardTask("s", 16, {}))  # finished: not trained again
    assert capsys.readouterr().out.strip() == f"train[s]: already trained: {info['checkpoint']}"


def test_gpus_are_asked_from_ray_only_when_the_cluster_has_them(tmp_path: Path) -> None:
    stage = TrainStage(_config(tmp_path, gpus=2), RunDir(tmp_path / "run"))
    assert stage.scale.name == "tiny" and stage.plan()[0].items == 9_600
    stage.place(0.0)
    assert (stage.gpus, stage.num_gpus, stage.max_concurrency()) == (0, 0.0, 1)
    assert stage.train_settings().device == "cpu"
    stage.place(8.0)
    assert (stage.gpus, stage.num_gpus, stage.max_concurrency()) == (2, 2.0, None)
    assert stage.train_settings().world_size == 2
    with pytest.raises(CurateError, match="2 GPUs per training, but the Ray cluster has 1"):
        stage.place(1.0)
    cpu_only = TrainStage(_config(tmp_path, gpus=0), RunDir(tmp_path / "run"))
    cpu_only.place(8.0)
    assert cpu_only.num_gpus == 0.0


def test_small_trainings_can_share_one_gpu(tmp_path: Path) -> None:
    shared = TrainStage(_config(tmp_path, trainings_per_gpu=4), RunDir(tmp_path / "run"))
    shared.place(1.0)
    assert (shared.gpus, shared.num_gpus, shared.train_settings().world_size) == (1, 0.25, 1)
    shared.place(0.0)  # no GPU: CPU, one training at a time, whatever the sharing
    assert (shared.gpus, shared.num_gpus, shared.max_concurrency()) == (0, 0.0, 1)
    multi = TrainStage(_config(tmp_path, gpus=2, trainings_per_gpu=2), RunDir(tmp_path / "run"))
    with pytest.raises(CurateError, match="trainings_per_gpu: 2 trainings can share one GPU only when each"):
        multi.place(8.0)


def test_preflight_and_place_in_the_pipeline(tmp_path: Path) -> None:
    assert TrainStage(_config(tmp_path, strategies={}), RunDir(tmp_path)).preflight() == [
        "train: there are no strategies, so no data to train on (add strategies)"
    ]
    names = [s.name for s in build_stages(_config(tmp_path), RunDir(tmp_path / "run"))]
    assert names[-2:] == ["reshard", "train"]


def test_recipe_keys_do_not_exist_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\npool: {source: parquet, paths: [x.parquet]}\ntrain: {scale: small}\n")
    assert load_config(path).train is not None
    with pytest.raises(ConfigError) as exc:
        load_config(path, ["train.batch_size=8192", "train.lr=0.001"])
    text = str(exc.value)
    assert "train.batch_size: unknown key" in text and "train.lr: unknown key" in text
    with pytest.raises(ConfigError, match="train.scale: must be one of"):
        load_config(path, ["train.scale=huge"])


def test_a_killed_runs_temp_files_in_a_strategy_folder_are_cleared(tmp_path: Path) -> None:
    """info.json and info.pkl are written via temp files in train/<strategy>/: the runner clears stale
    ones at the top of every output directory, so that folder must be listed."""
    from curate.rundir import clear_stale_temps

    run = RunDir(tmp_path / "run")
    stage = TrainStage(_config(tmp_path), run)
    name = next(iter(stage.cfg.strategies))
    stale = run.train / name / ".info.json.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half written")
    for d in stage.output_dirs():  # what the runner does before a stage's tasks
        clear_stale_temps(d)
    assert not stale.exists()
