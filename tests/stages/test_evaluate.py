"""The evaluate stage: per strategy, train/<strategy>/info.json -> eval/<strategy>/ (no Ray needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.runner import build_stages
from curate.stages.base import ShardTask
from curate.stages.evaluate import EvaluateStage
from tests.eval.eval_fixtures import ARCH, generated_sets, tiny_checkpoint


def _config(tmp_path: Path, evaluate: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "eval-test",
            "run_dir": str(tmp_path / "run"),
            "pool": {"source": "parquet", "paths": [str(tmp_path / "pool.parquet")]},
            "strategies": {"keep_all": "basic_filter"},
            "train": {"scale": "tiny"},
            "evaluate": evaluate,
        }
    )


def _train_info(run: RunDir, checkpoint: Path | str, **extra: Any) -> None:
    (run.train / "keep_all").mkdir(parents=True, exist_ok=True)
    info = {"arch": ARCH, "checkpoint": str(checkpoint), "scale": "tiny", "official": False, **extra}
    (run.train / "keep_all" / "info.json").write_text(json.dumps(info))


def test_stage_is_last_and_checks_before_work(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"tasks": ["cifar10", "nope"], "data_dir": str(tmp_path / "absent")})
    stages = build_stages(cfg, RunDir(tmp_path / "run"))
    assert isinstance(stages[-1], EvaluateStage)
    problems = stages[-1].preflight()
    assert any("'nope'" in p for p in problems) and any("valid: all" in p for p in problems)
    assert any("evaluate.data_dir: directory not found" in p for p in problems)
    assert any("required" in p for p in EvaluateStage(_config(tmp_path, {}), RunDir(tmp_path)).preflight())


def test_strategy_evaluated_resumed_and_rerun_on_new_selection(tmp_path: Path, tmp_path_factory) -> None:
    base = tmp_path_factory.getbasetemp()
    data = generated_sets(base)
    run = RunDir(tmp_path / "run")
    # the recorded checkpoint is gone: DataComp's fallback to checkpoints/epoch_latest.pt
    (run.train / "keep_all" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_checkpoint(base), run.train / "keep_all" / "checkpoints" / "epoch_latest.pt")
    _train_info(run, tmp_path / "moved.pt")
    stage = EvaluateStage(_config(tmp_path, {"tasks": ["vtab/pcam"], "data_dir": str(data)}), run)
    assert stage.preflight() == []
    (task,) = stage.plan()
    assert task.shard_id == "keep_all" and task.items == 1
    stats = stage.run_shard(task)
    assert stats["done"] == 1 and stats["missing"] == 0
    scores = json.loads((run.eval / "keep_all" / "scores.json").read_text())
    assert scores["model"]["checkpoint"].endswith("checkpoints/epoch_latest.pt")
    assert scores["model"]["official"] is False
    assert stage.shard_outputs("keep_all")[0].exists()
    record = {"status": "done", "stats": stats}
    assert not stage.needs_rerun(record)
    wider = EvaluateStage(_config(tmp_path, {"tasks": ["vtab/pcam", "cifar10"], "data_dir": str(data)}), run)
    assert wider.needs_rerun(record)  # the selection changed: only cifar10 is new
    wider.run_shard(ShardTask("keep_all", 2))
    lines = (run.eval / "keep_all" / "eval_results.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["vtab/pcam", "cifar10"]


def test_generate_writes_evalsets_in_the_run(tmp_path: Path, tmp_path_factory) -> None:
    run = RunDir(tmp_path / "run")
    _train_info(run, tiny_checkpoint(tmp_path_factory.getbasetemp()))
    stage = EvaluateStage(_config(tmp_path, {"tasks": ["vtab/pcam"], "generate": True}), run)
    assert stage.preflight() == []
    with stage.running():
        stats = stage.run_shard(ShardTask("keep_all", 1))
    assert (run.root / "evalsets" / "wds_vtab-pcam_test" / "classnames.txt").exists()
    assert stats["done"] == 1


def test_missing_train_info_is_a_clear_error(tmp_path: Path) -> None:
    from curate.errors import CurateError

    stage = EvaluateStage(
        _config(tmp_path, {"tasks": ["vtab/pcam"], "generate": True}), RunDir(tmp_path / "run")
    )
    with pytest.raises(CurateError, match="info.json: missing"):
        stage.run_shard(ShardTask("keep_all", 1))


def test_a_killed_runs_temp_files_in_a_strategy_folder_are_cleared(tmp_path: Path) -> None:
    from curate.rundir import clear_stale_temps
    from curate.stages.evaluate import EvaluateStage

    run = RunDir(tmp_path / "run")
    stage = EvaluateStage(_config(tmp_path, {"tasks": ["vtab/pcam"]}), run)
    name = next(iter(stage.cfg.strategies))
    stale = run.eval / name / ".scores.json.k1ll3d.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half written")
    for d in stage.output_dirs():  # what the runner does before a stage's tasks
        clear_stale_temps(d)
    assert not stale.exists()
