"""`clip_score` (reference §2.7): keep rows whose CLIP image-text similarity is high.

Threshold mode keeps `score >= threshold` (NaN never passes). Fraction mode turns the fraction into a
threshold over the whole pool first, exactly as DataComp does: n = int(N * fraction) with N every row
of the pool (NaN scores included), threshold = the score at index n of the scores sorted descending,
i.e. the (n+1)-th largest; so at least n+1 rows are kept and every tie at the cut is kept too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field, model_validator

from curate.filtering.base import Batch, Filter, FilterParams, Verdict, drop_reasons

if TYPE_CHECKING:
    from curate.filtering.metadata import MetadataSource


class ClipScoreParams(FilterParams):
    model: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="b32, l14 or any embed model name: reads column clip_<model>_similarity_score.",
    )
    column: str | None = Field(
        None, description="Any score column instead, e.g. pool_clip_l14_similarity_score (the pool's own)."
    )
    threshold: float | None = Field(None, description="Keep score >= threshold.")
    fraction: float | None = Field(None, gt=0, le=1, description="Keep the top fraction of the whole pool.")

    @model_validator(mode="after")
    def _one_mode(self) -> ClipScoreParams:
        if (self.model is None) == (self.column is None):
            raise ValueError("give exactly one of model or column")
        if (self.threshold is None) == (self.fraction is None):
            raise ValueError("give exactly one of threshold or fraction")
        return self


class ClipScore(Filter):
    """Top CLIP similarity, by an absolute threshold or a pool-wide fraction."""

    name = "clip_score"
    Params = ClipScoreParams
    needs_fit = True

    def __init__(self, params: ClipScoreParams | None = None) -> None:
        super().__init__(params)
        self.threshold: float | None = self.params.threshold

    @property
    def column(self) -> str:
        return self.params.column or f"clip_{self.params.model}_similarity_score"

    def columns(self) -> list[str]:
        return [self.column]

    def wants_fit(self) -> bool:
        return self.params.fraction is not None

    def fit(self, pool: MetadataSource, out_dir: Path) -> None:
        scores = pool.column(self.column).astype(np.float32, copy=False)
        n = int(len(scores) * self.params.fraction)
        if n >= len(scores):  # fraction 1.0: everything that has a score
            threshold = float(np.nanmin(scores)) if np.isfinite(scores).any() else float("nan")
        else:  # the element at index n of -sort(-scores); NaN sorts last, as in numpy's sort
            threshold = float(-np.partition(-scores, n)[n])
        state = {"column": self.column, "rows": len(scores), "n": n, "threshold": threshold}
        (out_dir / "threshold.json").write_text(json.dumps(state, indent=2) + "\n")

    def load(self, fit_dir: Path) -> None:
        if self.wants_fit():
            self.threshold = json.loads((fit_dir / "threshold.json").read_text())["threshold"]

    def apply(self, batch: Batch) -> Verdict:
        scores = batch.column(self.column).astype(np.float32, copy=False)
        keep = scores >= np.float32(self.threshold)  # float32, as numpy 1.23 compares it; NaN fails
        why = f"{self.column} < {self.threshold:.6g}"
        reason = drop_reasons(keep, why)
        reason[np.isnan(scores)] = f"{self.column} is missing (NaN)"
        return Verdict(keep, score=scores, reason=reason)
