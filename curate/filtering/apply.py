"""Applying strategies to metadata parts, as plain functions (the filter stage and `curate filter` call them).

1. `fit_filters`: each filter instance that needs the whole pool is fitted once, into
   `<fit root>/<filter>-<params hash>/` (staged, then renamed into place: a directory that exists is
   complete, so a rerun skips it). Strategies that use the same filter and parameters share it.
2. `apply_part`: one part, every strategy: `decisions/<strategy>/<stem>.parquet` with uid, keep, reason
   and each leaf's `<path>.keep`, `<path>.score`, `<path>.reason` (written atomically), plus counts.
3. `write_subsets`: the kept uids of every part as a DataComp subset file (sorted u8,u8, so the bytes
   depend only on the set of rows kept), and the funnel.

The funnel lists, per step (the children of a top-level `all`, else the whole expression, after
'not downloaded' in a run), how many rows it removes alone and in sequence (after the steps before it).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.config import config_hash
from curate.errors import CurateError
from curate.filtering.base import Batch, Filter
from curate.filtering.compose import Evaluation, Strategy, Tree, factorize, label
from curate.rundir import atomic_write_bytes, atomic_write_json, staging_dir
from curate.uids import UID_DTYPE, uids_to_array, valid_uid_mask, validate_subset, write_subset

NOT_DOWNLOADED = "not downloaded"
INVALID_UID = "invalid uid (expected 32 lowercase hex characters)"


class Source(Protocol):
    """Where rows come from: a metadata directory (MetadataSource) or a pool before download."""

    @property
    def stems(self) -> list[str]: ...

    def read(self, stem: str, columns: list[str], embeddings: list[str] = ...) -> Batch: ...

    def column(self, name: str) -> np.ndarray: ...


# ---------------------------------------------------------------- fit


def fit_key(f: Filter) -> str:
    """`<filter>-<hash of its class and parameters>`: the same filter with the same parameters shares it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f.name or type(f).__name__)
    cls = f"{type(f).__module__}:{type(f).__qualname__}"
    return f"{name}-{config_hash(cls, f.params.model_dump(mode='json'))[:10]}"


def _fitted(strategies: Iterable[Strategy]) -> dict[str, Filter]:
    """key -> one filter instance, for every leaf that wants a fit, in strategy and expression order."""
    out: dict[str, Filter] = {}
    for strategy in strategies:
        for leaf in strategy.leaves():
            if leaf.filter.wants_fit():
                out.setdefault(fit_key(leaf.filter), leaf.filter)
    return out


def find_fit(key: str, roots: list[Path]) -> Path | None:
    """The first complete fit directory for `key` under `roots`."""
    return next((root / key for root in roots if (root / key).is_dir()), None)


def fit_filters(
    strategies: Iterable[Strategy], source: Source, root: Path, reuse: list[Path] = (), log: Any = None
) -> dict[str, Path]:
    """Fit every filter instance that needs it and has no fit yet (under `reuse` or `root`); key -> dir."""
    dirs: dict[str, Path] = {}
    for key, f in _fitted(strategies).items():
        found = find_fit(key, [*reuse, root])
        if found is None:
            t0 = time.time()
            with staging_dir(root, key) as tmp:
                f.fit(source, tmp)
                atomic_write_json(
                    tmp / "_fit.json", {"filter": f.describe(), "seconds": round(time.time() - t0, 3)}
                )
                tmp.rename(root / key)  # whole directory into place: it exists only when complete
            if log:
                log(f"fit {f.describe()} in {time.time() - t0:.1f} s -> {root / key}")
            found = root / key
        dirs[key] = found
    return dirs


def load_fits(strategies: Iterable[Strategy], roots: list[Path]) -> None:
    """Give each filter that needs a fit its saved state (in the worker, before apply)."""
    for strategy in strategies:
        for leaf in strategy.leaves():
            if leaf.filter.wants_fit():
                key = fit_key(leaf.filter)
                found = find_fit(key, roots)
                if found is None:
                    raise CurateError(
                        f"{strategy.name}: {leaf.spec} has not been fitted (no {key} under fit/)"
                    )
                leaf.filter.load(found)


# ---------------------------------------------------------------- apply


@dataclass
class PartResult:
    """One part under one strategy: its counts, and its kept uids (u8,u8) when asked for."""

    rows: int
    kept: int
    steps: list[list[Any]]  # [label, removed alone, removed in sequence]
    uids: np.ndarray | None = None

    def stats(self) -> dict[str, Any]:
        return {"rows": self.rows, "kept": self.kept, "steps": self.steps}


def _string_dict(codes: np.ndarray, labels: list[str]) -> pa.Array:
    """Reasons as a dictionary-encoded string column (null where kept)."""
    indices = pa.array(codes, pa.int32(), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(labels, pa.string()))


Gate = tuple[str, np.ndarray]  # rows no strategy keeps, whatever its filters say: (reason, ok mask)


def _decisions_table(
    uid: pa.ChunkedArray, ev: Evaluation, gates: list[Gate], downloaded: np.ndarray | None
) -> pa.Table:
    keep, codes, labels = ev.keep, ev.codes, ev.labels
    cols: dict[str, pa.Array | pa.ChunkedArray] = {"uid": uid}
    for reason, ok in reversed(gates):  # a row's reason is the first gate it fails
        keep = keep & ok
        codes = np.where(ok, codes, len(labels)).astype(np.int32)
        labels = [*labels, reason]
    cols["keep"] = pa.array(keep)
    cols["reason"] = _string_dict(codes, labels)
    if downloaded is not None:
        cols["downloaded"] = pa.array(downloaded)
    for path, verdict in ev.leaves.items():
        leaf_codes, leaf_labels = factorize(verdict.reason, verdict.keep)
        cols[f"{path}.keep"] = pa.array(verdict.keep)
        score = verdict.score
        cols[f"{path}.score"] = (
            pa.nulls(len(keep), pa.float32()) if score is None else pa.array(score, pa.float32())
        )
        cols[f"{path}.reason"] = _string_dict(leaf_codes, leaf_labels)
    return pa.table(cols)


def _steps(strategy: Strategy, ev: Evaluation, gates: list[Gate]) -> list[list[Any]]:
    masks: list[tuple[str, np.ndarray]] = list(gates)
    step: Tree
    for step in strategy.steps():
        masks.append((label(step), ev.masks[step.path]))
    remaining = np.ones(len(ev.keep), dtype=bool)
    out = []
    for name, keep in masks:
        out.append([name, int((~keep).sum()), int((remaining & ~keep).sum())])
        remaining &= keep
    return out


def apply_part(
    strategies: dict[str, Strategy],
    source: Source,
    stem: str,
    decisions: Path | None,
    *,
    status_column: str | None = None,
    want_uids: bool = False,
) -> dict[str, PartResult]:
    """Evaluate every strategy on one part (read once); write `decisions/<strategy>/<stem>.parquet` when
    `decisions` is given. With `status_column`, rows whose status is not 'success' are dropped as
    'not downloaded' (they are still evaluated, so the decisions show what the filters said)."""
    columns = list(dict.fromkeys(c for s in strategies.values() for c in s.columns()))
    embeddings = list(dict.fromkeys(k for s in strategies.values() for k in s.embeddings()))
    batch = source.read(stem, [*columns, *([status_column] if status_column else [])], embeddings)
    uid = batch.table.column("uid")
    gates: list[Gate] = []
    valid = valid_uid_mask(uid)
    if not valid.all():  # counted like any dropped row; a subset cannot name them
        gates.append((INVALID_UID, valid))
    downloaded = None
    if status_column:
        ok = pc.fill_null(pc.equal(batch.table.column(status_column), "success"), False)
        downloaded = ok.to_numpy(zero_copy_only=False).astype(bool)
        gates.append((NOT_DOWNLOADED, downloaded))
    out = {}
    for name, strategy in strategies.items():
        ev = strategy.evaluate(batch, reasons=decisions is not None)
        keep = ev.keep
        for _, ok_rows in gates:
            keep = keep & ok_rows
        if decisions is not None:
            sink = io.BytesIO()
            pq.write_table(_decisions_table(uid, ev, gates, downloaded), sink)
            atomic_write_bytes(decisions / name / f"{stem}.parquet", sink.getvalue())
        kept_uids = uids_to_array(uid.filter(pa.array(keep))) if want_uids else None
        out[name] = PartResult(len(batch), int(keep.sum()), _steps(strategy, ev, gates), kept_uids)
    return out


# ---------------------------------------------------------------- subsets and funnel


def funnel(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum part stats ({rows, kept, steps}) into one funnel: rows, kept, and per step removed alone,
    removed in sequence and the rows left after it."""
    rows = kept = 0
    steps: dict[str, list[int]] = {}
    for part in parts:
        rows += part["rows"]
        kept += part["kept"]
        for name, alone, seq in part["steps"]:
            acc = steps.setdefault(name, [0, 0])
            acc[0] += alone
            acc[1] += seq
    left, out = rows, []
    for name, (alone, seq) in steps.items():
        left -= seq
        out.append({"step": name, "removed_alone": alone, "removed_in_sequence": seq, "left": left})
    return {"rows": rows, "kept": kept, "funnel": out}


def kept_uids(decisions: Path, stems: list[str]) -> np.ndarray:
    """The uids kept in these parts' decisions, as u8,u8 (unsorted)."""
    arrays = [np.empty(0, UID_DTYPE)]
    for stem in stems:
        table = pq.read_table(decisions / f"{stem}.parquet", columns=["uid"], filters=[("keep", "=", True)])
        arrays.append(uids_to_array(table.column("uid")))
    return np.concatenate(arrays)


def write_counted_subset(path: Path, uids: np.ndarray, summary: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """Write the subset (a uid kept in k rows is listed k times, as DataComp's baselines do) and count, as
    `duplicate_uids`, kept rows whose uid an earlier kept row has: the metadata has duplicate uids, and a
    reshard cannot tell those samples apart (it writes the first one k times and counts the others)."""
    arr = write_subset(path, uids)
    repeats = validate_subset(arr).duplicates
    return arr, ({**summary, "duplicate_uids": repeats} if repeats else summary)


def write_strategy_subset(
    path: Path, decisions: Path, stems: list[str], summary: dict[str, Any]
) -> dict[str, Any]:
    """`<name>.npy` (DataComp subset) and `<name>.json` (its funnel) from the decisions of `stems`;
    returns the funnel as written."""
    arr, summary = write_counted_subset(path, kept_uids(decisions, stems), summary)
    atomic_write_json(path.with_suffix(".json"), {**summary, "subset": path.name, "count": len(arr)})
    return summary
