"""`exact_dedup`: drop byte-identical images, keeping one row per group: the one with the smallest uid.

`fit` groups the whole pool on a hex digest column: `sha256` (in a run's metadata the hash of the
downloaded bytes, in a DataComp metadata directory the pool's own; a run keeps the pool's as
`pool_sha256`). Every row of a group except its smallest uid is saved with that keeper in
`removed.npz`. The smallest uid, because it depends only on which rows the pool holds: not on parts,
workers or order. `apply` looks each uid up (reason `same sha256 as <keeper uid>`).

Rows without a digest (null or "", e.g. a failed download) are never grouped: kept by default, or
dropped with reason `no sha256` when `missing: drop`.

Scale: groups are formed on the first 128 bits of the digest with one numpy argsort (12.8M rows: a few
seconds) and the keeper per group by `np.minimum.reduceat`; no Python loop over rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.errors import CurateError
from curate.filtering.base import Batch, Filter, FilterParams, Verdict
from curate.filtering.dedup import RemovedSet, sort_uids, uid_index
from curate.filtering.pool_arrays import batch_uids, read_part
from curate.rundir import atomic_write_json
from curate.uids import UID_DTYPE

if TYPE_CHECKING:
    from curate.filtering.metadata import MetadataSource

_HEX = b"0123456789abcdefABCDEF"


class ExactDedupParams(FilterParams):
    column: str = Field(
        "sha256",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Hex digest column (>= 32 hex chars): sha256; in a run pool_sha256 is the pool's own.",
    )
    missing: Literal["keep", "drop"] = Field("keep", description="Rows with no digest: keep or drop.")


class ExactDedup(Filter):
    """One row per identical image (same digest): the smallest uid of each group is kept."""

    name = "exact_dedup"
    Params = ExactDedupParams
    needs_fit = True

    def __init__(self, params: ExactDedupParams | None = None) -> None:
        super().__init__(params)
        self.removed: RemovedSet | None = None

    def columns(self) -> list[str]:
        return [self.params.column]

    def fit(self, pool: MetadataSource, out_dir: Path) -> None:
        column = self.params.column

        def one(stem: str) -> tuple[np.ndarray, np.ndarray, int]:
            batch = read_part(pool, stem, [column])
            present, prefix = digest_prefix(batch.table.column(column), f"metadata part {stem}: {column}")
            return batch_uids(batch)[present], prefix, int((~present).sum())

        with ThreadPoolExecutor(4) as ex:
            parts = list(ex.map(one, pool.stems))
        uids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, UID_DTYPE)
        prefix = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, 2), np.uint64)
        removed, keeper, stats = duplicate_groups(uids, prefix)
        found = RemovedSet.build(removed, keeper)
        found.save(out_dir)
        summary = {
            "column": column,
            "rows": len(uids) + sum(p[2] for p in parts),
            "missing": sum(p[2] for p in parts),
        }
        atomic_write_json(out_dir / "summary.json", {**summary, **stats, "removed": len(found)})

    def load(self, fit_dir: Path) -> None:
        self.removed = RemovedSet.load(fit_dir, self.name)

    def apply(self, batch: Batch) -> Verdict:
        if self.removed is None:
            raise CurateError(f"{self.name}: apply before load (no fit state)")
        column = self.params.column
        hit, idx = self.removed.lookup(batch.table.column("uid"))
        keep = ~hit
        reason = np.full(len(batch), None, dtype=object)
        reason[hit] = [f"same {column} as {k}" for k in self.removed.keeper_uids(idx[hit])]
        if self.params.missing == "drop":
            lengths = pc.fill_null(pc.binary_length(batch.table.column(column)), 0)
            missing = np.asarray(lengths.to_numpy(zero_copy_only=False)) == 0
            reason[missing & keep] = f"no {column}"
            keep &= ~missing
        return Verdict(keep, reason=reason)


def digest_prefix(values: pa.ChunkedArray | pa.Array, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(present mask, first 128 bits of each present digest as (m, 2) uint64). Null and "" are absent;
    anything else must start with 32 hex characters (an error names the row otherwise)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise CurateError(f"{where}: expected hex digest strings, got {values.type}")
    lengths = np.asarray(pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False))
    present = lengths > 0
    rows = np.flatnonzero(present)
    if not len(rows):
        return present, np.zeros((0, 2), np.uint64)
    heads = _heads(values, rows, lengths[rows])
    short = lengths[rows] < 32
    joined = heads.tobytes()
    if short.any() or joined.translate(None, _HEX):
        bad = rows[int(np.argmax(short)) if short.any() else _first_non_hex(joined)]
        raise CurateError(
            f"{where}: row {bad} has {values[int(bad)].as_py()!r}; expected a hex digest of at least 32 "
            "characters (or null / '' for none)"
        )
    return present, np.frombuffer(bytes.fromhex(joined.decode("ascii")), ">u8").reshape(-1, 2).astype(
        np.uint64
    )


def _heads(values: pa.Array, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The first 32 bytes of each non-empty value, (m, 32) uint8 (shorter ones are padded: caught later).
    Fast path: one digest length, absent rows taking no bytes, so the data buffer is an (m, L) block."""
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], width)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2], np.uint8)
    first = int(lengths[0])
    if first >= 32 and bool((lengths == first).all()) and offsets[-1] - offsets[0] == first * len(lengths):
        return data[offsets[0] : offsets[-1]].reshape(len(lengths), first)[:, :32]
    starts = offsets[:-1][rows]
    out = np.zeros((len(starts), 32), np.uint8)
    for c in range(0, len(starts), 1 << 20):  # bounded index memory
        s = starts[c : c + (1 << 20)]
        n = lengths[c : c + (1 << 20)]
        idx = s[:, None] + np.arange(32)
        out[c : c + len(s)] = np.where(np.arange(32) < n[:, None], data[np.minimum(idx, len(data) - 1)], 0)
    return out


def _first_non_hex(joined: bytes) -> int:
    codes = np.frombuffer(joined, np.uint8)
    ok = np.isin(codes, np.frombuffer(_HEX, np.uint8))
    return int(np.argmin(ok)) // 32


def duplicate_groups(uids: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """For rows grouped by equal `prefix` rows: (removed uids, their keeper uids, counts). The keeper of
    a group is its smallest uid; a row that repeats its keeper's uid is the same sample, not removed."""
    n = len(uids)
    order = np.argsort(prefix[:, 0])
    p0, p1 = prefix[order, 0], prefix[order, 1]
    if n > 1 and bool(((p0[1:] == p0[:-1]) & (p1[1:] != p1[:-1])).any()):  # 64-bit prefixes collide
        order = np.lexsort((prefix[:, 1], prefix[:, 0]))
        p0, p1 = prefix[order, 0], prefix[order, 1]
    new = np.ones(n, bool)
    new[1:] = (p0[1:] != p0[:-1]) | (p1[1:] != p1[:-1])
    group = np.cumsum(new) - 1
    sizes = np.bincount(group) if n else np.zeros(0, np.int64)
    in_dup = np.flatnonzero(sizes[group] > 1)  # sorted positions of rows in groups of 2+
    u = uids[order[in_dup]]
    g = group[in_dup]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    local = np.cumsum(np.r_[True, g[1:] != g[:-1]]) - 1 if len(g) else np.zeros(0, np.int64)
    keeper = np.empty(len(starts), UID_DTYPE)
    if len(g):
        keeper["f0"] = np.minimum.reduceat(u["f0"], starts)
        low = np.where(u["f0"] == keeper["f0"][local], u["f1"], np.uint64(2**64 - 1))
        keeper["f1"] = np.minimum.reduceat(low, starts)
    is_keeper = (u["f0"] == keeper["f0"][local]) & (u["f1"] == keeper["f1"][local])
    removed, their_keeper = u[~is_keeper], keeper[local[~is_keeper]]
    also_kept, _ = uid_index(keeper[sort_uids(keeper)], removed)  # keeps a group: never removed by another
    removed, their_keeper = removed[~also_kept], their_keeper[~also_kept]
    stats = {
        "groups": int(len(sizes)),
        "duplicate_groups": int((sizes > 1).sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
    }
    return removed, their_keeper, stats
