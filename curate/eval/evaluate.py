"""Run one model over evaluation tasks into an output folder, DataComp's evaluate.py run flow (§5.4).

The output folder holds `info.json` (which model, which data), `eval_results.jsonl` (one DataComp line
per task, appended in task order), `samples.json` (per task: samples evaluated, samples skipped by
reason) and `scores.json` (aggregates, extra tasks, missing and failed tasks). Tasks that already have
a line are skipped, so a killed or partial evaluation resumes where it stopped. A task whose data is
missing is skipped with its reason (and shows in scores.json); a task whose data is malformed is
reported as failed after the other tasks ran, and is retried on the next run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.eval import results as res
from curate.eval.aggregate import aggregate, extra_scores
from curate.eval.tasks import (
    CLASSIFICATION,
    DOLLAR_STREET,
    FAIRFACE,
    FAIRNESS_OBJECTIVES,
    GEODE,
    RETRIEVAL,
    WILDS,
    WINOGAVIL,
    Task,
)
from curate.rundir import atomic_write_json

Log = Callable[[str], None]


@dataclass
class ModelInfo:
    """The model under evaluation and what scores.json says about it (from train/<strategy>/info.json)."""

    arch: str
    checkpoint: str
    scale: str | None = None
    official: bool | None = None  # a DataComp scale with its fixed settings; `tiny` is not
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What must match for existing results in an output folder to be reused."""
        path = Path(self.checkpoint)
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = ""
        return {"arch": self.arch, "checkpoint": str(path.resolve()), "checkpoint_stamp": stamp}


def run_task(
    model: Any, task: Task, data_dir: Path, batch_size: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, sample info) of one task: routed by the task's kind, as DataComp's eval_utils/main.py."""
    from curate.eval import datasets

    if task.kind == RETRIEVAL:
        from curate.eval.retrieval import evaluate_retrieval

        items = datasets.load_retrieval(data_dir, task.key)
        return evaluate_retrieval(model, list(items), batch_size, task.key), _seen(len(items), items)
    if task.kind == WINOGAVIL:
        from curate.eval.winogavil import evaluate_winogavil

        items = datasets.load_winogavil(data_dir)
        return evaluate_winogavil(model, list(items)), _seen(len(items), items)
    wds = datasets.load_wds_task(data_dir, task.key)
    if task.kind == FAIRFACE:
        metrics, n = _fairface(model, task, wds, batch_size)
        return metrics, _seen(n, wds)
    from curate.eval.classification import evaluate_classification

    need_meta = task.kind in (WILDS, DOLLAR_STREET, GEODE)
    metrics, logits, feats = evaluate_classification(model, wds, batch_size, need_meta=need_meta)
    if need_meta:
        assert feats.meta is not None
        pred = logits.argmax(axis=1)
        if task.kind == WILDS:
            from curate.eval.wilds import wilds_metrics

            metrics.update(wilds_metrics(task.key, pred, feats.labels, feats.meta))
        elif task.kind == DOLLAR_STREET:
            from curate.eval.fairness import dollar_street_metrics

            metrics.update(dollar_street_metrics(logits, feats.labels, feats.meta))
        else:
            from curate.eval.fairness import geode_metrics

            metrics.update(geode_metrics(pred, feats.labels, feats.meta))
    elif task.kind != CLASSIFICATION:
        raise ValueError(f"no evaluator for kind {task.kind}")
    return metrics, _seen(len(feats), wds)


def _seen(n: int, source: Any) -> dict[str, Any]:
    skipped = dict(getattr(source, "skipped", {}) or {})
    return {"samples": n, "skipped": sum(skipped.values()), "skipped_reasons": skipped}


def _fairface(model: Any, task: Task, wds: Any, batch_size: int) -> tuple[dict[str, Any], int]:
    """One classifier per objective over the same image features; the prediction per objective is the
    argmax over that objective's own classes (DataComp pads to the largest count with -1e9 logits)."""
    from curate.eval.classification import classify, encode_wds
    from curate.eval.fairness import fairface_metrics, split_objectives

    classes = split_objectives(task.key, wds.classnames, "classnames.txt")
    templates = split_objectives(task.key, wds.templates, "zeroshot_classification_templates.txt")
    feats = encode_wds(model, wds, batch_size, need_meta=True)
    preds = np.stack(
        [classify(model, feats, classes[o], templates[o]).argmax(axis=1) for o in FAIRNESS_OBJECTIVES],
        axis=1,
    )
    assert feats.meta is not None
    return fairface_metrics(preds, feats.meta), len(feats)


# ------------------------------------------------------------------ the run


def check_output(out_dir: Path, info: dict[str, Any]) -> bool:
    """Whether out_dir's existing results belong to this model and data (True: none yet, or they do)."""
    path = out_dir / res.INFO_FILE
    if not path.exists():
        return True
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    keys = ("arch", "checkpoint", "checkpoint_stamp", "data_dir")
    return all(old.get(k) == info.get(k) for k in keys)


def evaluate_model(
    model_info: ModelInfo,
    data_dir: Path,
    out_dir: Path,
    tasks: list[Task],
    *,
    batch_size: int = 64,
    device: str = "auto",
    log: Log = print,
    on_mismatch: str = "error",  # or "reset": existing results of another model/data are removed
) -> dict[str, Any]:
    """Evaluate every selected task not yet in out_dir/eval_results.jsonl; returns scores.json's content."""
    from curate.eval import datasets
    from curate.eval.zeroshot import load_eval_model, model_problems, resolve_device

    problems = model_problems(model_info.arch, model_info.checkpoint)
    if problems:
        raise CurateError(f"cannot evaluate {model_info.checkpoint}", problems)
    device = resolve_device(device)
    data_dir = Path(data_dir)
    info = {**model_info.identity(), "data_dir": str(data_dir.resolve())}
    if not check_output(out_dir, info):
        if on_mismatch != "reset":
            raise CurateError(
                f"{out_dir}: holds results of another model or eval data (see {out_dir / res.INFO_FILE}); "
                "give another output folder, or remove that one"
            )
        log(f"{out_dir}: results of another model or eval data; starting over")
        for name in (res.RESULTS_FILE, res.SCORES_FILE, res.SAMPLES_FILE, res.INFO_FILE):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out_dir / res.INFO_FILE, {**info, "scale": model_info.scale, "official": model_info.official}
    )
    results_path = out_dir / res.RESULTS_FILE
    if res.repair_tail(results_path):
        log(f"{results_path}: dropped a half-written last line")
    lines = res.read_results(results_path)
    samples_path = out_dir / res.SAMPLES_FILE
    samples = json.loads(samples_path.read_text()) if samples_path.exists() else {}
    missing: dict[str, str] = {}
    failed: dict[str, str] = {}
    model = None
    for task in tasks:
        if task.key in lines:
            log(f"{task.name}: already in {results_path.name}, skipped")
            continue
        reason = datasets.missing_reason(data_dir, task.key)
        if reason is not None:
            missing[task.key] = reason
            log(f"{task.name}: skipped, eval data missing: {reason}")
            continue
        if model is None:
            log(f"loading {model_info.arch} from {model_info.checkpoint} on {device}")
            model = load_eval_model(model_info.arch, model_info.checkpoint, device)
        t0 = time.time()
        try:
            metrics, seen = run_task(model, task, data_dir, batch_size)
        except CurateError as exc:
            failed[task.key] = str(exc)
            log(f"{task.name}: failed: {exc}")
            continue
        line = res.results_line(task, metrics)
        res.append_line(results_path, line)
        lines[task.key] = line
        samples[task.key] = {**seen, "expected": task.size, "seconds": round(time.time() - t0, 2)}
        atomic_write_json(samples_path, samples)
        main = line["metrics"]["main_metric"]
        shown = f"{main:.4f}" if isinstance(main, float) else "no main metric"
        skipped = f", {seen['skipped']} samples skipped" if seen["skipped"] else ""
        log(f"{task.name}: {shown} ({seen['samples']} samples{skipped}, {time.time() - t0:.1f} s)")
    scores = build_scores(model_info, data_dir, tasks, lines, samples, missing, failed)
    atomic_write_json(out_dir / res.SCORES_FILE, scores)
    if failed:
        raise CurateError(
            f"{len(failed)} evaluation task(s) failed; their data must be fixed (the other results are "
            f"in {results_path})",
            [f"{k}: {v}" for k, v in failed.items()],
        )
    return scores


def build_scores(
    model_info: ModelInfo,
    data_dir: Path,
    tasks: list[Task],
    lines: dict[str, dict[str, Any]],
    samples: dict[str, Any],
    missing: dict[str, str],
    failed: dict[str, str],
) -> dict[str, Any]:
    """scores.json: the model, DataComp's aggregates (each with its coverage), every selected task's
    main metric, extra tasks on their own, and what is missing or failed."""
    selected = {t.key for t in tasks}
    datacomp_lines = {k: v for k, v in lines.items() if k in selected and not _is_extra(k)}
    per_task = {}
    for task in tasks:
        line = lines.get(task.key)
        entry: dict[str, Any] = {
            "dataset": task.name,
            "main_metric": line["metrics"]["main_metric"] if line else None,
        }
        if task.key in samples:
            entry["samples"] = samples[task.key].get("samples")
            entry["expected"] = task.size
        if not task.scored:
            entry["unscored"] = True
        per_task[task.key] = entry
    aggregates = aggregate(datacomp_lines)
    return {
        "model": {
            "arch": model_info.arch,
            "checkpoint": model_info.checkpoint,
            "scale": model_info.scale,
            "official": model_info.official,
        },
        "data_dir": str(data_dir),
        "complete": not any(a["partial"] for a in aggregates.values()),
        "aggregates": aggregates,
        "tasks": {k: v for k, v in per_task.items() if not _is_extra(k)},
        "extra": extra_scores({k: v for k, v in lines.items() if k in selected}),
        "missing": missing,
        "failed": failed,
        "small_eval_sets": sorted(
            k
            for k, s in samples.items()
            if k in selected and s.get("expected") and s.get("samples", 0) < s["expected"]
        ),
    }


def _is_extra(key: str) -> bool:
    from curate.eval.tasks import EXTRA_TASKS

    return key in EXTRA_TASKS
