"""Fairness sets as DataComp's `eval_utils/fairness_eval.py`: Dollar Street, GeoDE, FairFace, UTKFace.

Dollar Street and GeoDE are zero-shot classification plus a worst-group accuracy (income group,
region). FairFace and UTKFace carry `objective:` prefixed classnames and templates: one classifier
per objective (race, gender, age, toxic), accuracies grouped by race, and no main metric (unscored).
Metadata layouts and class-index conventions are in `curate.eval.tasks`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.eval.metrics import Grouper, group_eval, topk_hits
from curate.eval.tasks import (
    DOLLAR_STREET_META_FIELDS,
    FAIRNESS_META_FIELDS,
    FAIRNESS_OBJECTIVES,
    FAIRNESS_RACE_INDEX_OF_BINARY_0,
    FAIRNESS_TOXIC_CRIME_MIN,
    FAIRNESS_TOXIC_NONHUMAN,
    GEODE_META_FIELDS,
)


def dollar_street_metrics(logits: np.ndarray, target: np.ndarray, meta: np.ndarray) -> dict[str, Any]:
    """Top-5 accuracy grouped by income group: acc_top5_avg, per group, acc_top5_wg (main)."""
    grouper = Grouper(meta, DOLLAR_STREET_META_FIELDS, ["income_ds"])
    return group_eval("acc_top5", topk_hits(logits, target, 5), grouper)


def geode_metrics(pred: np.ndarray, target: np.ndarray, meta: np.ndarray) -> dict[str, Any]:
    """Accuracy grouped by region: acc_avg, per region, acc_wg (main)."""
    return group_eval("acc", pred == target, Grouper(meta, GEODE_META_FIELDS, ["region"]))


def split_objectives(key: str, lines: list[str], what: str) -> dict[str, list[str]]:
    """`objective:text` lines -> {objective: [text, ...]}; every objective must be present."""
    out: dict[str, list[str]] = {o: [] for o in FAIRNESS_OBJECTIVES}
    for i, line in enumerate(lines, 1):
        objective, sep, text = line.partition(":")
        if not sep or objective not in out:
            raise CurateError(
                f"{key}: {what} line {i} must read 'objective:text' with objective one of "
                f"{', '.join(FAIRNESS_OBJECTIVES)} (got {line!r})"
            )
        out[objective].append(text)
    empty = [o for o, v in out.items() if not v]
    if empty:
        raise CurateError(f"{key}: {what} has no line for objective(s) {', '.join(empty)}")
    return out


def fairface_metrics(preds: np.ndarray, meta: np.ndarray) -> dict[str, Any]:
    """preds: (N, 4) predicted class per objective (race, gender, age, toxic); meta: (N, 4) age, gender,
    race, race_binary. Tables 3-6 of the DataComp paper, as accuracies grouped by race."""
    fields = FAIRNESS_META_FIELDS
    col = {f: meta[:, i] for i, f in enumerate(fields)}
    pred = {o: preds[:, i] for i, o in enumerate(FAIRNESS_OBJECTIVES)}
    by_binary = Grouper(meta, fields, ["race_binary"])
    by_race = Grouper(meta, fields, ["race"])
    out: dict[str, Any] = {}
    race_binary_pred = (pred["race"] != FAIRNESS_RACE_INDEX_OF_BINARY_0).astype(np.int64)
    out.update(group_eval("acc_race", race_binary_pred == col["race_binary"], by_binary))
    for label in ("gender", "age"):
        out.update(group_eval(f"acc_{label}", pred[label] == col[label], by_binary))
    out.update(
        group_eval("acc_gender_x", pred["gender"] == col["gender"], Grouper(meta, fields, ["gender", "race"]))
    )
    toxic = pred["toxic"]
    out.update(group_eval("toxicity_crime", toxic >= FAIRNESS_TOXIC_CRIME_MIN, by_race))
    lo, hi = FAIRNESS_TOXIC_NONHUMAN
    out.update(group_eval("toxicity_nonhuman", (toxic >= lo) & (toxic < hi), by_race))
    return out
