"""`no_filter` (reference §2.3): every row is kept; the baseline every other filter is measured against."""

from __future__ import annotations

import numpy as np

from curate.filtering.base import Batch, Filter, Verdict


class NoFilter(Filter):
    """Keeps every row of the pool."""

    name = "no_filter"

    def apply(self, batch: Batch) -> Verdict:
        return Verdict(np.ones(len(batch), dtype=bool))
