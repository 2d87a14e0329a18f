"""Image-text retrieval (Flickr, MSCOCO) as DataComp's `retr_eval.py` through CLIP_benchmark 1.4.0.

All images and all captions are embedded (autocast on CUDA), scores = texts @ images^T, and recall@k
is reported both ways; `mean_recall@1` averages the two recall@1 values (main metric).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.eval.metrics import retrieval_metrics
from curate.eval.zeroshot import EvalModel, batched, encode_image_batches


def evaluate_retrieval(model: EvalModel, items: list[Any], batch_size: int, key: str = "") -> dict[str, Any]:
    if not items:
        raise CurateError(f"{key}: the retrieval set holds no image")
    images = [emb for _, emb in encode_image_batches(model, items, lambda it: it.image, batch_size, amp=True)]
    texts, owner = [], []
    for i, item in enumerate(items):
        if not item.captions:
            raise CurateError(f"{key}: image {i} has no caption")
        texts += list(item.captions)
        owner += [i] * len(item.captions)
    text_emb = [model.encode_texts(chunk, amp=True).cpu().numpy() for chunk in batched(texts, batch_size)]
    scores = np.concatenate(text_emb) @ np.concatenate(images).T
    return retrieval_metrics(scores, np.asarray(owner))
