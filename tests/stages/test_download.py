"""The download stage's per-shard function on a real loopback server (no Ray here)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from curate.rundir import RunDir
from curate.stages.download import DownloadStage
from tests.conftest import pool_config, uid_of, write_pool
from tests.http_faults import FAULTS, FaultServer


def _stage(cfg) -> DownloadStage:  # noqa: ANN001
    stage = DownloadStage(cfg, RunDir(Path(cfg.run_dir)))
    stage.prepare()
    return stage


def _tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tf:
        for info in tf.getmembers():
            key, ext = info.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tf.extractfile(info).read()
    return samples


def test_every_fault_is_counted_with_its_reason(tmp_path: Path, fault_server: FaultServer) -> None:
    good = [f"{fault_server.url}/img/{i}.png" for i in range(6)]
    faults = [fault_server.url + path for path in FAULTS]
    urls = good + faults + ["", f"{fault_server.url}/img/99.png"]
    uids = [uid_of(f"row {i}") for i in range(len(urls) - 1)] + ["NOT-A-UID"]
    pool = write_pool(tmp_path / "pool.parquet", urls, uids=uids)
    stage = _stage(pool_config(tmp_path, pool, number_sample_per_shard=100))
    (task,) = stage.plan()
    stats = stage.run_shard(task)

    assert stats["count"] == len(urls)
    assert stats["successes"] == 6
    assert stats["skipped"] == 2
    assert stats["successes"] + stats["failed_to_download"] + stats["failed_to_resize"] + stats[
        "skipped"
    ] == len(urls)

    run = stage.run
    rows = pq.read_table(run.shards / "00000000.parquet").to_pylist()
    # keys: 10^2 * shard + row with 100 samples per shard, 8-digit shard part (DataComp: 10^4, 12 digits)
    assert [r["key"] for r in rows] == [f"{i:010d}" for i in range(len(urls))]
    by_url = {r["url"]: r for r in rows}
    for path, reason in FAULTS.items():
        row = by_url[fault_server.url + path]
        assert row["status"] in ("failed_to_download", "failed_to_resize"), (path, row)
        assert reason.lower() in (row["error_message"] or "").lower(), (path, row["error_message"])
    assert rows[len(good) + len(faults)]["error_message"] == "empty url"
    assert rows[-1]["status"] == "skipped" and "invalid uid" in rows[-1]["error_message"]
    assert fault_server.hits["/img/99.png"] == 0, "a row with a bad uid must not be fetched"

    samples = _tar_samples(run.shards / "00000000.tar")
    assert sorted(samples) == [f"{i:010d}" for i in range(6)]
    for key, members in samples.items():
        assert set(members) == {"jpg", "txt", "json"}
        meta = json.loads(members["json"])
        assert meta["uid"] == uids[int(key)] and meta["status"] == "success"
        assert members["txt"].decode() == f"caption number {int(key)}"

    meta = pq.read_table(run.metadata / "00000000.parquet")
    assert meta["uid"].to_pylist() == uids, "metadata rows stay in pool order"
    assert meta["status"].to_pylist()[:6] == ["success"] * 6
    assert all(len(h) == 64 for h in meta["sha256"].to_pylist()[:6])
    assert meta["original_width"].to_pylist()[:6] == [64] * 6
    assert meta["width"].to_pylist()[:6] == [32] * 6  # resized to image_size (keep_ratio_largest)

    written = json.loads((run.shards / "00000000_stats.json").read_text())
    assert written["successes"] == 6 and written["status_dict"]["success"] == 6
    assert sum(written["status_dict"].values()) == len(urls), "every row has exactly one reason"
    leftovers = [p.name for p in run.shards.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "staging directories are removed"


def test_retry_failed_refetches_only_failed_rows(tmp_path: Path, fault_server: FaultServer) -> None:
    urls = [f"{fault_server.url}/img/{i}.png" for i in range(4)] + [
        f"{fault_server.url}/flaky/{i}.png" for i in range(10, 13)
    ]
    pool = write_pool(tmp_path / "pool.parquet", urls)
    cfg = pool_config(tmp_path, pool, number_sample_per_shard=100)
    stage = _stage(cfg)
    (task,) = stage.plan()
    first = stage.run_shard(task)
    assert (first["successes"], first["failed_to_download"]) == (4, 3)
    before = _tar_samples(stage.run.shards / "00000000.tar")

    fault_server.flaky_ok = True
    retry = DownloadStage(cfg, stage.run, retry_failed=True)
    retry.prepare()
    assert retry.needs_rerun({"stats": first})
    second = retry.run_shard(task)
    assert (second["successes"], second["failed_to_download"]) == (7, 0)
    for i in range(4):
        assert fault_server.hits[f"/img/{i}.png"] == 1, "successful rows are not fetched again"
    after = _tar_samples(stage.run.shards / "00000000.tar")
    assert sorted(after) == [f"{i:010d}" for i in range(7)]
    for key, members in before.items():
        assert after[key] == members, "earlier samples are kept byte for byte"
    meta = pq.read_table(stage.run.metadata / "00000000.parquet")
    assert meta["status"].to_pylist() == ["success"] * 7
