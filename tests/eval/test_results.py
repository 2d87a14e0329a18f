"""eval_results.jsonl lines in DataComp's format; reading, appending, and a line cut short by a kill."""

from __future__ import annotations

import json
import math

import numpy as np

from curate.eval.results import append_line, read_results, repair_tail, results_line
from curate.eval.tasks import get_task


def test_line_format_and_main_metric():
    line = results_line(
        get_task("vtab/pets"), {"acc1": np.float32(0.5), "acc5": None, "mean_per_class_recall": 0.25}
    )
    assert list(line) == ["key", "dataset", "metrics"]
    assert line["key"] == "vtab/pets" and line["dataset"] == "Oxford-IIIT Pet"
    assert list(line["metrics"]) == ["acc1", "acc5", "mean_per_class_recall", "main_metric"]
    assert line["metrics"]["main_metric"] == 0.25 and isinstance(line["metrics"]["acc1"], float)
    fair = results_line(get_task("fairness/fairface"), {"acc_race_avg": 0.5, "acc_race_race:3": math.nan})
    assert fair["metrics"]["main_metric"] is None
    assert fair["metrics"]["acc_race_race:3"] is None  # NaN (an empty group) is written as null
    json.loads(json.dumps(fair, allow_nan=False))


def test_append_read_and_repair(tmp_path):
    path = tmp_path / "eval_results.jsonl"
    first = results_line(get_task("cifar10"), {"acc1": 0.1})
    append_line(path, first)
    with open(path, "a") as f:
        f.write('{"key": "mnist", "dataset": "MNI')  # a kill in the middle of a write
    assert list(read_results(path)) == ["cifar10"]
    assert repair_tail(path) and path.read_text() == json.dumps(first) + "\n"
    with open(path, "a") as f:
        f.write('{"key": "mnist", "dat')
    second = results_line(get_task("mnist"), {"acc1": 0.2})
    append_line(path, second)  # repairs before appending
    assert path.read_text().splitlines() == [json.dumps(first), json.dumps(second)]
    assert read_results(path)["mnist"]["metrics"]["main_metric"] == 0.2
    assert not repair_tail(path)
