"""DataComp's CommonPool metadata as a pool: a directory (local or fsspec URL) of `<stem>.parquet` parts,
each with an optional `<stem>.npz` of embeddings beside it (reference §1.2-1.4).

Rows pass through as they are: a uid that is not 32 lowercase hex is not dropped here, the download
stage counts it. Columns other than the five pool columns (CLIP scores, face_bboxes, sha256, ...) are
kept unchanged as extras.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pyarrow as pa

from curate.config import DatacompPoolConfig
from curate.errors import CurateError
from curate.pools.base import POOL_COLUMNS, PoolPart, ScannedPool
from curate.pools.parquet import (
    ColumnRule,
    full_path,
    open_fs,
    read_footers,
    read_rows,
    schema_problems,
    to_pool_table,
)

RULES: list[ColumnRule] = [
    ("uid", "string", True),
    ("url", "string", True),
    ("text", "text", True),
    ("original_width", "int", False),
    ("original_height", "int", False),
]
SCALE_CHOICES = "{small,medium,large,xlarge,datacomp_1b}"


class DatacompPool(ScannedPool):
    """Every non-hidden `*.parquet` file directly in pool.metadata is a part, in sorted stem order."""

    kind = "DataComp metadata"

    def __init__(self, cfg: DatacompPoolConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_samples = cfg.max_samples

    def _missing_hint(self) -> str:
        meta = self.cfg.metadata.rstrip("/")
        name = PurePosixPath(meta).name
        data_dir = meta[: -len(name) - 1] if name == "metadata" and len(meta) > len(name) else meta
        then = "" if name == "metadata" else f" and set pool.metadata={data_dir}/metadata"
        scale = self.cfg.scale or SCALE_CHOICES
        return (
            f"Fetch DataComp's metadata with `curate pool fetch --scale {scale} {data_dir}` (needs network "
            f"access to the Hugging Face hub){then}, or point pool.metadata at a local copy "
            "(e.g. curate run FILE pool.metadata=/path/to/metadata)."
        )

    def _list(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(full path, filesystem path) of each parquet part, and problems with the directory itself."""
        meta = self.cfg.metadata
        try:
            fs, root = open_fs(meta)
            if not fs.exists(root):
                return [], [f"pool.metadata: directory '{meta}' does not exist. {self._missing_hint()}"]
            if not fs.isdir(root):
                return [], [
                    f"pool.metadata: '{meta}' is not a directory; expected a directory of DataComp metadata "
                    "parts (<stem>.parquet, optionally <stem>.npz beside each)"
                ]
            infos = fs.ls(root, detail=True)
        except CurateError as exc:
            return [], [f"pool.metadata: {exc}"]
        except OSError as exc:
            return [], [f"pool.metadata: cannot list '{meta}' ({exc})"]
        paths = sorted(
            (full_path(fs, info["name"]), info["name"])
            for info in infos
            if info["type"] == "file"
            and info["name"].endswith(".parquet")
            and not PurePosixPath(info["name"]).name.startswith(".")
        )
        if not paths:
            return [], [
                f"pool.metadata: directory '{meta}' holds no .parquet files (expected DataComp metadata "
                f"parts <stem>.parquet). {self._missing_hint()}"
            ]
        return paths, []

    def _scan(self) -> tuple[list[PoolPart], list[str]]:
        paths, problems = self._list()
        if problems:
            return [], problems
        fs, _ = open_fs(self.cfg.metadata)
        parts = []
        for (path, _), footer in zip(paths, read_footers(fs, [p for _, p in paths]), strict=True):
            if isinstance(footer, str):
                problems.append(footer)
                continue
            schema, num_rows = footer
            problems += schema_problems(path, schema, RULES)
            parts.append(PoolPart(_stem(path), path, num_rows))
        return sorted(parts, key=lambda p: p.stem), problems

    def read(self, part: PoolPart, start: int, stop: int) -> pa.Table:
        table = read_rows(part.path, start, stop)
        missing = [c for c in ("uid", "url", "text") if c not in table.column_names]
        if missing:
            raise CurateError(
                f"{part.path}: column '{missing[0]}' is missing (columns: {', '.join(table.column_names)})"
            )
        return to_pool_table(part.path, table, {c: c for c in POOL_COLUMNS})

    def npz_path(self, part: PoolPart) -> str | None:
        """`<stem>.npz` beside the part's parquet (rows aligned with it), or None when there is none."""
        npz = part.path[: -len(".parquet")] + ".npz"
        fs, path = open_fs(npz)
        return npz if fs.isfile(path) else None


def _stem(path: str) -> str:
    return PurePosixPath(path).name.removesuffix(".parquet")
