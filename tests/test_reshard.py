"""Reshard: exact selection (duplicates, missing), byte-for-byte members, deterministic numbering,
resume, hostile inputs, and output that webdataset reads."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from curate.errors import CurateError
from curate.reshard import find_input_shards, plan_many, reshard, shard_done, write_output_shard
from curate.uids import uids_to_array, write_subset
from tests.shard_fixtures import add, read_tar, sample_members, uid, write_shards

LAYOUT = [list(range(0, 12)), list(range(12, 20)), list(range(20, 31))]


def _expected(selected: list[int], members: dict[int, dict[str, bytes]]) -> list[tuple[str, bytes]]:
    """Output members in input order: shards by name, samples by key, copies j = 0..k-1."""
    out = []
    for i in sorted(set(selected)):
        for j in range(selected.count(i)):
            out += [(f"{uid(i)}-{j}.{ext}", data) for ext, data in members[i].items()]
    return out


def _all_members(out: Path) -> list[tuple[str, bytes]]:
    meta = json.loads((out / "meta.json").read_text())
    return [m for k in range(meta["output_shard_count"]) for m in read_tar(out / f"{k:08d}.tar")]


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_selects_exactly_the_subset_with_duplicates_and_lists_missing(tmp_path: Path) -> None:
    members = write_shards(tmp_path / "shards", LAYOUT)
    selected = [1, 3, 3, 12, 19, 19, 19, 30]
    absent = [uid(1000), uid(1001), uid(1001)]
    subset = write_subset(tmp_path / "s.npy", [uid(i) for i in selected] + absent)
    out = tmp_path / "out"
    counts = reshard(tmp_path / "shards", tmp_path / "s.npy", out, workers=1)

    assert _all_members(out) == _expected(selected, members)  # every member, byte for byte
    assert (out / "sample_ids.npy").read_bytes() == (tmp_path / "s.npy").read_bytes()
    missing = (out / "missing_uids.txt").read_text().splitlines()
    assert missing == sorted(f"{u}\tnot in the input shards" for u in {uid(1000), uid(1001)})
    meta = json.loads((out / "meta.json").read_text())
    assert meta["output_shard_count"] == 1 and meta["output_shard_format"] == "{:08d}.tar"
    assert meta["output_count"] == len(selected) == counts["output_count"]
    assert meta["processed_count"] == 31 and meta["subset_count"] == len(subset) == 11
    assert (meta["missing_count"], meta["not_found_count"], meta["not_found_unique"]) == (3, 3, 2)
    assert meta["planned_from"] == {"parquet": 3}
    assert json.loads((out / "00000000_stats.json").read_text())["successes"] == len(selected)


def test_output_loads_with_webdataset(tmp_path: Path) -> None:
    members = write_shards(tmp_path / "shards", LAYOUT)
    write_subset(tmp_path / "s.npy", [uid(i) for i in range(0, 31, 2)] + [uid(4)])
    reshard(tmp_path / "shards", tmp_path / "s.npy", tmp_path / "out", shard_size=5, workers=1)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    last = meta["output_shard_count"] - 1
    pattern = str(tmp_path / "out" / f"{{00000000..{last:08d}}}.tar")  # as DataComp's train.py builds it
    samples = list(wds.WebDataset(pattern, shardshuffle=False))
    assert len(samples) == meta["output_count"] == 17
    by_key = {s["__key__"]: s for s in samples}
    assert by_key[f"{uid(4)}-1"]["jpg"] == members[4]["jpg"]
    assert json.loads(by_key[f"{uid(30)}-0"]["json"])["uid"] == uid(30)
    assert {k for s in samples for k in s if not k.startswith("__")} == {"jpg", "json", "txt"}
    from curate.rundir import FILE_MODE

    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "out").glob("*.tar")}
    assert modes == {FILE_MODE}  # as readable as the run's other files (mkstemp alone makes 0600)


def test_numbering_is_deterministic_and_shards_are_full_but_the_last(tmp_path: Path) -> None:
    members = write_shards(tmp_path / "shards", LAYOUT)
    selected = [i for i in range(31) if i % 3 != 1] + [5, 5, 9, 27]
    write_subset(tmp_path / "s.npy", [uid(i) for i in selected])
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        reshard(tmp_path / "shards", tmp_path / "s.npy", out, shard_size=4, workers=workers)
        runs[workers] = _files(out)
    assert runs[1] == runs[2]
    sizes = [len(read_tar(tmp_path / "out1" / f"{k:08d}.tar")) // 3 for k in range(7)]
    assert sizes == [4, 4, 4, 4, 4, 4, 1] and "00000007.tar" not in runs[1]
    assert _all_members(tmp_path / "out1") == _expected(selected, members)
    # planned from the tars alone (no parquet): the same bytes
    bare = tmp_path / "bare"
    bare.mkdir()
    for tar in (tmp_path / "shards").glob("*.tar"):
        shutil.copy(tar, bare / tar.name)
    counts = reshard(bare, tmp_path / "s.npy", tmp_path / "out_scan", shard_size=4, workers=2)
    assert counts["planned_from"] == {"tar scan": 3}
    scan = _files(tmp_path / "out_scan")
    assert {k: v for k, v in scan.items() if k.endswith(".tar")} == {
        k: v for k, v in runs[1].items() if k.endswith(".tar")
    }


def test_byte_cap_is_planned_from_mean_sample_size(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", LAYOUT)
    write_subset(tmp_path / "s.npy", [uid(i) for i in range(31)])
    shard_bytes = (tmp_path / "shards" / "00000000.tar").stat().st_size
    cap = int(shard_bytes / 12 * 3.5)  # three samples of shard 0 by its mean size
    counts = reshard(tmp_path / "shards", tmp_path / "s.npy", tmp_path / "out", workers=1)
    capped = reshard(
        tmp_path / "shards", tmp_path / "s.npy", tmp_path / "cap", workers=1, max_shard_bytes=cap
    )
    assert counts["output_shard_count"] == 1
    assert capped["output_shard_count"] >= 31 // 4 and capped["output_count"] == 31
    assert _all_members(tmp_path / "cap") == _all_members(tmp_path / "out")


def test_resume_rewrites_only_unfinished_shards(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", LAYOUT)
    write_subset(tmp_path / "s.npy", [uid(i) for i in range(0, 31, 2)])
    out = tmp_path / "out"
    reshard(tmp_path / "shards", tmp_path / "s.npy", out, shard_size=5, workers=1)
    first = _files(out)
    # a killed run: shard 2 never finished (a temp file left), shard 1 has its tar but not its stats
    (out / "00000002.tar").unlink()
    (out / "00000002_stats.json").unlink()
    (out / "00000001_stats.json").unlink()
    (out / "meta.json").unlink()
    (out / ".00000002.tar.abc123.tmp").write_bytes(b"partial")
    before = (out / "00000000.tar").stat().st_mtime_ns
    logs: list[str] = []
    reshard(tmp_path / "shards", tmp_path / "s.npy", out, shard_size=5, workers=1, log=logs.append)
    assert _files(out) == first  # the temp file is gone, everything else byte-identical
    assert (out / "00000000.tar").stat().st_mtime_ns == before
    assert logs[0] == "resuming: 2 of 4 output shards already written"
    assert sum("written" in line for line in logs[1:]) == 2


def test_a_failing_shard_leaves_no_file_under_its_final_name(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", LAYOUT)
    subset = write_subset(tmp_path / "s.npy", [uid(i) for i in range(31)])
    (task,) = plan_many(find_input_shards(tmp_path / "shards"), {"s": subset}, 100, 10**9)["s"].tasks
    (tmp_path / "shards" / "00000002.tar").unlink()  # vanishes between planning and writing
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError):
        write_output_shard(task, out)
    assert list(out.iterdir()) == [] and not shard_done(out, task)


def test_hostile_and_broken_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    """Selected samples: one with a symlink for its image, one without json, one whose json names
    another uid, one with invalid json, one with a huge image (streamed), one uid in two samples."""
    shards = tmp_path / "shards"
    write_shards(shards, [list(range(0, 4))])
    big = 32 * 1024 * 1024
    rows = []
    with tarfile.open(shards / "00000001.tar", "w") as tf:
        keys = iter(f"00000001{r:04d}" for r in range(100))

        def sample(i: int, *, json_bytes: bytes | None = None, skip: str = "", huge: bool = False) -> None:
            key, m = next(keys), sample_members(i, uid(i))
            rows.append({"uid": uid(i), "key": key, "status": "success"})
            for ext, data in m.items():
                if ext == skip:
                    continue
                if ext == "jpg" and huge:
                    info = tarfile.TarInfo(f"{key}.jpg")
                    info.size = big
                    tf.addfile(info, io.BytesIO(bytes(big)))
                    continue
                add(tf, f"{key}.{ext}", json_bytes if ext == "json" and json_bytes is not None else data)

        link = tarfile.TarInfo("000000010000.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        rows.append({"uid": uid(10), "key": "000000010000", "status": "success"})
        m10 = sample_members(10, uid(10))
        add(tf, "000000010000.json", m10["json"])
        add(tf, "000000010000.txt", m10["txt"])
        next(keys)
        sample(11, skip="json")
        sample(12, json_bytes=json.dumps({"uid": uid(99)}).encode())
        sample(13, json_bytes=b"{not json")
        sample(14, huge=True)
        sample(2)  # uid(2) again: already in shard 0
        add(tf, "../../escape.txt", b"x")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), shards / "00000001.parquet")
    write_subset(tmp_path / "s.npy", [uid(i) for i in (1, 2, 10, 11, 12, 12, 13, 14)])
    out = tmp_path / "out"
    tracemalloc.start()
    counts = reshard(shards, tmp_path / "s.npy", out, workers=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20  # the 32 MB image never passed through Python
    names = [n for n, _ in read_tar(out / "00000000.tar")]
    assert names == [
        *(f"{uid(1)}-0.{e}" for e in ("jpg", "json", "txt")),
        *(f"{uid(2)}-0.{e}" for e in ("jpg", "json", "txt")),
        f"{uid(10)}-0.json",
        f"{uid(10)}-0.txt",
        *(f"{uid(14)}-0.{e}" for e in ("jpg", "json", "txt")),
    ]
    assert (out / "00000000.tar").stat().st_size > big
    assert counts["output_count"] == 4 and counts["missing_count"] == 4
    assert counts["skipped"] == {
        "member skipped: symlink": 1,
        "no json member": 1,
        "json uid differs from the shard parquet": 2,
        "invalid json": 1,
        "uid already in an earlier input sample": 1,
    }
    missing = dict(line.split("\t") for line in (out / "missing_uids.txt").read_text().splitlines())
    assert set(missing) == {uid(11), uid(12), uid(13)}
    assert missing[uid(11)].startswith("no json member (00000001.tar, key 000000010001)")
    assert not any(p.name.startswith(".") for p in out.iterdir()) and not (tmp_path / "escape.txt").exists()


def test_input_checks_are_clear_errors(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", LAYOUT[:1])
    good = tmp_path / "s.npy"
    write_subset(good, [uid(1), uid(2)])
    unsorted = tmp_path / "unsorted.npy"  # descending: DataComp's resharder would silently miss uids
    np.save(unsorted, uids_to_array(sorted([uid(1), uid(2)], reverse=True)), allow_pickle=False)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.arange(4, dtype=np.int64))
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "shards", unsorted, tmp_path / "o1", "uids are not sorted"),
        (tmp_path / "shards", wrong, tmp_path / "o2", "dtype u8,u8"),
        (tmp_path / "empty", good, tmp_path / "o3", "holds no .tar shards"),
        (tmp_path / "nowhere", good, tmp_path / "o4", "is not a directory"),
    ]
    for shards, subset, out, message in cases:
        with pytest.raises(CurateError) as exc:
            reshard(shards, subset, out, workers=1)
        assert message in str(exc.value)
        assert not out.exists()  # checked before any write
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(CurateError, match="is not empty .other files: notes.txt.*--overwrite"):
        reshard(tmp_path / "shards", good, busy, workers=1)
    reshard(tmp_path / "shards", good, busy, workers=1, overwrite=True)
    assert (busy / "notes.txt").read_text() == "mine" and (busy / "meta.json").exists()
    done = tmp_path / "done"
    reshard(tmp_path / "shards", good, done, workers=1)
    other = tmp_path / "other.npy"
    write_subset(other, [uid(3)])
    with pytest.raises(CurateError, match="a reshard of another subset"):
        reshard(tmp_path / "shards", other, done, workers=1)
