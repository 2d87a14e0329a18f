"""A pool seen as filter input before anything is downloaded (for `download.subset`).

DataComp's parquets carry CLIP scores, sizes and captions, so strategies such as clip_score or
basic_filter can pick rows before a single image is fetched. Parts are the pool's parts (after
`pool.max_samples`), read whole; a DataComp pool's `<stem>.npz` supplies embeddings when present.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.filtering.base import Batch
from curate.pools import Pool, PoolPart


@dataclass
class PoolSource:
    """The rows of a pool by part stem, with the MetadataSource methods filters use."""

    pool: Pool

    @cached_property
    def parts(self) -> dict[str, PoolPart]:
        return {p.stem: p for p in self.pool.parts()}

    @property
    def stems(self) -> list[str]:
        return list(self.parts)

    def num_rows(self, stem: str) -> int:
        return self.parts[stem].num_rows

    def has_npz(self, stem: str) -> bool:
        return self._npz(self.parts[stem]) is not None

    def columns(self) -> set[str]:
        """Column names the pool yields (its normalised columns plus extras), from the first part."""
        if not self.parts:
            return set()
        first = next(iter(self.parts.values()))
        return set(self.pool.read(first, 0, 0).column_names)

    def _npz(self, part: PoolPart) -> str | None:
        npz_path = getattr(self.pool, "npz_path", None)
        return npz_path(part) if npz_path else None

    def embedding_keys(self) -> set[str]:
        """npz keys of the first part's embeddings (a DataComp pool with npz files), else none."""
        if not self.parts:
            return set()
        path = self._npz(next(iter(self.parts.values())))
        return set(_load_npz(path).files) if path else set()

    def read(self, stem: str, columns: list[str], embeddings: list[str] = ()) -> Batch:
        part = self.parts[stem]
        table = self.pool.read(part, 0, part.num_rows)
        missing = [c for c in ["uid", *columns] if c not in table.column_names]
        if missing:
            raise CurateError(f"{part.path}: column '{missing[0]}' is missing")
        table = table.select(list(dict.fromkeys(["uid", *columns])))
        return Batch(table, self._embeddings(part, list(embeddings)), part=stem)

    def _embeddings(self, part: PoolPart, keys: list[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        path = self._npz(part)
        if path is None:
            raise CurateError(f"{part.path}: no .npz beside it, so no embeddings {', '.join(keys)}")
        data = _load_npz(path)
        return {k: np.asarray(data[k][: part.num_rows], dtype=np.float32) for k in keys}

    def column(self, name: str) -> np.ndarray:
        """One column over the whole pool, parts in order (for pool-wide fits)."""
        with ThreadPoolExecutor(8) as ex:
            cols = list(ex.map(lambda p: self.pool.read(p, 0, p.num_rows).column(name), self.parts.values()))
        return pa.chunked_array([c for col in cols for c in col.chunks], type=cols[0].type).to_numpy()

    def embedding(self, key: str) -> np.ndarray:
        return np.concatenate([self._embeddings(p, [key])[key] for p in self.parts.values()])


def _load_npz(path: str) -> np.lib.npyio.NpzFile:
    import fsspec

    with fsspec.open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))
