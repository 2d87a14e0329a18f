"""Launching: commands, progress lines from open_clip's log, the folder lock, failures with their output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from curate.errors import CurateError
from curate.training.launch import (
    TrainingFailed,
    check_resumable,
    command,
    exclusive,
    multinode_command,
    progress_line,
    run,
)

# lines as open_clip_train 3.3.0 logs them (copied from a real out.log)
STEP = (
    "2026-11-21,15:35:59 | INFO | Train Epoch: 0 [ 384/1024 (38%)] Data (t): 0.013 Batch (t): 18.345, "
    "8.31982/s, 8.31982/s/gpu LR: 0.000600 Logit Scale: 14.278 Contrastive_loss: 5.0864 (5.1003) "
    "Loss: 5.0864 (5.1003)"
)


def test_progress_lines() -> None:
    assert progress_line(STEP) == "epoch 0  38% (384/1024 samples), 8.3 samples/s, loss 5.0864, lr 0.000600"
    assert progress_line("2026-11-21,15:35:01 | INFO | Start epoch 3") == "Start epoch 3"
    resumed = "2026-11-21,15:35:01 | INFO | => resuming checkpoint 'x/epoch_latest.pt' (epoch 1)"
    assert progress_line(resumed) == "=> resuming checkpoint 'x/epoch_latest.pt' (epoch 1)"
    assert progress_line("2026-11-21,15:35:01 | INFO |   lr: 0.0005") is None
    assert progress_line("  (visual): VisionTransformer(") is None


def test_commands() -> None:
    assert command(["--a", "1"], 1) == [sys.executable, "-m", "curate.training.entry", "--a", "1"]
    assert command(["--a"], 0)[-2:] == ["curate.training.entry", "--a"]
    torchrun = command(["--a"], 4)
    assert torchrun[:5] == [sys.executable, "-m", "curate.training.entry", "--torchrun", "--standalone"]
    assert torchrun[5:] == ["--nproc_per_node=4", "-m", "--", "curate.training.entry", "--a"]
    multi = multinode_command(["--logs", "/x"], 8, 4)
    assert multi[:3] == ["torchrun", "--nnodes=4", "--nproc_per_node=8"]
    # torchrun's parser takes the module and its arguments as they are (open_clip's --logs included)
    from torch.distributed.run import parse_args

    parsed = parse_args(multi[1:])
    assert parsed.module and parsed.training_script == "curate.training.entry"
    assert parsed.training_script_args == ["--logs", "/x"] and parsed.nnodes == "4"


def test_one_training_per_folder_at_a_time(tmp_path: Path) -> None:
    busy = pytest.raises(CurateError, match="another training is writing into this folder")
    with exclusive(tmp_path / "exp"), busy, exclusive(tmp_path / "exp"):
        pass
    with exclusive(tmp_path / "exp"):  # released
        pass


def test_single_process_checkpoint_cannot_resume_on_several(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    torch.save({"epoch": 1, "state_dict": {"logit_scale": torch.ones(1)}}, single)
    torch.save({"epoch": 1, "state_dict": {"module.logit_scale": torch.ones(1)}}, ddp)
    check_resumable(single, 1)
    check_resumable(ddp, 1)  # open_clip strips 'module.' itself
    check_resumable(ddp, 8)
    check_resumable(tmp_path / "none.pt", 8)
    with pytest.raises(CurateError, match="written by a single-process training"):
        check_resumable(single, 2)


def test_a_failure_shows_the_last_lines_and_keeps_the_whole_output(tmp_path: Path) -> None:
    log: list[str] = []
    script = "import sys\nfor i in range(50): print('line', i)\nprint('Start epoch 0')\nsys.exit('boom')"
    with pytest.raises(TrainingFailed, match="exit code 1") as exc:
        run([sys.executable, "-c", script], tmp_path / "console.log", log.append, tail=5)
    assert exc.value.problems == ["line 46", "line 47", "line 48", "line 49", "Start epoch 0", "boom"][-5:]
    assert log == ["Start epoch 0"]
    text = (tmp_path / "console.log").read_text()
    assert "line 0\n" in text and "boom" in text
    assert str(tmp_path / "console.log") in exc.value.message
    run([sys.executable, "-c", "print('ok')"], tmp_path / "console.log", log.append)
    assert (tmp_path / "console.log").read_text().count("=====") == 2  # appended, one header per launch
