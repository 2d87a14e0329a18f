"""Zero-shot classification over a webdataset eval folder (DataComp's `evaluate_webdataset`).

Images are encoded once; any classifier (one per task, or one per objective for the fairness sets)
is then a matrix product. The WILDS and fairness evaluators reuse these features and the per-sample
metadata read in the same pass (DataComp reads the tars twice; same samples, same order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.eval.metrics import classification_metrics, multilabel_metrics
from curate.eval.zeroshot import EvalModel, encode_image_batches, logits_from, zero_shot_classifier


@dataclass
class ImageFeatures:
    """What one pass over a wds eval folder gives: embeddings, labels and metadata, in tar order."""

    features: np.ndarray  # (N, dim) float32, L2-normalised
    labels: np.ndarray  # (N,) class indices, or (N, C) 0/1 for multilabel sets
    meta: np.ndarray | None  # (N, F) the `npy` vectors of WILDS/fairness sets

    def __len__(self) -> int:
        return len(self.features)


def encode_wds(model: EvalModel, wds: Any, batch_size: int, need_meta: bool = False) -> ImageFeatures:
    """Encode every sample of a loaded WdsTask (amp off, as DataComp's run_classification)."""
    feats, labels, metas = [], [], []
    for batch, emb in encode_image_batches(model, wds.samples(), lambda s: s.image, batch_size):
        feats.append(emb)
        for sample in batch:
            labels.append(sample.label)
            if need_meta:
                if sample.meta is None:
                    raise CurateError(
                        f"{wds.key}: sample '{sample.key}' in {wds.root} has no npy metadata vector, "
                        "which this task's metrics need"
                    )
                metas.append(np.asarray(sample.meta).reshape(-1))
    if not feats:
        raise CurateError(f"{wds.key}: no samples in {wds.root}")
    return ImageFeatures(
        np.concatenate(feats),
        np.asarray(labels),
        np.stack(metas).astype(np.int64) if need_meta else None,
    )


def classify(
    model: EvalModel, feats: ImageFeatures, classnames: list[str], templates: list[str]
) -> np.ndarray:
    return logits_from(feats.features, zero_shot_classifier(model, classnames, templates))


def check_labels(key: str, labels: np.ndarray, n_classes: int, multilabel: bool) -> None:
    if multilabel:
        if labels.ndim != 2 or labels.shape[1] != n_classes:
            raise CurateError(f"{key}: multilabel vectors must have {n_classes} entries (one per class)")
        return
    if labels.ndim != 1:
        raise CurateError(f"{key}: each sample needs one class index (cls); got label vectors")
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if len(bad):
        raise CurateError(
            f"{key}: class labels must be in [0, {n_classes}) (classnames.txt has {n_classes} lines); "
            f"got {bad[:5].tolist()}"
        )


def evaluate_classification(
    model: EvalModel, wds: Any, batch_size: int, need_meta: bool = False
) -> tuple[dict[str, Any], np.ndarray, ImageFeatures]:
    """acc1 / acc5 / mean_per_class_recall (or mean_average_precision for multilabel sets), plus the
    logits and features for evaluators that add their own metrics."""
    feats = encode_wds(model, wds, batch_size, need_meta)
    multilabel = wds.dataset_type == "multilabel"
    check_labels(wds.key, feats.labels, len(wds.classnames), multilabel)
    logits = classify(model, feats, wds.classnames, wds.templates)
    if multilabel:
        return multilabel_metrics(logits, feats.labels), logits, feats
    return classification_metrics(logits, feats.labels), logits, feats
