"""A two-node Ray cluster on loopback (`ray start --head` + `ray start --address`) runs the download."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.runner import run_pipeline
from tests.conftest import pool_config, write_pool
from tests.http_faults import FaultServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str) -> None:
    ray_bin = shutil.which("ray") or str(Path(os.sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([ray_bin, *args], check=True, env=env, capture_output=True, timeout=180)


@pytest.fixture
def two_node_cluster() -> Iterator[str]:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        _ray(
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        )
        _ray(
            "start",
            f"--address={address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--disable-usage-stats",
        )
        yield address
    finally:
        _ray("stop", "--force")


def test_download_runs_on_both_nodes_of_a_cluster(
    tmp_path: Path, fault_server: FaultServer, two_node_cluster: str
) -> None:
    fault_server.delay = 0.05
    pool = write_pool(tmp_path / "pool.parquet", [f"{fault_server.url}/img/{i}.png" for i in range(60)])
    base = pool_config(tmp_path, pool, threads=2)
    cfg = PipelineConfig.model_validate({**base.model_dump(), "ray": {"address": two_node_cluster}})
    manifest = run_pipeline(cfg, RunDir(Path(cfg.run_dir)))
    stage = manifest.data["stages"]["download"]
    assert stage["status"] == "done" and stage["counts"]["successes"] == 60
    nodes = {rec["node"] for rec in stage["shards"].values()}
    assert len(nodes) == 2, f"shards ran on {len(nodes)} node(s): {nodes}"
