"""`download.subset: <strategy>`: run one strategy over the pool's own metadata before downloading, and
download only the rows it keeps (DataComp's parquets carry CLIP scores and image sizes, so e.g.
clip_score or basic_filter can choose before a single image is fetched).

Everything lands in `<run>/pool_subset/`: `fit/<filter>-<hash>/`, `decisions/<strategy>/<stem>.parquet`,
`<strategy>.npy` and `<strategy>.json` (its funnel). It is the download stage's output, so it is
redone exactly when the download's settings change, and each part's decisions are reused on a rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.errors import ConfigError, CurateError
from curate.filtering.apply import apply_part, fit_filters, funnel, load_fits, write_strategy_subset
from curate.filtering.compose import Strategy, parse_strategies, preflight_problems
from curate.filtering.poolsource import PoolSource
from curate.pools import Pool, PoolPart
from curate.rundir import RunDir, atomic_write_json


def presubset_dir(run: RunDir) -> Path:
    return run.root / "pool_subset"


def _strategy(cfg: PipelineConfig) -> Strategy:
    name = cfg.download.subset
    return parse_strategies({name: cfg.strategies[name]})[name]


def presubset_problems(cfg: PipelineConfig, pool: Pool) -> list[str]:
    """Why download.subset cannot run over this pool (unknown filters, columns the pool lacks)."""
    try:
        strategy = _strategy(cfg)
    except ConfigError as exc:
        return [f"download.subset: {p}" for p in exc.problems or [exc.message]]
    source = PoolSource(pool)
    try:
        columns, embeddings = source.columns(), source.embedding_keys()
    except CurateError as exc:
        return [f"download.subset: cannot read the pool's columns ({exc})"]
    what = f"the pool (download.subset: {strategy.name} runs before anything is downloaded)"
    return preflight_problems({strategy.name: strategy}, columns, embeddings, produced_by=what)


class SubsetPool(Pool):
    """The base pool's parts with only the rows a strategy kept, in their pool order."""

    def __init__(self, base: Pool, decisions: Path, kept: dict[str, int]) -> None:
        self.base = base
        self.decisions = decisions
        self.kept = kept
        self._rows: dict[str, np.ndarray] = {}

    def check(self) -> list[str]:
        return self.base.check()

    def parts(self) -> list[PoolPart]:
        return [
            PoolPart(p.stem, p.path, self.kept[p.stem]) for p in self.base.parts() if self.kept.get(p.stem)
        ]

    def _kept_rows(self, stem: str) -> np.ndarray:
        if stem not in self._rows:
            keep = pq.read_table(self.decisions / f"{stem}.parquet", columns=["keep"]).column("keep")
            self._rows[stem] = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        return self._rows[stem]

    def read(self, part: PoolPart, start: int, stop: int) -> pa.Table:
        rows = self._kept_rows(part.stem)[start:stop]
        if len(rows) == 0:
            return self.base.read(part, 0, 0)
        base_part = next(p for p in self.base.parts() if p.stem == part.stem)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        return self.base.read(base_part, lo, hi).take(pa.array(rows - lo))

    def served_dir(self) -> tuple[str, Path] | None:
        return self.base.served_dir()


def select_before_download(cfg: PipelineConfig, run: RunDir, pool: Pool, log: object = None) -> SubsetPool:
    """Fit and apply `download.subset` over the pool (parts already decided are kept), write its subset
    file and funnel, and return the pool restricted to the kept rows."""
    strategy = _strategy(cfg)
    root = presubset_dir(run)
    decisions = root / "decisions"
    source = PoolSource(pool)
    fit_filters([strategy], source, root / "fit", log=log)
    load_fits([strategy], [root / "fit"])
    stats = {}
    for stem in source.stems:
        done = root / "parts" / f"{stem}.json"  # written after the part's decisions: marks it complete
        if done.exists() and (decisions / strategy.name / f"{stem}.parquet").exists():
            stats[stem] = json.loads(done.read_text())
            continue
        stats[stem] = apply_part({strategy.name: strategy}, source, stem, decisions)[strategy.name].stats()
        atomic_write_json(done, stats[stem])
    summary = {"strategy": strategy.name, "before_download": True, **funnel(stats.values())}
    write_strategy_subset(root / f"{strategy.name}.npy", decisions / strategy.name, source.stems, summary)
    return SubsetPool(pool, decisions / strategy.name, {s: stats[s]["kept"] for s in source.stems})
