"""Small img2dataset-layout shards for reshard tests: NNNNNNNN.tar (+ .parquet, _stats.json)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import uid_of


def uid(i: int) -> str:
    return uid_of(f"sample {i}")


def sample_members(i: int, u: str) -> dict[str, bytes]:
    """What img2dataset writes per sample (webdataset's TarWriter sorts members: jpg, json, txt)."""
    image = bytes([i % 256]) * (100 + 37 * i) + os.urandom(8)
    meta = {"uid": u, "caption": f"caption {i}", "key": "", "status": "success"}
    return {"jpg": image, "json": json.dumps(meta).encode(), "txt": f"caption {i}".encode()}


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_shards(
    root: Path,
    per_shard: list[list[int]],
    *,
    parquet: bool = True,
    failed: int = 1,
    uids: dict[int, str] | None = None,
) -> dict[int, dict[str, bytes]]:
    """Shards holding samples i (uid(i) unless `uids` says otherwise); `failed` extra parquet rows per
    shard have status failed_to_download. Returns every sample's members by i."""
    root.mkdir(parents=True, exist_ok=True)
    members: dict[int, dict[str, bytes]] = {}
    for shard, samples in enumerate(per_shard):
        rows = []
        with tarfile.open(root / f"{shard:08d}.tar", "w") as tf:
            for row, i in enumerate(samples):
                key = f"{shard:08d}{row:04d}"
                u = (uids or {}).get(i, uid(i))
                members[i] = sample_members(i, u)
                for ext, data in members[i].items():
                    add(tf, f"{key}.{ext}", data)
                rows.append({"uid": u, "key": key, "status": "success", "caption": f"caption {i}"})
        for k in range(failed):
            key = f"{shard:08d}{len(samples) + k:04d}"
            rows.append({"uid": uid_of(f"failed {shard} {k}"), "key": key, "status": "failed_to_download"})
        if parquet:
            pq.write_table(pa.Table.from_pylist(rows), root / f"{shard:08d}.parquet")
        stats = {"count": len(rows), "successes": len(samples)}
        (root / f"{shard:08d}_stats.json").write_text(json.dumps(stats))
    return members


def read_tar(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]
