"""The runner on a real local Ray: manifest, resume, and which settings invalidate a stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from curate.rundir import RunDir
from curate.runner import WORKER_ENV, run_pipeline
from tests.conftest import pool_config, write_pool
from tests.http_faults import FaultServer


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for the module: its workers import img2dataset once, not once per run."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    yield
    ray.shutdown()


def _image_hits(server: FaultServer) -> int:
    return sum(n for path, n in server.hits.items() if path.startswith("/img/"))


def test_rerun_resumes_and_only_output_settings_invalidate(tmp_path: Path, fault_server: FaultServer) -> None:
    pool = write_pool(tmp_path / "pool.parquet", [f"{fault_server.url}/img/{i}.png" for i in range(25)])
    cfg = pool_config(tmp_path, pool)
    run = RunDir(Path(cfg.run_dir))

    manifest = run_pipeline(cfg, run)
    stage = manifest.data["stages"]["download"]
    assert stage["status"] == "done"
    assert stage["counts"]["successes"] == 25 and stage["counts"]["shards"] == 3
    assert sorted(stage["shards"]) == ["00000000", "00000001", "00000002"]
    assert stage["throughput"]["items_per_s"] > 0
    assert (
        json.loads(run.manifest_path.read_text())["stages"]["download"]["config_hash"] == stage["config_hash"]
    )
    assert _image_hits(fault_server) == 25

    run_pipeline(cfg, run)  # nothing to do
    assert _image_hits(fault_server) == 25

    run_pipeline(pool_config(tmp_path, pool, processes=1, threads=3), run)  # exec-only: still nothing
    assert _image_hits(fault_server) == 25

    (run.shards / "00000001.tar").unlink()  # a lost output: only that shard runs again
    run_pipeline(cfg, run)
    assert _image_hits(fault_server) == 35

    run_pipeline(pool_config(tmp_path, pool, image_size=16), run)  # output setting: the stage reruns
    assert _image_hits(fault_server) == 60
    widths = pq.read_table(run.metadata / "00000002.parquet")["width"].to_pylist()
    assert widths == [16] * 5
