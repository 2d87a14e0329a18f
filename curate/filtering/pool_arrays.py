"""Pool-wide arrays for global fits: every uid, and one embedding matrix, with rows in uid order.

A fit must give the same answer however the pool is split into parts and in whatever order they were
written. Putting rows in uid order first makes the bytes that reach k-means and the similarity step
the same for the same pool, so the result is too (float sums included).

Only `stems` and `read(stem, columns, embeddings)` of the source are used, so the same code runs on a
run's metadata directory (MetadataSource) and on a pool before download (PoolSource).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.filtering.base import Batch
from curate.filtering.dedup import sort_uids
from curate.uids import uids_to_array

if TYPE_CHECKING:
    from curate.filtering.metadata import MetadataSource


def read_part(pool: MetadataSource, stem: str, columns: list[str], embeddings: list[str] = ()) -> Batch:
    """One part, with the part named in any error (a missing column, a bad npz)."""
    try:
        return pool.read(stem, columns, list(embeddings))
    except CurateError:
        raise
    except (pa.ArrowInvalid, KeyError, FileNotFoundError, OSError, ValueError) as exc:
        wanted = ", ".join([*columns, *embeddings]) or "uid"
        raise CurateError(f"metadata part {stem}: cannot read {wanted} ({exc})") from None


def batch_uids(batch: Batch) -> np.ndarray:
    """A batch's uids as `u8,u8`; an invalid uid is reported with its part."""
    try:
        return uids_to_array(batch.table.column("uid"))
    except CurateError as exc:
        raise CurateError(f"metadata part {batch.part}: {exc}") from None


@dataclass
class PoolMatrix:
    """One embedding over the pool, rows in uid order. `usable` is False for rows with no image
    (NaN), a zero vector, or a uid already seen (a repeated uid is one sample, decided once)."""

    uids: np.ndarray  # u8,u8 (n,), sorted
    x: np.ndarray  # (n, d) float16 or float32, rows as stored (L2-normalised up to rounding)
    usable: np.ndarray  # bool (n,)


def load_pool_matrix(
    pool: MetadataSource, key: str, dtype: type[np.floating] = np.float32, threads: int | None = None
) -> PoolMatrix:
    """Read `key` from every part into one (n, d) matrix in uid order, `threads` parts in memory at
    a time (default up to 4: a DataComp npz part is GBs). Needs n x d x itemsize bytes for the matrix."""
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    stems = pool.stems
    if not stems:
        raise CurateError(f"{getattr(pool, 'url', pool)}: no metadata parts (<stem>.parquet + <stem>.npz)")
    with ThreadPoolExecutor(threads) as ex:
        uids = list(ex.map(lambda s: batch_uids(read_part(pool, s, [])), stems))
    all_uids = np.concatenate(uids)
    order = sort_uids(all_uids)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    offsets = np.cumsum([0, *map(len, uids)])
    x: np.ndarray | None = None
    with ThreadPoolExecutor(threads) as ex:  # windows of `threads` parts: bounded memory
        for w in range(0, len(stems), threads):
            batches = ex.map(lambda s: read_part(pool, s, [], [key]), stems[w : w + threads])
            for i, batch in enumerate(batches, start=w):
                if len(uids[i]) == 0:
                    continue
                e = _checked(batch, key, len(uids[i]), None if x is None else x.shape[1])
                if x is None:
                    x = np.empty((len(order), e.shape[1]), dtype)
                x[rank[offsets[i] : offsets[i + 1]]] = e
    if x is None:  # every part is empty
        x = np.empty((0, 0), dtype)
    sorted_uids = all_uids[order]
    usable = np.ones(len(order), bool)
    if len(order) > 1:
        usable[1:] = (sorted_uids["f0"][1:] != sorted_uids["f0"][:-1]) | (
            sorted_uids["f1"][1:] != sorted_uids["f1"][:-1]
        )
    for s in range(0, len(x), 1 << 18):
        chunk = x[s : s + (1 << 18)].astype(np.float32)
        real = np.isfinite(chunk).all(axis=1) & (np.einsum("ij,ij->i", chunk, chunk) > 0)
        usable[s : s + len(chunk)] &= real
    return PoolMatrix(sorted_uids, x, usable)


def _checked(batch: Batch, key: str, rows: int, dim: int | None) -> np.ndarray:
    """The part's `key` array, if it is (rows, dim): one row per parquet row, one dim for the pool."""
    e = batch.embeddings[key]
    if e.ndim != 2 or len(e) != rows:
        raise CurateError(
            f"metadata part {batch.part}: '{key}' has shape {e.shape}; expected ({rows}, dim), one row per "
            "parquet row"
        )
    if dim is not None and e.shape[1] != dim:
        raise CurateError(
            f"metadata part {batch.part}: '{key}' has dim {e.shape[1]}; earlier parts have {dim}"
        )
    return e
