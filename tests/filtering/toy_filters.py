"""Third-party filters (`tests.filtering.toy_filters:Class`) for composition and resume tests."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from curate.filtering.base import Batch, Filter, FilterParams, Verdict, drop_reasons


class AtLeastParams(FilterParams):
    column: str
    value: float


class AtLeast(Filter):
    """Keep rows whose `column` >= `value`."""

    name = "at_least"
    Params = AtLeastParams

    def columns(self) -> list[str]:
        return [self.params.column]

    def apply(self, batch: Batch) -> Verdict:
        x = batch.column(self.params.column).astype(np.float64)
        keep = x >= self.params.value
        return Verdict(
            keep, score=x, reason=drop_reasons(keep, f"{self.params.column} < {self.params.value}")
        )


class MedianParams(FilterParams):
    column: str = "clip_l14_similarity_score"
    log: str | None = None  # a file each fit and apply appends a line to


class AboveMedian(Filter):
    """Keep rows at or above the pool-wide median. Fit and apply can be slowed down (CURATE_TEST_FIT_SLEEP,
    CURATE_TEST_APPLY_SLEEP: seconds) and observed (params.log or CURATE_TEST_LOG: a line per call)."""

    name = "above_median"
    Params = MedianParams
    needs_fit = True

    def columns(self) -> list[str]:
        return [self.params.column]

    def fit(self, pool: Any, out_dir: Path) -> None:
        _log("fit", self.params.log)
        time.sleep(float(os.environ.get("CURATE_TEST_FIT_SLEEP", "0")))
        median = float(np.nanmedian(pool.column(self.params.column)))
        (out_dir / "median.json").write_text(json.dumps({"median": median}))

    def load(self, fit_dir: Path) -> None:
        self.median = json.loads((fit_dir / "median.json").read_text())["median"]

    def apply(self, batch: Batch) -> Verdict:
        _log(f"apply {batch.part}", self.params.log)
        time.sleep(float(os.environ.get("CURATE_TEST_APPLY_SLEEP", "0")))
        x = batch.column(self.params.column).astype(np.float64)
        keep = x >= self.median
        return Verdict(keep, score=x, reason=drop_reasons(keep, "below the median"))


def _log(line: str, path: str | None) -> None:
    path = path or os.environ.get("CURATE_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
