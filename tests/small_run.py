"""A small real run shared by the SQL and report tests: a 10-row parquet pool downloaded over loopback
by img2dataset, then the filter stage (two strategies); eval lines in DataComp's format and a manifest
record are added by hand, since training and evaluation are not what these tests are about."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.stages.download import DownloadStage
from curate.stages.filter import FilterStage
from tests.http_faults import FaultServer
from tests.metadata_parts import ENGLISH, uid

TEXTS = [ENGLISH, "chien brun qui court sur la plage", "", None, "dog", "a cat", ENGLISH, "two words"]
SIZES = [(300, 300), (150, 400), (199, 800), (200, 200), (1000, 50), (640, 480), (300, 300), (250, 260)]


def _pool(path: Path, server: FaultServer) -> Path:
    """10 rows: rows 0 and 6 share an image (same URL path, so the same sha256); row 9 is a 404."""
    n = 10
    urls = [f"{server.url}/img/{i}.png" for i in range(n)]
    urls[6] = f"{server.url}/img/0.png?copy"
    urls[9] = f"{server.url}/fault/404"
    table = pa.table(
        {
            "uid": [uid(i) for i in range(n)],
            "url": urls,
            "text": [*TEXTS, "a red car on a road", "a blue boat"],
            "original_width": pa.array([w for w, _ in SIZES] + [300, 300], pa.int64()),
            "original_height": pa.array([h for _, h in SIZES] + [300, 300], pa.int64()),
            "clip_b32_similarity_score": pa.array([0.1 * i for i in range(n)], pa.float32()),
        }
    )
    pq.write_table(table, path)
    return path


def build_small_run(tmp: Path) -> Path:
    server = FaultServer().start()
    try:
        cfg = PipelineConfig.model_validate(
            {
                "name": "sql-test",
                "run_dir": str(tmp / "run"),
                "pool": {
                    "source": "parquet",
                    "paths": [str(_pool(tmp / "pool.parquet", server))],
                    "uid_col": "uid",
                },
                "download": {
                    "number_sample_per_shard": 4,
                    "processes": 1,
                    "threads": 4,
                    "timeout": 2,
                    "retries": 0,
                    "url_deadline": 3,
                    "image_size": 32,
                },
                "strategies": {
                    "top": {"clip_score": {"model": "b32", "fraction": 0.5}},
                    "basic": "basic_filter",
                },
            }
        )
        rd = RunDir(Path(cfg.run_dir))
        for stage in (DownloadStage(cfg, rd), FilterStage(cfg, rd)):
            assert stage.preflight() == []
            stage.prepare()
            with stage.running():
                results = {t.shard_id: stage.run_shard(t) for t in stage.plan()}
            stage.finish(results)
    finally:
        server.stop()
    eval_dir = rd.eval / "top"
    eval_dir.mkdir(parents=True)
    lines = [
        {"key": "cifar10", "dataset": "CIFAR-10", "metrics": {"acc1": 0.25, "main_metric": 0.25}},
        {"key": "fairness/fairface", "dataset": "FairFace", "metrics": {"main_metric": None}},
    ]
    (eval_dir / "eval_results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for strategy, seed, score in (("top", 0, 0.25), ("top", 1, 0.35), ("basic", 0, 0.1), ("basic", 1, 0.2)):
        seed_dir = rd.root / "sweep" / "eval" / strategy / f"seed{seed}"  # as `curate sweep` writes them
        seed_dir.mkdir(parents=True)
        line = {"key": "cifar10", "dataset": "CIFAR-10", "metrics": {"acc1": score, "main_metric": score}}
        (seed_dir / "eval_results.jsonl").write_text(json.dumps(line) + "\n")
    (rd.root / "manifest.json").write_text(
        json.dumps(
            {
                "stages": {
                    "download": {"status": "done", "shards": {"00000000": {}}, "timings": {"seconds": 2.5}}
                }
            }
        )
    )
    return rd.root
