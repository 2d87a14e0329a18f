"""`eval_results.jsonl`, DataComp's results file: one line per task, appended as each task finishes.

A line is `{"key": <task key>, "dataset": <display name>, "metrics": {..., "main_metric": v}}`, with
`main_metric` the task's main metric value (null when the task has none). Resuming skips every task
that already has a line; a line left half-written by a kill is dropped before anything is appended.
Values that DataComp writes as NaN (the accuracy of an empty group) are written as null here, so the
file is strict JSON; `count_<group>` says the group was empty.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from curate.eval.tasks import Task
from curate.rundir import atomic_write_text

RESULTS_FILE = "eval_results.jsonl"
SCORES_FILE = "scores.json"
INFO_FILE = "info.json"
SAMPLES_FILE = "samples.json"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_line(task: Task, metrics: dict[str, Any]) -> dict[str, Any]:
    metrics = _clean(dict(metrics))
    metrics["main_metric"] = metrics.get(task.main_metric) if task.main_metric else None
    return {"key": task.key, "dataset": task.name, "metrics": metrics}


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Lines by task key (the last line wins when a key repeats); unreadable lines are ignored."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if (
            isinstance(line, dict)
            and isinstance(line.get("key"), str)
            and isinstance(line.get("metrics"), dict)
        ):
            out[line["key"]] = line
    return out


def repair_tail(path: Path) -> bool:
    """Drop a last line without its newline (a write cut short), so appends start on a fresh line."""
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    atomic_write_text(path, data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace"))
    return True


def append_line(path: Path, line: dict[str, Any]) -> None:
    """One task's line, written with a single write and flushed to disk before the next task."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
