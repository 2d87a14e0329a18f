"""Download + embed through the runner on a real local Ray: actors, resume, re-embedding a redone shard."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.runner import WORKER_ENV, run_pipeline
from tests.conftest import pool_config, write_pool
from tests.http_faults import FaultServer


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    yield
    ray.shutdown()


def _with_embed(cfg: PipelineConfig) -> PipelineConfig:
    data = cfg.model_dump()
    data["embed"] = {"models": [{"name": "tiny", "arch": "curate-tiny-vit64"}], "batch_size": 8}
    return PipelineConfig.model_validate(data)


def test_embed_runs_after_download_resumes_and_follows_redone_shards(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    urls = [f"{fault_server.url}/img/{i}.png" for i in range(14)] + [f"{fault_server.url}/fault/404"]
    cfg = _with_embed(pool_config(tmp_path, write_pool(tmp_path / "pool.parquet", urls)))
    run = RunDir(Path(cfg.run_dir))

    manifest = run_pipeline(cfg, run)
    embed = manifest.data["stages"]["embed"]
    assert embed["status"] == "done" and embed["counts"]["shards"] == 2
    assert embed["counts"]["embedded"] == 14 and embed["counts"]["no_image"] == 1
    for sid in ("00000000", "00000001"):
        data = np.load(run.metadata / f"{sid}.npz")
        table = pq.read_table(run.metadata / f"{sid}.parquet")
        assert data["tiny_img"].shape[0] == table.num_rows
        ok = np.array(table.column("status").to_pylist()) == "success"
        scores = table.column("clip_tiny_similarity_score").to_numpy()
        assert np.isfinite(scores[ok]).all() and np.isnan(scores[~ok]).all()

    before = {p.name: p.stat().st_mtime_ns for p in run.metadata.glob("*.npz")}
    run_pipeline(cfg, run)  # nothing to do
    assert {p.name: p.stat().st_mtime_ns for p in run.metadata.glob("*.npz")} == before

    tar = run.shards / "00000001.tar"  # as if `download --retry-failed` had rewritten this shard
    os.utime(tar, ns=(tar.stat().st_atime_ns, tar.stat().st_mtime_ns + 10**9))
    run_pipeline(cfg, run)
    after = {p.name: p.stat().st_mtime_ns for p in run.metadata.glob("*.npz")}
    assert after["00000000.npz"] == before["00000000.npz"]
    assert after["00000001.npz"] != before["00000001.npz"]
