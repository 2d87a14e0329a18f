"""Download stage: img2dataset's Downloader over each shard of the pool, into DataComp-layout shards.

The pool's parts are read in sorted order and cut into `number_sample_per_shard` chunks with global,
sequential shard ids (DataComp's numbering). For each shard, img2dataset downloads and resizes into a
staging directory; curate then puts rows in key order, records skipped and dropped rows with a reason,
and renames `NNNNNNNN.tar`, `.parquet`, `metadata/NNNNNNNN.parquet` and finally `_stats.json` into
place. A shard's sample keys are `10^4 * shard + row` as in DataComp, so they stay positional.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import PipelineConfig, settings_for_hash
from curate.errors import PreflightError
from curate.pools import Pool, PoolPart, make_pool
from curate.rundir import RunDir, atomic_write_json, staging_dir
from curate.stages.base import ShardTask, Stage
from curate.uids import is_valid_uid

SKIP_SCHEME = "curate-skip:"  # rows we refuse are given this URL so img2dataset fails them instantly
STATUSES = ("success", "failed_to_download", "failed_to_resize", "skipped")

# Columns the download adds to each metadata part, after the pool's own.
DOWNLOAD_COLUMNS = [
    ("key", pa.string()),
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("sha256", pa.string()),
]


@dataclass(frozen=True)
class ShardPaths:
    tar: Path
    parquet: Path
    stats: Path
    metadata: Path

    @classmethod
    def of(cls, run: RunDir, shard_id: str) -> ShardPaths:
        return cls(
            run.shards / f"{shard_id}.tar",
            run.shards / f"{shard_id}.parquet",
            run.shards / f"{shard_id}_stats.json",
            run.metadata / f"{shard_id}.parquet",
        )


class DownloadStage(Stage):
    """Pool -> img2dataset shards + one metadata part per shard."""

    name = "download"
    items_label = "samples"

    def __init__(self, cfg: PipelineConfig, run: RunDir, *, retry_failed: bool = False) -> None:
        self.cfg = cfg
        self.dl = cfg.download
        self.run = run
        self.base_pool: Pool = make_pool(cfg.pool)
        self.pool: Pool = self.base_pool  # with download.subset: only the rows that strategy keeps
        self.retry_failed = retry_failed
        self.url_map: dict[str, str] = {}

    def settings(self) -> Any:
        pool = settings_for_hash(self.cfg.pool)
        out = {"pool": pool, "download": settings_for_hash(self.dl)}
        if self.dl.subset:  # what the subset strategy is decides which rows are downloaded
            out["subset_strategy"] = self.cfg.strategies[self.dl.subset]
        return out

    def output_dirs(self) -> list[Path]:
        if self.dl.subset:
            from curate.filtering.presubset import presubset_dir

            return [self.run.shards, self.run.metadata, presubset_dir(self.run)]
        return [self.run.shards, self.run.metadata]

    def describe(self) -> tuple[str, str]:
        only = f", only subset {self.dl.subset}" if self.dl.subset else ""
        reads = f"pool ({self.cfg.pool.source}){only}"
        return (reads, "shards/NNNNNNNN.{tar,parquet,_stats.json}, metadata/")

    def max_concurrency(self) -> int | None:
        return self.dl.processes

    def preflight(self) -> list[str]:
        problems = self.base_pool.check()
        if not problems and self.dl.subset:
            from curate.filtering.presubset import presubset_problems

            problems = presubset_problems(self.cfg, self.base_pool)
        return problems

    def prepare(self) -> None:
        problems = self.preflight()
        if problems:
            raise PreflightError(f"pool ({self.cfg.pool.source}) cannot be used", problems)
        self.base_pool.prepare(self.run.pool)
        if self.dl.subset:  # the strategy over the pool's own metadata; parts already decided are reused
            from curate.filtering.presubset import select_before_download

            self.pool = select_before_download(self.cfg, self.run, self.base_pool)

    def plan(self) -> list[ShardTask]:
        size, tasks, index = self.dl.number_sample_per_shard, [], 0
        for part in self.pool.parts():
            for start in range(0, part.num_rows, size):
                stop = min(start + size, part.num_rows)
                shard_id = f"{index:0{self.dl.oom_shard_count}d}"
                tasks.append(
                    ShardTask(
                        shard_id, stop - start, {"part": part, "start": start, "stop": stop, "index": index}
                    )
                )
                index += 1
        return tasks

    def shard_outputs(self, shard_id: str) -> list[Path]:
        p = ShardPaths.of(self.run, shard_id)
        return [p.tar, p.parquet, p.stats, p.metadata]

    def needs_rerun(self, record: dict[str, Any]) -> bool:
        """In retry mode, a finished shard with download failures runs again (failed rows only)."""
        return self.retry_failed and record.get("stats", {}).get("failed_to_download", 0) > 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        served = self.pool.served_dir()
        if served is None:
            yield
            return
        from curate.serve import LoopbackServer

        prefix, root = served
        with LoopbackServer(root) as server:
            self.url_map = {prefix: server.url + "/"}
            try:
                yield
            finally:
                self.url_map = {}

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        a = task.args
        return download_shard(
            self.pool,
            a["part"],
            a["start"],
            a["stop"],
            a["index"],
            self.dl,
            self.run,
            url_map=self.url_map,
            retry_failed=self.retry_failed,
        )

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for stats in results.values():
            for key in ("count", "successes", "failed_to_download", "failed_to_resize", "skipped"):
                totals[key] += stats.get(key, 0)
            reasons.update(stats.get("status_dict", {}))
        out: dict[str, Any] = dict(totals)
        out["success_rate"] = round(totals["successes"] / totals["count"], 4) if totals["count"] else 0.0
        out["top_errors"] = dict(reasons.most_common(10))
        return out


def rewrite_url(url: str, url_map: dict[str, str]) -> str:
    for prefix, target in url_map.items():
        if url.startswith(prefix):
            return target + url[len(prefix) :]
    return url


def row_problem(uid: Any, url: Any) -> str | None:
    """Why a pool row cannot be downloaded, or None."""
    if not isinstance(uid, str) or not is_valid_uid(uid):
        return "invalid uid (expected 32 lowercase hex characters)"
    if not isinstance(url, str) or not url.strip():
        return "empty url"
    return None


def download_shard(
    pool: Pool,
    part: PoolPart,
    start: int,
    stop: int,
    index: int,
    dl: Any,
    run: RunDir,
    *,
    url_map: dict[str, str] | None = None,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Download rows [start, stop) of one pool part as shard `index`; returns the shard's stats."""
    shard_id = f"{index:0{dl.oom_shard_count}d}"
    paths = ShardPaths.of(run, shard_id)
    rows = pool.read(part, start, stop)
    previous = _previous_rows(paths) if retry_failed else None
    problems = [
        row_problem(u, v) for u, v in zip(rows["uid"].to_pylist(), rows["url"].to_pylist(), strict=True)
    ]
    urls = []
    for i, (url, problem) in enumerate(zip(rows["url"].to_pylist(), problems, strict=True)):
        retry_this = previous is None or previous[i]["status"] == "failed_to_download"
        urls.append(
            rewrite_url(url, url_map or {}) if problem is None and retry_this else f"{SKIP_SCHEME}{i}"
        )
    blur = dl.blur_faces and "face_bboxes" in rows.column_names
    run.shards.mkdir(parents=True, exist_ok=True)
    with staging_dir(run.shards, shard_id) as tmp:
        t0 = time.time()
        fresh = _run_img2dataset(rows, urls, blur, index, dl, tmp)
        fresh_tar = tmp / f"{shard_id}.tar"
        keys = [_key(index, i, dl) for i in range(rows.num_rows)]
        pool_urls = dict(zip(keys, rows["url"].to_pylist(), strict=True))
        attempted = {r["key"]: {**r, "url": pool_urls[r["key"]]} for r in fresh}  # not the loopback URL
        final, members = [], {}
        for i, key in enumerate(keys):
            if problems[i] is not None:
                final.append(_skipped_row(rows, i, key, problems[i]))
            elif previous is not None and previous[i]["status"] != "failed_to_download":
                final.append(previous[i])
                members[key] = paths.tar
            elif key in attempted:
                final.append(attempted[key])
                if attempted[key]["status"] == "success":
                    members[key] = fresh_tar
            else:  # img2dataset dropped it after an internal error (it only prints those)
                final.append(_skipped_row(rows, i, key, "dropped by img2dataset after an internal error"))
                final[-1]["status"] = "failed_to_download"
        _write_tar(tmp / "out.tar", keys, members, json_urls={fresh_tar: pool_urls} if url_map else {})
        stats = _stats(final, t0, time.time())
        _write_shard_parquet(tmp / "out.parquet", _column_order(final), final)
        _write_metadata(tmp / "meta.parquet", rows, final)
        os.replace(tmp / "out.tar", paths.tar)
        os.replace(tmp / "out.parquet", paths.parquet)
        paths.metadata.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "meta.parquet", paths.metadata)
        atomic_write_json(paths.stats, stats)  # last: its presence marks the shard complete
    return stats


def _key(index: int, row: int, dl: Any) -> str:
    oom_sample = math.ceil(math.log10(dl.number_sample_per_shard))  # img2dataset's compute_key
    return f"{index * 10**oom_sample + row:0{oom_sample + dl.oom_shard_count}d}"


def _run_img2dataset(
    rows: pa.Table, urls: list[str], blur: bool, index: int, dl: Any, out: Path
) -> list[dict]:
    """img2dataset's own Downloader on one shard, into `out`; returns its per-row records."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.blurrer import BoundingBoxBlurrer
    from img2dataset.downloader import Downloader

    from curate.stages.download_guards import GuardedResizer, StrictSampleWriter, bounded_downloads

    cols = {"uid": rows["uid"], "caption": rows["text"], "url": pa.array(urls, pa.string())}
    if blur:
        cols = {
            "uid": rows["uid"],
            "face_bboxes": rows["face_bboxes"],
            "caption": rows["text"],
            "url": cols["url"],
        }
    table = pa.table(cols)
    feather = out / "input.arrow"
    with pa.OSFile(str(feather), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    resizer = GuardedResizer(
        image_size=dl.image_size,
        resize_mode=dl.resize_mode,
        resize_only_if_bigger=dl.resize_only_if_bigger,
        encode_quality=dl.encode_quality,
        encode_format=dl.encode_format,
        blurrer=BoundingBoxBlurrer() if blur else None,
        max_image_pixels=dl.max_image_pixels,
    )
    downloader = Downloader(
        sample_writer_class=StrictSampleWriter,
        resizer=resizer,
        thread_count=dl.threads,
        save_caption=True,
        extract_exif=dl.extract_exif,
        output_folder=str(out),
        column_list=table.column_names,
        timeout=dl.timeout,
        number_sample_per_shard=dl.number_sample_per_shard,
        oom_shard_count=dl.oom_shard_count,
        compute_hash=dl.compute_hash,
        verify_hash_type=None,
        encode_format=dl.encode_format,
        retries=dl.retries,
        user_agent_token=dl.user_agent_token,
        disallowed_header_directives=dl.disallowed_header_directives,
        blurring_bbox_col="face_bboxes" if blur else None,
    )
    with bounded_downloads(dl.url_deadline, dl.max_image_bytes):
        downloader.download_shard((index, str(feather)))  # raises on shard-level errors
    name = f"{index:0{dl.oom_shard_count}d}"
    records = pq.read_table(out / f"{name}.parquet").to_pylist()
    return [r for r in records if not str(r.get("url") or "").startswith(SKIP_SCHEME)]


def _previous_rows(paths: ShardPaths) -> list[dict]:
    return sorted(pq.read_table(paths.parquet).to_pylist(), key=lambda r: r["key"])


def _skipped_row(rows: pa.Table, i: int, key: str, reason: str) -> dict[str, Any]:
    return {
        "uid": rows["uid"][i].as_py(),
        "caption": rows["text"][i].as_py(),
        "url": rows["url"][i].as_py(),
        "key": key,
        "status": "skipped",
        "error_message": reason,
        "width": None,
        "height": None,
        "original_width": None,
        "original_height": None,
    }


def _column_order(records: list[dict]) -> list[str]:
    """Column order of the shard parquet: img2dataset's, with any column seen in some record."""
    order: list[str] = []
    for r in records:
        for k in r:
            if k not in order:
                order.append(k)
    return order


def _write_shard_parquet(path: Path, columns: list[str], records: list[dict]) -> None:
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in records])
    pq.write_table(table, path)


def _write_tar(
    path: Path, keys: list[str], members: dict[str, Path], json_urls: dict[Path, dict[str, str]]
) -> None:
    """Write the shard's samples in key order (deterministic bytes), streaming each member unchanged,
    except that samples fetched through a loopback rewrite get the pool's URL back in their json."""
    with contextlib.ExitStack() as stack:
        index: dict[str, list[tuple[tarfile.TarFile, tarfile.TarInfo]]] = {}
        for src in sorted(set(members.values())):
            tf = stack.enter_context(tarfile.open(src, "r"))
            for info in tf.getmembers():
                key = info.name.split(".", 1)[0]
                if info.isfile() and members.get(key) == src:
                    index.setdefault(key, []).append((tf, info))
        out = stack.enter_context(tarfile.open(path, "w", format=tarfile.USTAR_FORMAT))
        for key in keys:
            for tf, info in sorted(index.get(key, []), key=lambda m: m[1].name):
                data: Any = tf.extractfile(info)
                size = info.size
                urls = json_urls.get(Path(tf.name)) if tf.name else None
                if urls and info.name.endswith(".json"):
                    meta = json.loads(data.read())
                    meta["url"] = urls[key]
                    blob = json.dumps(meta, indent=4).encode()
                    data, size = io.BytesIO(blob), len(blob)
                clean = tarfile.TarInfo(info.name)
                clean.size, clean.mode, clean.mtime = size, 0o644, 0
                out.addfile(clean, data)


def _stats(final: list[dict], t0: float, t1: float) -> dict[str, Any]:
    status = Counter(r["status"] for r in final)
    reasons = Counter(
        "success" if r["status"] == "success" else r["error_message"] or r["status"] for r in final
    )
    return {
        "count": len(final),
        "successes": status["success"],
        "failed_to_download": status["failed_to_download"],
        "failed_to_resize": status["failed_to_resize"],
        "skipped": status["skipped"],
        "duration": round(t1 - t0, 3),
        "start_time": t0,
        "end_time": t1,
        "status_dict": dict(reasons.most_common()),
    }


def _write_metadata(path: Path, rows: pa.Table, final: list[dict]) -> None:
    """The DataComp metadata part for this shard: pool columns, then what the download found."""
    table = rows
    if "sha256" in table.column_names:  # a DataComp pool's own hash stays; ours goes beside it
        table = table.rename_columns(["pool_sha256" if c == "sha256" else c for c in table.column_names])
    extra = {
        "key": [r["key"] for r in final],
        "status": [r["status"] for r in final],
        "error_message": [r.get("error_message") for r in final],
        "width": [r.get("width") for r in final],
        "height": [r.get("height") for r in final],
        "sha256": [r.get("sha256") for r in final],
    }
    for name, typ in DOWNLOAD_COLUMNS:
        table = table.append_column(pa.field(name, typ), pa.array(extra[name], typ))
    ow = [
        w if w is not None else r.get("original_width")
        for w, r in zip(table["original_width"].to_pylist(), final, strict=True)
    ]
    oh = [
        h if h is not None else r.get("original_height")
        for h, r in zip(table["original_height"].to_pylist(), final, strict=True)
    ]
    table = table.set_column(
        table.schema.get_field_index("original_width"), "original_width", pa.array(ow, pa.int64())
    )
    table = table.set_column(
        table.schema.get_field_index("original_height"), "original_height", pa.array(oh, pa.int64())
    )
    pq.write_table(table, path)
