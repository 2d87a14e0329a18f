"""The sweep's plan and stages without running them: argument problems all at once before any work,
one task per (strategy, seed) in its own folders, hashes that follow the scale but not the number of
seeds. The real CPU sweep (train, evaluate, leaderboard, resume) is tests/test_cli_sweep.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curate.config import PipelineConfig
from curate.errors import CurateError
from curate.rundir import RunDir
from curate.runner import build_stages, stage_hashes
from curate.stages.evaluate import EvaluateStage
from curate.stages.train import TrainStage
from curate.sweep import Sweep, SweepEvaluateStage, SweepTrainStage, check_resharded, plan_sweep, swap_stages
from curate.training.scales import get_scale


def _config(tmp_path: Path, **sections: Any) -> PipelineConfig:
    data = {
        "name": "sweep-test",
        "run_dir": str(tmp_path / "run"),
        "pool": {"source": "parquet", "paths": [str(tmp_path / "pool.parquet")]},
        "strategies": {"no_filter": "no_filter", "basic": "basic_filter", "top": "text_based"},
        "train": {"scale": "tiny", "seed": 7},
        "evaluate": {"generate": True, "tasks": ["mnist", "openclipart"]},
        **sections,
    }
    return PipelineConfig.model_validate({k: v for k, v in data.items() if v is not None})


def test_argument_problems_are_listed_together(tmp_path: Path) -> None:
    cfg = _config(tmp_path, train=None, evaluate=None)
    with pytest.raises(CurateError) as exc:
        plan_sweep(cfg, seeds=0, strategies=["basic", "nope"], baseline="top")
    assert exc.value.message == "sweep-test: cannot sweep"
    assert exc.value.problems == [
        "--seeds: must be at least 1 (got 0); each seed trains every strategy once",
        "--strategies: unknown strategy 'nope' (valid: no_filter, basic, top)",
        "--baseline: 'top' is not among the swept strategies (basic, nope)",
        "train: a sweep trains every strategy; add a train section or give --scale",
        "evaluate: a sweep evaluates every strategy; add an evaluate section "
        "(e.g. evaluate: {generate: true, tasks: [mnist]})",
    ]
    with pytest.raises(CurateError) as exc:
        plan_sweep(_config(tmp_path), scale="huge", strategies=[])
    assert exc.value.problems[0] == "--strategies: name at least one strategy (valid: no_filter, basic, top)"
    assert exc.value.problems[1].startswith("--scale: unknown training scale 'huge'; valid scales: debug")


def test_plan_defaults_and_overrides(tmp_path: Path) -> None:
    cfg, sweep = plan_sweep(_config(tmp_path), seeds=3)
    assert sweep.strategies == ["no_filter", "basic", "top"] and sweep.seeds == [7, 8, 9]
    assert sweep.scale == get_scale("tiny") and sweep.baseline == "no_filter"
    _, sweep = plan_sweep(cfg, scale="tiny_long", strategies=["top", "basic", "top"])
    assert sweep.strategies == ["top", "basic"] and sweep.baseline is None and sweep.seeds == [7]
    assert sweep.scale.name == "tiny_long" and not sweep.scale.official
    given, sweep = plan_sweep(_config(tmp_path, train=None), scale="smoke")  # --scale gives the section
    assert given.train is not None and given.train.scale == "smoke" and sweep.seeds == [0]


def test_one_task_per_strategy_and_seed_in_its_own_folders(tmp_path: Path) -> None:
    cfg, sweep = plan_sweep(_config(tmp_path), seeds=2, strategies=["basic", "top"], scale="smoke")
    run = RunDir(tmp_path / "run")
    stages = [swap_stages(cfg, run, sweep)(s) for s in build_stages(cfg, run)]
    assert [s.name for s in stages][-2:] == ["sweep_train", "sweep_evaluate"]
    train, evaluate = stages[-2:]
    assert isinstance(train, SweepTrainStage) and isinstance(evaluate, SweepEvaluateStage)
    ids = ["basic/seed7", "basic/seed8", "top/seed7", "top/seed8"]
    assert [t.shard_id for t in train.plan()] == ids and train.plan()[0].items == 32
    assert [t.shard_id for t in evaluate.plan()] == ids and evaluate.plan()[0].items == 2
    assert train.job("top/seed8") == ("top", run.root / "sweep/train/top", "seed8", 8)
    assert train.train_settings(seed=8).seed == 8 and train.preflight() == []
    exp = run.root / "sweep/train/top/seed8"
    assert train.shard_outputs("top/seed8") == [exp / "info.pkl", exp / "checkpoints/epoch_latest.pt"]
    assert evaluate.train_dir("top/seed8") == exp
    assert evaluate.shard_outputs("top/seed8") == [run.root / "sweep/eval/top/seed8/scores.json"]
    assert train.output_dirs() == [run.root / "sweep/train"]
    assert evaluate.output_dirs() == [run.root / "sweep/eval"]  # not evalsets/, the evaluate stage's
    # the pipeline's own train and evaluate stages keep their folders and seed
    base = build_stages(cfg, run)
    assert isinstance(base[-2], TrainStage) and base[-2].job("top") == ("top", run.train, "top", 7)
    assert isinstance(base[-1], EvaluateStage) and base[-1].eval_dir("top") == run.eval / "top"


def test_hashes_follow_the_scale_not_the_number_of_seeds(tmp_path: Path) -> None:
    def hashes(seeds: int, scale: str) -> dict[str, str]:
        cfg, sweep = plan_sweep(_config(tmp_path), seeds=seeds, scale=scale)
        run = RunDir(tmp_path / "run")
        return stage_hashes([swap_stages(cfg, run, sweep)(s) for s in build_stages(cfg, run)])

    two, three, longer = hashes(2, "smoke"), hashes(3, "smoke"), hashes(2, "tiny_long")
    assert two == three
    assert two["reshard"] == longer["reshard"]
    assert two["sweep_train"] != longer["sweep_train"] and two["sweep_evaluate"] != longer["sweep_evaluate"]


def test_from_resharded_needs_every_swept_strategys_data(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    sweep = Sweep(["a", "b", "c"], [0], get_scale("smoke"), None)
    (run.resharded / "a").mkdir(parents=True)
    (run.resharded / "a" / "meta.json").write_text("{}")
    (run.resharded / "b").mkdir()  # a reshard that never finished: no meta.json
    with pytest.raises(CurateError, match=r"no resharded data for 'b', 'c' in .*resharded"):
        check_resharded(run, sweep)
    check_resharded(run, Sweep(["a"], [0], get_scale("smoke"), None))
