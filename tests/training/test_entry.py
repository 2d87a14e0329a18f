"""The training process's fix for webdataset's end-of-shard marker, on a real shard and real open_clip."""

from __future__ import annotations

from pathlib import Path

import open_clip_train.data as ocd
import pytest

from curate.training.entry import patch_webdataset_eof
from tests.training.shards import write_resharded


def _samples(shard: Path) -> list[dict]:
    return list(ocd.tarfile_to_samples_nothrow([{"url": str(shard)}, {"url": str(shard)}]))


def test_open_clip_reads_every_sample_once_the_marker_is_dropped(tmp_path: Path) -> None:
    shard = write_resharded(tmp_path, 5, per_shard=5) / "00000000.tar"
    original = ocd.tarfile_to_samples_nothrow
    try:
        if patch_webdataset_eof():  # the installed webdataset emits markers: unpatched open_clip fails
            ocd.tarfile_to_samples_nothrow = original
            with pytest.raises(KeyError, match="fname"):
                _samples(shard)
            assert patch_webdataset_eof()
        samples = _samples(shard)
    finally:
        ocd.tarfile_to_samples_nothrow = original
    assert len(samples) == 10
    members = {tuple(sorted(k for k in s if not k.startswith("__"))) for s in samples}
    assert members == {("jpg", "json", "txt")}
    assert [s["__key__"] for s in samples[:5]] == [f"00000000{i:04d}" for i in range(5)]
