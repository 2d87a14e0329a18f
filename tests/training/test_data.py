"""`--train-data` patterns from data folders, as DataComp's train.py builds them (reference §4.4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds

from curate.errors import CurateError
from curate.training.data import train_data_pattern


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _resharded(folder: Path, count: int, fmt: str = "{:08d}.tar") -> Path:
    _touch(folder, *(fmt.format(i) for i in range(count)), "00000000_stats.json", "sample_ids.npy")
    (folder / "meta.json").write_text(json.dumps({"output_shard_count": count, "output_shard_format": fmt}))
    return folder


def test_resharded_folder_uses_meta_json(tmp_path: Path) -> None:
    data = _resharded(tmp_path / "r", 12)
    pattern, weights = train_data_pattern(str(data))
    assert pattern == f"{data}/{{00000000..00000011}}.tar" and weights is None
    assert wds.shardlists.expand_urls(pattern) == [str(data / f"{i:08d}.tar") for i in range(12)]
    one = _resharded(tmp_path / "one", 1)
    assert train_data_pattern(str(one))[0] == f"{one}/{{00000000..00000000}}.tar"


def test_tars_grouped_by_prefix_with_the_padding_of_their_names(tmp_path: Path) -> None:
    _touch(tmp_path, "a000.tar", "a001.tar", "a005.tar", "part-0001.tar", "part-0002.tar", "notes.txt")
    _touch(tmp_path, ".a006.tar.tmp", ".hidden7.tar")
    pattern, _ = train_data_pattern(str(tmp_path))
    # groups in sorted prefix order, from 0 to the largest number (gaps are not detected, as DataComp)
    assert pattern == f"{tmp_path}/a{{000..005}}.tar::{tmp_path}/part-{{0000..0002}}.tar"


def test_sub_folders_are_recursed_and_meta_json_sub_folders_used(tmp_path: Path) -> None:
    _resharded(tmp_path / "a_resharded", 3)
    _touch(tmp_path / "b_plain" / "deeper", "00000.tar", "00001.tar")
    _touch(tmp_path / "c_empty")
    _touch(tmp_path, "00000000.tar")
    pattern, _ = train_data_pattern(str(tmp_path))
    assert pattern.split("::") == [
        f"{tmp_path}/a_resharded/{{00000000..00000002}}.tar",
        f"{tmp_path}/b_plain/deeper/{{00000..00001}}.tar",
        f"{tmp_path}/{{00000000..00000000}}.tar",  # the folder's own tars come after its sub-folders
    ]


def test_double_colon_entries_weights_and_single_tars(tmp_path: Path) -> None:
    a = _resharded(tmp_path / "a", 2)
    _touch(tmp_path / "b" / "x", "0.tar")
    _touch(tmp_path / "b" / "y", "s00.tar", "s01.tar")
    single = tmp_path / "b" / "x" / "0.tar"
    pattern, weights = train_data_pattern(f"{a}::{tmp_path / 'b'}::{single}", "1::2.5::3")
    assert pattern.split("::") == [
        f"{a}/{{00000000..00000001}}.tar",
        f"{tmp_path}/b/x/{{0..0}}.tar",
        f"{tmp_path}/b/y/s{{00..01}}.tar",
        str(single),
    ]
    assert weights == "1::2.5::2.5::3"  # a folder's weight repeats for each of its patterns
    s3 = "s3://bucket/d/{00..09}.tar"
    assert train_data_pattern(s3)[0] == f"pipe:aws s3 cp {s3} -"


@pytest.mark.parametrize(
    ("setup", "data", "weights", "message"),
    [
        (None, "missing", None, "no such directory"),
        ("empty", "empty", None, "holds no .tar shards"),
        ("plain", "plain::plain", "1", r"1 weight\(s\) for 2 data entries"),
        ("plain", "plain", "heavy", "'heavy' is not a number"),
        ("named", "named", None, "shard names must end in digits"),
        ("badmeta", "badmeta", None, "not a resharder meta.json"),
        (None, "s3://bucket/folder", None, "remote folder"),
        (None, "missing.tar", None, "no such shard file"),
    ],
)
def test_errors_name_the_problem(
    tmp_path: Path, setup: str | None, data: str, weights: str | None, message: str
) -> None:
    if setup == "empty":
        _touch(tmp_path / "empty" / "sub", "readme.txt")
    elif setup == "plain":
        _touch(tmp_path / "plain", "0.tar")
    elif setup == "named":
        _touch(tmp_path / "named", "shard.tar")
    elif setup == "badmeta":
        _touch(tmp_path / "badmeta", "0.tar")
        (tmp_path / "badmeta" / "meta.json").write_text('{"count": 3}')
    entries = "::".join(e if "://" in e else str(tmp_path / e) for e in data.split("::"))
    with pytest.raises(CurateError, match=message):
        train_data_pattern(entries, weights)
