"""Thumbnails for the report, read from the run's shards and embedded as data: URIs (the report is one
self-contained file that can be mailed or archived)."""

from __future__ import annotations

import base64
import io
import tarfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from curate.report.collect import Example

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def thumbnail(data: bytes, side: int = 128) -> str | None:
    """A JPEG data: URI of the image fitted into side x side; None if the bytes do not decode."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (side, side))
            img = img.convert("RGB")
            img.thumbnail((side, side))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def attach(shards: Path, examples: Iterable[Example]) -> int:
    """Fill each example's `thumb` from shards/<part>.tar (member <key>.<image ext>); returns how many
    were found. Each tar is opened once, however many examples it serves."""
    wanted: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        wanted[ex.part].append(ex)
    found = 0
    for part, exs in wanted.items():
        tar_path = shards / f"{part}.tar"
        if not tar_path.exists():
            continue
        by_key = {ex.key: ex for ex in exs}
        with tarfile.open(tar_path) as tar:
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if key in by_key and ext.lower() in IMAGE_EXTS and member.isfile():
                    f = tar.extractfile(member)
                    uri = thumbnail(f.read()) if f else None
                    for ex in exs:
                        if ex.key == key:
                            ex.thumb = uri
                            found += uri is not None
    return found
