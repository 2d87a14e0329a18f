"""`fetch_evalsets` offline: the message, the hub probe, and skipping what is complete.

The download itself (huggingface_hub / datasets against huggingface.co) cannot run here: there is no
network, and the hub is not something a loopback server can stand in for honestly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.eval.datasets import task_folder
from curate.eval.fetch import fetch_evalsets, hub_unreachable
from curate.eval.generate import generate_evalsets

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/openclipart/png").is_dir(), reason="needs apt-get install openclipart-png"
)


@pytest.fixture(scope="module")
def present(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("present")
    generate_evalsets(out, ["cifar10", "misc/winogavil"], per_class=1)
    return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_complete_sets_are_skipped_without_the_network(
    present: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch_evalsets(present, "cifar10,misc/winogavil") == {
        "cifar10": "present",
        "misc/winogavil": "present",
    }


def test_offline_stops_before_any_download(
    present: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CurateError) as info:
        fetch_evalsets(present, ["cifar10", "mnist", "retrieval/flickr_1k_test_image_text_retrieval"])
    text = str(info.value)
    assert "cannot fetch 2 evaluation set(s) (mnist, retrieval/flickr_1k_test_image_text_retrieval)" in text
    assert "HF_HUB_OFFLINE is set. Nothing was downloaded" in text and "curate evalsets generate" in text
    assert not task_folder(present, "mnist").exists()
    with pytest.raises(
        CurateError, match=r"cannot fetch 40 evaluation set\(s\) \(vtab/caltech101, cifar10, "
    ):
        fetch_evalsets(tmp_path / "empty", "all")
    assert not (tmp_path / "empty").exists(), "nothing is created when nothing can be fetched"


def test_an_incomplete_set_is_fetched_again(
    present: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(task_folder(present, "cifar10"), task_folder(tmp_path, "cifar10"))
    (task_folder(tmp_path, "cifar10") / "test" / "0.tar").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CurateError, match=r"cannot fetch 1 evaluation set\(s\) \(cifar10\)"):
        fetch_evalsets(tmp_path, "cifar10")


def test_hub_probe_uses_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    port = _closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    reason = hub_unreachable(timeout=2)
    assert reason is not None and reason.startswith(
        f"127.0.0.1:{port} is unreachable (ConnectionRefusedError"
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}/")
        assert hub_unreachable(timeout=2) is None
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    assert hub_unreachable() == "HF_DATASETS_OFFLINE is set"


def test_unreachable_endpoint_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(
        CurateError, match=r"the Hugging Face hub \(http://127.0.0.1:\d+\) cannot be used: 127"
    ):
        fetch_evalsets(tmp_path, "vtab/svhn")


def test_extra_and_unknown_tasks(tmp_path: Path) -> None:
    with pytest.raises(
        CurateError, match="openclipart is not DataComp data and cannot be fetched; write it with"
    ):
        fetch_evalsets(tmp_path, "cifar10,openclipart")
    with pytest.raises(CurateError, match="unknown task key 'cifar11'"):
        fetch_evalsets(tmp_path, "cifar11")
