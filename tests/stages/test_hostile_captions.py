"""Hostile captions through the real download, embed and filter: empty, null, 1 MB long and control
characters each end as a row with a reason, never a crash; bytes that are not UTF-8 stop the run before
any work with the file, the column and what is expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import PipelineConfig
from curate.rundir import RunDir
from curate.stages.download import DownloadStage
from curate.stages.embed import embed_shard
from curate.stages.filter import FilterStage
from tests.conftest import pool_config, uid_of
from tests.embed_fixtures import tiny_model
from tests.http_faults import FaultServer

TEXTS = ["", None, "word " * 200_000, "ctrl\x00\x07\x1b[31m red \u202e text", "a normal english caption here"]


def test_hostile_captions_are_rows_with_reasons(tmp_path: Path, fault_server: FaultServer) -> None:
    urls = [f"{fault_server.url}/img/{i}.png" for i in range(len(TEXTS))]
    uids = [uid_of(str(i)) for i in range(len(TEXTS))]
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": TEXTS}), tmp_path / "pool.parquet")
    data = pool_config(tmp_path, tmp_path / "pool.parquet", number_sample_per_shard=20).model_dump()
    data["embed"] = {"models": [{"name": "tiny", "arch": "curate-tiny-vit64"}]}
    data["strategies"] = {"basic": "basic_filter", "words": "text_based"}
    cfg = PipelineConfig.model_validate(data)
    run = RunDir(Path(cfg.run_dir))

    download = DownloadStage(cfg, run)
    assert download.preflight() == []
    download.prepare()
    (task,) = download.plan()
    assert download.run_shard(task)["successes"] == len(TEXTS)
    meta = run.metadata / "00000000.parquet"
    stats = embed_shard(run.shards / "00000000.tar", meta, run.metadata / "00000000.npz", [tiny_model()])
    assert stats["embedded"] == len(TEXTS)
    scores = pq.read_table(meta).column("clip_tiny_similarity_score").to_numpy()
    assert np.isfinite(scores).all()  # a null caption is embedded as the empty string

    filtering = FilterStage(cfg, run)
    assert filtering.preflight() == []
    filtering.prepare()
    with filtering.running():
        results = {t.shard_id: filtering.run_shard(t) for t in filtering.plan()}
    filtering.finish(results)
    reasons = pq.read_table(run.decisions / "basic" / "00000000.parquet").column("reason").to_pylist()
    assert reasons[0] == "basic_filter: fewer than 3 words" and reasons[1] == "basic_filter: no caption"
    assert all(reasons)  # the 32 px test images are all under 200 px: every row says why it was dropped
    words = pq.read_table(run.decisions / "words" / "00000000.parquet").column("reason").to_pylist()
    assert len(words) == len(TEXTS) and all(words[:2])


def test_captions_that_are_not_utf8_stop_the_run_before_work(tmp_path: Path) -> None:
    text = pa.array([b"fine text", b"\xff\xfe not utf-8"], pa.binary())
    urls = ["http://127.0.0.1:9/a.png", "http://127.0.0.1:9/b.png"]
    pq.write_table(
        pa.table({"uid": [uid_of("a"), uid_of("b")], "url": urls, "text": text}), tmp_path / "p.parquet"
    )
    cfg = pool_config(tmp_path, tmp_path / "p.parquet")
    problems = DownloadStage(cfg, RunDir(Path(cfg.run_dir))).preflight()
    assert problems == [f"{tmp_path / 'p.parquet'}: column 'text' has type binary; expected a string"]
    assert not Path(cfg.run_dir).exists()
