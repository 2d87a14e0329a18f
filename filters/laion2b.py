"""`laion2b` (reference §2.8): LAION-2B's rule, CLIP ViT-B/32 similarity >= 0.28 and gcld3 says English.

gcld3 is optional (`pip install 'curate[laion2b]'`); without it the filter stops the run at preflight.
The threshold runs first here and gcld3 only on rows that pass it (the AND does not depend on order),
so a row failing both is reported with the score reason.
"""

from __future__ import annotations

import numpy as np

from curate.filtering.base import Batch, Filter, Verdict
from curate.filtering.langid import cld3_available, cld3_english_mask

THRESHOLD = 0.28
COLUMN = "clip_b32_similarity_score"


class Laion2b(Filter):
    """LAION-2B's filter: B/32 CLIP score and gcld3 English."""

    name = "laion2b"

    def columns(self) -> list[str]:
        return ["text", COLUMN]

    def preflight(self) -> list[str]:
        if cld3_available():
            return []
        return [
            "needs gcld3: apt-get install protobuf-compiler libprotobuf-dev; pip install 'curate[laion2b]'"
        ]

    def apply(self, batch: Batch) -> Verdict:
        scores = batch.column(COLUMN).astype(np.float32, copy=False)
        keep = scores >= np.float32(THRESHOLD)
        reason = np.full(len(batch), None, dtype=object)
        reason[~keep] = f"{COLUMN} < {THRESHOLD}"
        reason[np.isnan(scores)] = f"{COLUMN} is missing (NaN)"
        todo = np.flatnonzero(keep)
        english = cld3_english_mask(batch.table.column("text").take(todo))
        keep[todo[~english]] = False
        reason[todo[~english]] = "not English (gcld3)"
        return Verdict(keep, score=scores, reason=reason)
