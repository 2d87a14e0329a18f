"""The run directory: its paths, atomic writes, and the manifest.

Every file a stage produces is written under a temporary name in the same directory and renamed into
place, so a killed run never leaves a half-written file under a final name. The manifest records, per
stage, its config hash and per-shard status; only the driver writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MANIFEST_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()


def atomic_write_with(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write(f)` so that readers see the old file or the whole new one, never a part:
    a temp name in the same directory, fsync, then rename (stale temps start with '.')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)  # mkstemp makes 0600; run files are as readable as any other
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # a failed write names no file
        raise


def read_json(path: Path, what: str) -> Any:
    """A JSON file a user may have damaged or handed us by mistake: CurateError naming it, not a traceback."""
    from curate.errors import CurateError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CurateError(f"{path}: missing ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CurateError(f"{path}: not readable JSON ({what}): {exc}") from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_write_with)."""
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A scratch directory under `parent` (same filesystem, so its files can be renamed into place);
    removed afterwards whatever happens."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clear_stale_temps(directory: Path) -> int:
    """Remove temporary files and staging dirs a killed run left behind (names starting with '.')."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        if entry.name.startswith(".") and (entry.name.endswith(".tmp") or entry.is_dir()):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


@dataclass(frozen=True)
class RunDir:
    """Paths of one pipeline run (layout of DESIGN.md)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def fit(self) -> Path:
        return self.root / "fit"

    @property
    def decisions(self) -> Path:
        return self.root / "decisions"

    @property
    def subsets(self) -> Path:
        return self.root / "subsets"

    @property
    def resharded(self) -> Path:
        return self.root / "resharded"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def read_manifest(self) -> Manifest:
        return Manifest.load(self.manifest_path)


class Manifest:
    """manifest.json: per stage its config hash, status, per-shard records, counts and timings."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data = data or {"version": MANIFEST_VERSION, "stages": {}}
        self.on_save: Callable[[], None] | None = None  # a run_dir URL: curate.storage pushes after saves

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            # A manifest is only ever replaced atomically, so this is foreign damage: start over and
            # let every shard's output existence decide (they are rechecked, not trusted).
            return cls(path)
        return cls(path, data)

    def save(self) -> None:
        atomic_write_json(self.path, self.data)
        if self.on_save is not None:
            self.on_save()

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {"shards": {}})

    def reset_stage(self, name: str, config_hash: str) -> dict[str, Any]:
        self.data["stages"][name] = {"config_hash": config_hash, "status": "pending", "shards": {}}
        return self.data["stages"][name]

    def done_shards(self, name: str, config_hash: str) -> set[str]:
        stage = self.data["stages"].get(name, {})
        if stage.get("config_hash") != config_hash:
            return set()
        return {sid for sid, rec in stage.get("shards", {}).items() if rec.get("status") == "done"}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
