"""Object storage: URLs opened through fsspec, and run directories on `s3://` (or any fsspec URL).

Stages read and write plain local files (temp name, then rename; resume per shard), so a run whose
`run_dir` is a URL works in a local copy, `work_dir`, and `RemoteRun` keeps the two in step:

- before the run, `pull` copies into work_dir each file of run_dir that it lacks or that changed there
  since it was last copied, so a fresh machine with an empty work_dir resumes from the bucket alone;
- while it runs, a background thread `push`es each file whose (size, mtime) changed since its last push
  and then manifest.json, as read *before* that scan: a shard's files are renamed into place before its
  result reaches the driver, so the manifest in run_dir never marks done a shard whose files are not
  all there (the runner also rechecks that a done shard's outputs exist);
- files the run removed (a stage redone with new settings) are removed from run_dir after the manifest.

What was copied either way is recorded in work_dir/.curate-sync.json (size, mtime, the object's ETag),
so reruns copy only what changed, and only files this run copied are ever deleted from run_dir. Hidden
names (temps) are never copied. One run at a time per run_dir; on a Ray cluster work_dir must be a
filesystem every node sees, as a local run_dir must be.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import fsspec
from rich.markup import escape

from curate.config import is_url
from curate.errors import CurateError, PreflightError
from curate.rundir import atomic_write_json

if TYPE_CHECKING:
    from rich.console import Console

    from curate.config import PipelineConfig
    from curate.rundir import Manifest, RunDir

SYNC_STATE = ".curate-sync.json"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
THREADS = 16  # object stores are latency-bound: copy this many files at once
MIN_GAP_S = 1.0  # between two pushes; longer when a push's bookkeeping is slow (a fifth of the time at most)
READ_BLOCK = 8 << 20  # bytes fetched per request when streaming a remote file


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem and stripped path for a local path or URL; CurateError if the scheme is unusable."""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # e.g. s3:// without s3fs
        raise CurateError(f"'{url}': {exc} (pip install the fsspec backend for this URL scheme)") from None
    except (ValueError, OSError) as exc:
        raise CurateError(f"'{url}': cannot open ({exc})") from None


def open_input(path: str | Path) -> IO[bytes]:
    """A local file, or a URL streamed in READ_BLOCK requests (for tars and parquet read in order)."""
    text = str(path)
    if not is_url(text):
        return open(text, "rb")  # noqa: SIM115 - the caller closes it
    fs, stripped = open_fs(text)
    return fs.open(stripped, "rb", block_size=READ_BLOCK, cache_type="readahead")


def refuse_url(path: Path | str, option: str, command: str) -> None:
    """Commands that read a run directory with local tools: a clear message for a run_dir URL."""
    text = re.sub(r"^(s3|gs|gcs|az|abfs):/(?!/)", r"\1://", str(path))  # a Path made s3:// into s3:/
    if is_url(text):
        raise CurateError(
            f"{option}: '{text}' is an object-storage URL; `curate {command}` reads a local run directory: "
            "give the run's work_dir (its local working copy)"
        )


def _version(info: dict[str, Any]) -> str:
    """What identifies one version of a remote file: its ETag on object stores."""
    for key in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(key):
            return str(info[key])
    return str(info.get("size"))


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


class RemoteRun:
    """A run directory at a URL, worked on in a local directory (see the module docstring)."""

    def __init__(self, url: str, work: Path) -> None:
        self.url = url.rstrip("/")
        self.work = work
        self._state: dict[str, dict[str, Any]] | None = None  # rel path -> size, mtime_ns, version
        self.bookkeeping_s = 0.0  # the last push's own work: scanning work_dir, saving the state

    @classmethod
    def of(cls, cfg: PipelineConfig, run: RunDir) -> RemoteRun | None:
        url = cfg.remote_run_dir()
        return None if url is None else cls(url, run.root)

    @cached_property
    def _fs_root(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = open_fs(self.url)
        return fs, root.rstrip("/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_root[0]

    @property
    def root(self) -> str:
        return self._fs_root[1]

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        if self._state is None:
            self._state = self._load_state()
        return self._state

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    # ------------------------------------------------------------ checks

    def check(self) -> list[str]:
        """Problems that must stop the run before any work: the backend, the bucket, work_dir."""
        problems = self._check_work()
        try:
            fs, root = self._fs_root
        except CurateError as exc:
            return [*problems, f"run_dir: {exc}"]
        bucket = root.split("/", 1)[0]
        try:
            if bucket and not fs.exists(bucket):
                problems.append(
                    f"run_dir: bucket '{bucket}' of '{self.url}' does not exist (or these credentials "
                    "cannot see it); create it, or fix run_dir"
                )
            elif fs.exists(root) and not fs.exists(f"{root}/{CONFIG}"):
                problems.append(
                    f"run_dir: '{self.url}' holds files but no {CONFIG} of a curate run; give a new prefix "
                    "(curate copies a run's files there and deletes only files it copied itself)"
                )
        except Exception as exc:  # credentials, network, permissions: whatever the backend raises
            problems.append(f"run_dir: cannot read '{self.url}' ({type(exc).__name__}: {exc})")
        return problems

    def _check_work(self) -> list[str]:
        if self.work.exists() and not self.work.is_dir():
            return [f"work_dir: '{self.work}' exists and is not a directory"]
        try:
            self._state = self._load_state()
        except CurateError as exc:
            return [str(exc)]
        visible = [p for p in self.work.iterdir() if not p.name.startswith(".")] if self.work.is_dir() else []
        state_file = self.work / SYNC_STATE
        if visible and not state_file.exists() and not (self.work / CONFIG).exists():
            return [
                f"work_dir: '{self.work}' holds files but is neither a curate run nor a working copy of one; "
                "give an empty or new directory"
            ]
        return []

    def _load_state(self) -> dict[str, dict[str, Any]]:
        path = self.work / SYNC_STATE
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            remote, files = data["remote"], data["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # damaged: every file is compared afresh (copied again), nothing is lost
        if remote != self.url:
            raise CurateError(
                f"work_dir: '{self.work}' is the working copy of {remote}, not of {self.url}; give each "
                "run_dir its own work_dir"
            )
        return dict(files)

    def _save_state(self) -> None:
        atomic_write_json(self.work / SYNC_STATE, {"remote": self.url, "files": self.state})

    # ------------------------------------------------------------ listing

    def _local(self) -> dict[str, os.stat_result]:
        """Every visible file under work_dir (hidden files and directories skipped)."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.work):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            base = Path(dirpath)
            for name in filenames:
                if name.startswith("."):
                    continue
                path = base / name
                with contextlib.suppress(FileNotFoundError):
                    out[path.relative_to(self.work).as_posix()] = path.stat()
        return out

    def _listing(self) -> dict[str, dict[str, Any]]:
        fs, root = self.fs, self.root
        fs.invalidate_cache(root)
        if not fs.exists(root):
            return {}
        found = fs.find(root, detail=True)
        out = {}
        for path, info in found.items():
            rel = path[len(root) + 1 :] if path.startswith(root + "/") else ""
            if rel and info.get("type", "file") == "file" and not _hidden(rel):
                out[rel] = info
        return out

    def _same(self, rel: str, st: os.stat_result) -> bool:
        seen = self.state.get(rel)
        return seen is not None and (seen["size"], seen["mtime_ns"]) == (st.st_size, st.st_mtime_ns)

    # ------------------------------------------------------------ pull

    def pull(self, log: Callable[[str], None] | None = None) -> int:
        """Bring work_dir up to date with run_dir (see the module docstring); returns files copied."""
        return self._guard("copy the run from", lambda: self._pull(log))

    def _pull(self, log: Callable[[str], None] | None) -> int:
        remote = self._listing()
        local = self._local()
        todo = [
            (rel, _version(info))
            for rel, info in sorted(remote.items())
            if not (rel in local and self.state.get(rel, {}).get("version") == _version(info))
        ]
        for rel in [r for r in self.state if r not in remote]:  # removed from run_dir since we copied it
            (self.work / rel).unlink(missing_ok=True)
            del self.state[rel]
        if todo and log:
            log(f"copying {len(todo)} files from {self.url} into {self.work}")
        self.work.mkdir(parents=True, exist_ok=True)
        self._parallel(lambda item: self._download(*item), todo)
        self._save_state()
        return len(todo)

    def _download(self, rel: str, version: str) -> None:
        dest = self.work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        try:
            self.fs.get_file(self._remote(rel), tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        st = dest.stat()
        self.state[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": version}

    # ------------------------------------------------------------ push

    def push(self, delete: bool = True) -> int:
        """Copy changed files to run_dir, then manifest.json, then (with `delete`) remove from run_dir
        the files this run copied there and has removed since; returns files copied."""
        return self._guard("copy the run to", lambda: self._push(delete))

    def _push(self, delete: bool) -> int:
        manifest = self._read_manifest()  # before the scan: it may only mark done what the scan sees
        t0 = time.monotonic()
        local = self._local()
        scanned = time.monotonic() - t0
        changed = [rel for rel, st in local.items() if rel != MANIFEST and not self._same(rel, st)]
        if CONFIG in changed:  # first: it marks the prefix as a curate run before other files land there
            changed.remove(CONFIG)
            self._upload(CONFIG)
        self._parallel(self._upload, changed)
        new_manifest = manifest is not None and not self._same(MANIFEST, manifest[1])
        if manifest is not None and new_manifest:
            self.fs.pipe_file(self._remote(MANIFEST), manifest[0])
            self._record(MANIFEST, manifest[1])
        gone = [rel for rel in self.state if rel not in local and rel != MANIFEST] if delete else []
        self._parallel(lambda rel: self.fs.rm_file(self._remote(rel)), gone)
        for rel in gone:
            del self.state[rel]
        t0 = time.monotonic()
        if changed or new_manifest or gone:
            self._save_state()
        self.bookkeeping_s = scanned + time.monotonic() - t0
        return len(changed)

    def _read_manifest(self) -> tuple[bytes, os.stat_result] | None:
        try:
            with open(self.work / MANIFEST, "rb") as f:
                return f.read(), os.fstat(f.fileno())
        except FileNotFoundError:
            return None

    def _upload(self, rel: str) -> None:
        path = self.work / rel
        try:
            before = path.stat()
            self.fs.put_file(str(path), self._remote(rel))
            after = path.stat()
        except FileNotFoundError:
            return  # removed since the scan (a stage redone): the next push deletes it remotely
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            self._record(rel, before)  # else replaced while copying: copied again next time

    def _record(self, rel: str, st: os.stat_result) -> None:
        info = self.fs.info(self._remote(rel))
        self.state[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": _version(info)}

    # ------------------------------------------------------------ helpers

    def _parallel(self, fn: Callable[[Any], None], items: Iterable[Any]) -> None:
        items = list(items)
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(min(THREADS, len(items))) as ex:
            for _ in ex.map(fn, items):
                pass

    def _guard(self, what: str, fn: Callable[[], int]) -> int:
        try:
            return fn()
        except CurateError:
            raise
        except Exception as exc:  # network, credentials, a full disk: the run stops with a message
            raise CurateError(
                f"run_dir: cannot {what} {self.url} ({type(exc).__name__}: {exc}); finished work is kept "
                f"in work_dir {self.work}: run again to resume"
            ) from None


class _Pusher:
    """Pushes in a background thread whenever the manifest is saved, at most every MIN_GAP_S."""

    def __init__(self, remote: RemoteRun) -> None:
        self.remote = remote
        self.error: CurateError | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="curate-push", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Called after each manifest save (driver thread): surfaces a failed push as the run's error."""
        if self.error is not None:
            raise self.error
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.remote.push()
            except CurateError as exc:
                self.error = exc
                return
            self._stop.wait(max(MIN_GAP_S, 4 * self.remote.bookkeeping_s))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()


@contextlib.contextmanager
def keep_synced(remote: RemoteRun | None, manifest: Manifest, console: Console) -> Iterator[None]:
    """While the stages run: push after manifest saves; at the end (also after a failure) push all."""
    if remote is None:
        yield
        return
    remote.push()  # config.yaml first: also proves run_dir is writable before any work
    pusher = _Pusher(remote)
    manifest.on_save = pusher.poke
    try:
        yield
    except BaseException:
        manifest.on_save = None
        pusher.stop()
        try:
            remote.push()
        except CurateError as exc:  # the run's own error is the one to raise
            console.print(f"[yellow]warning:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise
    manifest.on_save = None
    pusher.stop()
    if pusher.error is not None:
        raise pusher.error
    remote.push()
    console.print(f"run directory {remote.url} is up to date", highlight=False, markup=False)


def pull_working_copy(cfg: PipelineConfig, run: RunDir, log: Callable[[str], None]) -> RemoteRun | None:
    """For commands that read a run (plan): check run_dir and bring work_dir up to date first."""
    remote = RemoteRun.of(cfg, run)
    if remote is None:
        return None
    problems = remote.check()
    if problems:
        raise PreflightError(f"{cfg.name}: cannot read run_dir", problems)
    remote.pull(log)
    return remote
