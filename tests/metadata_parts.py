"""Hand-built DataComp metadata parts for filter tests: the real schema, rows chosen by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.filtering.base import Batch

SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("original_width", pa.int64()),
        ("original_height", pa.int64()),
        ("clip_b32_similarity_score", pa.float32()),
        ("clip_l14_similarity_score", pa.float32()),
        ("face_bboxes", pa.list_(pa.list_(pa.float32()))),
        ("sha256", pa.string()),
    ]
)
ENGLISH = "a brown dog running on the beach"


def uid(i: int) -> str:
    """A distinct 32-hex uid whose sort order follows i."""
    return f"{i:032x}"


def rows(n: int, **columns: Any) -> dict[str, list]:
    """n valid rows (English caption, 300x300, scores 0.3) with some columns replaced."""
    base: dict[str, list] = {
        "uid": [uid(i) for i in range(n)],
        "url": [f"http://example.com/{i}.jpg" for i in range(n)],
        "text": [ENGLISH] * n,
        "original_width": [300] * n,
        "original_height": [300] * n,
        "clip_b32_similarity_score": [0.3] * n,
        "clip_l14_similarity_score": [0.3] * n,
        "face_bboxes": [[] for _ in range(n)],
        "sha256": ["0" * 64] * n,
    }
    base.update(columns)
    return base


def table(data: dict[str, list]) -> pa.Table:
    fields = [SCHEMA.field(name) if name in SCHEMA.names else None for name in data]
    arrays = [
        pa.array(v, f.type) if f is not None else pa.array(v)
        for v, f in zip(data.values(), fields, strict=True)
    ]
    return pa.Table.from_arrays(arrays, names=list(data))


def batch(data: dict[str, list], embeddings: dict[str, np.ndarray] | None = None) -> Batch:
    return Batch(table(data), embeddings or {})


def write_part(
    directory: Path, stem: str, data: dict[str, list], npz: dict[str, np.ndarray] | None = None
) -> Path:
    """`<stem>.parquet` (+ `<stem>.npz`) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(data), directory / f"{stem}.parquet")
    if npz is not None:
        np.savez(directory / f"{stem}.npz", **npz)
    return directory / f"{stem}.parquet"
