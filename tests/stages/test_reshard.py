"""The reshard stage on a run directory: every strategy's subset into resharded/<strategy>/, unique task
ids, reruns when the plan changes, and one run through run_pipeline (Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.runner import build_stages, run_pipeline
from curate.stages.reshard import ReshardStage
from curate.uids import write_subset
from tests.conftest import write_pool
from tests.shard_fixtures import read_tar, uid, write_shards

STRATEGIES = {"evens": "basic_filter", "firsts": "basic_filter"}


def _config(tmp_path: Path, **extra: Any) -> PipelineConfig:
    pool = write_pool(tmp_path / "pool.parquet", ["http://127.0.0.1:9/a.jpg"])
    return PipelineConfig.model_validate(
        {
            "name": "reshard-test",
            "run_dir": str(tmp_path / "run"),
            "pool": {"source": "parquet", "paths": [str(pool)], "uid_col": "uid"},
            "strategies": STRATEGIES,
            **extra,
        }
    )


def _run_dir(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    write_shards(run.shards, [list(range(0, 10)), list(range(10, 16))])
    write_subset(run.subsets / "evens.npy", [uid(i) for i in range(0, 16, 2)] + [uid(99)])
    write_subset(run.subsets / "firsts.npy", [uid(0), uid(0), uid(1), uid(10)])
    return run


def test_the_stage_follows_the_config() -> None:
    def names(**extra: Any) -> list[str]:
        cfg = PipelineConfig.model_validate(
            {"name": "x", "pool": {"source": "parquet", "paths": ["p.parquet"]}, **extra}
        )
        return [s.name for s in build_stages(cfg, RunDir(Path("r")))]

    assert "reshard" not in names(strategies=STRATEGIES)
    assert names(strategies=STRATEGIES, reshard={"shard_size": 5})[-1] == "reshard"
    assert names(strategies=STRATEGIES, train={"scale": "tiny"})[2] == "reshard"
    assert "reshard" not in names(reshard={})  # no strategies, no subsets


def test_every_strategy_is_resharded_with_unique_task_ids(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    stage = ReshardStage(_config(tmp_path, reshard={"shard_size": 3}), run)
    stage.prepare()
    tasks = stage.plan()
    ids = [t.shard_id for t in tasks]
    assert ids == ["evens/00000000", "evens/00000001", "evens/00000002", "firsts/00000000", "firsts/00000001"]
    assert [t.items for t in tasks] == [3, 3, 2, 3, 1]
    (run.resharded / "evens").mkdir(parents=True)
    (run.resharded / "evens" / ".00000001.tar.x1y2.tmp").write_bytes(b"left by a killed run")
    with stage.running():
        results = {t.shard_id: stage.run_shard(t) for t in tasks}
    assert not list(run.resharded.glob("*/.*"))
    assert all(p.exists() for sid in ids for p in stage.shard_outputs(sid))
    counts = stage.finish(results)
    assert (counts["evens written"], counts["evens missing"]) == (8, 1)
    assert (counts["firsts written"], counts["firsts missing"]) == (4, 0)
    firsts = run.resharded / "firsts"
    names = [n for k in range(2) for n, _ in read_tar(firsts / f"{k:08d}.tar")]
    assert [n.split(".")[0] for n in names[::3]] == [
        f"{uid(0)}-0",
        f"{uid(0)}-1",
        f"{uid(1)}-0",
        f"{uid(10)}-0",
    ]
    meta = json.loads((firsts / "meta.json").read_text())
    assert meta["strategy"] == "firsts" and meta["output_shard_count"] == 2
    assert (firsts / "sample_ids.npy").read_bytes() == (run.subsets / "firsts.npy").read_bytes()
    assert (
        run.resharded / "evens" / "missing_uids.txt"
    ).read_text() == f"{uid(99)}\tnot in the input shards\n"
    # the workers get the stage without the driver's plan
    assert ReshardStage.__getstate__(stage)["_plans"] == {}
    # a new input shard changes nothing for `firsts`, and the last shard of `evens`
    write_shards(run.shards, [list(range(0, 10)), list(range(10, 16)), [16, 18]])
    write_subset(run.subsets / "evens.npy", [uid(i) for i in range(0, 19, 2)] + [uid(99)])
    stage.prepare()
    records = {sid: {"status": "done", "stats": stats} for sid, stats in results.items()}
    rerun = [sid for sid, rec in records.items() if stage.needs_rerun(rec)]
    assert rerun == ["evens/00000002"]


def test_through_run_pipeline(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    cfg = _config(tmp_path, reshard={"shard_size": 4}, ray={"num_cpus": 2})
    manifest = run_pipeline(cfg, run, only=["reshard"])
    record = manifest.data["stages"]["reshard"]
    assert record["status"] == "done"
    assert sorted(record["shards"]) == ["evens/00000000", "evens/00000001", "firsts/00000000"]
    assert record["counts"]["evens written"] == 8 and record["counts"]["firsts written"] == 4
    tars = sorted(p.relative_to(run.resharded).as_posix() for p in run.resharded.rglob("*.tar"))
    assert tars == ["evens/00000000.tar", "evens/00000001.tar", "firsts/00000000.tar"]

    # killed in finish() (every shard written, the stage not done): its temp file one level down goes
    stale = run.resharded / "evens" / ".sample_ids.npy.k1ll3d.tmp"
    stale.write_bytes(b"half a copy")
    record["status"] = "running"
    manifest.save()
    again = run_pipeline(cfg, run, only=["reshard"]).data["stages"]["reshard"]
    assert not stale.exists() and again["status"] == "done" and again["counts"]["evens written"] == 8
