"""DataComp metadata pools built from small real parquet files with DataComp's 9-column schema."""

from __future__ import annotations

import pickle
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.config import DatacompPoolConfig
from curate.errors import CurateError
from curate.pools import POOL_COLUMNS, POOL_SCHEMA, make_pool
from curate.pools.datacomp import DatacompPool
from tests.metadata_parts import SCHEMA

DC_SCHEMA = SCHEMA  # DataComp's released schema (reference §1.3)
EXTRAS = DC_SCHEMA.names[5:]
STEMS = [
    "7f000000000000000000000000000000",
    "008d6058981efa6c89a18ee29d53f2fc",
    "1df9462bc6885e969f11aaa635d9332c",
]


def dc_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "uid": [bytes(r).hex() for r in rng.integers(0, 256, (n, 16), dtype=np.uint8)],
            "url": [f"http://example.com/{seed}/{i}.jpg" for i in range(n)],
            "text": [f"a photo number {i} of part {seed}" for i in range(n)],
            "original_width": rng.integers(50, 2000, n),
            "original_height": rng.integers(50, 2000, n),
            "clip_b32_similarity_score": rng.random(n, dtype=np.float32) * 0.5,
            "clip_l14_similarity_score": rng.random(n, dtype=np.float32) * 0.5,
            "face_bboxes": [[[0.1, 0.2, 0.3, 0.4]] if i % 3 == 0 else [] for i in range(n)],
            "sha256": [f"{i:064x}" for i in range(n)],
        },
        schema=DC_SCHEMA,
    )


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    """Three parts (written out of order, small row groups); npz beside the first two stems only."""
    meta = tmp_path / "datacomp_small" / "metadata"
    meta.mkdir(parents=True)
    for i, (stem, n) in enumerate(zip(STEMS, [7, 12, 5], strict=True)):
        pq.write_table(dc_table(n, i), meta / f"{stem}.parquet", row_group_size=4)
    for stem in STEMS[:2]:
        np.savez(meta / f"{stem}.npz", l14_img=np.zeros((1, 768), np.float16))
    (meta / "README.md").write_text("not a part")
    (meta / ".partial.parquet").write_bytes(b"temp file of some writer")
    (meta / "sub").mkdir()
    pq.write_table(dc_table(2, 9), meta / "sub" / "nested.parquet")  # not listed: parts are top-level
    return meta


def pool_of(metadata: Path | str, **kw: object) -> DatacompPool:
    pool = make_pool(DatacompPoolConfig(source="datacomp", metadata=str(metadata), **kw))
    assert isinstance(pool, DatacompPool)
    return pool


def test_parts_sorted_with_footer_counts_and_npz(metadata: Path) -> None:
    pool = pool_of(metadata)
    assert pool.check() == []
    parts = pool.parts()
    assert [p.stem for p in parts] == sorted(STEMS)
    assert [p.num_rows for p in parts] == [12, 5, 7]
    assert parts[0].path == str(metadata / f"{sorted(STEMS)[0]}.parquet")
    assert pool.npz_path(parts[0]) == str(metadata / f"{sorted(STEMS)[0]}.npz")
    assert pool.npz_path(parts[1]) is None  # 1df9... has no npz
    assert pool.npz_path(parts[2]) == str(metadata / f"{STEMS[0]}.npz")


def test_read_normalises_and_keeps_extras(metadata: Path) -> None:
    pool = pool_of(metadata)
    part = pool.parts()[0]  # 12 rows in 3 row groups of 4
    table = pool.read(part, 3, 9)  # crosses row groups
    assert table.schema.names == [*POOL_COLUMNS, *EXTRAS]
    assert table.schema.field("face_bboxes").type == pa.list_(pa.list_(pa.float32()))
    assert table.select(POOL_COLUMNS).schema == POOL_SCHEMA
    source = pq.read_table(part.path).slice(3, 6)
    assert table.equals(source), "DataComp rows already have the pool layout and pass through unchanged"
    assert pool.read(part, 0, part.num_rows).num_rows == 12
    assert pool.read(part, 12, 12).num_rows == 0


def test_width_height_optional_and_bad_uids_pass_through(tmp_path: Path) -> None:
    meta = tmp_path / "metadata"
    meta.mkdir()
    table = pa.table(
        {
            "uid": pa.array(["ABCDEF" * 5 + "AB", "short", None, "0" * 32], pa.large_string()),
            "url": ["u1", "u2", "u3", "u4"],
            "text": [None, "t", "t", "t"],
            "sha256": ["x"] * 4,
        }
    )
    pq.write_table(table, meta / "a.parquet")
    pool = pool_of(meta)
    assert pool.check() == []
    out = pool.read(pool.parts()[0], 0, 4)
    assert out.select(POOL_COLUMNS).schema == POOL_SCHEMA
    assert out.column("uid").to_pylist() == ["ABCDEF" * 5 + "AB", "short", None, "0" * 32]
    assert out.column("original_width").null_count == 4
    assert out.column("text").to_pylist()[0] is None
    assert out.schema.names == [*POOL_COLUMNS, "sha256"]


def test_max_samples_cuts_across_parts(metadata: Path) -> None:
    parts = pool_of(metadata, max_samples=15).parts()
    assert [(p.stem, p.num_rows) for p in parts] == [(sorted(STEMS)[0], 12), (sorted(STEMS)[1], 3)]
    assert [p.num_rows for p in pool_of(metadata, max_samples=100).parts()] == [12, 5, 7]


def test_missing_directory_message() -> None:
    assert pool_of("data/datacomp_small/metadata", scale="small").check() == [
        "pool.metadata: directory 'data/datacomp_small/metadata' does not exist. Fetch DataComp's metadata "
        "with `curate pool fetch --scale small data/datacomp_small` (needs network access to the Hugging "
        "Face hub), or point pool.metadata at a local copy (e.g. curate run FILE "
        "pool.metadata=/path/to/metadata)."
    ]
    (msg,) = pool_of("/nowhere/dc").check()
    assert msg == (
        "pool.metadata: directory '/nowhere/dc' does not exist. Fetch DataComp's metadata with "
        "`curate pool fetch --scale {small,medium,large,xlarge,datacomp_1b} /nowhere/dc` (needs network "
        "access to the Hugging Face hub) and set pool.metadata=/nowhere/dc/metadata, or point "
        "pool.metadata at a local copy (e.g. curate run FILE pool.metadata=/path/to/metadata)."
    )
    with pytest.raises(CurateError) as err:
        pool_of("/nowhere/dc").parts()
    assert "pool.metadata: directory '/nowhere/dc' does not exist" in str(err.value)


def test_directory_problems(tmp_path: Path) -> None:
    file = tmp_path / "x.parquet"
    pq.write_table(dc_table(2, 0), file)
    assert pool_of(file).check() == [
        f"pool.metadata: '{file}' is not a directory; expected a directory of DataComp metadata parts "
        "(<stem>.parquet, optionally <stem>.npz beside each)"
    ]
    empty = tmp_path / "metadata"
    empty.mkdir()
    (empty / "a.npz").write_bytes(b"")
    (msg,) = pool_of(empty, scale="medium").check()
    assert msg.startswith(
        f"pool.metadata: directory '{empty}' holds no .parquet files (expected DataComp metadata parts "
        f"<stem>.parquet). Fetch DataComp's metadata with `curate pool fetch --scale medium {tmp_path}`"
    )
    assert pool_of("nosuchscheme://bucket/metadata").check() == [
        "pool.metadata: 'nosuchscheme://bucket/metadata': cannot open (Protocol not known: nosuchscheme)"
    ]


def test_column_problems(tmp_path: Path) -> None:
    meta = tmp_path / "metadata"
    meta.mkdir()
    good = dc_table(3, 0)
    pq.write_table(good.drop_columns(["url"]), meta / "a.parquet")
    pq.write_table(good.set_column(1, "url", pa.array([1, 2, 3])), meta / "b.parquet")
    pq.write_table(good.set_column(3, "original_width", pa.array([1.5, 2.0, 3.0])), meta / "c.parquet")
    pq.write_table(good.set_column(2, "text", pa.array([b"x", b"y", b"z"])), meta / "d.parquet")
    pq.write_table(good, meta / "e.parquet")
    (meta / "f.parquet").write_bytes(b"this is not parquet at all")
    pq.write_table(good.drop_columns(["uid", "text"]), meta / "g.parquet")
    cols = ", ".join(n for n in DC_SCHEMA.names if n != "url")
    assert pool_of(meta).check() == [
        f"{meta}/a.parquet: column 'url' is missing (columns: {cols})",
        f"{meta}/b.parquet: column 'url' has type int64; expected a string",
        f"{meta}/c.parquet: column 'original_width' has type double; expected an integer",
        f"{meta}/d.parquet: column 'text' has type binary; expected a string",
        f"{meta}/f.parquet: not a readable parquet file (Parquet magic bytes not found in footer. Either the "
        "file is corrupted or this is not a parquet file.)",
        f"{meta}/g.parquet: column 'uid' is missing (columns: url, original_width, original_height, "
        "clip_b32_similarity_score, clip_l14_similarity_score, face_bboxes, sha256)",
        f"{meta}/g.parquet: column 'text' is missing (columns: url, original_width, original_height, "
        "clip_b32_similarity_score, clip_l14_similarity_score, face_bboxes, sha256)",
    ]


def test_fsspec_url_memory_filesystem() -> None:
    """A real non-local fsspec filesystem: paths stay URLs, reads and npz lookups go through fsspec."""
    fs = fsspec.filesystem("memory")
    root = "memory://curate-test-dc/metadata"
    try:
        for i, stem in enumerate(STEMS[:2]):
            with fs.open(f"{root}/{stem}.parquet", "wb") as f:
                pq.write_table(dc_table(4 + i, i), f)
        with fs.open(f"{root}/{STEMS[1]}.npz", "wb") as f:
            f.write(b"npz")
        pool = pool_of(root)
        assert pool.check() == []
        parts = pool.parts()
        url = fs.unstrip_protocol("/curate-test-dc/metadata")  # memory:///curate-test-dc/metadata
        assert [p.path for p in parts] == [f"{url}/{STEMS[1]}.parquet", f"{url}/{STEMS[0]}.parquet"]
        assert pool.npz_path(parts[0]) == f"{url}/{STEMS[1]}.npz"
        assert pool.npz_path(parts[1]) is None
        table = pool.read(parts[0], 1, 5)
        assert table.num_rows == 4 and table.schema.names[:5] == POOL_COLUMNS
        missing = pool_of("memory://curate-test-dc/absent").check()
        assert missing[0].startswith(
            "pool.metadata: directory 'memory://curate-test-dc/absent' does not exist"
        )
    finally:
        fs.rm("/curate-test-dc", recursive=True)


def test_pool_pickles_for_ray(metadata: Path) -> None:
    pool = pool_of(metadata)
    parts = pool.parts()
    clone = pickle.loads(pickle.dumps(pool))
    assert clone.read(parts[1], 0, 5).equals(pool.read(parts[1], 0, 5))
