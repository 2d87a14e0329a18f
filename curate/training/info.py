"""What a training leaves beside its checkpoints: `info.json` (curate) and `info.pkl` (DataComp).

`info.pkl` is DataComp's own record, `{scale, checkpoint, scale_config, data_dir}` with pathlib paths,
so DataComp's `evaluate.py --train_output_dir <exp>` reads our output unchanged. `info.json` says
everything else a later step or a reader needs: whether the scale is official (scores and submissions
read this flag), the settings, the exact argv given to open_clip, samples seen, wall time.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

from curate.rundir import atomic_write_bytes, atomic_write_json
from curate.training.scales import Scale

INFO_JSON = "info.json"
INFO_PKL = "info.pkl"
LATEST = "epoch_latest.pt"


def checkpoint_path(exp_dir: Path) -> Path:
    return exp_dir / "checkpoints" / LATEST


def read_info(exp_dir: Path) -> dict[str, Any] | None:
    path = exp_dir / INFO_JSON
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged record is rewritten by the next launch


def write_info(exp_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_json(exp_dir / INFO_JSON, info)


def _data_dir_value(data_dir: str) -> Any:
    """DataComp stores `--data_dir` parsed by path_or_cloudpath: a Path for local data."""
    return data_dir if re.match(r"^\w+://", data_dir) else Path(data_dir)


def write_info_pkl(exp_dir: Path, scale: Scale, data_dir: str) -> Path:
    """DataComp's `save_training_artifacts`: `<exp>/info.pkl` next to `checkpoints/`."""
    artifacts = {
        "scale": scale.name,
        "checkpoint": checkpoint_path(exp_dir),
        "scale_config": scale.datacomp_config(),
        "data_dir": _data_dir_value(data_dir),
    }
    path = exp_dir / INFO_PKL
    atomic_write_bytes(path, pickle.dumps(artifacts))
    return path


def checkpoint_epoch(path: Path) -> int:
    """Completed epochs recorded in an open_clip training checkpoint (0 when there is none)."""
    if not path.exists():
        return 0
    import torch

    state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(state.get("epoch", 0))
