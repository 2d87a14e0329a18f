"""Download DataComp's evaluation sets into a data directory, as DataComp's download_evalsets.py does (§5.2).

* wds tasks: the `djghosh/wds_<task>_test` dataset repos on the Hugging Face hub, their test split and
  text files only, into `<dir>/wds_<task>_test/` through huggingface_hub (which resumes and verifies
  what it already has, in place of DataComp's sha256 check against the Git-LFS pointers);
* Flickr, MSCOCO, WinoGAViL: `datasets.load_dataset("nlphuji/<name>", split="test",
  cache_dir=<dir>/hf_cache)`, DataComp's own call, so the loaders later find the cache offline.

A task whose data is already complete (`missing_reason` is None) is skipped without touching the
network. When anything must be downloaded, the hub is probed first: offline (HF_HUB_OFFLINE, or the
endpoint unreachable) stops before any download with a message saying what to do instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from curate.errors import CurateError
from curate.eval.datasets import HF_CACHE, HF_NAMESPACE, hf_name, missing_reason, task_folder
from curate.eval.tasks import EXTRA_TASKS, RETRIEVAL, WINOGAVIL, Task, select_tasks

DEFAULT_ENDPOINT = "https://huggingface.co"
WDS_PATTERNS = ["classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt", "test/*"]
OFFLINE_HINT = (
    "Copy an evaluation directory made on a connected machine (by `curate evalsets fetch` or DataComp's "
    "download_evalsets.py) and point evaluate.data_dir at it, or write small test sets with "
    "`curate evalsets generate DIR` (test data, not benchmark scores)"
)
_TRUE = ("1", "true", "yes", "on")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the hub endpoint accepts a TCP connection; else why not (offline flag or the error)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    url = urlparse(endpoint())
    host = url.hostname or ""
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} is unreachable ({type(exc).__name__}: {exc})"


def fetch_evalsets(
    data_dir: Path, tasks: list[str] | str = "all", *, log: Callable[[str], object] = print
) -> dict[str, str]:
    """Fetch the named tasks (DataComp's keys; `all` = the 40) into data_dir. Returns key -> "present"
    (already complete, skipped) or "fetched". Failures of single tasks are collected and raised together
    after the others have been fetched, like download_evalsets.py, which goes on after a failure."""
    data_dir = Path(data_dir)
    names = [s.strip() for s in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    local = [n for n in names if n in EXTRA_TASKS]
    if local:
        raise CurateError(
            f"tasks: {', '.join(local)} is not DataComp data and cannot be fetched; "
            f"write it with `curate evalsets generate {data_dir} --tasks {','.join(local)}`"
        )
    selected = select_tasks(names, where="tasks")
    status = {t.key: "present" for t in selected if missing_reason(data_dir, t.key) is None}
    todo = [t for t in selected if t.key not in status]
    if not todo:
        return status
    reason = hub_unreachable()
    if reason is not None:
        shown = ", ".join(t.key for t in todo[:5]) + (f" and {len(todo) - 5} more" if len(todo) > 5 else "")
        raise CurateError(
            f"cannot fetch {len(todo)} evaluation set(s) ({shown}) into {data_dir}: the Hugging Face hub "
            f"({endpoint()}) cannot be used: {reason}. Nothing was downloaded. {OFFLINE_HINT}"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for task in todo:
        log(f"fetching {task.key} ({task.source}) ...")
        try:
            if task.kind in (RETRIEVAL, WINOGAVIL):
                _fetch_hf(data_dir, task)
            else:
                _fetch_wds(data_dir, task)
        except CurateError as exc:
            failures.append(exc.message)
            continue
        still = missing_reason(data_dir, task.key)
        if still is not None:
            failures.append(f"{task.key}: downloaded, but the data is still incomplete: {still}")
            continue
        status[task.key] = "fetched"
    if failures:
        raise CurateError(f"{len(failures)} of {len(todo)} evaluation set(s) could not be fetched", failures)
    return status


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fetch_wds(data_dir: Path, task: Task) -> None:
    """snapshot_download of the task's djghosh repo (test split + text files) into its wds folder."""
    from huggingface_hub import snapshot_download

    folder = task_folder(data_dir, task.key)
    try:
        snapshot_download(
            task.source,
            repo_type="dataset",
            allow_patterns=WDS_PATTERNS,
            local_dir=folder,
            endpoint=endpoint(),
        )
    except Exception as exc:  # huggingface_hub and its HTTP stack raise many types
        raise CurateError(f"{task.key}: downloading {task.source} failed ({_describe(exc)})") from None
    shutil.rmtree(folder / ".cache", ignore_errors=True)  # the hub's resume bookkeeping


def _fetch_hf(data_dir: Path, task: Task) -> None:
    """DataComp's call, which downloads and prepares the test split into <data_dir>/hf_cache."""
    import datasets

    name = f"{HF_NAMESPACE}/{hf_name(task.key)}"
    try:
        datasets.load_dataset(name, split="test", cache_dir=str(data_dir / HF_CACHE))
    except Exception as exc:  # datasets raises many types (ConnectionError, RuntimeError, ValueError, ...)
        hint = ""
        if "scripts are no longer supported" in str(exc):
            hint = (
                "; this hub repo needs a loading script, which datasets >= 4 does not run: fill "
                f"{data_dir / HF_CACHE} with DataComp's download_evalsets.py in an environment with "
                "datasets < 4 and copy it here"
            )
        raise CurateError(f"{task.key}: loading {name} failed ({_describe(exc)}){hint}") from None
