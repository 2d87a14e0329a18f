"""SIGKILL `curate run` in the middle of the download, rerun: same shards as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import write_pool
from tests.http_faults import FaultServer


def _config(tmp_path: Path, pool: Path, run_dir: Path) -> Path:
    cfg = {
        "name": "kill",
        "run_dir": str(run_dir),
        "pool": {"source": "parquet", "paths": [str(pool)], "uid_col": "uid"},
        "download": {
            "number_sample_per_shard": 10,
            "processes": 2,
            "threads": 2,
            "image_size": 32,
            "timeout": 5,
            "retries": 0,
        },
        "ray": {"num_cpus": 2},
    }
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _curate(*args: str, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(
        [sys.executable, "-m", "curate.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


def _shard_files(run_dir: Path) -> dict[str, bytes]:
    shards = run_dir / "shards"
    return {p.name: p.read_bytes() for p in sorted(shards.iterdir()) if p.suffix in (".tar", ".parquet")}


def test_sigkill_during_download_then_rerun_matches_clean_run(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.delay = 0.15  # ~0.75 s per 10-image shard with 2 threads: the kill lands mid-stage
    pool = write_pool(tmp_path / "pool.parquet", [f"{fault_server.url}/img/{i}.png" for i in range(120)])
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    killed_cfg, clean_cfg = _config(tmp_path, pool, killed_dir), _config(tmp_path, pool, clean_dir)

    proc = _curate("run", str(killed_cfg))
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list((killed_dir / "shards").glob("*_stats.json")) if (killed_dir / "shards").exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list((killed_dir / "shards").glob("*_stats.json")))
    assert 2 <= done_at_kill < 12, f"the kill must land mid-download ({done_at_kill} of 12 shards done)"

    rerun = _curate("run", str(killed_cfg))
    log = rerun.communicate(timeout=300)[0].decode()
    assert rerun.returncode == 0, log
    clean = _curate("run", str(clean_cfg))
    assert clean.communicate(timeout=300)[0] is not None and clean.returncode == 0

    killed, reference = _shard_files(killed_dir), _shard_files(clean_dir)
    assert sorted(killed) == sorted(reference) and len(killed) == 24
    for name in killed:
        assert killed[name] == reference[name], f"{name} differs from the uninterrupted run"
    assert not [p for p in (killed_dir / "shards").iterdir() if p.name.startswith(".")], "no temp files left"
    for path in sorted(fault_server.hits):
        if path.startswith("/img/"):
            assert fault_server.hits[path] <= 3  # once per run, plus once if its shard was cut mid-way
