"""Reshard stage: each strategy's subset `subsets/<strategy>.npy` from `shards/` into
`resharded/<strategy>/` (webdataset shards + meta.json + sample_ids.npy), as `curate reshard` does.

The plan is made on the driver (from the shards' parquet files) for all strategies in one pass; a task
is one output shard, with id `<strategy>/NNNNNNNN`. A shard recorded as done is rerun when its plan
changed (its `_stats.json` fingerprint no longer matches), e.g. after a download added shards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curate.config import PipelineConfig, ReshardConfig, settings_for_hash
from curate.errors import PreflightError
from curate.reshard import (
    OUTPUT_SHARD_FORMAT,
    OUTPUT_STATS_FORMAT,
    Plan,
    find_input_shards,
    finish_output,
    plan_many,
    write_output_shard,
)
from curate.rundir import RunDir, clear_stale_temps
from curate.stages.base import ShardTask, Stage
from curate.uids import check_subset, read_subset


class ReshardStage(Stage):
    """shards/ + subsets/<strategy>.npy -> resharded/<strategy>/."""

    name = "reshard"
    items_label = "samples"

    def __init__(self, cfg: PipelineConfig, run: RunDir) -> None:
        self.cfg = cfg
        self.run = run
        self.rc = cfg.reshard or ReshardConfig()
        self._plans: dict[str, Plan] = {}  # driver side only (see __getstate__)

    def __getstate__(self) -> dict[str, Any]:
        """Workers get tasks with their own plan slice; the whole plan stays on the driver."""
        return {**self.__dict__, "_plans": {}}

    def settings(self) -> Any:
        return {"reshard": settings_for_hash(self.rc)}

    def output_dirs(self) -> list[Path]:
        """resharded/<strategy>/ too: the runner clears a killed run's temp files at the top of each
        directory listed here on every launch, also when no shard is left to write (a kill in
        `finish` leaves a temp sample_ids.npy or meta.json one level down)."""
        return [self.run.resharded, *(self.out_dir(name) for name in self.cfg.strategies)]

    def describe(self) -> tuple[str, str]:
        return (
            "shards/, subsets/<strategy>.npy",
            "resharded/<strategy>/: NNNNNNNN.tar, _stats.json, meta.json, sample_ids.npy, missing_uids.txt",
        )

    def out_dir(self, strategy: str) -> Path:
        return self.run.resharded / strategy

    def prepare(self) -> None:
        """Plan every strategy whose subset exists (none before the filter stage has run)."""
        self._plans = {}
        subsets = {}
        for name in self.cfg.strategies:
            path = self.run.subsets / f"{name}.npy"
            if not path.is_file():
                continue
            problems = [p for p in check_subset(path) if "the subset is empty" not in p]
            if problems:
                raise PreflightError(f"reshard: subset of strategy {name} cannot be resharded", problems)
            subsets[name] = read_subset(path)
        if not subsets:
            return
        shards = find_input_shards(self.run.shards) if any(self.run.shards.glob("*.tar")) else []
        self._plans = plan_many(shards, subsets, self.rc.shard_size, self.rc.max_shard_bytes)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Temp files a killed run left in resharded/<strategy>/ go first (for callers other than the
        runner, which clears every directory of output_dirs)."""
        for name in self._plans:
            clear_stale_temps(self.out_dir(name))
        yield

    def plan(self) -> list[ShardTask]:
        return [
            ShardTask(f"{name}/{task.index:08d}", task.copies, {"strategy": name, "task": task})
            for name, plan in self._plans.items()
            for task in plan.tasks
        ]

    def shard_outputs(self, shard_id: str) -> list[Path]:
        strategy, index = shard_id.rsplit("/", 1)
        out = self.out_dir(strategy)
        return [out / OUTPUT_SHARD_FORMAT.format(int(index)), out / OUTPUT_STATS_FORMAT.format(int(index))]

    def needs_rerun(self, record: dict[str, Any]) -> bool:
        """Done under this config, but planned differently since (the input shards or subset changed)."""
        stats = record.get("stats", {})
        strategy, _, index = str(stats.get("shard", "")).rpartition("/")
        plan = self._plans.get(strategy)
        if plan is None or not index.isdigit() or int(index) >= len(plan.tasks):
            return False
        return plan.tasks[int(index)].fingerprint != stats.get("plan")

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        strategy = task.args["strategy"]
        stats = write_output_shard(task.args["task"], self.out_dir(strategy))
        return {
            "shard": task.shard_id,
            "plan": stats["plan"],
            "written": stats["successes"],
            "bytes": stats["bytes"],
            "not_written": len(stats["not_written"]),
        }

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        counts: dict[str, Any] = {"written": 0, "missing": 0}
        per_strategy = {}
        for name, plan in self._plans.items():
            describe = {
                "input_dir": str(self.run.shards),
                "subset_file": str(self.run.subsets / f"{name}.npy"),
                "strategy": name,
                "shard_size": self.rc.shard_size,
                "max_shard_bytes": self.rc.max_shard_bytes,
            }
            summary = finish_output(self.out_dir(name), plan, self.run.subsets / f"{name}.npy", describe)
            counts["written"] += summary["output_count"]
            counts["missing"] += summary["missing_count"]
            counts[f"{name} written"] = summary["output_count"]
            counts[f"{name} missing"] = summary["missing_count"]
            per_strategy[name] = summary
        counts["strategies"] = per_strategy  # missing: see resharded/<strategy>/missing_uids.txt
        return counts
