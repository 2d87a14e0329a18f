"""Filter stage: every strategy over the run's metadata parts -> decisions, subsets and a funnel.

A shard is one metadata part; all strategies are evaluated on it from one read. Fits (pool-wide
steps) run on the driver before any shard, each into `fit/<filter>-<hash>/`, renamed into place only
when complete, so a kill during a fit redoes just that fit and a kill during apply redoes only
unfinished parts. Rows whose download did not succeed are dropped with reason 'not downloaded' (they
are still evaluated, and the funnel counts them). Fits see every row of the metadata, downloaded or
not: that is DataComp's fraction semantics (relative to the whole pool). With `download.subset`, a
filter instance already fitted over the whole pool before download is reused rather than refitted
on the downloaded rows, so that strategy keeps exactly the rows it selected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.errors import ConfigError, CurateError, PreflightError
from curate.filtering.apply import apply_part, fit_filters, funnel, load_fits, write_strategy_subset
from curate.filtering.compose import Strategy, parse_strategies, preflight_problems
from curate.filtering.metadata import MetadataSource
from curate.rundir import RunDir
from curate.stages.base import ShardTask, Stage


def run_columns(cfg: PipelineConfig) -> tuple[set[str] | None, set[str]]:
    """Columns and npz embeddings a run's metadata parts will have: the pool's own columns (its sha256
    renamed pool_sha256), what the download adds, and per embed model `clip_<name>_similarity_score`
    (a pool column of that name kept as `pool_<column>`), `<name>_img` and `<name>_txt`. Columns are
    None when the pool cannot be read yet (its own check reports why)."""
    from curate.pools import POOL_COLUMNS, make_pool
    from curate.stages.download import DOWNLOAD_COLUMNS

    pool = make_pool(cfg.pool)
    columns: set[str] | None
    try:
        from curate.filtering.poolsource import PoolSource

        columns = set() if pool.check() else PoolSource(pool).columns()
        columns = {"pool_sha256" if c == "sha256" else c for c in columns} if columns else None
    except CurateError:
        columns = None
    if columns is None and cfg.pool.source == "openclipart":
        columns = set(POOL_COLUMNS)  # built at prepare time: exactly the pool columns
    embeddings: set[str] = set()
    models = cfg.embed.models if cfg.embed else []
    if columns is not None:
        columns |= {name for name, _ in DOWNLOAD_COLUMNS}
        scores = {f"clip_{m.name}_similarity_score" for m in models}
        columns |= {f"pool_{c}" for c in scores & columns}  # the embed stage keeps the pool's own as pool_*
        columns |= scores | ({"embed_error"} if models else set())
    embeddings |= {f"{m.name}_{kind}" for m in models for kind in ("img", "txt")}
    return columns, embeddings


class FilterStage(Stage):
    """Run metadata -> decisions/<strategy>/<part>.parquet, then subsets/<strategy>.npy + funnel."""

    name = "filter"
    items_label = "rows"

    def __init__(self, cfg: PipelineConfig, run: RunDir) -> None:
        self.cfg = cfg
        self.run = run

    def settings(self) -> Any:
        return {"strategies": self.cfg.strategies}

    def output_dirs(self) -> list[Path]:
        """decisions/<strategy>/ too: the runner clears a killed run's temp files only at the top of
        each directory listed here, and a part's decisions are written (via a temp file) one level down."""
        per_strategy = [self.run.decisions / name for name in self.cfg.strategies]
        return [self.run.fit, self.run.decisions, *per_strategy, self.run.subsets]

    def describe(self) -> tuple[str, str]:
        return ("metadata/", "fit/, decisions/<strategy>/, subsets/<strategy>.{npy,json}")

    def strategies(self) -> dict[str, Strategy]:
        return parse_strategies(self.cfg.strategies)

    def fit_roots(self) -> list[Path]:
        """Where fits are looked up: pool-wide fits made for download.subset first, then the run's."""
        from curate.filtering.presubset import presubset_dir

        pre = [presubset_dir(self.run) / "fit"] if self.cfg.download.subset else []
        return [*pre, self.run.fit]

    def preflight(self) -> list[str]:
        try:
            strategies = self.strategies()
        except ConfigError as exc:
            return exc.problems or [exc.message]
        columns, embeddings = run_columns(self.cfg)
        what = "the run's metadata (pool columns, download columns, embed outputs)"
        return preflight_problems(strategies, columns, embeddings, produced_by=what)

    def _source(self) -> MetadataSource:
        return MetadataSource(str(self.run.metadata))

    def plan(self) -> list[ShardTask]:
        if not self.run.metadata.is_dir():
            return []
        tasks = []
        for path in sorted(self.run.metadata.glob("*.parquet")):
            if not path.name.startswith("."):
                tasks.append(ShardTask(path.stem, pq.ParquetFile(path).metadata.num_rows, {}))
        return tasks

    def shard_outputs(self, shard_id: str) -> list[Path]:
        return [self.run.decisions / name / f"{shard_id}.parquet" for name in self.cfg.strategies]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The pool-wide fits, on the driver, before any shard."""
        strategies = self.strategies()
        try:
            fit_filters(strategies.values(), self._source(), self.run.fit, reuse=self.fit_roots()[:-1])
        except CurateError as exc:
            raise PreflightError(f"filter: a fit failed: {exc.message}", exc.problems) from None
        yield

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        strategies = self.strategies()
        load_fits(strategies.values(), self.fit_roots())
        results = apply_part(
            strategies, self._source(), task.shard_id, self.run.decisions, status_column="status"
        )
        rows = next(iter(results.values())).rows if results else 0
        return {"rows": rows, "strategies": {name: r.stats() for name, r in results.items()}}

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        stems = sorted(results)
        counts: dict[str, Any] = {"rows": sum(r.get("rows", 0) for r in results.values())}
        funnels = {}
        for name in self.cfg.strategies:
            summary = funnel(results[s]["strategies"][name] for s in stems)
            write_strategy_subset(
                self.run.subsets / f"{name}.npy",
                self.run.decisions / name,
                stems,
                {"strategy": name, **summary},
            )
            counts[f"{name} kept"] = summary["kept"]
            funnels[name] = summary
        counts["strategies"] = funnels
        return counts
