"""`curate evalsets generate|fetch` through the command line: output, user errors as messages (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.eval.datasets import load_wds_task, missing_reason

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/openclipart/png").is_dir(), reason="needs apt-get install openclipart-png"
)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_generate_then_fetch_skips_what_is_there(tmp_path: Path) -> None:
    code, text = _run(
        "evalsets", "generate", str(tmp_path), "--tasks", "cifar10,fairness/geode", "--per-class", "3"
    )
    assert code == 0, text
    assert f"2 evaluation sets (150 samples) written to {tmp_path}" in text and "not benchmark scores" in text
    assert load_wds_task(tmp_path, "fairness/geode").size == 120
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "curate.cli", "evalsets", "fetch", str(tmp_path), "--tasks", "cifar10"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 fetched, 1 already present" in proc.stdout


def test_fetch_offline_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "curate.cli", "evalsets", "fetch", str(tmp_path / "d"), "--tasks", "mnist"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        "cannot fetch 1 evaluation set(s) (mnist)" in proc.stderr and "HF_HUB_OFFLINE is set" in proc.stderr
    )
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "{d}", "--tasks", "cifar10,imagenet"], "unknown task key 'imagenet'"),
        (["generate", "{d}", "--tasks", "cifar10", "--openclipart-root", "{d}/none"], "has no png/ folder"),
        (["fetch", "{d}", "--tasks", "openclipart"], "openclipart is not DataComp data"),
    ],
)
def test_user_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, text = _run("evalsets", *[a.format(d=tmp_path) for a in args])
    assert code == 2 and message in text and "Traceback" not in text
    assert missing_reason(tmp_path, "cifar10") is not None
