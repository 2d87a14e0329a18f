"""Starting open_clip's training in its own process(es), watching it, and reporting it.

One process on CPU or one GPU: `python -m curate.training.entry ARGV`. Several GPUs of one node:
`python -m curate.training.entry --torchrun --standalone --nproc_per_node N -m -- curate.training.entry ARGV`,
i.e. torchrun (torch.distributed.run's main) in a process that dies with its parent
(`--standalone` picks a free rendezvous port, so two trainings on one node do not collide; the `--`
stops torchrun's own parser, which would otherwise take open_clip's `--logs` for an abbreviation of
its `--logs-specs` and refuse it as ambiguous).

Everything the processes print goes to `<exp>/console.log` (open_clip also writes its own
`<exp>/out.log`); the caller's `log` sees only progress: resume, epoch starts and one short line per
logged step. A failure raises TrainingFailed with the last lines of console.log (the traceback).

Several nodes are launched by hand, one command per node with the same argv (see curate.training):
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \
        --rdzv_id JOB -m -- curate.training.entry ARGV
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from curate.errors import CurateError

Log = Callable[[str], None]

_STEP = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<done>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\)\].*?"
    r"(?P<rate>[\d.]+)/s, .*?LR: (?P<lr>[\d.]+) .*?Loss: (?P<loss>[\d.]+)"
)


_EXCEPTION = re.compile(r"^(\[rank\d+\]: )?[\w.]*(Error|Exception): ")


class TrainingFailed(CurateError):
    """open_clip's training exited with an error; finished epochs are kept in epoch_latest.pt."""


def command(argv: list[str], gpus: int) -> list[str]:
    """The command line that runs one training on this node."""
    entry = ["-m", "curate.training.entry", *argv]
    if gpus <= 1:
        return [sys.executable, *entry]
    torchrun = [sys.executable, "-m", "curate.training.entry", "--torchrun", "--standalone"]
    return [*torchrun, f"--nproc_per_node={gpus}", "-m", "--", "curate.training.entry", *argv]


def multinode_command(argv: list[str], gpus: int, nodes: int) -> list[str]:
    """What to run on each of `nodes` nodes (HOST and JOB to fill in); printed, never run by curate."""
    return [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc_per_node={gpus}",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=HOST:29400",
        "--rdzv_id=JOB",
        "-m",
        "--",
        "curate.training.entry",
        *argv,
    ]


def progress_line(line: str) -> str | None:
    """The console's short form of an open_clip log line, or None for lines that are not progress."""
    body = line.split(" | INFO | ", 1)[-1].strip()
    step = _STEP.search(body)
    if step:
        return (
            f"epoch {step['epoch']} {step['pct']:>3}% ({step['done']}/{step['total']} samples), "
            f"{float(step['rate']):,.1f} samples/s, loss {step['loss']}, lr {step['lr']}"
        )
    if body.startswith("Start epoch") or body.startswith("=> resuming checkpoint"):
        return body
    if body.startswith("No latest resume checkpoint"):
        return "no checkpoint yet: starting from scratch"
    return None


@contextlib.contextmanager
def exclusive(exp_dir: Path) -> Iterator[None]:
    """Refuse to run two trainings into one experiment folder at once (a rerun racing a live run)."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    with open(exp_dir / ".train.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CurateError(
                f"{exp_dir}: another training is writing into this folder right now; wait for it or stop it"
            ) from None
        yield


def check_resumable(checkpoint: Path, world_size: int) -> None:
    """open_clip saves DDP checkpoints with 'module.' keys and strips them only when resuming without
    DDP; a single-process checkpoint resumed under DDP fails deep inside load_state_dict. Say it first."""
    if not checkpoint.exists():
        return
    import torch

    state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    first = next(iter(state.get("state_dict", {})), "")
    if world_size > 1 and not first.startswith("module."):
        raise CurateError(
            f"{checkpoint}: was written by a single-process training; open_clip cannot resume it on "
            f"{world_size} processes. Resume it with one GPU (gpus 1), or delete it to start over"
        )


def run(
    cmd: list[str],
    console_log: Path,
    log: Log,
    env: dict[str, str] | None = None,
    tail: int = 30,
) -> float:
    """Run the training command; stream progress to `log`; return seconds; TrainingFailed on error."""
    console_log.parent.mkdir(parents=True, exist_ok=True)
    last: deque[str] = deque(maxlen=tail)
    cause = ""  # the first exception line (under torchrun, a rank's; the tail is torchrun's summary)
    t0 = time.time()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(console_log, "a", encoding="utf-8") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            text=True,
            errors="replace",
            bufsize=1,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                out.flush()
                last.append(line.rstrip("\n"))
                if not cause and _EXCEPTION.match(line) and "ChildFailedError" not in line:
                    cause = line.strip()
                short = progress_line(line)
                if short:
                    log(short)
            code = proc.wait()
        except BaseException:  # Ctrl-C or the caller's failure: never leave the training behind
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if code != 0:
        lines = [line for line in last if line.strip()]
        first = f"; first error: {cause}" if cause and cause not in lines else ""
        raise TrainingFailed(
            f"training failed (exit code {code}){first}; full output in {console_log}; last lines:", lines
        )
    return time.time() - t0
