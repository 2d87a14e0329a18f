"""Aggregation (§6.1) on a complete 40-line results file and on partial ones, checked by hand."""

from __future__ import annotations

import json

import pytest

from curate.eval.aggregate import aggregate, datacomp_scores, extra_scores
from curate.eval.results import read_results, results_line
from curate.eval.tasks import DATACOMP_TASKS, EXTRA_TASKS

approx = pytest.approx


def full_results(tmp_path):
    """40 lines written from the registry: task number i (tasklist order, from 1) scores i/100."""
    path = tmp_path / "eval_results.jsonl"
    with open(path, "w") as f:
        for i, task in enumerate(DATACOMP_TASKS, 1):
            metrics = {task.main_metric: i / 100} if task.main_metric else {"acc_race_avg": 0.5}
            f.write(json.dumps(results_line(task, metrics)) + "\n")
    return path


def test_complete_file(tmp_path):
    lines = read_results(full_results(tmp_path))
    assert len(lines) == 40
    agg = aggregate(lines)
    assert agg["ImageNet"]["score"] == approx(0.12)  # ImageNet 1k is task 12
    # Sketch 13, v2 14, -A 15, -O 16, -R 17, ObjectNet 20
    assert agg["ImageNet dist. shifts"]["score"] == approx((13 + 14 + 15 + 16 + 17 + 20) / 600)
    # Caltech 1, CIFAR-100 3, CLEVR 4 and 5, DTD 7, EuroSAT 8, KITTI 18, Flowers 21, Pets 22,
    # PCam 24, RESISC45 26, SUN397 29, SVHN 30
    vtab = [1, 3, 4, 5, 7, 8, 18, 21, 22, 24, 26, 29, 30]
    assert agg["VTAB"]["score"] == approx(sum(vtab) / 1300)
    assert agg["Retrieval"]["score"] == approx((31 + 32 + 33) / 300)
    assert agg["Average"]["score"] == approx(sum(range(1, 39)) / 3800)  # FairFace, UTKFace (39, 40) excluded
    assert [a["covered"] for a in agg.values()] == ["1/1", "6/6", "13/13", "3/3", "38/38"]
    assert not any(a["partial"] for a in agg.values())
    assert datacomp_scores(lines)["Average"] == approx(0.195)


def test_partial_file_is_marked_and_refused_by_datacomp_rule(tmp_path):
    lines = read_results(full_results(tmp_path))
    del lines["imagenet-a"], lines["misc/winogavil"]
    agg = aggregate(lines)
    shifts = agg["ImageNet dist. shifts"]
    assert shifts == {
        "score": approx((13 + 14 + 16 + 17 + 20) / 500),
        "covered": "5/6",
        "partial": True,
        "missing": ["imagenet-a"],
    }
    assert agg["Retrieval"]["covered"] == "2/3" and agg["Retrieval"]["score"] == approx(0.315)
    assert agg["Average"]["covered"] == "36/38" and agg["Average"]["score"] == approx((741 - 15 - 33) / 3600)
    assert agg["VTAB"]["partial"] is False
    with pytest.raises(ValueError, match="36 scored"):
        datacomp_scores(lines)


def test_null_main_metric_counts_as_missing_and_empty_group_is_null():
    task = DATACOMP_TASKS[1]  # CIFAR-10: scored on acc1
    lines = {task.key: results_line(task, {"acc5": 0.5})}
    assert lines[task.key]["metrics"]["main_metric"] is None
    agg = aggregate(lines)
    assert agg["Average"]["score"] is None and agg["Average"]["covered"] == "0/38"


def test_extra_tasks_on_their_own():
    task = EXTRA_TASKS["openclipart"]
    lines = {task.key: results_line(task, {"acc1": 0.25, "acc5": 0.75})}
    assert extra_scores(lines) == {"openclipart": {"dataset": "openclipart", "main_metric": 0.25}}
    assert aggregate(lines)["Average"]["covered"] == "0/38"
