"""The sample writer that does not let img2dataset swallow a write error (a full disk)."""

from __future__ import annotations

import errno
import gc
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate.stages.download import SKIP_SCHEME, _run_img2dataset
from tests.conftest import pool_config, write_pool
from tests.http_faults import FaultServer


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("full", ["tar", "parquet"])
def test_a_failed_sample_write_fails_the_shard_quietly(
    full: str, tmp_path: Path, fault_server: FaultServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """img2dataset catches a failed sample write, prints a traceback and drops the row; with our writer
    the shard raises the real error (ENOSPC: the shard's tar or parquet is /dev/full) and prints
    nothing, now or when its half-written files are collected. The parquet case has 250 rows (refused
    URLs, no fetch), so that img2dataset flushes it mid-shard, as with DataComp's 10,000-row shards."""
    if full == "tar":
        urls = [f"{fault_server.url}/img/{i}.png" for i in range(12)]
    else:
        urls = [f"{SKIP_SCHEME}{i}" for i in range(250)]
    dl = pool_config(tmp_path, write_pool(tmp_path / "pool.parquet", urls), image_size=256).download
    rows = pa.table({"uid": [f"{i:032x}" for i in range(len(urls))], "text": ["a caption"] * len(urls)})
    out = tmp_path / "staging"
    out.mkdir()
    (out / f"00000000.{full}").symlink_to("/dev/full")  # every write to it: No space left on device
    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        try:
            _run_img2dataset(rows, urls, False, 0, dl, out)
        except OSError as exc:  # not kept: img2dataset's writers and pool are freed right here
            code = exc.errno
        else:
            pytest.fail("a shard whose writes fail must fail")
        gc.collect()  # a tar or parquet writer left half-closed would complain here
    finally:
        sys.unraisablehook = hook
    assert code == errno.ENOSPC
    assert not unraisable
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out and "failed to download" not in printed.out
