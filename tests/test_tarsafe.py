"""Safe tar reading (hostile members skipped with reasons, bounded memory) and deterministic writing."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from curate.tarsafe import (
    MAX_EXT_HEADER,
    MAX_SAMPLE_MEMBERS,
    MemberTooLarge,
    TarReader,
    TarWriter,
    ustar_header,
)


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def _tar(
    path: Path, entries: list[tuple[str, bytes] | tarfile.TarInfo], fmt: int = tarfile.PAX_FORMAT
) -> Path:
    with tarfile.open(path, "w", format=fmt) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                tf.addfile(_info(entry[0], size=len(entry[1])), io.BytesIO(entry[1]))
    return path


def test_samples_are_grouped_like_webdataset_with_long_names(tmp_path: Path) -> None:
    long_key = "d/" + "k" * 150
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        entries = [("a.jpg", b"A" * 700), ("a.json", b'{"uid": 1}'), ("b.seg.png", b"B"), ("b.txt", b"t")]
        if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold a 152-character name
            entries.append((f"{long_key}.txt", b"long"))
        path = _tar(tmp_path / f"{fmt}.tar", entries, fmt)
        with TarReader(path) as reader:
            samples = list(reader.samples())
            got = {s.key: {m.ext: os.pread(reader.fd, m.size, m.offset) for m in s.members} for s in samples}
        expected = {"a": {"jpg": b"A" * 700, "json": b'{"uid": 1}'}, "b": {"seg.png": b"B", "txt": b"t"}}
        if fmt != tarfile.USTAR_FORMAT:
            expected[long_key] = {"txt": b"long"}
        assert got == expected, fmt
        assert reader.skipped == {} and reader.stopped is None


def test_hostile_members_are_skipped_with_a_reason(tmp_path: Path) -> None:
    dev = _info("s.dev", tarfile.CHRTYPE)
    dev.devmajor, dev.devminor = 1, 3
    path = _tar(
        tmp_path / "bad.tar",
        [
            ("../evil.jpg", b"x"),
            ("/etc/abs.jpg", b"x"),
            ("s/../../up.txt", b"x"),
            _info("s.jpg", tarfile.SYMTYPE, link="/etc/passwd"),
            _info("s.png", tarfile.LNKTYPE, link="a.jpg"),
            dev,
            _info("s.fifo", tarfile.FIFOTYPE),
            _info("dir", tarfile.DIRTYPE),
            ("__meta__", b"x"),
            ("noext", b"x"),
            ("s.json", b'{"uid": "x"}'),
            ("s.json", b"again"),
            ("s.j..k", b"x"),
        ],
    )
    with TarReader(path) as reader:
        samples = list(reader.samples())
    assert [(s.key, [m.name for m in s.members]) for s in samples] == [("s", ["s.json"])]
    assert dict(reader.skipped) == {
        "member name with '..'": 2,
        "absolute member name": 1,
        "symlink": 1,
        "hard link": 1,
        "device file": 1,
        "fifo": 1,
        "directory entry": 1,
        "webdataset meta member (__name__)": 1,
        "member name without a key.extension form": 1,
        "duplicate member name in a sample": 1,
        "unusual member extension": 1,
    }
    reasons = {why for _, why in samples[0].skipped}
    assert {"symlink", "hard link", "device file", "fifo"} <= reasons


def test_a_sample_keeps_a_bounded_number_of_members(tmp_path: Path) -> None:
    path = _tar(tmp_path / "many.tar", [(f"k.e{i}", b"x") for i in range(MAX_SAMPLE_MEMBERS + 10)])
    with TarReader(path) as reader:
        (sample,) = reader.samples()
    assert len(sample.members) == MAX_SAMPLE_MEMBERS
    assert reader.skipped == {f"more than {MAX_SAMPLE_MEMBERS} members in a sample": 10}


def test_damaged_tars_end_with_a_reason(tmp_path: Path) -> None:
    good = _tar(tmp_path / "good.tar", [("a.jpg", b"x" * 3000), ("b.jpg", b"y" * 3000)])
    data = good.read_bytes()
    truncated = tmp_path / "trunc.tar"
    truncated.write_bytes(data[:2048])  # a.jpg's header and part of its data
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(data[:3584] + b"\x01" * 512 + data[3584:])  # where b.jpg's header was
    not_tar = tmp_path / "text.tar"
    not_tar.write_bytes(b"hello world\n" * 100)
    with TarReader(truncated) as r:
        assert list(r.members()) == []
        assert r.stopped == "truncated tar (member data past the end of the file)"
    with TarReader(garbage) as r:
        assert [m.name for m in r.members()] == ["a.jpg"]
        assert r.stopped == "invalid tar header; rest of the tar ignored"
    with TarReader(not_tar) as r:
        assert list(r.members()) == [] and r.stopped == "not a tar file"


def test_an_oversized_extended_header_is_not_read(tmp_path: Path) -> None:
    """tarfile would read a pax header of any declared size into memory; we refuse above a bound."""
    info = _info("././@PaxHeader", tarfile.XHDTYPE, size=2_000_000_000)
    path = tmp_path / "pax.tar"
    with open(path, "wb") as f:
        f.write(info.tobuf(tarfile.USTAR_FORMAT))
        f.truncate(512 + 2_000_000_000 + 1024)  # sparse on disk
    tracemalloc.start()
    with TarReader(path) as r:
        assert list(r.members()) == []
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r.stopped == "oversized pax or GNU long-name header; rest of the tar ignored"
    assert peak < MAX_EXT_HEADER


def test_read_is_bounded_and_copy_streams(tmp_path: Path) -> None:
    size = 200 * 1024 * 1024
    path = tmp_path / "huge.tar"
    with open(path, "wb") as f:  # one 200 MB member of zeros, sparse on disk
        f.write(_info("big.jpg", size=size).tobuf(tarfile.USTAR_FORMAT))
        f.truncate(512 + size + 1024)
    with TarReader(path) as reader:
        (member,) = reader.members()
        with pytest.raises(MemberTooLarge):
            reader.read(member, 1 << 20)
        out = tmp_path / "copy.bin"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT)
        tracemalloc.start()
        reader.copy(member, fd)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        os.close(fd)
    assert out.stat().st_size == size
    assert peak < 4 << 20


def test_ustar_header_matches_tarfile() -> None:
    for name, size in [("0123-0.jpg", 12345), ("x" * 100, 0), ("y" * 101, 5), ("é-0.txt", 3), ("a.b", 8**11)]:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.uname, info.gname = size, 0o644, 0, "", ""
        fits = len(name.encode()) <= 100 and name.isascii() and size < 8**11
        fmt = tarfile.USTAR_FORMAT if fits else tarfile.PAX_FORMAT
        assert ustar_header(name, size) == info.tobuf(fmt, "utf-8", "surrogateescape"), name


def test_writer_output_equals_tarfile_output(tmp_path: Path) -> None:
    src = _tar(tmp_path / "src.tar", [("a.jpg", os.urandom(1000)), ("a.txt", b"cap"), ("b.jpg", b"")])
    ours = tmp_path / "ours.tar"
    fd = os.open(ours, os.O_WRONLY | os.O_CREAT)
    with TarReader(src) as reader:
        members = list(reader.members())
        writer = TarWriter(fd)
        for m in members:
            writer.add_from(f"u-0.{m.ext}" if m.key == "a" else "u-1.jpg", reader, m)
        writer.add_bytes("u-1.txt", b"bytes")
        writer.close()
    os.close(fd)
    ref = tmp_path / "ref.tar"
    with tarfile.open(src) as tin, tarfile.open(ref, "w", format=tarfile.USTAR_FORMAT) as tout:
        for m, name in zip(tin.getmembers(), ["u-0.jpg", "u-0.txt", "u-1.jpg"], strict=True):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uname, info.gname = m.size, 0o644, 0, "", ""
            tout.addfile(info, tin.extractfile(m))
        info = tarfile.TarInfo("u-1.txt")
        info.size, info.mode, info.mtime, info.uname, info.gname = 5, 0o644, 0, "", ""
        tout.addfile(info, io.BytesIO(b"bytes"))
    assert ours.read_bytes() == ref.read_bytes()
    assert writer.bytes == ours.stat().st_size
