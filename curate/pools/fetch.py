"""Fetch DataComp's metadata from the Hugging Face hub, like DataComp's download_upstream.py (reference §1.2).

Files land in `<data_dir>/metadata.partial` first and move to `<data_dir>/metadata` only once the whole
snapshot is there, so an existing metadata directory always means a finished download (or a copy the
user put there) and is skipped unless `overwrite` (which replaces it only after a complete download).
An interrupted fetch resumes from the partial folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from curate.errors import CurateError

log = logging.getLogger(__name__)

REPOS = {
    "small": "mlfoundations/datacomp_small",
    "medium": "mlfoundations/datacomp_medium",
    "large": "mlfoundations/datacomp_large",
    "xlarge": "mlfoundations/datacomp_xlarge",
    "datacomp_1b": "mlfoundations/datacomp_1b",
}
NESTED = {"xlarge"}  # files live in part_*/ subfolders on the hub
LOCAL_COPY_HINT = (
    "Fetching needs network access to huggingface.co (or a mirror named by HF_ENDPOINT). Without it, copy "
    "the metadata parquet files from a machine that has them and point the pool at the copy, e.g. "
    "curate run FILE pool.metadata=/path/to/metadata"
)


def patterns(scale: str, npz: bool) -> list[str]:
    """allow_patterns of the snapshot: parquet parts, plus their npz feature files when asked."""
    exts = ["parquet", "npz"] if npz else ["parquet"]
    prefix = "*/" if scale in NESTED else ""
    return [f"{prefix}*.{ext}" for ext in exts]


def flatten_parts(directory: Path) -> int:
    """Move the files of `directory/part_*/` up into `directory` and remove the emptied folders (xlarge's
    hub layout). Refuses to overwrite: two parts with one name would be two different sets of rows.
    Returns the number of files moved."""
    moved = 0
    for sub in sorted(p for p in directory.glob("part_*") if p.is_dir()):
        for src in sorted(sub.rglob("*")):
            if not src.is_file():
                continue
            dst = directory / src.name
            if dst.exists():
                raise CurateError(f"{src}: cannot move it to {dst}: a file with that name is already there")
            os.replace(src, dst)
            moved += 1
        shutil.rmtree(sub)  # only empty folders (and hub bookkeeping) remain
    return moved


def _missing_npz(metadata: Path) -> bool:
    return any(not p.with_suffix(".npz").exists() for p in metadata.glob("*.parquet"))


def fetch_metadata(scale: str, data_dir: Path, *, npz: bool = False, overwrite: bool = False) -> Path:
    """Download DataComp's `scale` metadata into `<data_dir>/metadata` and return that path.

    Skipped when the directory exists (and holds an npz per parquet, if npz is asked), unless
    `overwrite`. Network, DNS, offline-mode and authentication failures raise CurateError explaining
    what failed and how to use a local copy instead."""
    if scale not in REPOS:
        raise CurateError(f"unknown DataComp scale '{scale}'; valid scales: {', '.join(REPOS)}")
    data_dir = Path(data_dir)
    metadata, partial, cache = data_dir / "metadata", data_dir / "metadata.partial", data_dir / "hf"
    if overwrite:
        shutil.rmtree(partial, ignore_errors=True)  # the old metadata stays until the new one is complete
    need_parquet = overwrite or not metadata.exists()
    need_npz = npz and (need_parquet or _missing_npz(metadata))
    if not need_parquet and not need_npz:
        log.info("%s exists; not fetching again (use overwrite to fetch anew)", metadata)
        return metadata
    wanted = [p for p in patterns(scale, npz) if need_parquet or p.endswith(".npz")]
    try:
        _snapshot(scale, wanted, partial, cache)
    except CurateError:
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()  # nothing to resume from
        raise
    if scale in NESTED:
        flatten_parts(partial)
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # the hub's resume bookkeeping
    if need_parquet:
        shutil.rmtree(metadata, ignore_errors=True)  # overwrite: replaced only now, after a full download
        os.replace(partial, metadata)
    else:  # npz added to an existing metadata directory
        for src in sorted(partial.iterdir()):
            os.replace(src, metadata / src.name)
        partial.rmdir()
    shutil.rmtree(cache, ignore_errors=True)
    return metadata


def _snapshot(scale: str, allow: list[str], local_dir: Path, cache_dir: Path) -> None:
    """huggingface_hub.snapshot_download with every failure turned into a CurateError."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    repo = REPOS[scale]
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: the hub reads it only once, at import
    where = f"DataComp {scale} metadata ({repo} on {endpoint or 'https://huggingface.co'})"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise CurateError(f"cannot download {where}: HF_HUB_OFFLINE is set. {LOCAL_COPY_HINT}")
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(
            repo,
            repo_type="dataset",
            allow_patterns=allow,
            local_dir=local_dir,
            cache_dir=cache_dir,
            endpoint=endpoint,
        )
    except OfflineModeIsEnabled:
        reason = "HF_HUB_OFFLINE is set, so the hub may not be contacted"
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        reason = (
            f"the hub refused access to {repo} ({type(exc).__name__}); check HF_ENDPOINT and your token "
            "(`hf auth login` or HF_TOKEN)"
        )
    except LocalEntryNotFoundError as exc:  # raised when the hub cannot be reached and nothing is cached
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc).splitlines()[0]
        reason = f"the hub could not be reached ({detail})"
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            reason = f"the hub refused access (HTTP {status}); log in with `hf auth login` or set HF_TOKEN"
        else:
            reason = f"the hub answered with an error ({str(exc).splitlines()[0]})"
    except OSError as exc:  # DNS, refused connections, full disks
        reason = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # httpx/requests transport errors are not OSErrors
        if "connect" not in type(exc).__name__.lower() and "timeout" not in type(exc).__name__.lower():
            raise
        reason = f"the hub could not be reached ({type(exc).__name__}: {exc})"
    else:
        return
    raise CurateError(f"cannot download {where}: {reason}. {LOCAL_COPY_HINT}")
