"""A full disk stops the run: every later write would fail the same way, so trying the other shards
is pointless. A shard's error reaches the driver as text (through Ray), so it is recognised by its
strerror too ("No space left on device", "Disk quota exceeded"), not only by its errno."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from curate.errors import CurateError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(CurateError):
    """The run directory's disk (or quota) is full; the run stopped, finished shards are kept."""


def disk_full_reason(error: BaseException | str) -> str | None:
    """'No space left on device' (or 'Disk quota exceeded') when `error` is that, else None."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return os.strerror(error.errno)
    text = str(error)
    return next((os.strerror(e) for e in DISK_FULL_ERRNOS if os.strerror(e) in text), None)


def disk_full_error(where: str, root: Path, error: BaseException | str) -> DiskFull:
    """The message a user sees: what was being written, where, and what to do."""
    reason = disk_full_reason(error) or os.strerror(errno.ENOSPC)
    return DiskFull(
        f"{where}: disk full ({reason}) under {root}; the run stopped. Finished shards are kept: "
        "free space there (or set run_dir to a larger disk) and run again",
        [f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error],
    )


@contextlib.contextmanager
def stop_when_disk_full(where: str, root: Path) -> Iterator[None]:
    """Driver-side writes (config, manifest, a stage's finish): a full disk becomes DiskFull."""
    try:
        yield
    except OSError as exc:
        if disk_full_reason(exc) is None:
            raise
        raise disk_full_error(where, root, exc) from None
