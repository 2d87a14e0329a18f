"""The runner on a real local Ray: manifest, resume, and which settings invalidate a stage."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray

from curate.rundir import RunDir
from curate.runner import LOST_SHARD_RETRIES, WORKER_ENV, RayExecutor, run_pipeline
from curate.stages.base import ShardResult, ShardTask, Stage
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

    stale = run.root / ".manifest.json.k1ll3d.tmp"  # a run killed while saving its manifest
    stale.write_text('{"stages": {')
    run_pipeline(cfg, run)  # nothing to do
    assert _image_hits(fault_server) == 25 and not stale.exists()

    run_pipeline(pool_config(tmp_path, pool, processes=1, threads=3), run)  # exec-only: still nothing
    assert _image_hits(fault_server) == 25

    (run.shards / "00000001.tar").unlink()  # a lost output: only that shard runs again
    run_pipeline(cfg, run)
    assert _image_hits(fault_server) == 35

    run_pipeline(pool_config(tmp_path, pool, image_size=16), run)  # output setting: the stage reruns
    assert _image_hits(fault_server) == 60
    widths = pq.read_table(run.metadata / "00000002.parquet")["width"].to_pylist()
    assert widths == [16] * 5


class _CrashingActors(Stage):
    """An actor stage whose worker process dies (os._exit, as a segfault or an OOM kill would) on the
    shards in `always`, and on the first try of those in `once`; or whose setup() raises."""

    name = "crashy"
    uses_actors = True

    def __init__(self, root: Path, always: set[str], once: set[str], bad_setup: bool = False) -> None:
        self.root, self.always, self.once, self.bad_setup = root, always, once, bad_setup

    def settings(self) -> Any:
        return {}

    def output_dirs(self) -> list[Path]:
        return []

    def plan(self) -> list[ShardTask]:
        return [ShardTask(f"{i:08d}", 1) for i in range(6)]

    def shard_outputs(self, shard_id: str) -> list[Path]:
        return []

    def setup(self) -> None:
        if self.bad_setup:
            raise ValueError("model 'nope' not found")

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        tries = len(list(self.root.glob(f"{task.shard_id}.*")))
        (self.root / f"{task.shard_id}.{tries}").touch()
        if task.shard_id in self.always or (task.shard_id in self.once and tries == 0):
            os._exit(1)
        return {"tries": tries + 1}


def test_a_shard_whose_worker_dies_is_retried_on_a_new_worker_a_bounded_number_of_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stage = _CrashingActors(tmp_path, always={"00000001"}, once={"00000003"})
    caplog.set_level(logging.WARNING, logger="curate.runner")
    with RayExecutor(pool_config(tmp_path, tmp_path / "pool.parquet")) as executor:
        outcomes = {task.shard_id: out for task, out in executor.map(stage, stage.plan())}
    assert sorted(outcomes) == [f"{i:08d}" for i in range(6)]
    lost = outcomes.pop("00000001")
    assert isinstance(lost, str) and lost.startswith("ActorDiedError: The actor died unexpectedly"), lost
    assert len(list(tmp_path.glob("00000001.*"))) == 1 + LOST_SHARD_RETRIES
    assert {sid: r.stats["tries"] for sid, r in outcomes.items() if isinstance(r, ShardResult)} == {
        "00000000": 1,
        "00000002": 1,
        "00000003": 2,
        "00000004": 1,
        "00000005": 1,
    }
    assert caplog.text.count("shard 00000001 lost with its worker") == LOST_SHARD_RETRIES
    assert caplog.text.count("shard 00000003 lost with its worker") == 1


class _PairedActors(_CrashingActors):
    """Two shards at once per worker: each waits at a barrier for the other, so they must overlap."""

    name = "paired"
    shards_per_worker = 2

    def setup(self) -> None:
        import threading

        self.barrier = threading.Barrier(2, timeout=30)

    def max_concurrency(self) -> int | None:
        return 1  # one worker

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        if task.shard_id in self.always:
            os._exit(1)
        if not self.once:  # the pairing test: no crashes, every pair meets
            self.barrier.wait()
        return {"ok": 1}


def test_a_worker_runs_two_shards_at_once_when_its_stage_asks(tmp_path: Path) -> None:
    stage = _PairedActors(tmp_path, always=set(), once=set())
    with RayExecutor(pool_config(tmp_path, tmp_path / "pool.parquet")) as executor:
        outcomes = {task.shard_id: out for task, out in executor.map(stage, stage.plan())}
    assert all(isinstance(out, ShardResult) for out in outcomes.values()), outcomes
    assert len(outcomes) == 6


def test_shards_beside_a_dying_worker_run_again_alone(tmp_path: Path) -> None:
    stage = _PairedActors(tmp_path, always={"00000000"}, once={"no barrier"})
    with RayExecutor(pool_config(tmp_path, tmp_path / "pool.parquet")) as executor:
        outcomes = {task.shard_id: out for task, out in executor.map(stage, stage.plan())}
    assert isinstance(outcomes.pop("00000000"), str)  # its neighbour died with it once, then ran alone
    assert all(isinstance(out, ShardResult) for out in outcomes.values()), outcomes


def test_a_worker_setup_error_fails_every_shard_with_its_message(tmp_path: Path) -> None:
    stage = _CrashingActors(tmp_path, always=set(), once=set(), bad_setup=True)
    with RayExecutor(pool_config(tmp_path, tmp_path / "pool.parquet")) as executor:
        outcomes = {task.shard_id: out for task, out in executor.map(stage, stage.plan())}
    assert len(outcomes) == 6
    assert set(outcomes.values()) == {"worker setup failed: ValueError: model 'nope' not found"}
    assert list(tmp_path.glob("0*")) == []  # no shard ran; no worker was started again and again
