"""One training, start to finish: data pattern, argv, launch (or resume), and the records it leaves.

A training lives in `<logs>/<name>/` (DataComp: `<output_dir>/<exp_name>/`): open_clip's out.log,
params.txt and checkpoints/, plus curate's console.log, info.json and DataComp's info.pkl. Rerunning
the same training resumes from checkpoints/epoch_latest.pt (open_clip's `--resume latest`); a finished
one (info.pkl present, same settings) is not run again. A folder holding a training with other
settings is refused rather than resumed into a mix of two recipes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.rundir import now_iso
from curate.training import info as records
from curate.training.args import TrainSettings, build_argv
from curate.training.data import train_data_pattern
from curate.training.launch import Log, check_resumable, command, exclusive, run
from curate.training.scales import require_registered

SAMPLES_SEEN_HOW = (
    "sum over launches of (epochs completed in the launch) x samples per epoch, where open_clip 3.3.0 "
    "rounds an epoch up to whole global batches and then to a multiple of the workers per rank: "
    "ceil(ceil((train_num_samples // num_checkpoints) / (per_gpu_batch * world_size)) / max(1, workers))"
    " * max(1, workers) * per_gpu_batch * world_size; epochs trained outside curate (no launch record) "
    "count with the last launch's samples per epoch"
)


def _samples_seen(settings: TrainSettings, launches: list[dict[str, Any]]) -> int:
    recorded = sum(launch["to_epoch"] - launch["from_epoch"] for launch in launches)
    unrecorded = max(0, settings.num_checkpoints - recorded)
    per_epoch = settings.schedule()["samples_per_epoch"]
    return sum(launch["samples"] for launch in launches) + unrecorded * per_epoch


def _recipe(settings: TrainSettings, pattern: str, weights: str | None) -> dict[str, Any]:
    """What must not change between a training and its resumption (world size and workers may)."""
    return {
        "scale": settings.scale.as_dict(),
        "num_checkpoints": settings.num_checkpoints,
        "precision": settings.effective_precision,
        "seed": settings.seed,
        "accum_freq": settings.accum_freq,
        "grad_clip_norm": settings.grad_clip_norm,
        "train_data": pattern,
        "data_weights": weights,
    }


def unofficial_note(settings: TrainSettings) -> str | None:
    scale = settings.scale
    if scale.official:
        return None
    return (
        f"UNOFFICIAL scale '{scale.name}' ({scale.model}, global batch {scale.batch_size}, "
        f"{scale.train_num_samples:,} samples): not a DataComp scale, results are not comparable "
        "with DataComp's"
    )


def open_clip_version() -> str:
    from importlib.metadata import version

    return version("open_clip_torch")


def _check_gpus(gpus: int) -> None:
    """open_clip falls back to CPU when CUDA is missing, and its DDP cannot run on CPU: say so first."""
    if gpus == 0:
        return
    import torch

    visible = torch.cuda.device_count()
    if visible < gpus:
        seen = f"only {visible} GPU(s) are visible" if visible else "no GPU is visible"
        raise CurateError(f"training on {gpus} GPU(s), but {seen} here; use 0 GPUs to train on CPU")


def train(
    data_dir: str,
    logs: Path,
    name: str,
    settings: TrainSettings,
    *,
    data_weights: str | None = None,
    log: Log = print,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train (or resume, or skip when done) one model; returns the final info.json contents."""
    settings.check()
    require_registered(settings.scale)
    if settings.nodes > 1:
        raise CurateError(
            "multi-node training is launched by hand with torchrun on every node (see --dry-run)"
        )
    pattern, weights = train_data_pattern(data_dir, data_weights)
    _check_gpus(settings.gpus)
    logs = Path(logs).absolute()
    exp = logs / name
    checkpoint = records.checkpoint_path(exp)
    recipe = _recipe(settings, pattern, weights)
    argv = build_argv(settings, pattern, str(logs), name, weights)
    cmd = command(argv, settings.gpus)
    decoder = settings.image_decoder if settings.effective_gpu_decode else "0"
    env = {**(env or {}), "CURATE_GPU_DECODE": decoder}
    with exclusive(exp):
        previous = records.read_info(exp)
        if previous and previous.get("recipe") != recipe and checkpoint.exists():
            old = previous.get("recipe") or {}
            diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in recipe.items() if old.get(k) != v]
            raise CurateError(
                f"{exp}: holds a training with other settings; use another name or output folder, "
                "or delete it to start over",
                diff,
            )
        if previous and previous.get("status") == "done" and (exp / records.INFO_PKL).exists():
            log(f"already trained: {checkpoint}")
            return previous
        check_resumable(checkpoint, settings.world_size)
        note = unofficial_note(settings)
        if note:
            log(note)
        launches = list((previous or {}).get("launches", [])) if previous else []
        info: dict[str, Any] = {
            "status": "running",
            "official": settings.scale.official,
            "scale": settings.scale.name,
            "arch": settings.scale.model,
            "scale_config": settings.scale.as_dict(),
            "recipe": recipe,
            "settings": settings.as_dict(),
            "world_size": settings.world_size,
            "data_dir": data_dir,
            "train_data": pattern,
            "data_weights": weights,
            "open_clip_version": open_clip_version(),
            "open_clip_entry": "open_clip_train.main.main",
            "argv": argv,
            "command": cmd,
            "experiment_dir": str(exp),
            "checkpoint": str(checkpoint),
            "log": str(exp / "out.log"),
            "console_log": str(exp / "console.log"),
            "schedule": settings.schedule(),
            "launches": launches,
        }
        records.write_info(exp, info)
        before = records.checkpoint_epoch(checkpoint)
        what = f"resuming at epoch {before}" if before else "starting"
        log(
            f"training {settings.scale.model} ({settings.scale.name} scale) on {pattern}: {what}; "
            f"{settings.world_size} process(es) on {settings.device}, "
            f"precision {settings.effective_precision}; "
            f"log: {exp / 'out.log'}"
        )
        started = now_iso()
        t0 = time.time()
        try:
            run(cmd, exp / "console.log", log, env=env)
        finally:
            after = records.checkpoint_epoch(checkpoint)
            launches.append(
                {
                    "started": started,
                    "seconds": round(time.time() - t0, 3),
                    "world_size": settings.world_size,
                    "workers": settings.workers,
                    "from_epoch": before,
                    "to_epoch": after,
                    "samples": (after - before) * settings.schedule()["samples_per_epoch"],
                }
            )
            records.write_info(exp, info)
        if after != settings.num_checkpoints:
            raise CurateError(
                f"training ended at epoch {after} of {settings.num_checkpoints} without an error; "
                f"see {exp / 'console.log'}"
            )
        records.write_info_pkl(exp, settings.scale, data_dir)
        info.update(
            status="done",
            finished=now_iso(),
            samples_seen=_samples_seen(settings, launches),
            samples_seen_how=SAMPLES_SEEN_HOW,
            wall_seconds=round(sum(launch["seconds"] for launch in launches), 3),
        )
        records.write_info(exp, info)
        log(
            f"done: {info['samples_seen']:,} samples seen in {info['wall_seconds']:.0f} s; "
            f"checkpoint {checkpoint}"
        )
        return info
