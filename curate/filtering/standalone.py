"""`curate filter`: one strategy over a plain DataComp metadata directory (local or any fsspec URL) into a
subset file, like DataComp's `baselines.py`, without a run directory.

The strategy is a built-in filter name (`basic_filter`), a strategy name from `pipelines/datacomp_small.yaml`
(`clip_score_l14_30`), a YAML file holding one expression, `pipeline.yaml:name`, or inline YAML
(`'{clip_score: {model: l14, fraction: 0.3}}'`). Parts are filtered in parallel processes; fits are
saved in `fit_dir` and reused by the next call with the same filter and parameters.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from curate.errors import ConfigError, CurateError, PreflightError
from curate.filtering.apply import apply_part, fit_filters, funnel, load_fits, write_counted_subset
from curate.filtering.compose import Strategy, parse_strategy, preflight_problems
from curate.filtering.metadata import MetadataSource
from curate.uids import UID_DTYPE

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
NAMED_FROM = PIPELINES / "datacomp_small.yaml"
ROWS_PER_WORKER = 250_000


def _pipeline_strategies(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("strategies"), dict):
        raise ConfigError(f"{path}: has no 'strategies:' mapping")
    return data["strategies"]


FORMS = (
    "a built-in filter name, a strategy of pipelines/datacomp_small.yaml, a YAML file holding one "
    "expression, PIPELINE.yaml:NAME, or inline YAML such as '{clip_score: {model: l14, fraction: 0.3}}'"
)


def resolve_strategy(text: str) -> tuple[str, Any]:
    """(name, expression) for the --strategy argument; ConfigError saying which forms are accepted."""
    text = text.strip()
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith((".yaml", ".yml")):  # a strategy of a pipeline file
        if not Path(head).is_file():
            raise ConfigError(f"--strategy: no such file: {head}")
        strategies = _pipeline_strategies(Path(head))
        if tail not in strategies:
            raise ConfigError(
                f"--strategy: {head} has no strategy '{tail}' (it has: {', '.join(strategies)})"
            )
        return tail, strategies[tail]
    if text.endswith((".yaml", ".yml")):  # a file holding one expression
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"--strategy: no such file: {text} (expected {FORMS})")
        try:
            expr = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"--strategy: {text}: invalid YAML ({exc})") from None
        if isinstance(expr, dict) and "strategies" in expr:
            raise ConfigError(f"--strategy: {text} is a pipeline file; pick one strategy as {text}:NAME")
        return path.stem, expr
    if re.fullmatch(r"[A-Za-z0-9_-]+", text):  # a named strategy, else a filter name
        known = _pipeline_strategies(NAMED_FROM) if NAMED_FROM.is_file() else {}
        return text, known.get(text, text)
    try:
        expr = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--strategy: not valid YAML ({exc}); expected {FORMS}") from None
    if not isinstance(expr, str | dict):
        raise ConfigError(f"--strategy: expected {FORMS} (got {text!r})")
    return "strategy", expr


def metadata_available(source: MetadataSource) -> tuple[set[str], set[str]]:
    """Columns every part has, and the npz keys of the first part (none when it has no npz)."""
    columns: set[str] | None = None
    for stem in source.stems:
        names = set(source.schema(stem).names)
        columns = names if columns is None else columns & names
    embeddings: set[str] = set()
    first = source.stems[0]
    if source.has_npz(first):
        import io

        fs = source._fs_root[0]
        with fs.open(source.path(first, "npz"), "rb") as f:
            embeddings = set(np.load(io.BytesIO(f.read())).files)
    return columns or set(), embeddings


@cache
def _prepared(name: str, expr_json: str, roots: tuple[str, ...]) -> dict[str, Strategy]:
    """Parsed strategies with their fits loaded, once per worker process."""
    strategies = {name: parse_strategy(name, json.loads(expr_json), prefix="--strategy ")}
    load_fits(strategies.values(), [Path(r) for r in roots])
    return strategies


def _one_part(
    url: str, name: str, expr_json: str, roots: tuple[str, ...], stem: str, decisions: str | None
) -> tuple[dict[str, Any], np.ndarray]:
    strategies = _prepared(name, expr_json, roots)
    out = Path(decisions) if decisions else None
    result = apply_part(strategies, MetadataSource(url), stem, out, want_uids=True)[name]
    return result.stats(), result.uids


def filter_metadata(
    metadata: str,
    name: str,
    expr: Any,
    out: Path,
    *,
    fit_dir: Path | None = None,
    workers: int | None = None,
    decisions: Path | None = None,
    log: Any = None,
    rows_per_worker: int = ROWS_PER_WORKER,
) -> dict[str, Any]:
    """Filter a metadata directory with one strategy into the subset file `out`; returns the funnel."""
    strategies = {name: parse_strategy(name, expr, prefix="--strategy ")}
    source = MetadataSource(metadata)
    if not source.stems:
        raise CurateError(f"--metadata: no <stem>.parquet parts in {metadata}")
    columns, embeddings = metadata_available(source)
    problems = source.column_problems({c for s in strategies.values() for c in s.columns()})
    problems += preflight_problems(strategies, columns, embeddings, produced_by=f"the metadata in {metadata}")
    if problems:
        raise PreflightError(f"strategy {name} cannot run on {metadata}", problems)
    fit_dir = fit_dir or out.with_name(out.name.removesuffix(".npy") + ".fit")
    fit_filters(strategies.values(), source, fit_dir, log=log)
    args = (metadata, name, json.dumps(expr), (str(fit_dir),))
    dec = str(decisions) if decisions else None
    rows = sum(source.num_rows(s) for s in source.stems)  # footers only
    # at most a process per `rows_per_worker` rows: below that, starting one costs more than it saves
    workers = max(1, min(workers or os.cpu_count() or 1, len(source.stems), rows // rows_per_worker))
    if workers == 1:
        results = [_one_part(*args, stem, dec) for stem in source.stems]
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            results = list(ex.map(_one_part, *zip(*[(*args, s, dec) for s in source.stems], strict=True)))
    uids = np.concatenate([np.empty(0, UID_DTYPE), *[u for _, u in results]])
    subset, summary = write_counted_subset(out, uids, funnel(s for s, _ in results))
    if summary.get("duplicate_uids") and log is not None:
        log(
            f"note: {summary['duplicate_uids']:,} kept rows share their uid with an earlier kept row (the "
            "metadata has duplicate uids); the subset lists such a uid once per row, and a reshard writes "
            "the first sample with it that many times and counts the others as skipped"
        )
    return {"strategy": name, **summary, "count": len(subset)}
