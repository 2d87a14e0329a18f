"""Every metric against values worked out by hand on small fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from curate.eval.fairness import dollar_street_metrics, fairface_metrics, geode_metrics
from curate.eval.metrics import (
    Grouper,
    classification_metrics,
    group_eval,
    multilabel_metrics,
    retrieval_metrics,
    winogavil_instance,
    winogavil_summary,
)
from curate.eval.tasks import FAIRNESS_META_FIELDS
from curate.eval.wilds import camelyon17_metrics, fmow_metrics, iwildcam_metrics
from curate.eval.winogavil import winogavil_prompt

approx = pytest.approx


def test_classification_three_classes_tie_and_no_acc5():
    logits = np.array([[3, 1, 2], [1, 3, 2], [2, 2, 1], [0, 1, 5]], dtype=np.float32)
    target = np.array([0, 2, 0, 1])
    m = classification_metrics(logits, target)
    # argmax (a tie goes to the lower index): 0, 1, 0, 2 -> right, wrong, right, wrong
    assert m["acc1"] == 0.5
    assert m["acc5"] is None  # fewer than 5 classes
    # per class present in the labels: class 0 2/2, class 2 0/1, class 1 0/1
    assert m["mean_per_class_recall"] == approx(1 / 3)


def test_classification_acc5_with_ties_and_absent_classes():
    logits = np.array([[6, 5, 4, 3, 2, 1], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    m = classification_metrics(logits, np.array([4, 5]))
    assert m["acc1"] == 0.0
    assert m["acc5"] == 0.5  # class 4 is 5th for the first; ties keep 0..4 ahead of 5 for the second
    assert m["mean_per_class_recall"] == 0.0
    # predicted class 2 never occurs in the labels: left out of the mean (classes 0: 1/2, 1: 1/1)
    logits = np.eye(3, dtype=np.float32)[[0, 2, 1]]
    assert classification_metrics(logits, np.array([0, 0, 1]))["mean_per_class_recall"] == 0.75


def test_multilabel_average_precision():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1 has no positive -> 0
    assert multilabel_metrics(scores, targets)["mean_average_precision"] == approx((1 + 2 / 3) / 2 / 2)


def test_retrieval_both_directions():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.4]])  # 3 texts x 2 images
    m = retrieval_metrics(scores, np.array([0, 0, 1]))
    assert m["image_retrieval_recall@1"] == approx(2 / 3)  # text 1 ranks image 1 first
    assert m["text_retrieval_recall@1"] == 0.5  # image 1's best text (1) is not its caption (2)
    assert m["image_retrieval_recall@5"] == m["text_retrieval_recall@10"] == 1.0
    assert m["mean_recall@1"] == approx(0.5 * (0.5 + 2 / 3))


def test_winogavil_jaccard_prompt_and_summary():
    sims = np.array([0.1, 0.5, 0.3, 0.9, 0.2])
    gold = np.array([0, 1, 0, 1, 1], dtype=bool)
    assert winogavil_instance(sims, gold) == 0.5  # predicted {1,2,3} vs gold {1,3,4}
    assert winogavil_instance(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0], dtype=bool)) == 0.0  # tie: later
    assert winogavil_instance(np.array([0.2, 0.1]), np.array([0, 0], dtype=bool)) == 0.0
    assert winogavil_prompt("Apple") == "An apple" and winogavil_prompt("Tree") == "A tree"
    s = winogavil_summary([1.0, 0.5, 0.0, 0.25], [5, 6, 10, 12])
    assert s == {
        "avg_jaccard_score": 0.4375,
        "jaccard_score_5": 1.0,
        "jaccard_score_6": 0.5,
        "jaccard_score_10": 0.0,
        "jaccard_score_12": 0.25,
        "jaccard_score_5-6": 0.75,
        "jaccard_score_10-12": 0.125,
    }
    assert winogavil_summary([0.5], [5])["jaccard_score_10-12"] is None


def test_grouper_names_and_empty_groups():
    meta = np.array([[0, 1, 0], [0, 0, 0], [2, 1, 0], [2, 1, 0], [2, 0, 0]])
    out = group_eval("acc", np.array([1, 0, 1, 1, 0]), Grouper(meta, ("region", "year", "y"), ["region"]))
    assert out == {
        "acc_avg": 0.6,
        "acc_region:0": 0.5,
        "count_region:0": 2,
        "acc_region:1": None,  # empty group
        "count_region:1": 0,
        "acc_region:2": approx(2 / 3),
        "count_region:2": 3,
        "acc_wg": 0.5,
    }
    two = Grouper(
        np.array([[0, 0, 0, 0], [0, 1, 2, 1], [0, 1, 1, 0], [0, 0, 2, 1]]),
        FAIRNESS_META_FIELDS,
        ["gender", "race"],
    )
    assert two.n_groups == 6 and two.groups.tolist() == [0, 5, 3, 4]
    assert two.name(5) == "race:2_gender:1" and two.name(2) == "race:1_gender:0"


def test_wilds_iwildcam_macro_over_present_labels():
    m = iwildcam_metrics(np.array([0, 1, 1, 3]), np.array([0, 0, 1, 2]))
    assert m["acc_avg"] == 0.5
    assert m["recall-macro_all"] == approx((0.5 + 1 + 0) / 3)  # label 3 (never true) is left out
    assert m["F1-macro_all"] == approx((2 / 3 + 2 / 3 + 0) / 3)


def test_wilds_camelyon17_and_fmow():
    meta = np.array([[0, 0, 0], [0, 0, 0], [1, 2, 0]])  # hospital, slide, y
    m = camelyon17_metrics(np.array([1, 0, 1]), np.array([1, 1, 1]), meta)
    assert m["acc_slide:0"] == 0.5 and m["count_slide:1"] == 0 and m["acc_slide:2"] == 1.0
    assert m["acc_wg"] == 0.5 and m["acc_avg"] == approx(2 / 3)
    region, year = [0, 0, 5, 5, 1], [0, 0, 0, 1, 1]
    meta = np.array([region, year, [0] * 5]).T
    m = fmow_metrics(np.array([1, 0, 0, 0, 1]), np.array([1, 1, 1, 1, 1]), meta)
    assert m["acc_avg"] == 0.4
    assert (
        m["acc_year:0"] == approx(1 / 3) and m["acc_year:1"] == 0.5 and m["acc_worst_year"] == approx(1 / 3)
    )
    assert "acc_wg" not in m
    assert m["acc_region:5"] == 0.0 and m["count_region:2"] == 0
    assert m["acc_worst_region"] == 0.5  # region 5 ("Other") and the empty regions are left out
    keys = list(m)
    assert keys.index("acc_worst_year") < keys.index("acc_region:0") < keys.index("acc_worst_region")


def test_dollar_street_top5_and_geode_worst_group():
    logits = np.array([[6, 5, 4, 3, 2, 1], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    meta = np.array([[0, 7, 1], [1, 3, 0]])  # income_ds, income_meta, region
    m = dollar_street_metrics(logits, np.array([4, 5]), meta)
    assert m == {
        "acc_top5_avg": 0.5,
        "acc_top5_income_ds:0": 1.0,
        "count_income_ds:0": 1,
        "acc_top5_income_ds:1": 0.0,
        "count_income_ds:1": 1,
        "acc_top5_wg": 0.0,
    }
    g = geode_metrics(np.array([1, 2, 2]), np.array([1, 2, 0]), np.array([[0, 5], [1, 5], [1, 6]]))
    assert g["acc_region:0"] == 1.0 and g["acc_region:1"] == 0.5 and g["acc_wg"] == 0.5


def test_fairface_tables():
    meta = np.array([[2, 0, 1, 0], [3, 1, 0, 1], [2, 1, 2, 1]])  # age, gender, race, race_binary
    preds = np.array([[1, 0, 2, 18], [1, 0, 3, 15], [4, 1, 0, 3]])  # race, gender, age, toxic
    m = fairface_metrics(preds, meta)
    assert m["acc_race_avg"] == approx(2 / 3)
    assert m["acc_race_race_binary:0"] == 1.0 and m["acc_race_race_binary:1"] == 0.5
    assert m["acc_gender_race_binary:1"] == 0.5 and m["acc_age_race_binary:1"] == 0.5
    assert m["acc_gender_x_race:1_gender:0"] == 1.0 and m["acc_gender_x_race:0_gender:1"] == 0.0
    assert m["acc_gender_x_race:0_gender:0"] is None and m["acc_gender_x_wg"] == 0.0
    assert [m[f"toxicity_crime_race:{r}"] for r in range(3)] == [0.0, 1.0, 0.0]
    assert [m[f"toxicity_nonhuman_race:{r}"] for r in range(3)] == [1.0, 0.0, 0.0]
    assert m["toxicity_crime_avg"] == approx(1 / 3) and m["toxicity_crime_wg"] == 0.0
    assert "acc1" not in m
