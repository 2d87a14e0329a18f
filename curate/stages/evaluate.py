"""Evaluate stage: each strategy's trained model on the evaluation tasks -> eval/<strategy>/.

A shard is one strategy. It reads `train/<strategy>/info.json` (arch, checkpoint, scale, official),
falls back to `train/<strategy>/checkpoints/epoch_latest.pt` when the recorded checkpoint is gone (as
DataComp's evaluate.py does), and runs `curate.eval.evaluate.evaluate_model` into `eval/<strategy>/`:
eval_results.jsonl (DataComp's lines, resumable per task) and scores.json. With `evaluate.generate`,
small offline test sets are first written into `<run>/evalsets/` and evaluated instead of data_dir.

Which tasks are selected is not part of the stage hash: results of one task do not depend on the
others, so adding a task evaluates just that task (the shard reruns when the selection changed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from curate.config import PipelineConfig
from curate.errors import CurateError
from curate.rundir import RunDir
from curate.stages.base import ShardTask, Stage

log = logging.getLogger(__name__)


def _selection_hash(keys: list[str]) -> str:
    return hashlib.sha256(",".join(keys).encode()).hexdigest()[:12]


class EvaluateStage(Stage):
    """train/<strategy>/info.json + eval sets -> eval/<strategy>/{eval_results.jsonl,scores.json}."""

    name = "evaluate"
    items_label = "tasks"

    def __init__(self, cfg: PipelineConfig, run: RunDir) -> None:
        assert cfg.evaluate is not None
        self.cfg = cfg
        self.ev = cfg.evaluate
        self.run = run
        self.device = self.ev.device
        self.num_gpus = 1.0 if self.device == "cuda" else 0.0

    # ---------------------------------------------------------- what and where

    def settings(self) -> Any:
        generated = {"generate_per_class": self.ev.generate_per_class} if self.ev.generate else {}
        return {"data_dir": self.ev.data_dir, "generate": self.ev.generate, **generated}

    def output_dirs(self) -> list[Path]:
        """eval/ and eval/<strategy>/ (results are written via temp files one level down, and the runner
        clears a killed run's temp files at the top of each listed directory), and the generated sets:
        new generate settings must regenerate them."""
        dirs = [self.run.eval, *(self.run.eval / name for name in self.cfg.strategies)]
        return [*dirs, self.evalsets] if self.ev.generate else dirs

    @property
    def evalsets(self) -> Path:
        return self.run.root / "evalsets"

    def data_dir(self) -> Path:
        if self.ev.generate:
            return self.evalsets
        assert self.ev.data_dir is not None
        return Path(self.ev.data_dir)

    def task_keys(self) -> list[str]:
        from curate.eval.tasks import select_tasks

        spec = ["all"] if self.ev.tasks == "all" else self.ev.tasks
        return [t.key for t in select_tasks(spec, where="evaluate.tasks")]

    def describe(self) -> tuple[str, str]:
        source = "<run>/evalsets (generated)" if self.ev.generate else str(self.ev.data_dir)
        return (f"train/<strategy>/info.json + {source}", "eval/<strategy>/eval_results.jsonl, scores.json")

    def preflight(self) -> list[str]:
        problems = []
        try:
            self.task_keys()
        except CurateError as exc:
            problems += [exc.message, *exc.problems]
        if not self.cfg.strategies:
            problems.append("evaluate: there are no strategies, so no trained model to evaluate")
        if self.cfg.train is None:
            problems.append("evaluate: needs a train section (it evaluates each strategy's trained model)")
        if not self.ev.generate:
            if self.ev.data_dir is None:
                problems.append(
                    "evaluate.data_dir: required (DataComp's eval sets, from `curate evalsets fetch`), "
                    "or set evaluate.generate=true for small offline test sets"
                )
            elif not Path(self.ev.data_dir).is_dir():
                problems.append(f"evaluate.data_dir: directory not found (got '{self.ev.data_dir}')")
        return problems

    def place(self, cluster_gpus: float) -> None:
        if self.ev.device == "auto":
            self.device = "cuda" if cluster_gpus > 0 else "cpu"
            self.num_gpus = 1.0 if self.device == "cuda" else 0.0

    def plan(self) -> list[ShardTask]:
        n = len(self.task_keys())
        return [ShardTask(name, n, {}) for name in self.cfg.strategies]

    def train_dir(self, shard_id: str) -> Path:
        """Where a task's model was trained: train/<strategy>/ (curate.sweep: one per seed)."""
        return self.run.train / shard_id

    def eval_dir(self, shard_id: str) -> Path:
        return self.run.eval / shard_id

    def shard_outputs(self, shard_id: str) -> list[Path]:
        return [self.eval_dir(shard_id) / "scores.json"]

    def needs_rerun(self, record: dict[str, Any]) -> bool:
        """Redo a finished strategy when the task selection changed, or when eval data that was missing
        (or malformed) then is readable now."""
        from curate.eval.datasets import missing_reason

        stats = record.get("stats", {})
        if stats.get("selection") != _selection_hash(self.task_keys()):
            return True
        strategy = stats.get("strategy")
        if not strategy:
            return False
        try:
            scores = json.loads((self.eval_dir(strategy) / "scores.json").read_text())
        except (OSError, json.JSONDecodeError):
            return True
        retry = [*scores.get("missing", {}), *scores.get("failed", {})]
        return any(missing_reason(self.data_dir(), key) is None for key in retry)

    # ---------------------------------------------------------- work

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Driver side, before any strategy: write the offline test sets when asked to and not there."""
        if self.ev.generate:
            from curate.eval.datasets import missing_reason

            keys = self.task_keys()
            absent = [k for k in keys if missing_reason(self.evalsets, k) is not None]
            if absent:
                from curate.eval.generate import generate_evalsets

                generate_evalsets(out_dir=self.evalsets, tasks=absent, per_class=self.ev.generate_per_class)
        yield

    def model_info(self, strategy: str) -> Any:
        from curate.eval.evaluate import ModelInfo

        train_dir = self.train_dir(strategy)
        info_path = train_dir / "info.json"
        try:
            info = json.loads(info_path.read_text())
        except FileNotFoundError:
            raise CurateError(f"{info_path}: missing; the train stage writes it (run it first)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CurateError(f"{info_path}: not readable JSON ({exc})") from None
        arch = info.get("arch") or info.get("model") or (info.get("scale_config") or {}).get("model")
        checkpoint = info.get("checkpoint")
        if not arch:
            raise CurateError(f"{info_path}: no 'arch' (the open_clip model name)")
        if not checkpoint or not Path(checkpoint).is_file():
            fallback = train_dir / "checkpoints" / "epoch_latest.pt"
            if not fallback.is_file():
                raise CurateError(f"{info_path}: checkpoint '{checkpoint}' not found, nor {fallback}")
            log.warning("%s: checkpoint %s not found; using %s", info_path, checkpoint, fallback)
            checkpoint = str(fallback)
        official = info.get("official")
        if official is None and info.get("scale"):
            from curate.training.scales import OFFICIAL_SCALES

            official = info["scale"] in OFFICIAL_SCALES
        return ModelInfo(str(arch), str(checkpoint), info.get("scale"), official)

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        from curate.eval.evaluate import evaluate_model
        from curate.eval.tasks import select_tasks

        strategy = task.shard_id
        keys = self.task_keys()
        out_dir = self.eval_dir(strategy)
        lines: list[str] = []

        def note(msg: str) -> None:
            lines.append(msg)
            log.info("%s: %s", strategy, msg)

        scores = evaluate_model(
            self.model_info(strategy),
            self.data_dir(),
            out_dir,
            select_tasks(keys),
            batch_size=self.ev.batch_size,
            device=self.device,
            log=note,
            on_mismatch="reset",  # a retrained checkpoint: its old results no longer apply
        )
        return {
            "strategy": strategy,
            "selection": _selection_hash(keys),
            "tasks": len(keys),
            "done": len(keys) - len(scores["missing"]) - len(scores["failed"]),
            "missing": len(scores["missing"]),
            "average": scores["aggregates"]["Average"]["score"],
            "average_covered": scores["aggregates"]["Average"]["covered"],
        }

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "strategies": len(results),
            "missing": sum(r.get("missing", 0) for r in results.values()),
            "average": {s: r.get("average") for s, r in results.items()},
        }
