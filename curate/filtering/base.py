"""The filter contract: a filter answers, for a batch of rows of one metadata part, a keep-mask.

A filter is a small class (one short file in `filters/`, or any importable `module:Class`). It says
which parquet columns and npz embeddings it needs, validates its YAML parameters with a pydantic
model, and answers `apply(batch) -> Verdict`. Filters that need the whole pool first (a fraction cut,
k-means centroids, a dedup index) set `needs_fit = True` and implement `fit(pool, out_dir)` once;
its result is saved under `fit/<filter>-<params hash>/` (shared by every strategy that uses the same
filter and parameters) and read back by `load(fit_dir)` in each worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from curate.filtering.metadata import MetadataSource


class NoParams(BaseModel):
    """Parameters of a filter that takes none (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


class FilterParams(BaseModel):
    """Base for a filter's parameters: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Batch:
    """Rows of one metadata part: the requested parquet columns and npz arrays, aligned by position.

    Embeddings are float32 (n, d), upcast from whatever the npz holds. A row whose image could not be
    downloaded or decoded has a NaN image embedding: filters that use it must drop such rows with a
    reason, never treat them as a real vector.
    """

    table: pa.Table
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    part: str = ""  # the part's stem, for messages

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> np.ndarray:
        """A column as numpy (strings as object arrays, nulls as None / NaN)."""
        return self.table.column(name).to_numpy(zero_copy_only=False)

    def texts(self, name: str = "text") -> list[str | None]:
        return self.table.column(name).to_pylist()


@dataclass
class Verdict:
    """A filter's answer for a batch: keep-mask, an optional score, an optional reason per dropped row."""

    keep: np.ndarray  # bool (n,)
    score: np.ndarray | None = None  # float32 (n,), recorded in the decisions
    reason: np.ndarray | None = None  # object (n,): why a row was dropped (None where kept)

    def __post_init__(self) -> None:
        self.keep = np.asarray(self.keep, dtype=bool)


class Filter(ABC):
    """Base class of every filter. Subclasses set `name` and `Params`, and implement `apply`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    needs_fit: ClassVar[bool] = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def columns(self) -> list[str]:
        """Parquet columns `apply` (and `fit`) read."""
        return []

    def embeddings(self) -> list[str]:
        """npz keys `apply` (and `fit`) read, e.g. `l14_img`."""
        return []

    def preflight(self) -> list[str]:
        """Problems that must stop the run before any work: missing asset files, missing models."""
        return []

    def wants_fit(self) -> bool:
        """Whether this instance needs `fit` (e.g. clip_score only in fraction mode)."""
        return self.needs_fit

    def fit(self, pool: MetadataSource, out_dir: Path) -> None:
        """Pool-wide step (only when `needs_fit`): compute and save state into `out_dir`."""
        raise NotImplementedError(f"{self.name} declares needs_fit but has no fit()")

    def load(self, fit_dir: Path) -> None:  # noqa: B027 - optional hook
        """Read back what `fit` saved (called in each worker before `apply`)."""

    @abstractmethod
    def apply(self, batch: Batch) -> Verdict:
        """The keep-mask for one batch of rows."""

    def describe(self) -> str:
        """One line for logs and the report: the filter and its parameters."""
        args = ", ".join(f"{k}={v}" for k, v in self.params.model_dump().items() if v is not None)
        return f"{self.name}({args})"


def drop_reasons(keep: np.ndarray, reason: str) -> np.ndarray:
    """An object array with `reason` where `keep` is False and None elsewhere."""
    out = np.full(len(keep), None, dtype=object)
    out[~np.asarray(keep, dtype=bool)] = reason
    return out


def merge_reasons(*checks: tuple[np.ndarray, str]) -> tuple[np.ndarray, np.ndarray]:
    """Combine several (passes-mask, reason) checks: keep where all pass; the reason is the first failed."""
    n = len(checks[0][0])
    keep = np.ones(n, dtype=bool)
    reason = np.full(n, None, dtype=object)
    for passes, why in checks:
        failed_now = keep & ~np.asarray(passes, dtype=bool)
        reason[failed_now] = why
        keep &= ~failed_now
    return keep, reason


def params_problems(cls: type[Filter], raw: Any) -> list[str]:
    """Validation problems of a filter's YAML parameters, as 'key: problem' lines."""
    from pydantic import ValidationError

    try:
        cls.Params.model_validate(raw or {})
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in err['loc']) or '(params)'}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
    return []
