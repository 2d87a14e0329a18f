"""A real training on CPU (open_clip's own loop, the tiny model), killed between checkpoints and resumed."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import open_clip
import pytest
import torch

from curate.clipmodels import BUILTIN_CONFIGS
from curate.errors import CurateError
from curate.training.args import TrainSettings
from curate.training.info import checkpoint_epoch
from curate.training.job import train
from curate.training.scales import Scale
from tests.training.shards import write_resharded

# an unofficial scale small enough for a test: 3 steps of 8 samples per epoch, 2 epochs
SCALE = Scale("test", "curate-tiny-vit64", 8, 1e-3, 1, 48, log_every_n_steps=1)
SETTINGS = TrainSettings(SCALE, num_checkpoints=2, gpus=0, workers=0)

CHILD = """
import sys
from pathlib import Path
from curate.training.job import train
from tests.training.test_job import SETTINGS
train(sys.argv[1], Path(sys.argv[2]), "exp", SETTINGS, log=lambda m: print(m, flush=True))
"""


def _start_and_kill_after_first_checkpoint(data: Path, logs: Path) -> None:
    """Run a training in its own process group and SIGKILL all of it once epoch 1's checkpoint exists."""
    latest = logs / "exp" / "checkpoints" / "epoch_latest.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(logs)], start_new_session=True, cwd=Path.cwd()
    )
    deadline = time.time() + 240
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the first epoch never finished"


def test_killed_training_resumes_and_leaves_datacomp_records(tmp_path: Path) -> None:
    data = write_resharded(tmp_path / "resharded" / "s", 40, per_shard=8)
    logs = tmp_path / "train"
    exp = logs / "exp"
    _start_and_kill_after_first_checkpoint(data, logs)
    latest = exp / "checkpoints" / "epoch_latest.pt"
    assert checkpoint_epoch(latest) == 1 and not (exp / "checkpoints" / "epoch_2.pt").exists()
    assert json.loads((exp / "info.json").read_text())["status"] == "running"
    assert not (exp / "info.pkl").exists()

    lines: list[str] = []
    info = train(str(data), logs, "exp", SETTINGS, log=lines.append)
    text = "\n".join(lines)
    assert "UNOFFICIAL scale 'test'" in text
    assert "resuming at epoch 1" in text and "=> resuming checkpoint" in text
    assert "Start epoch 0" not in text and "Start epoch 1" in text
    assert "epoch 1 100% (24/24 samples)" in text
    assert checkpoint_epoch(latest) == 2 and (exp / "checkpoints" / "epoch_2.pt").exists()

    assert info == json.loads((exp / "info.json").read_text())
    assert info["status"] == "done" and info["official"] is False and info["arch"] == "curate-tiny-vit64"
    assert info["train_data"] == f"{data}/{{00000000..00000004}}.tar"
    assert info["argv"][info["argv"].index("--batch-size") + 1] == "8"
    assert info["argv"][-2:] == ["--device", "cpu"] and "--dataset-resampled" in info["argv"]
    assert info["checkpoint"] == str(latest) and info["world_size"] == 1
    assert info["open_clip_version"] == open_clip.__version__
    # the killed launch left no record: its epoch counts with this launch's samples per epoch
    assert [(run["from_epoch"], run["to_epoch"]) for run in info["launches"]] == [(1, 2)]
    assert info["samples_seen"] == 48 and info["schedule"]["samples_per_epoch"] == 24
    assert info["wall_seconds"] > 0

    with open(exp / "info.pkl", "rb") as fh:
        artifacts = pickle.load(fh)
    assert artifacts == {
        "scale": "test",
        "checkpoint": latest,
        "scale_config": {
            "batch_size": 8,
            "learning_rate": 1e-3,
            "train_num_samples": 48,
            "warmup": 1,
            "model": "curate-tiny-vit64",
            "beta2": None,
        },
        "data_dir": data,
    }

    open_clip.add_model_config(BUILTIN_CONFIGS)
    model, _, _ = open_clip.create_model_and_transforms("curate-tiny-vit64", pretrained=str(latest))
    saved = torch.load(latest, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(model.state_dict()["visual.conv1.weight"], saved["visual.conv1.weight"])
    assert "out.log" in os.listdir(exp) and "Start epoch 1" in (exp / "out.log").read_text()

    lines.clear()
    assert train(str(data), logs, "exp", SETTINGS, log=lines.append) == info  # done: not run again
    assert lines == [f"already trained: {latest}"]

    if not torch.cuda.is_available():
        with pytest.raises(CurateError, match="training on 1 GPU"):
            train(str(data), logs, "gpu", TrainSettings(SCALE, gpus=1))
    other = TrainSettings(SCALE, num_checkpoints=2, gpus=0, workers=0, seed=1)
    with pytest.raises(CurateError, match="holds a training with other settings") as exc:
        train(str(data), logs, "exp", other)
    assert exc.value.problems == ["seed: 0 -> 1"]
