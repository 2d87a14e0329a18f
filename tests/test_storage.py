"""Object storage against a real S3 API (moto's server on 127.0.0.1): pools, shards and run directories
on s3:// through s3fs, with the images from the loopback fault server and real Ray, img2dataset and
open_clip. A run whose run_dir is s3:// must leave in the bucket what a local run leaves on disk, also
after a SIGKILL and a rerun from an empty work_dir; bad storage settings stop before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curate.cli import app
from curate.config import PipelineConfig, load_config
from curate.errors import ConfigError, CurateError, PreflightError
from curate.rundir import RunDir
from curate.uids import array_to_uids, read_subset
from tests.conftest import uid_of
from tests.http_faults import FaultServer
from tests.s3_server import S3Server, aws_env

ROWS = 40  # 4 download shards of 10
FILES_PER_SHARD = ("shards/{}.tar", "shards/{}.parquet", "shards/{}_stats.json", "metadata/{}.parquet")
TIMING_KEYS = ("duration", "start_time", "end_time")


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> Iterator[S3Server]:
    """The S3 server, with this process (and what it starts: Ray workers, `curate` subprocesses)
    pointed at it through the standard AWS environment variables."""
    with aws_env(s3_server):
        yield s3_server


@pytest.fixture(scope="module")
def images() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


def _pool_table(server: FaultServer, n: int, first: int = 0) -> pa.Table:
    """Rows with captions of 3+ English words; every other row too small for basic_filter; every
    seventh URL a 404."""
    rows = range(first, first + n)
    urls = [f"{server.url}/fault/404" if i % 7 == 6 else f"{server.url}/img/{i}.png" for i in rows]
    return pa.table(
        {
            "uid": [uid_of(f"row {i}") for i in rows],
            "url": urls,
            "text": [f"a photo of a red car on a road, number {i}" for i in rows],
            "original_width": pa.array([300 if i % 2 else 100 for i in rows], pa.int64()),
            "original_height": pa.array([240] * n, pa.int64()),
        }
    )


@pytest.fixture(scope="module")
def bucket(s3: S3Server, images: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bucket holding a two-part parquet pool under pool/."""
    name = s3.new_bucket()
    local = tmp_path_factory.mktemp("pool")
    pq.write_table(_pool_table(images, 20), local / "part-a.parquet")
    pq.write_table(_pool_table(images, ROWS - 20, first=20), local / "part-b.parquet")
    s3.upload_dir(local, f"s3://{name}/pool")
    return name


def _config(bucket: str, run_dir: str, work_dir: Path | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "s3run",
        "run_dir": run_dir,
        "pool": {"source": "parquet", "paths": [f"s3://{bucket}/pool/*.parquet"], "uid_col": "uid"},
        "download": {
            "number_sample_per_shard": 10,
            "processes": 2,
            "threads": 2,
            "image_size": 32,
            "timeout": 5,
            "retries": 0,
        },
        "strategies": {"basic": "basic_filter"},
        "ray": {"num_cpus": 2},
    }
    if work_dir is not None:
        cfg["work_dir"] = str(work_dir)
    return cfg


@pytest.fixture(scope="module")
def local_ray(s3: S3Server) -> Iterator[None]:
    """One local Ray for the module's in-process runs, started after the AWS variables are set, so
    that its workers read the pool from the S3 server too."""
    import ray

    from curate.runner import WORKER_ENV

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(bucket: str, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same pipeline run twice: run_dir in the bucket, and run_dir on local disk."""
    from curate.runner import run_pipeline

    tmp = tmp_path_factory.mktemp("runs")
    url = f"s3://{bucket}/runs/clean"
    remote_cfg = PipelineConfig.model_validate(_config(bucket, url, tmp / "work"))
    local_cfg = PipelineConfig.model_validate(_config(bucket, str(tmp / "local"), None))
    run_pipeline(remote_cfg, RunDir(remote_cfg.resolved_run_dir()))
    run_pipeline(local_cfg, RunDir(local_cfg.resolved_run_dir()))
    return {"url": url, "work": tmp / "work", "local": tmp / "local"}


def _normalised(files: dict[str, bytes]) -> dict[str, Any]:
    """A run's files, comparable across runs: config.yaml names its own run_dir and manifest.json holds
    timings, so those two are left out; shard stats lose their clock times."""
    out: dict[str, Any] = {}
    for rel, data in files.items():
        if rel in ("config.yaml", "manifest.json"):
            continue
        if rel.endswith("_stats.json"):
            stats = json.loads(data)
            out[rel] = {k: v for k, v in stats.items() if k not in TIMING_KEYS}
        else:
            out[rel] = data
    return out


def _local_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_run_dir_on_s3_holds_what_a_local_run_writes(s3: S3Server, runs: dict[str, Any]) -> None:
    in_bucket = s3.objects(runs["url"])
    local = _local_files(runs["local"])
    assert not [k for k in in_bucket if any(part.startswith(".") for part in k.split("/"))], "no temp names"
    assert sorted(in_bucket) == sorted(local)
    shards = [k for k in in_bucket if k.startswith("shards/") and k.endswith(".tar")]
    assert len(shards) == ROWS // 10 and "subsets/basic.npy" in in_bucket
    assert len([k for k in in_bucket if k.startswith("metadata/")]) == ROWS // 10
    assert _normalised(in_bucket) == _normalised(local)  # shards, metadata, decisions, subsets: same bytes
    subset = read_subset(runs["local"] / "subsets" / "basic.npy")
    assert 0 < len(subset) < ROWS  # the filter really kept some rows and dropped others
    # the manifest in the bucket is the final one: every stage done
    manifest = json.loads(in_bucket["manifest.json"])
    assert {s: r["status"] for s, r in manifest["stages"].items()} == {"download": "done", "filter": "done"}
    assert in_bucket["manifest.json"] == (runs["work"] / "manifest.json").read_bytes()
    assert yaml.safe_load(in_bucket["config.yaml"])["run_dir"] == runs["url"]


def _curate(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "RAY_AUTH_MODE": "disabled"}
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the run
        return subprocess.Popen(
            [sys.executable, "-m", "curate.cli", *args],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _remote_state(s3: S3Server, bucket: str, prefix: str) -> tuple[dict[str, Any] | None, set[str]]:
    """The manifest in the bucket, then the object names (listed after it was read)."""
    client = s3.client()
    try:
        manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    except client.exceptions.NoSuchKey:
        manifest = None
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    keys = {obj["Key"][len(prefix) + 1 :] for page in pages for obj in page.get("Contents", [])}
    return manifest, keys


def _done_download_shards(manifest: dict[str, Any] | None) -> list[str]:
    shards = (manifest or {}).get("stages", {}).get("download", {}).get("shards", {})
    return sorted(sid for sid, rec in shards.items() if rec.get("status") == "done")


def _empty_for_good(work: Path, quiet_s: float = 2.0, limit_s: float = 60.0) -> None:
    """Remove the killed run's working copy, again while something the kill missed still writes there (CI
    once saw the rerun refuse a work_dir that held files again after one rmtree; a Ray worker outside
    the killed process group is the likely writer)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        shutil.rmtree(work, ignore_errors=True)
        time.sleep(quiet_s)
        if not work.exists():
            return
    raise AssertionError(f"{work} keeps coming back: a process of the killed run still writes there")


def test_sigkill_with_run_dir_on_s3_then_rerun_from_an_empty_work_dir(
    s3: S3Server, bucket: str, images: FaultServer, runs: dict[str, Any], local_ray: None, tmp_path: Path
) -> None:
    prefix = "runs/killed"
    work = tmp_path / "work"
    cfg_file = tmp_path / "killed.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(bucket, f"s3://{bucket}/{prefix}", work)))

    images.delay = 0.3  # ~1.5 s per 10-image shard with 2 threads: the kill lands mid-download
    try:
        proc = _curate(tmp_path / "killed.log", "run", str(cfg_file))
        deadline, done = time.time() + 300, []
        while time.time() < deadline and proc.poll() is None:
            manifest, keys = _remote_state(s3, bucket, prefix)
            done = _done_download_shards(manifest)
            for sid in done:  # at every moment: a shard marked done has all its files in the bucket
                missing = [f.format(sid) for f in FILES_PER_SHARD if f.format(sid) not in keys]
                assert not missing, f"the bucket's manifest marks {sid} done without {missing}"
            if done:
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        images.delay = 0.0
    log = (tmp_path / "killed.log").read_text(errors="replace")
    assert 1 <= len(done) < ROWS // 10, f"the kill must land mid-download ({len(done)} shards done)\n{log}"

    _empty_for_good(work)  # a fresh machine: only the bucket is left (rerun in this process, on its Ray)
    rerun = CliRunner().invoke(app, ["run", str(cfg_file)])
    assert rerun.exit_code == 0, rerun.output
    assert f"files from s3://{bucket}/{prefix}" in rerun.output  # it resumed from the bucket

    killed, clean = s3.objects(f"s3://{bucket}/{prefix}"), s3.objects(runs["url"])
    assert sorted(killed) == sorted(clean)
    assert _normalised(killed) == _normalised(clean)
    manifest = json.loads(killed["manifest.json"])
    assert manifest["stages"]["download"]["counts"]["shards"] == ROWS // 10


def test_pull_keeps_what_is_current_and_push_deletes_what_the_run_removed(
    s3: S3Server, runs: dict[str, Any], tmp_path: Path
) -> None:
    from curate.storage import RemoteRun

    remote = RemoteRun(runs["url"], runs["work"])
    assert remote.check() == []
    assert remote.pull() == 0  # the working copy is current: nothing is copied
    fresh = RemoteRun(runs["url"], tmp_path / "copy")
    assert fresh.check() == []
    assert fresh.pull() == len(s3.objects(runs["url"]))
    assert _local_files(tmp_path / "copy") == s3.objects(runs["url"])

    (tmp_path / "copy" / "subsets" / "basic.npy").unlink()  # as a stage redone with new settings does
    (tmp_path / "copy" / "subsets" / "extra.txt").write_text("new\n")
    assert fresh.push() == 1
    after = s3.objects(runs["url"])
    assert "subsets/basic.npy" not in after and after["subsets/extra.txt"] == b"new\n"
    assert remote.pull() == 1  # the first copy follows: gets the new file, drops the removed one
    assert not (runs["work"] / "subsets" / "basic.npy").exists()
    assert (runs["work"] / "subsets" / "extra.txt").read_text() == "new\n"
    # the bucket and the first copy back as the other tests expect them
    shutil.copy(runs["local"] / "subsets" / "basic.npy", tmp_path / "copy" / "subsets" / "basic.npy")
    (tmp_path / "copy" / "subsets" / "extra.txt").unlink()
    assert fresh.push() == 1
    assert remote.pull() == 1
    assert _local_files(runs["work"]) == s3.objects(runs["url"]) == _local_files(tmp_path / "copy")


def test_a_sweeps_leaderboard_reaches_the_bucket(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """The leaderboard is written after the run's last push; `curate sweep` pushes it on its own."""
    from curate.storage import RemoteRun
    from curate.sweep import publish

    url = f"s3://{bucket}/runs/leaderboard"
    cfg = PipelineConfig.model_validate(_config(bucket, url, tmp_path / "work"))
    run = RunDir(cfg.resolved_run_dir())
    remote = RemoteRun.of(cfg, run)
    assert remote is not None and remote.check() == []
    publish(cfg, run, {"metrics": [], "rows": []})
    after = s3.objects(url)
    assert json.loads(after["sweep/leaderboard.json"]) == {"metrics": [], "rows": []}
    assert after["sweep/leaderboard.csv"] == (tmp_path / "work" / "sweep" / "leaderboard.csv").read_bytes()


def test_plan_brings_an_empty_work_dir_up_to_date_first(
    bucket: str, runs: dict[str, Any], tmp_path: Path
) -> None:
    cfg_file = tmp_path / "plan.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(bucket, runs["url"], tmp_path / "work")))
    result = CliRunner().invoke(app, ["plan", str(cfg_file)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    assert f"{ROWS // 10}/{ROWS // 10}" in rows["download"] and "done" in rows["download"]
    assert (tmp_path / "work" / "manifest.json").read_bytes() == (runs["work"] / "manifest.json").read_bytes()


def test_reshard_and_filter_read_shards_and_metadata_from_s3(runs: dict[str, Any], tmp_path: Path) -> None:
    url, local = runs["url"], runs["local"]
    subset = local / "subsets" / "basic.npy"
    for src, out in ((f"{url}/shards", tmp_path / "from_s3"), (str(local / "shards"), tmp_path / "local")):
        args = ["reshard", "--shards", src, "--subset", str(subset), "--out", str(out)]
        result = CliRunner().invoke(app, [*args, "--shard-size", "3", "--workers", "2"])
        assert result.exit_code == 0, result.output
    from_s3, reference = _local_files(tmp_path / "from_s3"), _local_files(tmp_path / "local")
    assert sorted(from_s3) == sorted(reference) and len([n for n in from_s3 if n.endswith(".tar")]) >= 2
    for name in from_s3:
        if name != "meta.json":  # names its input directory
            assert from_s3[name] == reference[name], name
    assert json.loads(from_s3["meta.json"])["output_count"] == len(read_subset(subset))

    for src, out in ((f"{url}/metadata", tmp_path / "s3.npy"), (str(local / "metadata"), tmp_path / "l.npy")):
        result = CliRunner().invoke(
            app, ["filter", "--metadata", src, "--strategy", "basic_filter", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "s3.npy").read_bytes() == (tmp_path / "l.npy").read_bytes()
    assert 0 < len(read_subset(tmp_path / "s3.npy")) < ROWS


def test_datacomp_pool_on_s3_through_download_embed_and_filter(
    s3: S3Server, images: FaultServer, tmp_path: Path
) -> None:
    from curate.stages.download import DownloadStage
    from curate.stages.embed import EmbedStage
    from curate.stages.filter import FilterStage

    name = s3.new_bucket()
    meta = tmp_path / "metadata"
    meta.mkdir()
    pq.write_table(_pool_table(images, 12), meta / "0000.parquet")
    pq.write_table(_pool_table(images, 9, first=12), meta / "0001.parquet")
    s3.upload_dir(meta, f"s3://{name}/datacomp/metadata")

    def config(metadata: str, run: Path) -> PipelineConfig:
        return PipelineConfig.model_validate(
            {
                "name": "dc",
                "run_dir": str(run),
                "pool": {"source": "datacomp", "metadata": metadata},
                "download": {"number_sample_per_shard": 8, "threads": 4, "image_size": 32, "retries": 0},
                "embed": {
                    "models": [{"name": "tiny", "arch": "curate-tiny-vit64"}],
                    "device": "cpu",
                    "gpu_decode": False,
                },
                "strategies": {"top": {"clip_score": {"model": "tiny", "fraction": 0.5}}},
            }
        )

    def run_stages(cfg: PipelineConfig, stages: list[type]) -> RunDir:
        run = RunDir(Path(str(cfg.run_dir)))
        for cls in stages:
            stage = cls(cfg, run)
            assert stage.preflight() == []
            stage.prepare()
            stage.setup()
            with stage.running():
                results = {t.shard_id: stage.run_shard(t) for t in stage.plan()}
            stage.finish(results)
        return run

    run = run_stages(
        config(f"s3://{name}/datacomp/metadata", tmp_path / "run"), [DownloadStage, EmbedStage, FilterStage]
    )
    reference = run_stages(config(str(meta), tmp_path / "ref"), [DownloadStage])
    got, want = _local_files(run.shards), _local_files(reference.shards)
    assert sorted(got) == sorted(want) and len(got) == 4 * 3  # parts of 12 and 9 rows: 4 shards
    for rel in want:  # the pool read from s3 or from disk: the same download
        if not rel.endswith("_stats.json"):
            assert got[rel] == want[rel], rel
    pool_uids = set(_pool_table(images, 21)["uid"].to_pylist())
    ok_uids = []
    for part in sorted(run.metadata.glob("*.parquet")):
        table = pq.read_table(part)
        embeddings = np.load(part.with_suffix(".npz"))
        assert embeddings["tiny_img"].shape[0] == table.num_rows  # rows aligned
        ok_uids += [
            u
            for u, s in zip(table["uid"].to_pylist(), table["status"].to_pylist(), strict=True)
            if s == "success"
        ]
    assert set(ok_uids) <= pool_uids and len(ok_uids) == 21 - 3  # rows 6, 13, 20 are 404s
    subset = array_to_uids(read_subset(run.subsets / "top.npy"))
    assert 0 < len(subset) < len(ok_uids) and set(subset) <= set(ok_uids)


# ---------------------------------------------------------------- bad settings: clear errors before work


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_run_dir_urls_and_work_dirs_are_config_errors(tmp_path: Path) -> None:
    base = {"name": "x", "pool": {"source": "parquet", "paths": [str(tmp_path / "pool.parquet")]}}
    cases = {
        "work_dir: required when run_dir is a URL": {"run_dir": "s3://bkt/runs/x"},
        "run_dir: a URL needs a bucket": {"run_dir": "s3:///runs/x", "work_dir": str(tmp_path / "w")},
        "work_dir: must be a local directory, not a URL": {"run_dir": "s3://bkt/x", "work_dir": "s3://bkt/w"},
        "work_dir: is only used when run_dir is a URL": {"work_dir": str(tmp_path / "w")},
    }
    for expected, extra in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(_write(tmp_path, {**base, **extra}))
        assert expected in str(info.value)
        result = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml")])
        assert result.exit_code == 2 and expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "w").exists()


def test_missing_bucket_foreign_prefix_and_foreign_work_dir_stop_before_work(
    s3: S3Server, bucket: str, runs: dict[str, Any], tmp_path: Path
) -> None:
    from curate.runner import run_pipeline

    def attempt(run_dir: str, work: Path) -> str:
        cfg = PipelineConfig.model_validate(_config(bucket, run_dir, work))
        with pytest.raises(PreflightError) as info:
            run_pipeline(cfg, RunDir(cfg.resolved_run_dir()))
        return str(info.value)

    msg = attempt("s3://no-such-bucket-here/runs/x", tmp_path / "w1")
    assert "bucket 'no-such-bucket-here'" in msg and "does not exist" in msg
    assert not (tmp_path / "w1").exists()  # nothing written, the working copy included
    msg = attempt(f"s3://{bucket}/pool", tmp_path / "w2")  # the pool's prefix: not a run
    assert "holds files but no config.yaml" in msg and not (tmp_path / "w2").exists()
    msg = attempt(f"s3://{bucket}/runs/other", runs["work"])  # the clean run's working copy
    assert f"is the working copy of {runs['url']}" in msg
    assert "no-such-bucket-here" not in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]


def test_s3_without_s3fs_is_a_clear_message(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curate.runner import run_pipeline

    monkeypatch.setitem(sys.modules, "s3fs", None)  # `import s3fs` now fails as when it is not installed
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "s3", raising=False)
    cfg = PipelineConfig.model_validate(_config(bucket, f"s3://{bucket}/runs/y", tmp_path / "w"))
    with pytest.raises(PreflightError) as info:
        run_pipeline(cfg, RunDir(cfg.resolved_run_dir()))
    problems = "\n".join(info.value.problems)
    assert "pool.paths[0]:" in problems and "run_dir:" in problems
    assert problems.count("pip install") == 2 and not (tmp_path / "w").exists()
    with pytest.raises(CurateError, match="pip install"):
        from curate.reshard import find_input_shards

        find_input_shards(f"s3://{bucket}/runs/clean/shards")
