"""Bring-your-own parquet pools: paths, globs and directories, column mapping, computed uids, checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.config import ParquetPoolConfig
from curate.errors import CurateError
from curate.pools import POOL_COLUMNS, POOL_SCHEMA, make_pool
from curate.pools.parquet import ParquetPool, unique_stems


def byod(n: int, tag: str) -> pa.Table:
    """A typical BYOD file: other column names, ints that are not int64, an extra column."""
    return pa.table(
        {
            "image_url": [f"http://img.test/{tag}/{i}.png" for i in range(n)],
            "caption": [f"{tag} caption {i}" if i % 4 else None for i in range(n)],
            "original_width": pa.array(range(100, 100 + n), pa.int32()),
            "license": ["cc-by"] * n,
        }
    )


def pool_of(paths: list[str | Path], **kw: object) -> ParquetPool:
    cfg = ParquetPoolConfig(source="parquet", paths=[str(p) for p in paths], **kw)
    pool = make_pool(cfg)
    assert isinstance(pool, ParquetPool)
    return pool


def sha_uid(url: str, text: str | None) -> str:
    return hashlib.sha256(f"{url}\n{text or ''}".encode()).hexdigest()[:32]


def test_renames_computes_uids_and_keeps_extras(tmp_path: Path) -> None:
    pq.write_table(byod(6, "a"), tmp_path / "a.parquet", row_group_size=2)
    pool = pool_of([tmp_path / "a.parquet"], url_col="image_url", text_col="caption")
    assert pool.check() == []
    (part,) = pool.parts()
    assert (part.stem, part.num_rows) == ("a", 6)
    table = pool.read(part, 1, 5)
    assert table.schema.names == [*POOL_COLUMNS, "license"]
    assert table.select(POOL_COLUMNS).schema == POOL_SCHEMA
    src = byod(6, "a").slice(1, 4)
    assert table.column("url").to_pylist() == src.column("image_url").to_pylist()
    assert table.column("text").to_pylist() == src.column("caption").to_pylist()
    assert table.column("original_width").to_pylist() == [101, 102, 103, 104]
    assert table.column("original_height").null_count == 4
    expected = [
        sha_uid(u, t) for u, t in zip(src["image_url"].to_pylist(), src["caption"].to_pylist(), strict=True)
    ]
    assert table.column("uid").to_pylist() == expected
    assert sha_uid("http://img.test/a/4.png", None) == sha_uid("http://img.test/a/4.png", "")
    # stable: reading again (another process, another day) gives the same uids
    assert (
        pool_of([tmp_path / "a.parquet"], url_col="image_url", text_col="caption")
        .read(part, 1, 5)
        .equals(table)
    )


def test_uid_col_is_used_and_source_columns_not_repeated(tmp_path: Path) -> None:
    t = pa.table({"id": ["0" * 32, "f" * 32, "bad"], "link": ["a", "b", "c"], "alt": ["x", "y", "z"]})
    t = t.append_column("uid", pa.array(["stray"] * 3))  # a stray 'uid' column is not an extra
    pq.write_table(t, tmp_path / "t.parquet")
    pool = pool_of([tmp_path / "t.parquet"], url_col="link", text_col="alt", uid_col="id")
    out = pool.read(pool.parts()[0], 0, 3)
    assert out.schema.names == POOL_COLUMNS
    assert out.column("uid").to_pylist() == ["0" * 32, "f" * 32, "bad"]  # invalid ones are counted later
    assert out.column("url").to_pylist() == ["a", "b", "c"]


def test_files_directories_globs_sorted_and_unique(tmp_path: Path) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        pq.write_table(byod(2, d), tmp_path / d / "part.parquet")
        pq.write_table(byod(3, d), tmp_path / d / f"only_{d}.parquet")
    (tmp_path / "x" / "notes.txt").write_text("ignored")
    (tmp_path / "x" / "deeper").mkdir()
    pq.write_table(byod(1, "deep"), tmp_path / "x" / "deeper" / "z.parquet")  # directories are not recursive
    pq.write_table(byod(4, "b"), tmp_path / "b.parquet")
    paths = [tmp_path / "x", str(tmp_path / "y" / "*.parquet"), tmp_path / "b.parquet", tmp_path / "x"]
    pool = pool_of(paths, url_col="image_url", text_col="caption")
    assert pool.check() == []
    parts = pool.parts()
    stems = [p.stem for p in parts]
    px = str(tmp_path / "x" / "part.parquet")
    py = str(tmp_path / "y" / "part.parquet")
    hx, hy = (hashlib.sha256(p.encode()).hexdigest()[:8] for p in (px, py))
    assert stems == sorted(["b", "only_x", "only_y", f"part-{hx}", f"part-{hy}"])
    assert {p.stem: p.path for p in parts}[f"part-{hx}"] == px
    assert sum(p.num_rows for p in parts) == 2 + 3 + 2 + 3 + 4  # x listed twice, counted once


def test_unique_stems() -> None:
    assert unique_stems(["/a/p.parquet", "/b/q.parquet"]) == ["p", "q"]
    s = unique_stems(["/a/p.parquet", "/b/p.parquet", "/c/r"])
    assert s[0] != s[1] and s[0].startswith("p-") and s[2] == "r"
    assert unique_stems(["/a/p.parquet", "/b/p.parquet", "/c/r"]) == s


def test_max_samples(tmp_path: Path) -> None:
    for name, n in (("a", 5), ("b", 5), ("c", 5)):
        pq.write_table(byod(n, name), tmp_path / f"{name}.parquet")
    pool = pool_of([tmp_path], url_col="image_url", text_col="caption", max_samples=7)
    assert [(p.stem, p.num_rows) for p in pool.parts()] == [("a", 5), ("b", 2)]


def test_path_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    paths = [tmp_path / "missing.parquet", str(tmp_path / "*.nothing"), tmp_path / "empty", "bogus://x/y"]
    assert pool_of(paths).check() == [
        f"pool.paths[0]: '{tmp_path}/missing.parquet' does not exist "
        "(expected a parquet file, directory or glob)",
        f"pool.paths[1]: glob '{tmp_path}/*.nothing' matches no files",
        f"pool.paths[2]: directory '{tmp_path}/empty' holds no .parquet files",
        "pool.paths[3]: 'bogus://x/y': cannot open (Protocol not known: bogus)",
    ]
    with pytest.raises(CurateError) as err:
        pool_of(paths).parts()
    assert "pool.paths[0]" in str(err.value)


def test_column_problems(tmp_path: Path) -> None:
    pq.write_table(byod(2, "a"), tmp_path / "a.parquet")
    t = byod(2, "b").set_column(0, "image_url", pa.array([1, 2]))
    pq.write_table(t, tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes(b"PAR1 truncated")
    pq.write_table(byod(2, "d").set_column(2, "original_width", pa.array(["1", "2"])), tmp_path / "d.parquet")
    pool = pool_of([tmp_path], url_col="image_url", text_col="caption", uid_col="key")
    problems = pool.check()
    cols = "(columns: image_url, caption, original_width, license)"
    assert problems == [
        f"{tmp_path}/a.parquet: column 'key' is missing {cols}",
        f"{tmp_path}/b.parquet: column 'image_url' has type int64; expected a string",
        f"{tmp_path}/b.parquet: column 'key' is missing {cols}",
        problems[3],
        f"{tmp_path}/d.parquet: column 'key' is missing {cols}",
        f"{tmp_path}/d.parquet: column 'original_width' has type string; expected an integer",
    ]
    assert problems[3].startswith(f"{tmp_path}/c.parquet: not a readable parquet file (")
    default_names = pool_of([tmp_path / "a.parquet"]).check()
    assert default_names == [
        f"{tmp_path}/a.parquet: column 'url' is missing {cols}",
        f"{tmp_path}/a.parquet: column 'text' is missing {cols}",
    ]
