"""Shared fixtures: a fault-injecting HTTP server on loopback and small parquet pools pointing at it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.config import PipelineConfig
from tests.http_faults import FaultServer

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    yield server
    server.stop()


def uid_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def write_pool(
    path: Path, urls: list[str], texts: list[str] | None = None, uids: list[Any] | None = None
) -> Path:
    """A bring-your-own parquet pool (uid, url, text) at `path`."""
    texts = texts or [f"caption number {i}" for i in range(len(urls))]
    uids = uids or [uid_of(u + str(i)) for i, u in enumerate(urls)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": texts}), path)
    return path


def pool_config(tmp_path: Path, pool_file: Path, **download: Any) -> PipelineConfig:
    """A pipeline over a parquet pool with small, fast download settings (overridable)."""
    settings = {
        "number_sample_per_shard": 10,
        "processes": 2,
        "threads": 8,
        "timeout": 2,
        "retries": 0,
        "url_deadline": 3,
        "image_size": 32,
        **download,
    }
    return PipelineConfig.model_validate(
        {
            "name": "test",
            "run_dir": str(tmp_path / "run"),
            "pool": {"source": "parquet", "paths": [str(pool_file)], "uid_col": "uid"},
            "download": settings,
            "ray": {"num_cpus": 2},
        }
    )


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real run (download over loopback + filter), built once per session; treat as read-only."""
    from tests.small_run import build_small_run

    return build_small_run(tmp_path_factory.mktemp("small_run"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A real S3 API (moto's server) on 127.0.0.1, shared by the session; see tests/s3_server.py."""
    from tests.s3_server import S3Server

    server = S3Server().start()
    yield server
    server.stop()
