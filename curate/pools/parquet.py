"""Bring-your-own parquet pool, plus the parquet helpers the DataComp pool shares.

Files can be local paths or any fsspec URL. `check()` reads only footers (schema and row count), so it
stays cheap even for thousands of parts; `read()` reads only the row groups that overlap the slice.

Uids: `uid_col` when given (passed through as strings; the download stage counts invalid ones), else
the first 32 hex characters of sha256(url + "\\n" + text) with null url/text taken as "": stable across
runs and machines, and equal for equal (url, text) pairs, like a duplicate on the web.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from curate.config import ParquetPoolConfig
from curate.errors import CurateError
from curate.pools.base import POOL_COLUMNS, POOL_SCHEMA, PoolPart, ScannedPool
from curate.storage import open_fs

GLOB_CHARS = "*?["
FOOTER_THREADS = 16  # footers of remote files are latency-bound


# ---------------------------------------------------------------- shared helpers


def full_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """What we show and store: plain path for local files, the full URL for other filesystems."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


# (column, kind, required): kind "string" = string types only, "text" = string or all-null, "int" = integers,
# "float" = numbers
ColumnRule = tuple[str, str, bool]
_EXPECTED = {"string": "a string", "text": "a string", "int": "an integer", "float": "a number"}


def _type_ok(t: pa.DataType, kind: str) -> bool:
    if kind == "string":
        return is_string(t)
    if kind == "text":
        return is_string(t) or pa.types.is_null(t)
    if kind == "float":
        return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t)
    return pa.types.is_integer(t) or pa.types.is_null(t)


def schema_problems(where: str, schema: pa.Schema, rules: Iterable[ColumnRule]) -> list[str]:
    """Missing or wrongly typed columns of one file, each message naming the file and the column."""
    problems = []
    names = schema.names
    for name, kind, required in rules:
        count = names.count(name)
        if count == 0:
            if required:
                problems.append(f"{where}: column '{name}' is missing (columns: {', '.join(names)})")
        elif count > 1:
            problems.append(f"{where}: column '{name}' appears {count} times; column names must be unique")
        elif not _type_ok(t := schema.field(name).type, kind):
            problems.append(f"{where}: column '{name}' has type {t}; expected {_EXPECTED[kind]}")
    return problems


def read_footer(fs: fsspec.AbstractFileSystem, path: str) -> tuple[pa.Schema, int]:
    """Schema and row count from the parquet footer only; CurateError naming the file if unreadable."""
    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
            return meta.schema.to_arrow_schema(), meta.num_rows
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CurateError(f"{full_path(fs, path)}: not a readable parquet file ({exc})") from None


def read_footers(fs: fsspec.AbstractFileSystem, paths: list[str]) -> list[tuple[pa.Schema, int] | str]:
    """Footers of many files in parallel; a problem string in place of each unreadable one."""

    def one(path: str) -> tuple[pa.Schema, int] | str:
        try:
            return read_footer(fs, path)
        except CurateError as exc:
            return str(exc)

    if len(paths) <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(paths))) as ex:
        return list(ex.map(one, paths))


def read_rows(url: str, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a parquet file, reading only the row groups that overlap them."""
    fs, path = open_fs(url)
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            meta = pf.metadata
            groups, first, pos = [], None, 0
            for i in range(meta.num_row_groups):
                n = meta.row_group(i).num_rows
                if pos + n > start and pos < stop:
                    groups.append(i)
                    first = pos if first is None else first
                pos += n
            if not groups:
                return pf.schema_arrow.empty_table()
            table = pf.read_row_groups(groups)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CurateError(f"{url}: cannot read rows {start}..{stop} ({exc})") from None
    return table.slice(start - first, stop - start)


def _cast(where: str, name: str, col: pa.ChunkedArray | pa.Array, to: pa.DataType) -> pa.ChunkedArray:
    if col.type == to:
        return col
    try:
        return pc.cast(col, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CurateError(f"{where}: column '{name}' cannot be read as {to} ({exc})") from None


def to_pool_table(
    where: str,
    table: pa.Table,
    sources: dict[str, str | None],
    uid: pa.Array | pa.ChunkedArray | None = None,
    drop: Iterable[str] = (),
) -> pa.Table:
    """Normalise a source table: POOL_COLUMNS first, typed as POOL_SCHEMA, then the other columns unchanged.

    `sources` maps a pool column to the source column it comes from (None: all null). `uid`, when given,
    replaces the uid column's source. Source columns used for pool columns, and `drop`, are not repeated
    as extras."""
    n = table.num_rows
    columns, used = [], set(drop)
    for field in POOL_SCHEMA:
        src = sources.get(field.name)
        if field.name == "uid" and uid is not None:
            col = uid
        elif src is None or src not in table.column_names:
            col = pa.nulls(n, field.type)
        else:
            col = table.column(src)
            used.add(src)
        columns.append(_cast(where, src or field.name, col, field.type))
    extras = [c for c in table.column_names if c not in used and c not in POOL_COLUMNS]
    return pa.Table.from_arrays(columns + [table.column(c) for c in extras], names=[*POOL_COLUMNS, *extras])


def hash_uids(urls: pa.ChunkedArray | pa.Array, texts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """uid = sha256(url + "\\n" + text).hexdigest()[:32], null taken as "" (see the module docstring)."""
    return pa.array(
        [
            hashlib.sha256(f"{u or ''}\n{t or ''}".encode()).hexdigest()[:32]
            for u, t in zip(urls.to_pylist(), texts.to_pylist(), strict=True)
        ],
        pa.string(),
    )


# ---------------------------------------------------------------- the pool


class ParquetPool(ScannedPool):
    """Parquet files with a url and a text column (pool.paths: files, directories or globs)."""

    kind = "parquet pool"

    def __init__(self, cfg: ParquetPoolConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_samples = cfg.max_samples

    def _files(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(full path, stem) of every file in pool.paths order, duplicates removed, plus problems.
        Directories contribute their *.parquet files (not recursive, hidden files skipped), sorted."""
        files: list[str] = []
        problems: list[str] = []
        for i, entry in enumerate(self.cfg.paths):
            key = f"pool.paths[{i}]"
            try:
                fs, path = open_fs(entry)
                if any(c in entry for c in GLOB_CHARS):
                    found = [p for p in fs.glob(path) if fs.isfile(p)]
                    if not found:
                        problems.append(f"{key}: glob '{entry}' matches no files")
                elif fs.isdir(path):
                    found = [
                        info["name"]
                        for info in fs.ls(path, detail=True)
                        if info["type"] == "file"
                        and info["name"].endswith(".parquet")
                        and not PurePosixPath(info["name"]).name.startswith(".")
                    ]
                    if not found:
                        problems.append(f"{key}: directory '{entry}' holds no .parquet files")
                elif fs.isfile(path):
                    found = [path]
                else:
                    found = []
                    problems.append(
                        f"{key}: '{entry}' does not exist (expected a parquet file, directory or glob)"
                    )
            except CurateError as exc:
                problems.append(f"{key}: {exc}")
                continue
            except OSError as exc:
                problems.append(f"{key}: cannot list '{entry}' ({exc})")
                continue
            files += [full_path(fs, p) for p in sorted(found)]
        unique = list(dict.fromkeys(files))
        return list(zip(unique, unique_stems(unique), strict=True)), problems

    def _rules(self) -> list[ColumnRule]:
        rules: list[ColumnRule] = [(self.cfg.url_col, "string", True), (self.cfg.text_col, "text", True)]
        if self.cfg.uid_col:
            rules.append((self.cfg.uid_col, "string", True))
        return rules + [("original_width", "int", False), ("original_height", "int", False)]

    def _scan(self) -> tuple[list[PoolPart], list[str]]:
        files, problems = self._files()
        parts = []
        for (path, stem), footer in zip(files, _footers([p for p, _ in files]), strict=True):
            if isinstance(footer, str):
                problems.append(footer)
                continue
            schema, num_rows = footer
            problems += schema_problems(path, schema, self._rules())
            parts.append(PoolPart(stem, path, num_rows))
        return sorted(parts, key=lambda p: p.stem), problems

    def read(self, part: PoolPart, start: int, stop: int) -> pa.Table:
        cfg = self.cfg
        table = read_rows(part.path, start, stop)
        missing = [c for c in (cfg.url_col, cfg.text_col, cfg.uid_col) if c and c not in table.column_names]
        if missing:
            raise CurateError(
                f"{part.path}: column '{missing[0]}' is missing (columns: {', '.join(table.column_names)})"
            )
        uid = None
        if not cfg.uid_col:
            uid = hash_uids(table.column(cfg.url_col), table.column(cfg.text_col))
        sources = {
            "uid": cfg.uid_col,
            "url": cfg.url_col,
            "text": cfg.text_col,
            "original_width": "original_width",
            "original_height": "original_height",
        }
        return to_pool_table(part.path, table, sources, uid=uid)


def _footers(paths: list[str]) -> list[tuple[pa.Schema, int] | str]:
    """Footers of files that may live on different filesystems (grouped per filesystem)."""
    out: dict[str, tuple[pa.Schema, int] | str] = {}
    by_fs: dict[Any, tuple[fsspec.AbstractFileSystem, list[tuple[str, str]]]] = {}
    for p in paths:
        fs, stripped = open_fs(p)
        by_fs.setdefault(id(fs), (fs, []))[1].append((p, stripped))
    for fs, items in by_fs.values():
        for (p, _), footer in zip(items, read_footers(fs, [s for _, s in items]), strict=True):
            out[p] = footer
    return [out[p] for p in paths]


def unique_stems(paths: list[str]) -> list[str]:
    """Part stems from file names (without .parquet). Names shared by files in different directories get
    '-' plus 8 hex of sha256(full path) appended, so stems are unique and the same on every run."""
    stems = [PurePosixPath(p.replace(os.sep, "/")).name.removesuffix(".parquet") for p in paths]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [
        s if counts[s] == 1 else f"{s}-{hashlib.sha256(p.encode()).hexdigest()[:8]}"
        for s, p in zip(stems, paths, strict=True)
    ]
