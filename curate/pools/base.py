"""What every pool offers the download stage: sorted parts, a row count each, and row slices.

A pool is plain, picklable data (its config plus paths) so that Ray tasks can read their own rows.
Rows come out normalised to POOL_COLUMNS (plus any extra columns the source has, kept as they are).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

# Columns every pool yields, in this order, before its extra columns.
POOL_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),  # 32 lowercase hex characters (128-bit id)
        ("url", pa.string()),
        ("text", pa.string()),
        ("original_width", pa.int64()),  # null when the source does not know it
        ("original_height", pa.int64()),
    ]
)
POOL_COLUMNS = POOL_SCHEMA.names


@dataclass(frozen=True)
class PoolPart:
    """One input file of the pool. Parts are processed in sorted `stem` order (DataComp's order)."""

    stem: str
    path: str  # local path or fsspec URL of the part's parquet
    num_rows: int


class Pool(ABC):
    """A source of image-text candidates."""

    def prepare(self, workdir: Path) -> None:  # noqa: B027 - optional hook
        """One-time work before planning (e.g. build a table); may write only under `workdir`."""

    @abstractmethod
    def check(self) -> list[str]:
        """Problems that must stop a run before any work (missing files, missing columns), each naming
        the file, the key and what would be valid. Empty when the pool is usable."""

    @abstractmethod
    def parts(self) -> list[PoolPart]:
        """The pool's parts in processing order (call after prepare and a clean check)."""

    @abstractmethod
    def read(self, part: PoolPart, start: int, stop: int) -> pa.Table:
        """Rows [start, stop) of a part, with POOL_COLUMNS first (typed as POOL_SCHEMA) then extras."""

    def served_dir(self) -> tuple[str, Path] | None:
        """(url_prefix, local_dir) when the pool's URLs point at local files that the download stage
        should serve over loopback HTTP: URLs starting with url_prefix are fetched from a server on
        127.0.0.1 rooted at local_dir. The pool's own URLs stay in the metadata."""
        return None


class ScannedPool(Pool):
    """A pool whose parts come from a scan of parquet footers; the scan is done once and cached."""

    kind = "pool"
    max_samples: int | None = None

    def __init__(self) -> None:
        self._parts: list[PoolPart] | None = None

    @abstractmethod
    def _scan(self) -> tuple[list[PoolPart], list[str]]:
        """(parts sorted by stem, problems) from the files' footers only."""

    def check(self) -> list[str]:
        parts, problems = self._scan()
        if not problems:
            self._parts = parts
        return problems

    def parts(self) -> list[PoolPart]:
        if self._parts is None:
            parts, problems = self._scan()
            if problems:
                from curate.errors import CurateError

                raise CurateError(f"pool: the {self.kind} has problems", problems)
            self._parts = parts
        return limit_parts(self._parts, self.max_samples)


def limit_parts(parts: list[PoolPart], max_samples: int | None) -> list[PoolPart]:
    """Cut the part list so that it holds at most max_samples rows (pool.max_samples)."""
    if max_samples is None:
        return parts
    out, left = [], max_samples
    for part in parts:
        if left <= 0:
            break
        out.append(part if part.num_rows <= left else PoolPart(part.stem, part.path, left))
        left -= part.num_rows
    return out
