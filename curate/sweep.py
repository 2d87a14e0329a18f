"""`curate sweep`: every strategy of a pipeline trained and evaluated at one scale, once per seed, then
ranked on a leaderboard (curate.leaderboard).

The pipeline runs as `curate run` runs it up to reshard (same stages, same run directory, resumed the
same way); its train and evaluate stages are replaced by two sweep stages whose tasks are (strategy,
seed) pairs, each resumable on its own:

    sweep/train/<strategy>/seed<k>/   open_clip's logs, checkpoints/epoch_latest.pt, info.json, info.pkl
    sweep/eval/<strategy>/seed<k>/    eval_results.jsonl, scores.json
    sweep/leaderboard.json, sweep/leaderboard.csv

Seed k is the seed open_clip gets: train.seed, train.seed + 1, ... The pipeline's own train/ and eval/
(a `curate run`) are left alone, so the sweep never replaces a run's model. More seeds or strategies
later only add tasks; another scale redoes the sweep stages (their settings hash holds the scale),
nothing before them. `--scale` picks any registered scale for the sweep (DataComp's recipes stay
fixed: choosing one is not changing one); the generated eval sets (evaluate.generate) are shared with
the evaluate stage in <run>/evalsets/ and written when absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from curate import leaderboard
from curate.config import PipelineConfig, TrainConfig
from curate.errors import CurateError
from curate.rundir import RunDir
from curate.stages.base import ShardTask, Stage
from curate.stages.evaluate import EvaluateStage
from curate.stages.train import TrainStage
from curate.training.scales import Scale, get_scale

SWEEP_DIR = "sweep"


def _split(shard_id: str) -> tuple[str, int]:
    """'<strategy>/seed<k>' -> (strategy, k)."""
    strategy, _, seed = shard_id.rpartition("/seed")
    return strategy, int(seed)


@dataclass(frozen=True)
class Sweep:
    """What one `curate sweep` trains and evaluates."""

    strategies: list[str]
    seeds: list[int]
    scale: Scale
    baseline: str | None  # the strategy others must beat; None: no comparison

    def task_ids(self) -> list[str]:
        return [f"{s}/seed{k}" for s in self.strategies for k in self.seeds]


def plan_sweep(
    cfg: PipelineConfig,
    seeds: int = 1,
    scale: str | Scale | None = None,
    strategies: list[str] | None = None,
    baseline: str | None = None,
) -> tuple[PipelineConfig, Sweep]:
    """Check a sweep's arguments against the pipeline, every problem at once, before any work. Returns
    the config (with a train section when only --scale gave one) and the sweep. `baseline` None means
    no_filter when it is swept; a Scale object (tests, the Python API) is used as it is."""
    problems = []
    if seeds < 1:
        problems.append(f"--seeds: must be at least 1 (got {seeds}); each seed trains every strategy once")
    if not cfg.strategies:
        problems.append("strategies: the pipeline has none, so there is nothing to sweep")
    chosen = list(cfg.strategies) if strategies is None else list(dict.fromkeys(strategies))
    valid = ", ".join(cfg.strategies) or "none"
    unknown = [s for s in chosen if s not in cfg.strategies]
    if unknown:
        problems.append(f"--strategies: unknown strategy {', '.join(map(repr, unknown))} (valid: {valid})")
    elif strategies is not None and not chosen:
        problems.append(f"--strategies: name at least one strategy (valid: {valid})")
    if baseline is not None and baseline not in chosen:
        problems.append(f"--baseline: '{baseline}' is not among the swept strategies ({', '.join(chosen)})")
    recipe: Scale | None = None
    if isinstance(scale, Scale):
        recipe = scale
    elif scale is not None:
        try:
            recipe = get_scale(scale)
        except CurateError as exc:
            problems.append(f"--scale: {exc.message}")
    if cfg.train is None and scale is None:
        problems.append("train: a sweep trains every strategy; add a train section or give --scale")
    if cfg.evaluate is None:
        problems.append(
            "evaluate: a sweep evaluates every strategy; add an evaluate section "
            "(e.g. evaluate: {generate: true, tasks: [mnist]})"
        )
    if problems:
        raise CurateError(f"{cfg.name}: cannot sweep", problems)
    if cfg.train is None:
        assert recipe is not None
        cfg = cfg.model_copy(update={"train": TrainConfig(scale=_config_scale(recipe))})
    assert cfg.train is not None
    recipe = recipe or get_scale(cfg.train.scale)
    if baseline is None and "no_filter" in chosen:
        baseline = "no_filter"
    first = cfg.train.seed
    return cfg, Sweep(chosen, list(range(first, first + seeds)), recipe, baseline)


def _config_scale(scale: Scale) -> Any:
    """A train section's scale name for `scale` (a hand-made Scale stands behind 'tiny' there)."""
    from curate.training.scales import SCALES

    return scale.name if scale.name in SCALES else "tiny"


class SweepTrainStage(TrainStage):
    """resharded/<strategy>/ -> sweep/train/<strategy>/seed<k>/, one training per (strategy, seed)."""

    name = "sweep_train"

    def __init__(self, cfg: PipelineConfig, run: RunDir, sweep: Sweep) -> None:
        super().__init__(cfg, run, scale=sweep.scale)
        self.sweep = sweep

    @property
    def root(self) -> Path:
        return self.run.root / SWEEP_DIR / "train"

    def output_dirs(self) -> list[Path]:
        return [self.root]

    def describe(self) -> tuple[str, str]:
        return (
            "resharded/<strategy>/",
            "sweep/train/<strategy>/seed<k>/: checkpoints/epoch_latest.pt, info.json",
        )

    def plan(self) -> list[ShardTask]:
        return [ShardTask(i, self.scale.train_num_samples, {}) for i in self.sweep.task_ids()]

    def job(self, shard_id: str) -> tuple[str, Path, str, int]:
        strategy, seed = _split(shard_id)
        return strategy, self.root / strategy, f"seed{seed}", seed


class SweepEvaluateStage(EvaluateStage):
    """sweep/train/<strategy>/seed<k>/ -> sweep/eval/<strategy>/seed<k>/."""

    name = "sweep_evaluate"

    def __init__(self, cfg: PipelineConfig, run: RunDir, sweep: Sweep) -> None:
        super().__init__(cfg, run)
        self.sweep = sweep

    def output_dirs(self) -> list[Path]:
        return [self.run.root / SWEEP_DIR / "eval"]  # evalsets/ belongs to the evaluate stage

    def describe(self) -> tuple[str, str]:
        reads, _ = super().describe()
        return (
            reads.replace("train/<strategy>/", "sweep/train/<strategy>/seed<k>/"),
            "sweep/eval/<s>/seed<k>/",
        )

    def plan(self) -> list[ShardTask]:
        n = len(self.task_keys())
        return [ShardTask(i, n, {}) for i in self.sweep.task_ids()]

    def train_dir(self, shard_id: str) -> Path:
        strategy, seed = _split(shard_id)
        return self.run.root / SWEEP_DIR / "train" / strategy / f"seed{seed}"

    def eval_dir(self, shard_id: str) -> Path:
        strategy, seed = _split(shard_id)
        return self.run.root / SWEEP_DIR / "eval" / strategy / f"seed{seed}"


def swap_stages(cfg: PipelineConfig, run: RunDir, sweep: Sweep) -> Any:
    """The runner's stage_filter: train and evaluate become their sweep forms."""

    def swap(stage: Stage) -> Stage:
        if type(stage) is TrainStage:
            return SweepTrainStage(cfg, run, sweep)
        if type(stage) is EvaluateStage:
            return SweepEvaluateStage(cfg, run, sweep)
        return stage

    return swap


def check_resharded(run: RunDir, sweep: Sweep) -> None:
    """For `--from-resharded`: every swept strategy's resharded data is there, or a CurateError listing
    what is missing, before any work."""
    missing = [s for s in sweep.strategies if not (run.resharded / s / "meta.json").is_file()]
    if missing:
        raise CurateError(
            f"--from-resharded: no resharded data for {', '.join(map(repr, missing))} in {run.resharded} "
            "(run `curate run` up to reshard first, or copy resharded/<strategy>/ there)"
        )


def run_sweep(
    cfg: PipelineConfig,
    run: RunDir,
    sweep: Sweep,
    console: Console | None = None,
    sweep_only: bool = False,
) -> dict[str, Any]:
    """Run the pipeline with the sweep stages (only those with `sweep_only`), then write and return the
    leaderboard."""
    from curate.runner import run_pipeline

    only = [SweepTrainStage.name, SweepEvaluateStage.name] if sweep_only else None
    run_pipeline(cfg, run, only=only, console=console, stage_filter=swap_stages(cfg, run, sweep))
    assert cfg.evaluate is not None
    about = {
        "pipeline": cfg.name,
        "run_dir": str(run.root),
        "scale": sweep.scale.name,
        "official": sweep.scale.official,
        "scale_config": sweep.scale.as_dict(),
    }
    board = leaderboard.build(
        run.root / SWEEP_DIR,
        run.subsets,
        sweep.strategies,
        sweep.seeds,
        SweepEvaluateStage(cfg, run, sweep).task_keys(),
        sweep.baseline,
        about,
    )
    publish(cfg, run, board)
    return board


def publish(cfg: PipelineConfig, run: RunDir, board: dict[str, Any]) -> None:
    """Write the leaderboard into RUN/sweep/ and, when run_dir is a URL, push it there too: the run's
    own push happened when its stages ended, before the leaderboard existed."""
    from curate.storage import RemoteRun

    leaderboard.write(board, run.root / SWEEP_DIR)
    remote = RemoteRun.of(cfg, run)
    if remote is not None:
        remote.push()
