"""Read access to a directory of DataComp metadata parts (`<stem>.parquet` + `<stem>.npz`, rows aligned).

The same reader serves a run's `metadata/` and a plain DataComp metadata directory (local or any
fsspec URL), so every filter runs on both. Parts are taken in sorted stem order.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.filtering.base import Batch

# DataComp metadata columns whose type filters rely on (other columns are each filter's own business).
COLUMN_KINDS = {
    "url": "text",
    "text": "text",
    "sha256": "text",
    "original_width": "int",
    "original_height": "int",
}


def column_kind(name: str) -> str | None:
    """The kind of value a DataComp metadata column holds (pools.parquet.schema_problems' kinds)."""
    return COLUMN_KINDS.get(name) or ("float" if name.endswith("_similarity_score") else None)


@dataclass(frozen=True)
class MetadataSource:
    """A metadata directory: `url` is a local path or an fsspec URL."""

    url: str

    @cached_property
    def _fs_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        from curate.storage import open_fs  # CurateError when the URL's backend (s3fs) is missing

        fs, root = open_fs(str(self.url))
        return fs, root.rstrip("/")

    @cached_property
    def stems(self) -> list[str]:
        """Stems of every `<stem>.parquet` directly in the directory, sorted."""
        fs, root = self._fs_root
        if not fs.isdir(root):
            raise CurateError(f"metadata directory not found: {self.url}")
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
        parts = [n for n in names if n.endswith(".parquet") and not n.startswith(".")]
        return sorted(n[: -len(".parquet")] for n in parts)

    def path(self, stem: str, ext: str) -> str:
        return f"{self._fs_root[1]}/{stem}.{ext}"

    def has_npz(self, stem: str) -> bool:
        return self._fs_root[0].exists(self.path(stem, "npz"))

    def schema(self, stem: str | None = None) -> pa.Schema:
        stem = stem or self.stems[0]
        with self._fs_root[0].open(self.path(stem, "parquet"), "rb") as f:
            return pq.read_schema(f)

    def column_problems(self, columns: set[str]) -> list[str]:
        """A missing or non-string uid column, and wrongly typed DataComp columns among `columns`, per part
        (footers only): a filter would otherwise fail mid-way on them."""
        from curate.pools.parquet import schema_problems

        rules = [("uid", "string", True)]
        rules += [(c, kind, False) for c in sorted(columns - {"uid"}) if (kind := column_kind(c))]
        return [
            p
            for stem in self.stems
            for p in schema_problems(self.path(stem, "parquet"), self.schema(stem), rules)
        ]

    def num_rows(self, stem: str) -> int:
        with self._fs_root[0].open(self.path(stem, "parquet"), "rb") as f:
            return pq.ParquetFile(f).metadata.num_rows

    def read_table(self, stem: str, columns: list[str]) -> pa.Table:
        with self._fs_root[0].open(self.path(stem, "parquet"), "rb") as f:
            return pq.read_table(f, columns=list(dict.fromkeys(columns)))

    def read_embeddings(self, stem: str, keys: list[str]) -> dict[str, np.ndarray]:
        """npz arrays as float32 (DataComp's released dtype varies; we always upcast)."""
        if not keys:
            return {}
        with self._fs_root[0].open(self.path(stem, "npz"), "rb") as f:
            data = np.load(io.BytesIO(f.read()))
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise CurateError(
                    f"{self.path(stem, 'npz')}: no array {', '.join(missing)} (has {', '.join(data.files)})"
                )
            return {k: np.asarray(data[k], dtype=np.float32) for k in keys}

    def read(self, stem: str, columns: list[str], embeddings: list[str] = ()) -> Batch:
        """One whole part as a Batch (uid is always included)."""
        table = self.read_table(stem, ["uid", *columns])
        return Batch(table, self.read_embeddings(stem, list(embeddings)), part=stem)

    def column(self, name: str, threads: int = 8) -> np.ndarray:
        """One column over the whole pool, parts concatenated in stem order (for pool-wide fits)."""
        with ThreadPoolExecutor(threads) as ex:
            parts = list(ex.map(lambda s: self.read_table(s, [name]).column(0), self.stems))
        return pa.chunked_array([c for p in parts for c in p.chunks], type=parts[0].type).to_numpy()

    def embedding(self, key: str) -> np.ndarray:
        """One npz array over the whole pool (float32), parts concatenated in stem order."""
        return np.concatenate([self.read_embeddings(s, [key])[key] for s in self.stems])
