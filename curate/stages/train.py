"""Train stage: one model per strategy, `resharded/<strategy>/` -> `train/<strategy>/`.

A task is one strategy (task id = strategy name) and runs one whole training through
curate.training (open_clip's training code with DataComp's fixed recipe). A strategy is done when its
`info.pkl` and `checkpoints/epoch_latest.pt` exist; an interrupted one resumes from epoch_latest.pt
when the stage runs again, and the training's own record (info.json) refuses to resume a folder that
holds another recipe. On a cluster with GPUs the Ray task asks for `train.gpus` GPUs (torchrun over
them); without GPUs it trains on CPU, one strategy at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curate.config import PipelineConfig, TrainConfig, settings_for_hash
from curate.errors import CurateError
from curate.rundir import RunDir
from curate.stages.base import ShardTask, Stage
from curate.training import info as records
from curate.training.args import TrainSettings
from curate.training.scales import Scale, get_scale


class TrainStage(Stage):
    """resharded/<strategy>/ -> train/<strategy>/ (open_clip logs, checkpoints, info.json, info.pkl)."""

    name = "train"
    items_label = "samples"
    num_cpus = 1.0  # the Ray task only waits on the training processes, which it does not count

    def __init__(self, cfg: PipelineConfig, run: RunDir, scale: Scale | None = None) -> None:
        """`scale` replaces the configured one (an unofficial scale of your own, e.g. in tests)."""
        self.cfg = cfg
        self.run = run
        self.tc = cfg.train or TrainConfig(scale="tiny")
        self.scale = scale or get_scale(self.tc.scale)
        self.gpus = self.tc.gpus
        self.num_gpus = 0.0

    def train_settings(self, gpus: int | None = None, seed: int | None = None) -> TrainSettings:
        tc = self.tc
        return TrainSettings(
            scale=self.scale,
            num_checkpoints=tc.num_checkpoints,
            precision=tc.precision,
            seed=tc.seed if seed is None else seed,
            workers=tc.workers,
            accum_freq=tc.accum_freq,
            gpus=self.gpus if gpus is None else gpus,
            gpu_decode=tc.gpu_decode,
            image_decoder=tc.image_decoder,
        )

    def settings(self) -> Any:
        return {"train": settings_for_hash(self.tc), "scale": self.scale.as_dict()}

    def output_dirs(self) -> list[Path]:
        """train/<strategy>/ too: the runner clears a killed run's temp files only at the top of each
        directory listed here, and info.json and info.pkl are written (via temp files) one level down."""
        return [self.run.train, *(self.run.train / name for name in self.cfg.strategies)]

    def describe(self) -> tuple[str, str]:
        return (
            "resharded/<strategy>/",
            "train/<strategy>/: checkpoints/epoch_latest.pt, out.log, info.json, info.pkl",
        )

    def preflight(self) -> list[str]:
        problems = []
        if not self.cfg.strategies:
            problems.append("train: there are no strategies, so no data to train on (add strategies)")
        # GPUs are checked against the cluster when it is known (place); here the CPU form is checked
        problems += [f"train: {p}" for p in self.train_settings(gpus=0).problems()]
        return problems

    def plan(self) -> list[ShardTask]:
        return [ShardTask(name, self.scale.train_num_samples, {}) for name in self.cfg.strategies]

    def job(self, shard_id: str) -> tuple[str, Path, str, int]:
        """(strategy, logs folder, experiment name, seed) of a task: here train/<strategy>/ with
        train.seed (curate.sweep trains one task per strategy and seed elsewhere)."""
        return shard_id, self.run.train, shard_id, self.tc.seed

    def shard_outputs(self, shard_id: str) -> list[Path]:
        _, logs, name, _ = self.job(shard_id)
        return [logs / name / records.INFO_PKL, records.checkpoint_path(logs / name)]

    def place(self, cluster_gpus: float) -> None:
        """GPUs when the cluster has them (train.gpus per strategy), else CPU."""
        if cluster_gpus <= 0 or self.tc.gpus == 0:
            self.gpus, self.num_gpus = 0, 0.0
            return
        if self.tc.gpus > cluster_gpus:
            raise CurateError(
                f"train.gpus: {self.tc.gpus} GPUs per training, but the Ray cluster has {cluster_gpus:g}; "
                "lower train.gpus"
            )
        if self.tc.trainings_per_gpu > 1 and self.tc.gpus != 1:
            raise CurateError(
                f"train.trainings_per_gpu: {self.tc.trainings_per_gpu} trainings can share one GPU only "
                f"when each uses one (train.gpus is {self.tc.gpus})"
            )
        self.gpus, self.num_gpus = self.tc.gpus, self.tc.gpus / self.tc.trainings_per_gpu

    def max_concurrency(self) -> int | None:
        return 1 if self.gpus == 0 else None  # CPU trainings would only slow each other down

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        from curate.training.job import train

        strategy, logs, name, seed = self.job(task.shard_id)
        data = self.run.resharded / strategy
        if not (data / "meta.json").exists():
            raise CurateError(f"{data}: no resharded data (meta.json missing); the reshard stage writes it")

        def log(message: str) -> None:
            print(f"train[{task.shard_id}]: {message}", flush=True)

        info = train(str(data), logs, name, self.train_settings(seed=seed), log=log)
        return {
            "samples_seen": info["samples_seen"],
            "wall_seconds": info["wall_seconds"],
            "official": info["official"],
            "checkpoint": info["checkpoint"],
        }
