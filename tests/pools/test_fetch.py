"""Fetching DataComp metadata: everything but the network itself (no test here reaches the internet)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.pools.fetch import REPOS, fetch_metadata, flatten_parts, patterns


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """HF_ENDPOINT on a loopback port where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    return endpoint


def test_patterns() -> None:
    assert patterns("small", npz=False) == ["*.parquet"]
    assert patterns("medium", npz=True) == ["*.parquet", "*.npz"]
    assert patterns("xlarge", npz=False) == ["*/*.parquet"]
    assert patterns("xlarge", npz=True) == ["*/*.parquet", "*/*.npz"]
    assert REPOS["datacomp_1b"] == "mlfoundations/datacomp_1b"


def test_flatten_parts(tmp_path: Path) -> None:
    for part, stems in (("part_00000", ["a", "b"]), ("part_00001", ["c"])):
        (tmp_path / part).mkdir()
        for stem in stems:
            (tmp_path / part / f"{stem}.parquet").write_bytes(stem.encode())
            (tmp_path / part / f"{stem}.npz").write_bytes(b"npz")
    (tmp_path / "part_00002" / "empty").mkdir(parents=True)
    (tmp_path / "keep").mkdir()  # not a part_* folder: left alone
    assert flatten_parts(tmp_path) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.npz", "a.parquet", "b.npz", "b.parquet", "c.npz", "c.parquet", "keep"
    ]  # fmt: skip
    assert (tmp_path / "c.parquet").read_bytes() == b"c"


def test_flatten_refuses_to_overwrite(tmp_path: Path) -> None:
    for part in ("part_0", "part_1"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "same.parquet").write_bytes(part.encode())
    with pytest.raises(CurateError, match=r"part_1/same\.parquet: cannot move it to .*same\.parquet: a file"):
        flatten_parts(tmp_path)
    assert (tmp_path / "same.parquet").read_bytes() == b"part_0"


def test_unknown_scale(tmp_path: Path) -> None:
    with pytest.raises(CurateError) as err:
        fetch_metadata("tiny", tmp_path)
    assert (
        str(err.value)
        == "unknown DataComp scale 'tiny'; valid scales: small, medium, large, xlarge, datacomp_1b"
    )


def test_offline_message(tmp_path: Path, no_hub: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CurateError) as err:
        fetch_metadata("small", tmp_path / "dc")
    assert time.perf_counter() - start < 20, "no long retries when the hub is unreachable"
    msg = str(err.value)
    assert msg.startswith(
        f"cannot download DataComp small metadata (mlfoundations/datacomp_small on {no_hub}): the hub could "
        "not be reached ("
    )
    assert "refused" in msg.lower()
    assert msg.endswith(
        "Fetching needs network access to huggingface.co (or a mirror named by HF_ENDPOINT). Without it, "
        "copy the metadata parquet files from a machine that has them and point the pool at the copy, e.g. "
        "curate run FILE pool.metadata=/path/to/metadata"
    )
    assert not (tmp_path / "dc" / "metadata").exists(), "a failed fetch never leaves a metadata directory"


def test_existing_metadata_is_not_fetched_again(tmp_path: Path, no_hub: str) -> None:
    meta = tmp_path / "metadata"
    meta.mkdir()
    (meta / "a.parquet").write_bytes(b"x")
    assert fetch_metadata("small", tmp_path) == meta  # the hub is unreachable: nothing was asked of it
    with pytest.raises(CurateError, match="the hub could not be reached"):
        fetch_metadata("small", tmp_path, npz=True)  # a.npz is missing, so the npz must be fetched
    (meta / "a.npz").write_bytes(b"x")
    assert fetch_metadata("small", tmp_path, npz=True) == meta
    with pytest.raises(CurateError, match="the hub could not be reached"):
        fetch_metadata("small", tmp_path, overwrite=True)
    assert (meta / "a.parquet").exists(), "overwrite replaces the old metadata only after a full download"


def test_offline_mode_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with pytest.raises(
        CurateError, match=r"on https://huggingface.co\): HF_HUB_OFFLINE is set\. Fetching needs"
    ):
        fetch_metadata("medium", tmp_path)
