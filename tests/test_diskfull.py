"""Recognising a full disk (an OSError, or a shard's error text after Ray) and the message it becomes.
The real thing, a tmpfs filling up during a run, is tests/test_disk_full.py."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from curate.diskfull import DiskFull, disk_full_reason, stop_when_disk_full
from curate.rundir import atomic_write_text, atomic_write_with


def test_a_full_disk_is_recognised_by_errno_and_in_a_shards_error_text() -> None:
    assert disk_full_reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    assert disk_full_reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "Disk quota exceeded"
    # what the runner gets back from a Ray worker: the text, from Python's own write or pyarrow's
    assert disk_full_reason("OSError: [Errno 28] No space left on device: '/run/x.tar'")
    pyarrow = "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"
    assert disk_full_reason(pyarrow) == "No space left on device"
    assert disk_full_reason(FileNotFoundError(errno.ENOENT, "No such file or directory")) is None
    assert disk_full_reason("ReadError: invalid header") is None


def test_a_driver_write_on_a_full_disk_becomes_a_message_naming_the_file(tmp_path: Path) -> None:
    """atomic_write_with names the file it was writing (a failed write() names none), keeps the old
    file and removes its temporary; stop_when_disk_full turns that into DiskFull for the user."""
    target = tmp_path / "manifest.json"
    atomic_write_text(target, "{}\n")

    def full(f: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # what f.write raises on a full disk

    with pytest.raises(DiskFull) as info, stop_when_disk_full("embed", tmp_path):
        atomic_write_with(target, full)
    text = str(info.value)
    assert text.startswith(f"embed: disk full (No space left on device) under {tmp_path};")
    assert str(target) in text and "run again" in text
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]

    with pytest.raises(PermissionError), stop_when_disk_full("embed", tmp_path):  # not a full disk
        raise PermissionError(errno.EACCES, "Permission denied", str(target))
