"""Small resharded-layout training data: NNNNNNNN.tar (jpg, json, txt) + NNNNNNNN_stats.json + meta.json."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["red", "green", "blue", "yellow", "cat", "dog", "car", "tree", "house", "boat", "bird", "flower"]


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_resharded(root: Path, samples: int, per_shard: int = 16, size: int = 48, seed: int = 0) -> Path:
    """Real JPEG image-caption pairs in the layout of DataComp's resharder (and curate's)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    shards = 0
    for start in range(0, samples, per_shard):
        with tarfile.open(root / f"{shards:08d}.tar", "w") as tf:
            for i in range(start, min(samples, start + per_shard)):
                colour = rng.integers(0, 256, 3)
                pixels = np.clip(rng.normal(0, 25, (size, size, 3)) + colour, 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, "JPEG", quality=90)
                caption = " ".join(rng.choice(WORDS, 3))
                key = f"{shards:08d}{i - start:04d}"
                _add(tf, f"{key}.jpg", buf.getvalue())
                _add(tf, f"{key}.json", json.dumps({"uid": f"{i:032x}", "caption": caption}).encode())
                _add(tf, f"{key}.txt", caption.encode())
        (root / f"{shards:08d}_stats.json").write_text(json.dumps({"count": min(per_shard, samples - start)}))
        shards += 1
    meta = {"output_shard_count": shards, "output_shard_format": "{:08d}.tar"}
    (root / "meta.json").write_text(json.dumps(meta))
    return root
