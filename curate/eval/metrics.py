"""Metrics on predictions, with the reference's semantics (pure numpy/sklearn, no model).

Every function here reproduces what DataComp's evaluation computes (through CLIP_benchmark 1.4.0,
sklearn and the `wilds` package), so that the numbers are comparable; the docstrings say whose
semantics each one follows. Ties are broken towards the lower index everywhere (argmax's rule).
Values are plain Python floats (or None) so they go straight into JSON.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def _ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first; ties keep the lower index first."""
    k = min(k, scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def topk_hits(logits: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """Per sample: whether the label is among the k highest logits."""
    return (_ranked(logits, k) == np.asarray(target)[:, None]).any(axis=1)


def classification_metrics(logits: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """acc1, acc5 (null below 5 classes) and mean per-class recall (sklearn's balanced accuracy over the
    classes present in the labels), as DataComp's `evaluate_webdataset`."""
    from sklearn.metrics import balanced_accuracy_score

    target = np.asarray(target).astype(np.int64)
    if len(target) == 0:
        return {"acc1": None, "acc5": None, "mean_per_class_recall": None}
    pred = logits.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": those are left out
        mpcr = float(balanced_accuracy_score(target, pred))
    return {
        "acc1": float(topk_hits(logits, target, 1).mean()),
        "acc5": float(topk_hits(logits, target, 5).mean()) if logits.shape[1] >= 5 else None,
        "mean_per_class_recall": mpcr,
    }


def average_precision_per_class(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """CLIP_benchmark's multilabel AP: per class, rank by score, average the precision at each positive;
    a class without positives scores 0."""
    n, c = scores.shape
    ranks = np.arange(1, n + 1, dtype=np.float64)
    ap = np.zeros(c)
    for k in range(c):
        order = np.argsort(-scores[:, k], kind="stable")
        truth = targets[order, k].astype(bool)
        precision = np.cumsum(truth) / ranks
        ap[k] = precision[truth].sum() / max(float(truth.sum()), 1.0)
    return ap


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    return {"mean_average_precision": float(average_precision_per_class(scores, targets).mean())}


def recall_at_k(scores: np.ndarray, positives: np.ndarray, k: int) -> float:
    """CLIP_benchmark's retrieval recall@k: a query counts when any of its positives is in its top k
    (fewer than k candidates: all of them); averaged over queries."""
    top = _ranked(scores, k)
    hit = np.take_along_axis(positives, top, axis=1).any(axis=1)
    return float(hit.mean()) if len(hit) else 0.0


def retrieval_metrics(
    text_image_scores: np.ndarray, text_to_image: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, Any]:
    """Both directions from the (texts x images) similarity matrix and each text's image index:
    image_retrieval (text -> image) and text_retrieval (image -> text), then mean_recall@1."""
    n_texts, n_images = text_image_scores.shape
    positives = np.zeros((n_texts, n_images), dtype=bool)
    positives[np.arange(n_texts), text_to_image] = True
    out: dict[str, Any] = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = recall_at_k(text_image_scores, positives, k)
        out[f"text_retrieval_recall@{k}"] = recall_at_k(text_image_scores.T, positives.T, k)
    out["mean_recall@1"] = 0.5 * (out["text_retrieval_recall@1"] + out["image_retrieval_recall@1"])
    return out


def winogavil_instance(similarities: np.ndarray, gold: np.ndarray) -> float:
    """One WinoGAViL instance: predict the n_assoc most similar candidates (n_assoc = number of gold
    associations), score sklearn's Jaccard index of predicted vs gold."""
    from sklearn.metrics import jaccard_score

    gold = np.asarray(gold, dtype=bool)
    n_assoc = int(gold.sum())
    order = np.argsort(similarities, kind="stable")  # ascending, as DataComp; ties: the later one is taken
    chosen = order[-n_assoc:] if n_assoc else order  # DataComp's [-0:] selects every candidate
    pred = np.isin(np.arange(len(similarities)), chosen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(jaccard_score(gold, pred, zero_division=0.0))


def winogavil_summary(scores: Sequence[float], n_candidates: Sequence[int]) -> dict[str, Any]:
    """DataComp's WinoGAViL report: overall, per candidate count 5/6/10/12, and 5-6 / 10-12 (main)."""
    s = np.asarray(scores, dtype=np.float64)
    n = np.asarray(n_candidates)

    def mean(mask: np.ndarray) -> float | None:
        return float(s[mask].mean()) if mask.any() else None

    return {
        "avg_jaccard_score": mean(np.ones(len(s), dtype=bool)),
        "jaccard_score_5": mean(n == 5),
        "jaccard_score_6": mean(n == 6),
        "jaccard_score_10": mean(n == 10),
        "jaccard_score_12": mean(n == 12),
        "jaccard_score_5-6": mean(n <= 6),
        "jaccard_score_10-12": mean(n >= 10),
    }


# ------------------------------------------------------------------ WILDS-style grouped metrics


class Grouper:
    """WILDS' CombinatorialGrouper: groups are the combinations of some integer metadata fields, each
    field's cardinality being its max + 1 over the whole set (so some groups may be empty); the first
    field (in metadata order) varies fastest; names read `field:value`, last field first, joined by '_'."""

    def __init__(self, metadata: np.ndarray, fields: Sequence[str], groupby: Sequence[str]) -> None:
        idx = [i for i, f in enumerate(fields) if f in groupby]
        if len(idx) != len(groupby):
            raise ValueError(f"group fields {list(groupby)} not all in metadata fields {list(fields)}")
        self.fields = [fields[i] for i in idx]
        values = np.asarray(metadata)[:, idx].astype(np.int64)
        if values.size and values.min() < 0:
            raise ValueError(f"negative metadata value in {self.fields}")
        self.cardinality = values.max(axis=0) + 1 if len(values) else np.ones(len(idx), dtype=np.int64)
        self.factors = np.concatenate(([1], np.cumprod(self.cardinality)[:-1])).astype(np.int64)
        self.n_groups = int(np.prod(self.cardinality))
        self.groups = values @ self.factors

    def name(self, group: int) -> str:
        parts = []
        for i in reversed(range(len(self.fields))):
            value = (group // self.factors[i]) % self.cardinality[i]
            parts.append(f"{self.fields[i]}:{int(value)}")
        return "_".join(parts)


def group_values(
    name: str, values: np.ndarray, grouper: Grouper
) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """WILDS' compute_group_wise, keyed as standard_group_eval reports it: per group `<name>_<group>`
    (null when the group is empty) and `count_<group>`; also the non-empty (group, value) pairs."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {}
    present = []
    for g in range(grouper.n_groups):
        mask = grouper.groups == g
        count = int(mask.sum())
        value = float(v[mask].mean()) if count else None
        out[f"{name}_{grouper.name(g)}"] = value
        out[f"count_{grouper.name(g)}"] = count
        if value is not None:
            present.append((g, value))
    return out, present


def group_eval(name: str, values: np.ndarray, grouper: Grouper) -> dict[str, Any]:
    """WILDS' standard_group_eval for an element-wise metric (accuracy): `<name>_avg`, the per-group
    values and counts, then `<name>_wg`, the worst (lowest) over non-empty groups."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {f"{name}_avg": float(v.mean()) if len(v) else 0.0}
    groups, present = group_values(name, v, grouper)
    out.update(groups)
    out[f"{name}_wg"] = min(value for _, value in present) if present else None
    return out


def macro_over_present(kind: str, target: np.ndarray, pred: np.ndarray) -> float:
    """WILDS' Recall/F1 with average='macro' over the labels present in y_true only."""
    from sklearn.metrics import f1_score, recall_score

    if len(target) == 0:
        return 0.0
    fn = {"recall": recall_score, "f1": f1_score}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(target, pred, average="macro", labels=np.unique(target), zero_division=0.0))
