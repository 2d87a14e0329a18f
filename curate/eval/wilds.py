"""WILDS metrics (iWildCam, Camelyon17, FMoW) as DataComp's `eval_utils/wilds_eval.py` computes them.

The metadata vector layouts are in `curate.eval.tasks.WILDS_META_FIELDS`. DataComp reports these
after acc1/acc5/mean_per_class_recall of the plain classification.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.eval.metrics import Grouper, group_eval, group_values, macro_over_present
from curate.eval.tasks import FMOW_REGIONS, WILDS_META_FIELDS


def iwildcam_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Over all examples: accuracy, macro recall and macro F1 over the labels present in the test set."""
    return {
        "acc_avg": float((pred == target).mean()) if len(target) else 0.0,
        "recall-macro_all": macro_over_present("recall", target, pred),
        "F1-macro_all": macro_over_present("f1", target, pred),
    }


def camelyon17_metrics(pred: np.ndarray, target: np.ndarray, meta: np.ndarray) -> dict[str, Any]:
    """Accuracy grouped by slide: acc_avg, per-slide acc_slide:i / count_slide:i, acc_wg."""
    grouper = Grouper(meta, WILDS_META_FIELDS["wilds/camelyon17"], ["slide"])
    return group_eval("acc", pred == target, grouper)


def fmow_metrics(pred: np.ndarray, target: np.ndarray, meta: np.ndarray) -> dict[str, Any]:
    """Accuracy grouped by year (acc_wg renamed acc_worst_year), then per region, and the worst region
    over regions with samples, leaving out the "Other" region (main metric)."""
    fields = WILDS_META_FIELDS["wilds/fmow"]
    correct = pred == target
    out = group_eval("acc", correct, Grouper(meta, fields, ["year"]))
    out["acc_worst_year"] = out.pop("acc_wg")
    regions, present = group_values("acc", correct, Grouper(meta, fields, ["region"]))
    out.update(regions)
    kept = [v for g, v in present if g >= len(FMOW_REGIONS) or FMOW_REGIONS[g] != "Other"]
    out["acc_worst_region"] = min(kept) if kept else None
    return out


def wilds_metrics(key: str, pred: np.ndarray, target: np.ndarray, meta: np.ndarray) -> dict[str, Any]:
    if key == "wilds/iwildcam":
        return iwildcam_metrics(pred, target)
    if key == "wilds/camelyon17":
        return camelyon17_metrics(pred, target, meta)
    if key == "wilds/fmow":
        return fmow_metrics(pred, target, meta)
    raise ValueError(f"no WILDS metrics for {key}")
