"""A two-node Ray cluster on loopback (`ray start --head` + `ray start --address`): stages spread over
both nodes, and a stage whose worker node is SIGKILLed mid-way finishes on the head node with outputs
identical to a clean run.

Each node is one `ray start --block` process in its own session with its own temp dir; its processes
(raylet, agents, Ray workers) are its descendants, so the test kills exactly those, by pid, and never
touches another Ray on the machine (no `ray stop`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import ray

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.runner import run_pipeline
from curate.stages.base import ShardTask
from curate.stages.download import DownloadStage
from curate.stages.embed import EmbedStage
from tests.conftest import pool_config, write_pool
from tests.http_faults import FaultServer

WORKER_RESOURCE = "doomed_node"  # a custom resource that only the worker node has: how we find its id
# The head's GCS declares a killed node dead after ~3 s instead of ~15 s (the defaults), still lenient
# enough for a live node on a busy machine.
FAST_HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
KILL_TEST_TIMEOUT = 300  # a shard lost with its node and never retried hangs the stage: fail instead


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sigkill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


class RayNode:
    """One `ray start --block` process and everything it spawned."""

    def __init__(self, args: list[str], temp_dir: Path, env: dict[str, str] | None = None) -> None:
        ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        self.log = temp_dir.with_suffix(".log")
        full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
        cmd = [ray_bin, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
        cmd += ["--disable-usage-stats", f"--temp-dir={temp_dir}", *args]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start did not come up:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """The node vanishes at once: SIGKILL to every one of its processes, no goodbye to the GCS."""
        _sigkill(self.processes())

    def stop(self) -> None:
        procs = self.processes()  # before the root exits and orphans its children
        if self.proc.poll() is None:
            self.proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=20)
        _sigkill(alive)


class Cluster:
    """A head node for the module; worker nodes are added (and killed) per test."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[RayNode] = []
        head_args = [f"--port={self.port}", "--include-dashboard=false", "--head"]
        self.head = self._start(head_args, "h", FAST_HEALTH_CHECK)

    def _start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> RayNode:
        node = RayNode(args, self.tmp / name, env)
        self.nodes.append(node)
        node.wait_ready()
        return node

    def worker(self) -> RayNode:
        """The live worker node: the last one started, or a new one if that was killed."""
        last = self.nodes[-1]
        if last is not self.head and last.proc.poll() is None:
            return last
        name = f"w{len(self.nodes)}"
        args = [f"--address={self.address}", f'--resources={{"{WORKER_RESOURCE}": 1}}']
        return self._start(args, name)

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def _worker_node_id() -> str:
    """The Ray node id of the live worker node (the one with WORKER_RESOURCE), seen from this driver."""
    while True:
        for node in ray.nodes():
            if node["Alive"] and WORKER_RESOURCE in node["Resources"]:
                return node["NodeID"]
        time.sleep(0.05)


class KillWhen(threading.Thread):
    """Beside the driver: once the run has joined the cluster, notes the worker node's id; once `ready()`,
    SIGKILLs that node and calls `then()` (which lets the held shards go on)."""

    def __init__(self, node: RayNode, ready: Callable[[], bool], then: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.node, self.ready, self.then = node, ready, then
        self.node_id = ""
        self.killed = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set() and not ray.is_initialized():
            time.sleep(0.02)
        if self.stop_event.is_set():
            return
        self.node_id = _worker_node_id()
        while not self.stop_event.is_set():
            if self.ready():
                self.node.kill()
                self.killed = True
                self.then()
                return
            time.sleep(0.02)


def _cluster_cfg(cfg: PipelineConfig, address: str, **extra: Any) -> PipelineConfig:
    return PipelineConfig.model_validate({**cfg.model_dump(), "ray": {"address": address}, **extra})


def _clean_download(cfg: PipelineConfig, run: RunDir) -> None:
    """The same download without Ray or faults: each shard through the stage's plain function."""
    stage = DownloadStage(cfg, run)
    stage.prepare()
    with stage.running():
        for task in stage.plan():
            stage.run_shard(task)


def _download_outputs(run: RunDir) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(run.shards.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix == ".tar":
            out[path.name] = path.read_bytes()  # written in key order with fixed mtimes: byte-identical
        elif path.suffix == ".parquet":
            out[path.name] = pq.read_table(path).to_pylist()
        elif path.name.endswith("_stats.json"):
            stats = json.loads(path.read_text())
            out[path.name] = {
                k: v for k, v in stats.items() if k not in ("duration", "start_time", "end_time")
            }
    for path in sorted(run.metadata.glob("*.parquet")):
        out[f"metadata/{path.name}"] = pq.read_table(path).to_pylist()
    return out


def test_download_runs_on_both_nodes_of_a_cluster(
    tmp_path: Path, fault_server: FaultServer, cluster: Cluster
) -> None:
    """`ray.address` set: the runner joins the cluster and shards run on both nodes."""
    cluster.worker()
    fault_server.delay = 0.05
    pool = write_pool(tmp_path / "pool.parquet", [f"{fault_server.url}/img/{i}.png" for i in range(60)])
    cfg = _cluster_cfg(pool_config(tmp_path, pool, threads=2), cluster.address)
    manifest = run_pipeline(cfg, RunDir(Path(cfg.run_dir)))
    stage = manifest.data["stages"]["download"]
    assert stage["status"] == "done" and stage["counts"]["successes"] == 60
    nodes = {rec["node"] for rec in stage["shards"].values()}
    assert len(nodes) == 2, f"shards ran on {len(nodes)} node(s): {nodes}"


class GatedServer(FaultServer):
    """Holds every image request until the gate opens: shards are caught mid-download, not by timing."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def route(self, h: Any) -> None:
        self.gate.wait(timeout=120)
        super().route(h)


@pytest.fixture
def gated_server() -> Iterator[GatedServer]:
    server = GatedServer().start()
    yield server
    server.gate.set()
    server.stop()


@pytest.mark.timeout(KILL_TEST_TIMEOUT)
def test_worker_node_killed_mid_download_finishes_on_head_like_a_clean_run(
    tmp_path: Path, gated_server: GatedServer, cluster: Cluster
) -> None:
    """Both nodes hold a shard at the HTTP gate; the worker node dies; its shard is redone on the head
    (Ray's task retries), every shard is done, none failed, and the shard files equal a clean run's."""
    n, per_shard = 60, 10
    pool = write_pool(tmp_path / "pool.parquet", [f"{gated_server.url}/img/{i}.png" for i in range(n)])
    base = pool_config(
        tmp_path, pool, threads=2, number_sample_per_shard=per_shard, timeout=60, url_deadline=90
    )
    clean = RunDir(tmp_path / "clean")
    gated_server.gate.set()
    _clean_download(base.model_copy(update={"run_dir": str(clean.root)}), clean)
    gated_server.gate.clear()
    gated_server.hits.clear()

    def both_nodes_mid_shard() -> bool:  # 1 CPU per node: two shards at the gate are on two nodes
        paths = list(gated_server.hits)
        return len({int(p.split("/")[-1].split(".")[0]) // per_shard for p in paths}) >= 2

    worker = cluster.worker()
    cfg = _cluster_cfg(base, cluster.address)
    run = RunDir(Path(cfg.run_dir))
    killer = KillWhen(worker, both_nodes_mid_shard, then=gated_server.gate.set)
    killer.start()
    try:
        manifest = run_pipeline(cfg, run)
    finally:
        killer.stop_event.set()
        gated_server.gate.set()
    assert killer.killed, "the worker node was never killed"
    stage = manifest.data["stages"]["download"]
    assert stage["status"] == "done" and stage["counts"]["successes"] == n
    assert all(rec["status"] == "done" for rec in stage["shards"].values())
    assert killer.node_id not in {rec["node"] for rec in stage["shards"].values()}
    refetched = [path for path, hits in gated_server.hits.items() if hits > 1]
    assert refetched, "no shard was cut off mid-way: nothing was fetched twice"
    assert _download_outputs(run) == _download_outputs(clean)


class GatedEmbed(EmbedStage):
    """The real embed stage, except that each shard first leaves a marker (shard id and pid) and waits
    for the gate file: when two markers are there, both workers are mid-shard, whatever the timing."""

    gate_dir: Path

    @classmethod
    def around(cls, stage: EmbedStage, gate_dir: Path) -> GatedEmbed:
        gated = cls.__new__(cls)
        gated.__dict__.update(stage.__dict__)
        gated.gate_dir = gate_dir
        return gated

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        (self.gate_dir / f"{task.shard_id}.{os.getpid()}").touch()
        deadline = time.time() + 120
        while not (self.gate_dir / "open").exists() and time.time() < deadline:
            time.sleep(0.02)
        return super().run_shard(task)


def _embed_outputs(run: RunDir) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(run.metadata.glob("*.parquet")):
        out[path.name] = pq.read_table(path).to_pylist()
    for path in sorted(run.metadata.glob("*.npz")):
        with np.load(path) as data:
            out[path.name] = {k: data[k].tolist() for k in sorted(data.files)}
    return out


@pytest.mark.timeout(KILL_TEST_TIMEOUT)
def test_worker_node_killed_mid_embed_hands_its_shard_to_the_head_worker(
    tmp_path: Path, fault_server: FaultServer, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Both embed actors hold a shard; the worker node dies with its actor; the runner hands that shard
    to the surviving actor (Ray's own actor restart would wait forever for a free CPU), and the npz and
    metadata parts equal those of a clean, Ray-free run."""
    pool = write_pool(tmp_path / "pool.parquet", [f"{fault_server.url}/img/{i}.png" for i in range(60)])
    base = pool_config(tmp_path, pool, threads=8).model_dump()
    base["embed"] = {"models": [{"name": "tiny", "arch": "curate-tiny-vit64"}], "batch_size": 8}
    downloaded = RunDir(tmp_path / "downloaded")
    _clean_download(PipelineConfig.model_validate({**base, "run_dir": str(downloaded.root)}), downloaded)
    clean, run = RunDir(tmp_path / "clean"), RunDir(tmp_path / "cluster")
    shutil.copytree(downloaded.root, clean.root)
    shutil.copytree(downloaded.root, run.root)
    reference = EmbedStage(PipelineConfig.model_validate({**base, "run_dir": str(clean.root)}), clean)
    for task in reference.plan():  # the clean run: in this process, one shard after another
        reference.run_shard(task)

    gate = tmp_path / "gate"
    gate.mkdir()

    def both_workers_mid_shard() -> bool:  # a worker holds one shard at a time: two markers, two workers
        return len({p.name.split(".")[0] for p in gate.iterdir()}) >= 2

    worker = cluster.worker()
    cfg = _cluster_cfg(PipelineConfig.model_validate(base), cluster.address, run_dir=str(run.root))
    killer = KillWhen(worker, both_workers_mid_shard, then=(gate / "open").touch)
    killer.start()
    caplog.set_level(logging.WARNING, logger="curate.runner")
    try:
        manifest = run_pipeline(
            cfg,
            run,
            only=["embed"],
            stage_filter=lambda s: GatedEmbed.around(s, gate) if isinstance(s, EmbedStage) else s,
        )
    finally:
        killer.stop_event.set()
        (gate / "open").touch()
    assert killer.killed, "the worker node was never killed"
    stage = manifest.data["stages"]["embed"]
    assert stage["status"] == "done" and stage["counts"]["shards"] == 6 and stage["counts"]["embedded"] == 60
    assert killer.node_id not in {rec["node"] for rec in stage["shards"].values()}
    started = sorted(p.name for p in gate.iterdir() if p.name != "open")
    rerun = {
        sid for sid in (name.split(".")[0] for name in started) if sum(n.startswith(sid) for n in started) > 1
    }
    assert len(rerun) == 1, f"expected one shard to run twice (lost with the node), started: {started}"
    assert f"shard {rerun.pop()} lost with its worker" in caplog.text
    assert _embed_outputs(run) == _embed_outputs(clean)
