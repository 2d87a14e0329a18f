"""Reshard: webdataset shards holding exactly a subset's samples, as DataComp's resharder writes them
(reference §3), but numbered deterministically.

A uid listed k times in the subset is written k times, keys `<uid>-<j>`, every member copied byte for
byte. Three steps:

- plan (driver): which samples of each input shard are selected, read from img2dataset's
  `<shard>.parquet` (uid, key, status) when it is there, else by scanning the tar (headers and json
  members). Selected samples are laid out in input order (shards by name, samples by key) and cut
  into output shards of `shard_size` samples, so every output shard is full except the last, and each
  output shard is one task that knows exactly which input samples it copies. The byte cap
  (`max_shard_bytes`) is planned from each input shard's mean bytes per sample, since exact sizes
  would need a full read of every tar header; each shard's real size is in its `_stats.json`.
- write (one task per output shard, any process): read the input tars it needs (unselected samples
  are skipped by seeking, never read), check each selected sample's json uid, copy its members into
  a temp file, rename it to `NNNNNNNN.tar`, then write `NNNNNNNN_stats.json` (whose presence and
  `plan` fingerprint mark the shard done: a rerun redoes only shards missing or planned differently).
- finish (driver): `sample_ids.npy` (a copy of the subset file), `missing_uids.txt` (subset uids not
  written, with the reason), `meta.json` (DataComp's counts plus ours; train.py reads
  output_shard_count and output_shard_format from it).

The same input and subset give byte-identical files whatever the number of workers or their timing.
A uid found in several input samples is written once, from its first sample in input order (the
reference would write duplicate keys). Unsorted subset files are refused, not sorted: DataComp's
resharder would silently miss samples with them, and sample_ids.npy must stay a copy of the file.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from curate.config import is_url
from curate.errors import CurateError
from curate.rundir import (
    FILE_MODE,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    clear_stale_temps,
)
from curate.storage import open_fs, open_input
from curate.tarsafe import MemberTooLarge, Sample, TarReader, TarWriter
from curate.uids import UID_DTYPE, array_to_uids, check_subset, is_valid_uid, read_subset, validate_subset

OUTPUT_SHARD_FORMAT = "{:08d}.tar"
OUTPUT_STATS_FORMAT = "{:08d}_stats.json"
MISSING_FILE = "missing_uids.txt"
SAMPLE_IDS = "sample_ids.npy"
META = "meta.json"
MAX_JSON_BYTES = 16 << 20  # a sample's json is parsed in memory; larger ones are skipped
NOT_IN_SHARDS = "not in the input shards"
_OWN_FILE = re.compile(r"^(\d{8}\.tar|\d{8}_stats\.json|meta\.json|sample_ids\.npy|missing_uids\.txt)$")

Log = Callable[[str], None]


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputShard:
    tar: str
    name: str  # file name, e.g. 00000003.tar
    size: int  # bytes
    parquet: str | None  # img2dataset's per-shard parquet next to it, if any


def find_input_shards(shards_dir: str | Path) -> list[InputShard]:
    """Every `*.tar` of the directory, in name order (img2dataset's ids are zero-padded). A URL
    (s3://bucket/shards) is listed through fsspec and its tars are streamed, never copied whole."""
    if is_url(str(shards_dir)):
        return _find_remote_shards(str(shards_dir))
    root = Path(shards_dir)
    if not root.is_dir():
        raise CurateError(f"--shards: {root} is not a directory of webdataset shards (NNNNNNNN.tar)")
    out = []
    for tar in sorted(root.glob("*.tar")):
        if tar.name.startswith(".") or not tar.is_file():
            continue
        parquet = tar.with_suffix(".parquet")
        out.append(
            InputShard(str(tar), tar.name, tar.stat().st_size, str(parquet) if parquet.is_file() else None)
        )
    if not out:
        raise CurateError(
            f"--shards: {root} holds no .tar shards (expected img2dataset output: NNNNNNNN.tar)"
        )
    return out


def _find_remote_shards(url: str) -> list[InputShard]:
    """find_input_shards for a URL (s3://bucket/shards): one listing, sizes included."""
    fs, root = open_fs(url)
    root = root.rstrip("/")
    try:
        infos = fs.ls(root, detail=True) if fs.isdir(root) else None
    except Exception as exc:  # credentials, network: whatever the backend raises
        raise CurateError(f"--shards: cannot list {url} ({type(exc).__name__}: {exc})") from None
    if infos is None:
        raise CurateError(
            f"--shards: {url} is not a directory of webdataset shards (NNNNNNNN.tar), or its bucket "
            "does not exist"
        )
    files = {PurePosixPath(i["name"]).name: i for i in infos if i.get("type") == "file"}
    out = []
    for name, info in sorted(files.items()):
        if name.endswith(".tar") and not name.startswith("."):
            parquet = files.get(name.removesuffix(".tar") + ".parquet")
            out.append(
                InputShard(
                    fs.unstrip_protocol(info["name"]),
                    name,
                    int(info["size"]),
                    fs.unstrip_protocol(parquet["name"]) if parquet else None,
                )
            )
    if not out:
        raise CurateError(f"--shards: {url} holds no .tar shards (expected img2dataset output: NNNNNNNN.tar)")
    return out


def check_subset_file(path: str | Path, option: str = "--subset") -> np.ndarray:
    """The subset array, or CurateError naming the file and what is wrong (unsorted files are refused)."""
    problems = check_subset(path)
    if problems:
        raise CurateError(f"{option}: {path} cannot be resharded", problems)
    return read_subset(path)


# ---------------------------------------------------------------- reading one sample


def sample_uid(reader: TarReader, sample: Sample) -> tuple[str | None, str | None]:
    """(uid from the sample's json, None) or (None, why the sample cannot be used)."""
    member = sample.member("json")
    if member is None:
        reasons = [why for name, why in sample.skipped if name.endswith(".json")]
        return None, f"json member skipped ({reasons[0]})" if reasons else "no json member"
    try:
        meta = json.loads(reader.read(member, MAX_JSON_BYTES))
    except MemberTooLarge:
        return None, f"json member larger than {MAX_JSON_BYTES >> 20} MiB"
    except (ValueError, RecursionError):
        return None, "invalid json"
    uid = meta.get("uid") if isinstance(meta, dict) else None
    if uid is None:
        return None, "json without a uid"
    if not is_valid_uid(uid):
        return None, "invalid uid in json (expected 32 lowercase hex characters)"
    return uid, None


# ---------------------------------------------------------------- planning


@dataclass
class ShardIndex:
    """The samples of one input shard that can be selected: keys in key order and their uids."""

    keys: np.ndarray  # bytes (S), sorted
    uids: np.ndarray  # u8,u8, aligned with keys
    samples: int  # samples the shard holds
    source: str  # "parquet" or "tar scan"
    skipped: Counter[str] = field(default_factory=Counter)


def _from_parquet(shard: InputShard) -> ShardIndex | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curate.uids import uids_to_array

    assert shard.parquet is not None
    try:
        with open_input(shard.parquet) as f:
            pf = pq.ParquetFile(f)
            if not {"uid", "key", "status"} <= set(pf.schema_arrow.names):
                return None
            table = pf.read(columns=["uid", "key", "status"])
    except (OSError, ValueError):
        return None
    table = table.filter(pc.equal(table["status"], "success"))
    skipped: Counter[str] = Counter()
    valid = pc.fill_null(pc.match_substring_regex(table["uid"], r"^[0-9a-f]{32}$"), False)
    bad = len(table) - pc.sum(valid).as_py() if len(table) else 0
    if bad:
        skipped["invalid uid in the shard parquet"] += bad
        table = table.filter(valid)
    table = table.filter(pc.is_valid(table["key"])).sort_by("key")
    raw = [k.encode("utf-8", "surrogateescape") for k in table["key"].to_pylist()]
    keys = np.array(raw, dtype=bytes) if raw else np.empty(0, "S1")
    return ShardIndex(keys, uids_to_array(table["uid"]), len(table) + bad, "parquet", skipped)


def _by_scan(shard: InputShard) -> ShardIndex:
    keys, uids, skipped, samples = [], [], Counter(), 0
    with TarReader(shard.tar) as reader:
        for sample in reader.samples():
            samples += 1
            uid, reason = sample_uid(reader, sample)
            if reason is not None:
                skipped[reason] += 1
            else:
                keys.append(sample.key.encode("utf-8", "surrogateescape"))
                uids.append(uid)
        skipped.update({f"member skipped: {k}": v for k, v in reader.skipped.items()})
    order = np.argsort(np.array(keys, dtype=bytes), kind="stable") if keys else np.empty(0, int)
    from curate.uids import uids_to_array

    arr = np.array(keys, dtype=bytes)[order] if keys else np.empty(0, "S1")
    return ShardIndex(arr, uids_to_array(uids)[order], samples, "tar scan", skipped)


def index_shard(shard: InputShard) -> ShardIndex:
    """Selectable samples of a shard: from its parquet (status success) when usable, else its tar."""
    if shard.parquet is not None:
        found = _from_parquet(shard)
        if found is not None:
            return found
    return _by_scan(shard)


@dataclass(frozen=True)
class Segment:
    """The part of one input shard an output shard copies: entries in key order, copies [j0, j1)."""

    tar: str
    name: str
    size: int
    keys: np.ndarray
    uids: np.ndarray
    j0: np.ndarray
    j1: np.ndarray


@dataclass(frozen=True)
class OutputTask:
    index: int
    copies: int  # samples it will hold
    est_bytes: int
    segments: tuple[Segment, ...]
    fingerprint: str


def _fingerprint(index: int, segments: list[Segment]) -> str:
    h = hashlib.sha256(f"{index}".encode())
    for s in segments:
        h.update(f"|{s.name}|{s.size}|".encode())
        for arr in (s.keys, s.uids, s.j0, s.j1):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Plan:
    tasks: list[OutputTask]
    subset_count: int
    subset_unique: int
    input_shards: int
    processed: int  # samples in the input shards
    planned: int  # samples the output will hold if every selected sample reads fine
    planned_from: dict[str, int]
    skipped: Counter[str]
    not_found: list[str]  # unique subset uids in no input shard
    not_found_count: int  # subset entries (duplicates counted) in no input shard


class _Packer:
    """Cuts the selected samples, in input order, into output shards of at most `shard_size` samples
    and about `max_bytes` (estimated) bytes; a sample's copies may span two shards."""

    def __init__(self, shard_size: int, max_bytes: int) -> None:
        self.shard_size, self.max_bytes = shard_size, max_bytes
        self.tasks: list[OutputTask] = []
        self.segments: list[Segment] = []
        self.copies = 0
        self.bytes = 0.0

    def close(self) -> None:
        if self.copies:
            index = len(self.tasks)
            segments = tuple(self.segments)
            self.tasks.append(
                OutputTask(index, self.copies, int(self.bytes), segments, _fingerprint(index, self.segments))
            )
        self.segments, self.copies, self.bytes = [], 0, 0.0

    def add(
        self, shard: InputShard, keys: np.ndarray, uids: np.ndarray, counts: np.ndarray, per: float
    ) -> None:
        ends = np.cumsum(counts)
        starts = ends - counts
        total, pos = int(ends[-1]) if len(ends) else 0, 0
        while pos < total:
            room = self.shard_size - self.copies
            if per > 0:
                room = min(room, int((self.max_bytes - self.bytes) // per))
            if room <= 0 and self.copies:
                self.close()
                continue
            take = min(max(room, 1), total - pos)
            first = int(np.searchsorted(ends, pos, "right"))
            last = int(np.searchsorted(ends, pos + take - 1, "right"))
            sl = slice(first, last + 1)
            j0 = np.zeros(last + 1 - first, np.int64)
            j1 = counts[sl].astype(np.int64)
            j0[0] = pos - starts[first]
            j1[-1] = pos + take - starts[last]
            self.segments.append(Segment(shard.tar, shard.name, shard.size, keys[sl], uids[sl], j0, j1))
            self.copies += take
            self.bytes += take * per
            pos += take
            if self.copies >= self.shard_size:
                self.close()


def plan_many(
    shards: list[InputShard],
    subsets: dict[str, np.ndarray],
    shard_size: int,
    max_shard_bytes: int,
    log: Log | None = None,
) -> dict[str, Plan]:
    """A plan per subset, reading each input shard's index once for all of them."""
    packers = {name: _Packer(shard_size, max_shard_bytes) for name in subsets}
    found = {name: np.zeros(len(s), bool) for name, s in subsets.items()}  # subset positions seen
    skipped: dict[str, Counter[str]] = {name: Counter() for name in subsets}
    planned_from: Counter[str] = Counter()
    processed = 0
    for i, shard in enumerate(shards):
        index = index_shard(shard)
        planned_from[index.source] += 1
        processed += index.samples
        per = shard.size / index.samples if index.samples else 0.0
        for name, subset in subsets.items():
            skipped[name].update(index.skipped)
            if not len(subset) or not len(index.uids):
                continue
            left = np.searchsorted(subset, index.uids, "left")
            counts = np.searchsorted(subset, index.uids, "right") - left
            chosen = np.nonzero(counts > 0)[0]
            first = np.zeros(len(chosen), bool)  # a uid's first sample in input order only
            first[np.unique(left[chosen], return_index=True)[1]] = True
            first &= ~found[name][left[chosen]]
            if (~first).sum():
                skipped[name]["uid already in an earlier input sample"] += int((~first).sum())
            chosen = chosen[first]
            found[name][left[chosen]] = True
            if len(chosen):
                packers[name].add(shard, index.keys[chosen], index.uids[chosen], counts[chosen], per)
        if log and (i + 1) % 100 == 0:
            log(f"planned {i + 1} of {len(shards)} input shards")
    plans = {}
    for name, subset in subsets.items():
        packers[name].close()
        report = validate_subset(subset)
        missing = _not_found(subset, found[name])
        plans[name] = Plan(
            tasks=packers[name].tasks,
            subset_count=report.count,
            subset_unique=report.unique,
            input_shards=len(shards),
            processed=processed,
            planned=sum(t.copies for t in packers[name].tasks),
            planned_from=dict(planned_from),
            skipped=skipped[name],
            not_found=array_to_uids(subset[missing]) if len(missing) else [],
            not_found_count=int(len(subset) - _found_entries(subset, found[name])),
        )
    return plans


def _run_starts(subset: np.ndarray) -> np.ndarray:
    if not len(subset):
        return np.empty(0, np.int64)
    new = (subset["f0"][1:] != subset["f0"][:-1]) | (subset["f1"][1:] != subset["f1"][:-1])
    return np.concatenate([[0], np.nonzero(new)[0] + 1])


def _not_found(subset: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Positions (first of each run of equal uids) of subset uids never seen in the input."""
    starts = _run_starts(subset)
    return starts[~found[starts]]


def _found_entries(subset: np.ndarray, found: np.ndarray) -> int:
    starts = _run_starts(subset)
    lengths = np.diff(np.append(starts, len(subset)))
    return int(lengths[found[starts]].sum())


# ---------------------------------------------------------------- writing one output shard


def write_output_shard(task: OutputTask, out_dir: str | Path) -> dict[str, Any]:
    """Write output shard `task.index` into `out_dir` (temp name, then rename) and its stats file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / OUTPUT_SHARD_FORMAT.format(task.index)
    skipped: Counter[str] = Counter()
    not_written: list[list[str]] = []
    written = 0
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{final.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; shards are as readable as the run's other files
    try:
        writer = TarWriter(fd)
        for seg in task.segments:
            uids = array_to_uids(seg.uids)
            want = {key.decode("utf-8", "surrogateescape"): i for i, key in enumerate(seg.keys.tolist())}
            with TarReader(seg.tar) as reader:
                for sample in reader.samples():
                    i = want.pop(sample.key, None)
                    if i is None:
                        continue
                    copies = int(seg.j1[i] - seg.j0[i])
                    uid, reason = sample_uid(reader, sample)
                    if reason is None and uid != uids[i]:
                        reason = "json uid differs from the shard parquet"
                    if reason is not None:
                        skipped[reason] += copies
                        not_written.append([uids[i], f"{reason} ({seg.name}, key {sample.key})"])
                    else:
                        for why in {why for _, why in sample.skipped}:
                            skipped[f"member skipped: {why}"] += copies
                        for j in range(int(seg.j0[i]), int(seg.j1[i])):
                            for member in sample.members:
                                writer.add_from(f"{uid}-{j}.{member.ext}", reader, member)
                        written += copies
                    if not want:
                        break
                stopped = reader.stopped
            for key, i in want.items():
                reason = "sample not in the tar" + (f" ({stopped})" if stopped else "")
                skipped[reason] += int(seg.j1[i] - seg.j0[i])
                not_written.append([uids[i], f"{reason} ({seg.name}, key {key})"])
        writer.close()
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    stats = {
        "successes": written,
        "bytes": writer.bytes,
        "plan": task.fingerprint,
        "skipped": dict(sorted(skipped.items())),
        "not_written": sorted(not_written),
    }
    atomic_write_json(out / OUTPUT_STATS_FORMAT.format(task.index), stats)  # last: marks the shard done
    return stats


def shard_done(out_dir: str | Path, task: OutputTask) -> bool:
    """The shard's tar and stats exist and the stats were written for this very plan."""
    out = Path(out_dir)
    stats = read_shard_stats(out, task.index)
    return (
        stats is not None
        and stats.get("plan") == task.fingerprint
        and (out / OUTPUT_SHARD_FORMAT.format(task.index)).is_file()
    )


def read_shard_stats(out_dir: Path, index: int) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / OUTPUT_STATS_FORMAT.format(index)).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- finishing


def finish_output(
    out_dir: str | Path, plan: Plan, subset_path: str | Path, describe: dict[str, Any]
) -> dict[str, Any]:
    """sample_ids.npy, missing_uids.txt and meta.json once every shard is written; stale shards of an
    earlier, longer plan are removed. Returns the counts (also in meta.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, total_bytes, skipped = 0, 0, Counter(plan.skipped)
    over: list[int] = []
    not_written: list[tuple[str, str]] = []
    for task in plan.tasks:
        stats = read_shard_stats(out, task.index)
        if stats is None or stats.get("plan") != task.fingerprint:
            raise CurateError(f"reshard: output shard {task.index:08d} in {out} is missing or out of date")
        written += stats["successes"]
        total_bytes += stats["bytes"]
        skipped.update(stats.get("skipped", {}))
        not_written += [(u, r) for u, r in stats.get("not_written", [])]
        if stats["bytes"] > describe.get("max_shard_bytes", float("inf")):
            over.append(task.index)
    _remove_stale_shards(out, len(plan.tasks))
    copy_subset(subset_path, out / SAMPLE_IDS)
    lines = sorted([(u, NOT_IN_SHARDS) for u in plan.not_found] + not_written)
    atomic_write_text(out / MISSING_FILE, "".join(f"{u}\t{r}\n" for u, r in lines))
    counts = {
        "subset_count": plan.subset_count,
        "subset_unique": plan.subset_unique,
        "input_shard_count": plan.input_shards,
        "planned_from": plan.planned_from,
        "processed_count": plan.processed,
        "output_count": written,
        "missing_count": plan.subset_count - written,
        "not_found_count": plan.not_found_count,
        "not_found_unique": len(plan.not_found),
        "unreadable_count": plan.planned - written,
        "missing_uids_file": MISSING_FILE,
        "skipped": dict(sorted(skipped.items())),
        "output_shard_count": len(plan.tasks),
        "output_bytes": total_bytes,
        "shards_over_max_bytes": over,
    }
    meta = {
        **describe,
        "output_shard_format": OUTPUT_SHARD_FORMAT,
        "output_shard_stats_format": OUTPUT_STATS_FORMAT,
        **counts,
    }
    atomic_write_json(out / META, meta)
    return counts


def copy_subset(src: str | Path, dst: Path) -> None:
    """sample_ids.npy: the subset file byte for byte (as DataComp's resharder copies it)."""
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return
    with open(src, "rb") as f:
        atomic_write_with(dst, lambda out: shutil.copyfileobj(f, out, 1 << 20))


def _remove_stale_shards(out: Path, count: int) -> None:
    for path in out.iterdir():
        m = re.fullmatch(r"(\d{8})(\.tar|_stats\.json)", path.name)
        if m and int(m[1]) >= count:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the standalone command


def prepare_out_dir(out: Path, subset_path: Path, overwrite: bool) -> str:
    """Check --out: empty, a resumable earlier run of the same subset, or --overwrite (which removes
    only reshard's own files). Returns 'new', 'resume' or 'overwrite'."""
    if out.exists() and not out.is_dir():
        raise CurateError(f"--out: {out} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    visible = [n for n in entries if not n.startswith(".")]
    if not visible:
        return "new"
    if overwrite:
        for name in entries:
            path = out / name
            if _OWN_FILE.match(name) or (name.startswith(".") and name.endswith(".tmp")):
                path.unlink(missing_ok=True)
        return "overwrite"
    ours = all(_OWN_FILE.match(n) for n in visible)
    same = (out / SAMPLE_IDS).is_file() and filecmp.cmp(subset_path, out / SAMPLE_IDS, shallow=False)
    if ours and same:
        return "resume"
    shown = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
    why = "a reshard of another subset" if ours else "other files"
    raise CurateError(
        f"--out: {out} is not empty ({why}: {shown}); choose an empty directory or pass --overwrite "
        "(which removes reshard's own files there: NNNNNNNN.tar, _stats.json, meta.json, sample_ids.npy, "
        "missing_uids.txt)"
    )


def _write(task: OutputTask, out: str) -> tuple[int, dict[str, Any]]:
    return task.index, write_output_shard(task, out)


def reshard(
    shards_dir: str | Path,
    subset_path: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = 10_000,
    max_shard_bytes: int = 3_000_000_000,
    workers: int | None = None,
    overwrite: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """`curate reshard`: the subset's samples from `shards_dir` into `out_dir`; returns meta's counts."""
    log = log or (lambda _msg: None)
    subset_path, out = Path(subset_path), Path(out_dir)
    if shard_size < 1 or max_shard_bytes < 1:
        raise CurateError("--shard-size and max_shard_bytes must be at least 1")
    subset = check_subset_file(subset_path)
    shards = find_input_shards(shards_dir)
    mode = prepare_out_dir(out, subset_path, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale_temps(out)
    copy_subset(subset_path, out / SAMPLE_IDS)  # first: it marks the directory as this subset's reshard
    plan = plan_many(
        shards, {"subset": np.asarray(subset, dtype=UID_DTYPE)}, shard_size, max_shard_bytes, log
    )["subset"]
    todo = [t for t in plan.tasks if not shard_done(out, t)]
    if mode == "resume":
        log(f"resuming: {len(plan.tasks) - len(todo)} of {len(plan.tasks)} output shards already written")
    run_tasks(todo, out, workers, log)
    describe = {
        "input_dir": str(shards_dir),
        "subset_file": str(subset_path),
        "shard_size": shard_size,
        "max_shard_bytes": max_shard_bytes,
    }
    return finish_output(out, plan, subset_path, describe)


def run_tasks(tasks: Iterable[OutputTask], out: Path, workers: int | None, log: Log) -> None:
    """Write the output shards, in this process or in `workers` forked processes."""
    tasks = list(tasks)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    done = 0
    if workers == 1:
        for task in tasks:
            write_output_shard(task, out)
            done += 1
            log(f"output shard {task.index:08d} written ({done} of {len(tasks)})")
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as ex:
        futures = [ex.submit(_write, task, str(out)) for task in tasks]
        for future in as_completed(futures):
            index, _ = future.result()
            done += 1
            log(f"output shard {index:08d} written ({done} of {len(tasks)})")
