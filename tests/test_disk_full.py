"""A full disk in the middle of a stage: the run directory lives on a small tmpfs that fills up during
download, then embed, then reshard, then at a manifest write. Each time the run must stop with a
message that says the disk is full (where, which stage and shard), mark no shard done whose files are
incomplete, and leave no partial file under a final name; once the tmpfs is grown, the rerun finishes
with the same outputs as a clean run on a normal disk. Mounting needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from curate.config import PipelineConfig, dump_config
from curate.diskfull import DiskFull
from curate.rundir import RunDir
from curate.runner import WORKER_ENV, build_stages, run_pipeline
from tests.conftest import pool_config, write_pool
from tests.http_faults import FaultServer

PAGE = 4096
ROWS = 40  # 4 download shards of 10 rows
STAGES = ("download", "embed", "filter", "reshard")


class Tmpfs:
    """A tmpfs mounted at `path`, resized in place (`mount -o remount,size=`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mount(self, size: int) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        return result.stderr.strip() if result.returncode else ""

    def resize(self, size: int) -> None:
        cmd = ["mount", "-o", f"remount,size={_pages(size) * PAGE}", str(self.path)]
        subprocess.run(cmd, check=True, capture_output=True)

    def used(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)  # still busy: detach


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = Tmpfs(tmp_path / "disk")
    error = disk.mount(64 * PAGE)
    if error and ("permission" in error.lower() or "not permitted" in error.lower()):
        pytest.skip(f"mounting a tmpfs is not permitted here: {error}")
    assert not error, error
    try:
        yield disk
    finally:
        disk.unmount()


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[str]:
    """One CPU: one shard (one embed worker) at a time, so each stage fills the disk at a known point."""
    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    srv = FaultServer().start()
    yield srv
    srv.stop()


def _config(root: Path, pool: Path) -> PipelineConfig:
    """Download (one shard in flight, so none starts after the one that fills the disk) -> embed ->
    filter -> reshard, with 256-pixel images so that shards take some room."""
    data = pool_config(root, pool, image_size=256, resize_only_if_bigger=False, processes=1).model_dump()
    data["embed"] = {"models": [{"name": "tiny", "arch": "curate-tiny-vit64"}], "batch_size": 8}
    data["strategies"] = {"top": {"clip_score": {"model": "tiny", "fraction": 0.5}}, "all": "no_filter"}
    data["reshard"] = {"shard_size": 6}
    return PipelineConfig.model_validate(data)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, server: FaultServer) -> Path:
    urls = [f"{server.url}/img/{i}.png" for i in range(ROWS)]
    return write_pool(tmp_path_factory.mktemp("pool") / "pool.parquet", urls)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, pool: Path) -> RunDir:
    """The same pipeline on a normal disk: what every disk-full run must end up equal to."""
    cfg = _config(tmp_path_factory.mktemp("clean"), pool)
    run = RunDir(Path(cfg.run_dir))
    manifest = run_pipeline(cfg, run)
    assert all(manifest.data["stages"][s]["status"] == "done" for s in STAGES)
    return run


def _pages(n: int) -> int:
    return -(-n // PAGE)


def _on_disk(paths: list[Path]) -> int:
    """What files take on a tmpfs: whole pages."""
    return sum(_pages(p.stat().st_size) * PAGE for p in paths)


def _still_to_write(run: RunDir, clean: RunDir, but: Path) -> int:
    """Pages the clean run's files (outside `but`) take beyond what `run` has of them so far."""
    total = 0
    for path in clean.root.rglob("*"):
        if path.is_file() and but not in path.parents:
            mine = run.root / path.relative_to(clean.root)
            total += max(0, _on_disk([path]) - (_on_disk([mine]) if mine.is_file() else 0))
    return total


def _image_hits(server: FaultServer) -> int:
    return sum(n for path, n in server.hits.items() if path.startswith("/img/"))


def _readable(path: Path) -> None:
    """Open a run file the way its readers do; raises if it is partial."""
    if path.suffix == ".tar":
        with tarfile.open(path) as tf:
            for member in tf:
                data = tf.extractfile(member)
                assert data is not None and len(data.read()) == member.size
    elif path.suffix == ".parquet":
        pq.read_table(path)
    elif path.suffix == ".npz":
        with np.load(path) as data:
            assert all(data[k].size for k in data.files)
    elif path.suffix == ".npy":
        np.load(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())


def _check_consistent(cfg: PipelineConfig, run: RunDir) -> dict[str, int]:
    """Every shard marked done has complete, readable files; no file under a final name is partial
    (temporaries are hidden names, never counted as outputs). Returns done shards per stage."""
    manifest = json.loads(run.manifest_path.read_text())
    done = {}
    for stage in build_stages(cfg, run):
        record = manifest["stages"].get(stage.name, {"shards": {}})
        ids = [sid for sid, rec in record["shards"].items() if rec["status"] == "done"]
        for sid in ids:
            for path in stage.shard_outputs(sid):
                assert path.is_file(), f"{stage.name} shard {sid} marked done without {path}"
                _readable(path)
        done[stage.name] = len(ids)
    for path in run.root.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(run.root).parts)
        if path.is_file() and not hidden:
            _readable(path)
    return done


def _hidden(run: RunDir) -> list[Path]:
    return list(run.root.rglob(".*"))


def _stops_with_disk_full(cfg: PipelineConfig, run: RunDir, stage: str) -> str:
    """The run raises DiskFull naming the stage and the run directory: writing a shard of it (the
    shard is named) or the driver's own writes for it (the manifest after a shard; the file is named).
    Returns the message (not the exception, whose frames would keep the run's objects alive)."""
    try:
        run_pipeline(cfg, run)
    except DiskFull as exc:
        text = str(exc)
    else:
        pytest.fail(f"the run went on on a full disk ({stage})")
    assert text.startswith((f"{stage}, shard ", f"{stage}: disk full")), text
    assert "No space left on device" in text and str(run.root) in text, text
    return text


def _same_outputs(run: RunDir, clean: RunDir) -> None:
    """Same uids per shard, same samples, same embeddings, same subsets and resharded bytes."""
    names = sorted(p.name for p in clean.shards.iterdir())
    assert sorted(p.name for p in run.shards.iterdir()) == names
    for tar in sorted(clean.shards.glob("*.tar")):
        sid = tar.stem
        uids = pq.read_table(run.shards / f"{sid}.parquet")["uid"].to_pylist()
        assert uids == pq.read_table(clean.shards / f"{sid}.parquet")["uid"].to_pylist()
        assert (run.shards / tar.name).read_bytes() == tar.read_bytes()
        with np.load(run.metadata / f"{sid}.npz") as got, np.load(clean.metadata / f"{sid}.npz") as want:
            assert got.files == want.files
            assert all(np.array_equal(got[k], want[k], equal_nan=True) for k in want.files)
    for npy in clean.subsets.glob("*.npy"):
        assert (run.subsets / npy.name).read_bytes() == npy.read_bytes()
    want = {p.relative_to(clean.resharded): p.read_bytes() for p in clean.resharded.rglob("*.tar")}
    got = {p.relative_to(run.resharded): p.read_bytes() for p in run.resharded.rglob("*.tar")}
    assert got == want and len(want) > 2


def _cli_run(cfg: PipelineConfig, tmp_path: Path, ray_address: str) -> subprocess.CompletedProcess[str]:
    """`curate run` in its own process, joining this module's Ray (a second local one costs ~10 s)."""
    file = tmp_path / "pipeline.yaml"
    file.write_text(dump_config(cfg))
    env = {**os.environ, **WORKER_ENV}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "curate.cli", "run", str(file), f"ray.address={ray_address}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_a_full_disk_stops_every_stage_cleanly_and_a_grown_disk_finishes_the_run(
    tmp_path: Path,
    tmpfs: Tmpfs,
    pool: Path,
    clean: RunDir,
    server: FaultServer,
    local_ray: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    cfg = _config(tmpfs.path, pool)
    run = RunDir(Path(cfg.run_dir))
    per_shard = _on_disk([*clean.shards.iterdir(), *clean.metadata.glob("*.parquet")]) // 4
    ample = 4 * _on_disk([p for p in clean.root.rglob("*") if p.is_file()])

    # (a) download, through `curate run`: a shard stages img2dataset's tar and our own before the
    # renames (about twice its final size), so 2.5 shards' worth holds shard 0 and fills during shard 1.
    tmpfs.resize(int(2.5 * per_shard))
    hits = _image_hits(server)
    result = _cli_run(cfg, tmp_path, local_ray)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert "download, shard 00000001: disk full (No space left on device)" in output, output
    assert str(run.root) in output
    assert _image_hits(server) - hits == 20, "the run went on to other shards after the disk was full"
    stopped = json.loads(run.manifest_path.read_text())["stages"]["download"]
    assert stopped["status"] == "failed" and "disk full" in stopped["stopped"]
    assert stopped["shards"]["00000001"]["status"] == "failed"
    assert "No space left on device" in stopped["shards"]["00000001"]["error"]
    assert _check_consistent(cfg, run)["download"] == 1
    assert not _hidden(run)  # the failed shard's staging directory is gone

    # (b) embed: the download finishes, then a third of the embeddings fit.
    tmpfs.resize(tmpfs.used() + ample)
    run_pipeline(cfg, run, only=["download"])
    embeds = _on_disk(list(clean.metadata.glob("*.npz")))
    tmpfs.resize(tmpfs.used() + embeds // 3 + PAGE)
    _stops_with_disk_full(cfg, run, "embed")
    done = _check_consistent(cfg, run)
    assert done["download"] == 4 and done["embed"] < 4
    embed = json.loads(run.manifest_path.read_text())["stages"]["embed"]
    assert embed["status"] in ("failed", "running")  # "failed" only if the last manifest still fit
    assert not _hidden(run)

    # (c) reshard, in the same run that finishes embed and filter: what those still have to write
    # (and room for their temporaries), then half of the resharded tars.
    resharded = _on_disk([p for p in clean.resharded.rglob("*") if p.is_file()])
    still = _still_to_write(run, clean, but=clean.resharded) + 16 * PAGE
    tmpfs.resize(tmpfs.used() + still + resharded // 2)
    _stops_with_disk_full(cfg, run, "reshard")
    done = _check_consistent(cfg, run)
    assert done["embed"] == 4 and done["filter"] == 4
    assert 0 < done["reshard"] < len(list(clean.resharded.rglob("*.tar")))
    assert not _hidden(run)

    # (d) the manifest itself: two free pages hold a new config but not a new manifest. The save
    # fails, the manifest on disk is the last one saved, whole, and no temp file is left beside it.
    before = run.manifest_path.read_bytes()
    assert _pages(len(before)) > 2
    tmpfs.resize(tmpfs.used() + 2 * PAGE)
    text = _stops_with_disk_full(cfg, run, "reshard")
    assert text.startswith("reshard: disk full") and str(run.manifest_path) in text
    assert run.manifest_path.read_bytes() == before
    assert not _hidden(run)

    # Grown: the rerun finishes, equal to the clean run.
    tmpfs.resize(tmpfs.used() + ample)
    manifest = run_pipeline(cfg, run)
    assert all(manifest.data["stages"][s]["status"] == "done" for s in STAGES)
    assert _check_consistent(cfg, run) == _check_consistent(cfg, clean)
    assert not _hidden(run)
    _same_outputs(run, clean)
    # shards still running when a stage stopped were cancelled and awaited, not left to fail unseen
    assert "Unhandled error" not in capfd.readouterr().err
