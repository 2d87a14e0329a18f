"""Unusual images from the web through the real download (img2dataset over loopback HTTP) and the embed
stage's shard function: an empty body is a counted failure with its reason; CMYK, 16-bit, palette with
transparency, animated and translucent images are downloaded, re-encoded and embedded like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curate.rundir import RunDir
from curate.stages.download import DownloadStage
from curate.stages.embed import embed_shard
from tests.conftest import pool_config, write_pool
from tests.embed_fixtures import tiny_model
from tests.http_faults import ODD_KINDS, FaultServer


def test_odd_images_are_embedded_and_an_empty_one_is_a_counted_failure(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    urls = [f"{fault_server.url}/odd/{kind}" for kind in ODD_KINDS]
    cfg = pool_config(tmp_path, write_pool(tmp_path / "pool.parquet", urls), number_sample_per_shard=20)
    stage = DownloadStage(cfg, RunDir(Path(cfg.run_dir)))
    assert stage.preflight() == []
    stage.prepare()
    (task,) = stage.plan()
    counts = stage.run_shard(task)
    assert counts["successes"] == len(ODD_KINDS) - 1, counts

    run = RunDir(Path(cfg.run_dir))
    shard = pq.read_table(run.shards / "00000000.parquet").to_pylist()
    by_kind = {row["url"].rsplit("/", 1)[1]: row for row in shard}
    assert by_kind["empty"]["status"] != "success" and by_kind["empty"]["error_message"]
    for kind in ODD_KINDS[1:]:
        assert by_kind[kind]["status"] == "success", (kind, by_kind[kind]["error_message"])

    meta_path, npz_path = run.metadata / "00000000.parquet", run.metadata / "00000000.npz"
    stats = embed_shard(run.shards / "00000000.tar", meta_path, npz_path, [tiny_model()])
    assert stats["embedded"] == len(ODD_KINDS) - 1 and stats["no_image"] == 1 and stats["undecodable"] == 0
    meta = pq.read_table(meta_path)
    scores = dict(
        zip(
            [u.rsplit("/", 1)[1] for u in meta.column("url").to_pylist()],
            meta.column("clip_tiny_similarity_score").to_pylist(),
            strict=True,
        )
    )
    assert np.isnan(scores.pop("empty")) and all(np.isfinite(v) for v in scores.values())
