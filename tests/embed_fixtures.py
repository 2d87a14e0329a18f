"""Small real inputs for the embed tests: openclipart images as JPEG webdataset shards, the tiny model."""

from __future__ import annotations

import io
import tarfile
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.clipmodels import ClipModel, load_clip
from curate.config import EmbedModelConfig

OPENCLIPART = Path("/usr/share/openclipart/png")
TINY = EmbedModelConfig(name="tiny", arch="curate-tiny-vit64")


@cache
def tiny_model() -> ClipModel:
    return load_clip(TINY, "cpu")


def clipart_jpegs(n: int, size: int = 160) -> list[bytes]:
    """n real clip-art images (Debian's openclipart) re-encoded as JPEG, as a download would leave them."""
    paths = sorted(OPENCLIPART.rglob("*.png"))[::50][:n]
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    assert len(out) == n, "openclipart-png is not installed (apt-get install openclipart-png)"
    return out


def write_shard(
    directory: Path, images: dict[str, bytes], rows: list[dict], shard: str = "00000000"
) -> tuple[Path, Path]:
    """A download-like shard: `<shard>.tar` with key.jpg/.txt members and a metadata part with `rows`."""
    directory.mkdir(parents=True, exist_ok=True)
    tar, meta = directory / f"{shard}.tar", directory / f"{shard}.parquet"
    with tarfile.open(tar, "w") as tf:
        for key, data in images.items():
            for name, blob in ((f"{key}.jpg", data), (f"{key}.txt", b"caption")):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    pq.write_table(pa.Table.from_pylist(rows), meta)
    return tar, meta
