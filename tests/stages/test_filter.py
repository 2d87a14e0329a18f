"""The filter stage on a run: decisions, subsets and funnel after a real download on loopback, preflight,
`download.subset` (filter before download), and resume after SIGKILL during a fit and during apply."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curate.config import PipelineConfig
from curate.errors import PreflightError
from curate.rundir import RunDir
from curate.runner import build_stages, run_pipeline
from curate.stages.download import DownloadStage
from curate.stages.filter import FilterStage
from curate.uids import array_to_uids, read_subset
from tests.http_faults import FaultServer
from tests.metadata_parts import ENGLISH, uid

MEDIAN = "tests.filtering.toy_filters:AboveMedian"


def _pool(path: Path, urls: list[str], b32: list[float]) -> Path:
    """A parquet pool with DataComp's score and size columns."""
    n = len(urls)
    table = pa.table(
        {
            "uid": [uid(i) for i in range(n)],
            "url": urls,
            "text": [ENGLISH] * n,
            "original_width": pa.array([300] * n, pa.int64()),
            "original_height": pa.array([300] * n, pa.int64()),
            "clip_b32_similarity_score": pa.array(b32, pa.float32()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _config(tmp_path: Path, pool: Path, strategies: dict, **extra: Any) -> PipelineConfig:
    download = {"number_sample_per_shard": 4, "processes": 2, "threads": 4, "timeout": 2, "retries": 0}
    download.update(extra.pop("download", {}))
    return PipelineConfig.model_validate(
        {
            "name": "filter-test",
            "run_dir": str(tmp_path / "run"),
            "pool": {"source": "parquet", "paths": [str(pool)], "uid_col": "uid"},
            "download": {**download, "url_deadline": 3, "image_size": 32},
            "strategies": strategies,
            "ray": {"num_cpus": 2},
            **extra,
        }
    )


def _download(cfg: PipelineConfig) -> DownloadStage:
    """The download stage's shard function over every shard (no Ray needed for the stage contract)."""
    stage = DownloadStage(cfg, RunDir(Path(cfg.run_dir)))
    assert stage.preflight() == []
    stage.prepare()
    for task in stage.plan():
        stage.run_shard(task)
    return stage


def _filter(cfg: PipelineConfig) -> dict[str, Any]:
    stage = FilterStage(cfg, RunDir(Path(cfg.run_dir)))
    assert stage.preflight() == []
    stage.prepare()
    with stage.running():
        results = {t.shard_id: stage.run_shard(t) for t in stage.plan()}
    return stage.finish(results)


def _subset(run: Path, name: str) -> list[str]:
    return array_to_uids(read_subset(run / "subsets" / f"{name}.npy"))


def test_filter_stage_after_a_real_download(tmp_path: Path, fault_server: FaultServer) -> None:
    urls = [f"{fault_server.url}/img/{i}.png" for i in range(10)]
    urls[2] = urls[7] = f"{fault_server.url}/fault/404"  # not downloaded
    b32 = [0.1, 0.2, 0.9, 0.4, 0.5, 0.6, 0.7, 0.8, 0.3, 0.35]
    strategies = {
        "top": {"clip_score": {"model": "b32", "fraction": 0.5}},
        "above": {"all": [{"clip_score": {"model": "b32", "threshold": 0.35}}, "no_filter"]},
    }
    cfg = _config(tmp_path, _pool(tmp_path / "pool.parquet", urls, b32), strategies)
    _download(cfg)
    counts = _filter(cfg)
    run = Path(cfg.run_dir)
    # fraction 0.5 of all 10 metadata rows (downloaded or not): n = 5, threshold = 6th largest = 0.4;
    # kept: scores >= 0.4 (rows 2..7) minus the two that were not downloaded (2 and 7)
    assert _subset(run, "top") == [uid(i) for i in (3, 4, 5, 6)]
    assert _subset(run, "above") == [uid(i) for i in (3, 4, 5, 6, 9)]
    assert counts["rows"] == 10 and counts["top kept"] == 4 and counts["above kept"] == 5
    assert counts["strategies"]["top"]["funnel"] == [
        {"step": "not downloaded", "removed_alone": 2, "removed_in_sequence": 2, "left": 8},
        {
            "step": "clip_score: clip_score(model=b32, fraction=0.5)",
            "removed_alone": 4,
            "removed_in_sequence": 4,
            "left": 4,
        },
    ]
    summary = json.loads((run / "subsets" / "top.json").read_text())
    assert summary["count"] == 4 and summary["funnel"] == counts["strategies"]["top"]["funnel"]
    decisions = pq.read_table(run / "decisions" / "top" / "00000001.parquet")  # rows 4..7
    assert decisions.column("reason").to_pylist() == [None, None, None, "not downloaded"]
    assert decisions.column("clip_score.keep").to_pylist() == [True, True, True, True]
    assert len(list((run / "fit").iterdir())) == 1  # the fraction's threshold; threshold mode needs none


def test_build_stages_puts_filter_last(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool.parquet", ["http://x/1.png"], [0.3])
    cfg = _config(tmp_path, pool, {"s": "no_filter"})
    assert [s.name for s in build_stages(cfg, RunDir(tmp_path / "run"))] == ["download", "filter"]
    assert [s.name for s in build_stages(_config(tmp_path, pool, {}), RunDir(tmp_path))] == ["download"]


def test_preflight_names_columns_the_pipeline_does_not_produce(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool.parquet", ["http://x/1.png"], [0.3])
    strategies = {
        "l14": {"clip_score": {"model": "l14", "fraction": 0.3}},
        "typo": "basic_filtr",
        "ok": {"clip_score": {"model": "b32", "threshold": 0.3}},
    }
    cfg = _config(tmp_path, pool, strategies)
    with pytest.raises(PreflightError) as exc:
        run_pipeline(cfg, RunDir(Path(cfg.run_dir)))
    problems = exc.value.problems
    assert len(problems) == 1 and problems[0].startswith("strategies.typo.basic_filtr: unknown filter")
    del strategies["typo"]
    with pytest.raises(PreflightError) as exc:
        run_pipeline(_config(tmp_path, pool, strategies), RunDir(Path(cfg.run_dir)))
    (problem,) = exc.value.problems
    assert problem.startswith(
        "strategies.l14.clip_score: needs column clip_l14_similarity_score, which the run's metadata (pool "
        "columns, download columns, embed outputs) does not have (available: "
    )
    assert not Path(cfg.run_dir).exists(), "nothing may be written before preflight passes"
    embed = {"models": [{"name": "l14", "arch": "ViT-L-14"}]}
    stage = FilterStage(_config(tmp_path, pool, strategies, embed=embed), RunDir(Path(cfg.run_dir)))
    assert stage.preflight() == []  # an embed model named l14 produces that column
    # an embed model named b32 replaces the pool's score; the pool's own stays as pool_clip_b32_...
    own = {"own": {"clip_score": {"column": "pool_clip_b32_similarity_score", "threshold": 0.3}}}
    embed = {"models": [{"name": "b32", "arch": "ViT-B-32"}]}
    assert FilterStage(_config(tmp_path, pool, own, embed=embed), RunDir(Path(cfg.run_dir))).preflight() == []
    assert FilterStage(_config(tmp_path, pool, own), RunDir(Path(cfg.run_dir))).preflight() != []


def test_download_subset_fetches_only_the_kept_rows(tmp_path: Path, fault_server: FaultServer) -> None:
    urls = [f"{fault_server.url}/img/{i}.png" for i in range(10)]
    b32 = [0.1, 0.2, 0.9, 0.4, 0.5, 0.6, 0.7, 0.8, 0.3, 0.35]
    strategies = {"top": {"clip_score": {"model": "b32", "fraction": 0.3}}, "all": "no_filter"}
    cfg = _config(
        tmp_path, _pool(tmp_path / "pool.parquet", urls, b32), strategies, download={"subset": "top"}
    )
    stage = _download(cfg)
    # n = 3: threshold = 4th largest = 0.6 -> rows 2, 5, 6, 7 only are fetched
    fetched = sorted(int(p.split("/")[-1].split(".")[0]) for p, n in fault_server.hits.items() if n)
    assert fetched == [2, 5, 6, 7]
    run = Path(cfg.run_dir)
    meta = pq.read_table(run / "metadata" / "00000000.parquet")
    assert meta.column("uid").to_pylist() == [uid(i) for i in (2, 5, 6, 7)]
    assert array_to_uids(read_subset(run / "pool_subset" / "top.npy")) == [uid(i) for i in (2, 5, 6, 7)]
    assert [t.items for t in stage.plan()] == [4]
    # after download, the same strategy reuses the pool-wide fit: it keeps every downloaded row
    counts = _filter(cfg)
    assert counts["top kept"] == 4 and counts["all kept"] == 4
    assert not (run / "fit").exists() or not any((run / "fit").iterdir())
    # a strategy that needs a column the pool does not have cannot run before download
    bad = {"l14": {"clip_score": {"model": "l14", "threshold": 0.3}}}
    bad_cfg = _config(tmp_path, tmp_path / "pool.parquet", bad, download={"subset": "l14"})
    (problem,) = DownloadStage(bad_cfg, RunDir(tmp_path / "other")).preflight()
    assert problem.startswith(
        "strategies.l14.clip_score: needs column clip_l14_similarity_score, which the pool"
    )


# ---------------------------------------------------------------- kill and resume (real subprocesses)
# One run killed twice: during its fit (on the driver, before Ray starts), then during apply; then
# run to the end. Ray's start is the slow part, so the scenario pays for it only twice.

SCORES = [0.05 * i for i in range(24)]  # 6 parts of 4 rows; the median of all 24 is 0.575
STATUS = ["success", "success", "failed_to_download", "success"]
EXPECTED = [uid(i) for i in range(12, 24) if STATUS[i % 4] == "success"]  # >= median and downloaded


def _fabricated_run(tmp_path: Path, log: Path) -> Path:
    """A run whose download is done: 6 metadata parts (no Ray or HTTP needed to get here)."""
    rows = {
        "uid": [uid(i) for i in range(24)],
        "url": [f"http://127.0.0.1:9/{i}.png" for i in range(24)],
        "text": [ENGLISH] * 24,
        "original_width": [300] * 24,
        "original_height": [300] * 24,
        "clip_l14_similarity_score": SCORES,
    }
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table(rows), pool)
    meta = tmp_path / "run" / "metadata"
    meta.mkdir(parents=True)
    for part in range(6):
        sl = slice(4 * part, 4 * part + 4)
        cols = {k: v[sl] for k, v in rows.items()} | {"status": STATUS}
        pq.write_table(pa.table(cols), meta / f"{part:08d}.parquet")
    cfg = {
        "name": "kill-filter",
        "run_dir": str(tmp_path / "run"),
        "pool": {"source": "parquet", "paths": [str(pool)], "uid_col": "uid"},
        "strategies": {"median": {MEDIAN: {"log": str(log)}}},
        "ray": {"num_cpus": 2},
    }
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


SCRIPT = (
    "import sys; from pathlib import Path; from curate.config import load_config; "
    "from curate.rundir import RunDir; from curate.runner import run_pipeline; "
    "cfg = load_config(sys.argv[1]); run_pipeline(cfg, RunDir(Path(cfg.run_dir)), only=['filter'])"
)


def _killable_run(config: Path, **env: str) -> subprocess.Popen:
    full = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "RAY_AUTH_MODE": "disabled", **env}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(config)],
        env=full,
        cwd=Path(__file__).parents[2],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _kill_when(condition: Any, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError("the run ended before the kill: " + proc.stdout.read().decode())
        assert time.time() < deadline, "timed out waiting for the run to get there"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_sigkill_during_fit_and_during_apply_then_rerun(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    config = _fabricated_run(tmp_path, log)
    run, fit = tmp_path / "run", tmp_path / "run" / "fit"

    proc = _killable_run(config, CURATE_TEST_FIT_SLEEP="60")
    _kill_when(lambda: "fit" in _lines(log), proc)
    assert [p.name for p in fit.iterdir() if not p.name.startswith(".")] == [], "no fit may look complete"
    assert [p.name for p in fit.iterdir() if p.name.startswith(".")], "the killed fit left its staging dir"
    assert not (run / "decisions").exists()

    def done_parts() -> set[str]:
        try:
            shards = json.loads((run / "manifest.json").read_text())["stages"]["filter"]["shards"]
        except (OSError, KeyError, json.JSONDecodeError):
            return set()
        return {sid for sid, rec in shards.items() if rec.get("status") == "done"}

    proc = _killable_run(config, CURATE_TEST_APPLY_SLEEP="1.0")
    _kill_when(lambda: len(done_parts()) >= 1, proc)
    assert _lines(log).count("fit") == 2, "the killed fit is redone"
    assert not [p for p in fit.iterdir() if p.name.startswith(".")], "and its staging dir cleared"
    done = done_parts()
    assert 1 <= len(done) < 6, f"the kill must land mid-apply ({len(done)} of 6 parts done)"

    before = len(_lines(log))
    proc = _killable_run(config)
    out = proc.communicate(timeout=180)[0].decode()
    assert proc.returncode == 0, out
    rerun = _lines(log)[before:]
    applied = {line.split()[1] for line in rerun if line.startswith("apply")}
    assert applied == {f"{i:08d}" for i in range(6)} - done, "finished parts are not applied again"
    assert "fit" not in rerun, "the finished fit is reused"
    assert _subset(run, "median") == EXPECTED
    assert json.loads((run / "subsets" / "median.json").read_text())["funnel"][0] == {
        "step": "not downloaded",
        "removed_alone": 6,
        "removed_in_sequence": 6,
        "left": 18,
    }
