"""The task registry against DataComp's tasklist.yml facts (reference §5.1, §6.1)."""

from __future__ import annotations

from collections import Counter

import pytest

from curate.errors import CurateError
from curate.eval.tasks import (
    AGGREGATES,
    DATACOMP_TASKS,
    EXTRA_TASKS,
    META_FIELDS,
    get_task,
    select_tasks,
)


def test_forty_tasks_thirty_eight_scored_in_tasklist_order():
    assert len(DATACOMP_TASKS) == 40
    assert [t.key for t in DATACOMP_TASKS[:3]] == ["vtab/caltech101", "cifar10", "vtab/cifar100"]
    assert [t.key for t in DATACOMP_TASKS[-2:]] == ["fairness/fairface", "fairness/utkface"]
    unscored = [t.key for t in DATACOMP_TASKS if not t.scored]
    assert unscored == ["fairness/fairface", "fairness/utkface"]
    assert len({t.key for t in DATACOMP_TASKS}) == len({t.name for t in DATACOMP_TASKS}) == 40


def test_tag_counts_and_main_metrics():
    tags = Counter(tag for t in DATACOMP_TASKS for tag in t.tags)
    assert tags == {
        "vtab_natural": 7,
        "vtab_specialized": 3,
        "vtab_structured": 3,
        "retrieval": 3,
        "wilds": 3,
        "fairness": 4,
    }
    assert get_task("vtab/pets").main_metric == "mean_per_class_recall"
    assert get_task("misc/winogavil").main_metric == "jaccard_score_10-12"
    assert get_task("wilds/fmow").main_metric == "acc_worst_region"
    assert get_task("fairness/dollar_street").main_metric == "acc_top5_wg"
    assert get_task("imagenet1k").size == 50000 and get_task("imagenet1k").num_classes == 1000


def test_folders_follow_datacomp_naming():
    assert get_task("vtab/caltech101").folder == "wds_vtab-caltech101_test"
    assert get_task("wilds/iwildcam").folder == "wds_wilds-iwildcam_test"
    assert get_task("fairness/dollar_street").folder == "wds_dollar_street_test"
    assert get_task("retrieval/mscoco_2014_5k_test_image_text_retrieval").folder is None
    assert META_FIELDS["wilds/fmow"] == ("region", "year", "y")


def test_aggregate_groups():
    groups = {a.name: a.keys for a in AGGREGATES}
    assert list(groups) == ["ImageNet", "ImageNet dist. shifts", "VTAB", "Retrieval", "Average"]
    assert [len(groups[n]) for n in groups] == [1, 6, 13, 3, 38]
    names = {get_task(k).name for k in groups["VTAB"]}
    assert "SUN397" in names and "CIFAR-10" not in names
    assert not any(get_task(k).extra for k in groups["Average"])


def test_selection_all_excludes_extras_and_keeps_order():
    assert [t.key for t in select_tasks("all")] == [t.key for t in DATACOMP_TASKS]
    picked = select_tasks(["openclipart", "mnist", "cifar10"])
    assert [t.key for t in picked] == ["cifar10", "mnist", "openclipart"]
    assert "openclipart" in EXTRA_TASKS and picked[-1].extra
    assert len(select_tasks("all,openclipart")) == 41


def test_unknown_keys_listed_with_valid_ones():
    with pytest.raises(CurateError) as info:
        select_tasks("cifar10,imagenet,cifar11")
    text = str(info.value)
    assert "'imagenet'" in text and "'cifar11'" in text
    assert "vtab/caltech101" in text and "openclipart" in text
