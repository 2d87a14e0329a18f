"""Helpers of the chaos test (tests/test_chaos.py): a small pipeline with every stage, seeded kill
points, SIGKILL of a whole `python -m curate.cli run CONFIG` at a point inside a stage, and the
comparison of a killed-and-resumed run directory with an uninterrupted one.

A launch is told apart from the launches before it by the manifest's per-stage `started` time (the
runner sets it again in every launch that has work in the stage), so a kill point counts only what
the current launch has done: "k shards done" means k more shards than when the launch entered it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curate.uids import array_to_uids, read_subset

REPO = Path(__file__).parents[1]
STRATEGIES = ("top", "all")  # three fits (dedup, fraction, median) / none
CHECKPOINTS = 3  # the `smoke` scale: 3 epochs (a checkpoint each) of one step of 16 samples
N_ROWS, PER_SHARD, RESHARD_SIZE = 32, 8, 4
SHARDS = {"download": 4, "embed": 4, "apply": 4, "reshard": 11}  # per stage (reshard: all 8, top 3)
FITS = 3  # fit directories of the complete filter stage
MEDIAN = "tests.filtering.toy_filters:AboveMedian"  # a fit and an apply that can be slowed down
# In every launch, killed or not (same results): a fit and an apply long enough to be killed inside
ENV = {"CURATE_TEST_FIT_SLEEP": "1.0", "CURATE_TEST_APPLY_SLEEP": "0.15"}
DOWNLOAD_DELAY = 0.05  # seconds per image on the fault server

STAGES = ("download", "embed", "fit", "apply", "reshard", "train")  # where a kill can be aimed
RUNNER_STAGES = ("download", "embed", "filter", "reshard", "train")  # the manifest's names
# Seconds after a kill point is reached, drawn up to: about a shard's (an epoch's) time
DELAYS = {"download": 0.6, "embed": 0.5, "fit": 1.0, "apply": 0.3, "reshard": 0.05, "train": 1.0}


# ---------------------------------------------------------------- the pipeline


def write_pool(path: Path, base_url: str) -> Path:
    """32 rows: rows 5 and 26 are 404s; rows 12, 19 and 30 repeat the images of rows 2, 3 and 2
    (for exact_dedup); `aesthetic` is a seeded score for the median filter."""
    urls = [f"{base_url}/img/{i}.png" for i in range(N_ROWS)]
    for row in (5, 26):
        urls[row] = f"{base_url}/fault/404"
    for row, src in ((12, 2), (19, 3), (30, 2)):
        urls[row] = f"{base_url}/img/{src}.png?copy={row}"
    table = pa.table(
        {
            "uid": [f"{i:032x}" for i in range(1, N_ROWS + 1)],
            "url": urls,
            "text": [f"a picture of thing number {i}" for i in range(N_ROWS)],
            "aesthetic": pa.array(np.random.default_rng(7).random(N_ROWS), pa.float64()),
        }
    )
    pq.write_table(table, path)
    return path


def write_config(path: Path, pool: Path, run_dir: Path, train: bool = True) -> Path:
    """Download, embed (tiny model, CPU), filter (`top` with three fits, `all` with none), reshard
    (small shards) and, with `train`, train (`smoke` scale, a checkpoint per epoch). One Ray CPU: a
    Ray worker costs seconds of imports, and the uninterrupted run uses the other core."""
    cfg = {
        "name": "chaos",
        "run_dir": str(run_dir),
        "pool": {"source": "parquet", "paths": [str(pool)], "uid_col": "uid"},
        "download": {
            "number_sample_per_shard": PER_SHARD,
            "processes": 1,
            "threads": 2,
            "image_size": 32,
            "timeout": 20,
            "url_deadline": 60,
            "retries": 0,
        },
        "embed": {
            "models": [{"name": "tiny", "arch": "curate-tiny-vit64"}],
            "batch_size": 8,
            "device": "cpu",
        },
        "strategies": {
            "top": {
                "all": [
                    "exact_dedup",
                    {"clip_score": {"model": "tiny", "fraction": 0.7}},
                    {MEDIAN: {"column": "aesthetic"}},
                ]
            },
            "all": "no_filter",
        },
        "reshard": {"shard_size": RESHARD_SIZE},
        "ray": {"num_cpus": 1},
    }
    if train:
        cfg["train"] = {"scale": "smoke", "num_checkpoints": CHECKPOINTS, "workers": 0, "gpus": 0}
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- launching and killing


def start(config: Path, log: Path) -> subprocess.Popen:
    """`curate run CONFIG` in a session of its own, its output appended to `log`."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "RAY_AUTH_MODE": "disabled", **ENV}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "curate.cli", "run", str(config)],
            env=env,
            cwd=REPO,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_to_end(config: Path, log: Path, timeout: float = 600) -> None:
    finish(start(config, log), log, timeout)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Wait for a run to end; it must succeed."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not finish in {timeout} s: {tail(log)}") from None
    finally:
        kill(proc)  # whatever happens (a test timeout too), no run is left behind
    assert code == 0, f"the run failed (exit {code}): {tail(log)}"


def tail(log: Path, n: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def session(sid: int) -> list[psutil.Process]:
    """Live processes of a session."""
    out = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the whole run at once, as a power cut would: the driver's process group (driver, Ray's
    head processes, the training launcher) and the Ray workers, which sit in process groups of their
    own in the same session (a killpg alone leaves them running for a few seconds). Returns when no
    process of the run is left."""
    victims = session(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while victims:
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.poll()
        assert time.time() < deadline, f"processes of the killed run survive: {victims}"
        time.sleep(0.05)
        victims = session(proc.pid)
    proc.wait()


# ---------------------------------------------------------------- where a launch is


def manifest(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / "manifest.json").read_text()).get("stages", {})
    except (OSError, json.JSONDecodeError):
        return {}


def done_count(stages: dict[str, Any], name: str) -> int:
    return sum(1 for rec in stages.get(name, {}).get("shards", {}).values() if rec.get("status") == "done")


def epochs_done(run: Path, strategy: str) -> int:
    from curate.training.info import checkpoint_epoch

    return checkpoint_epoch(run / "train" / strategy / "checkpoints" / "epoch_latest.pt")


def totals_of(run: Path) -> dict[str, int]:
    """Shards per stage a run's manifest records as done (apply: the filter stage's parts)."""
    stages = manifest(run)
    totals = {name: done_count(stages, name) for name in RUNNER_STAGES}
    totals["apply"] = totals.pop("filter")
    return totals


def shard_total(run: Path, stage: str) -> int:
    """Shards of a stage in this run: reshard's from its subsets (the filter stage has run by then)."""
    subsets = sorted((run / "subsets").glob("*.npy"))
    if stage != "reshard" or not subsets:
        return SHARDS[stage]
    return sum(-(-len(read_subset(p)) // RESHARD_SIZE) for p in subsets)


@dataclass
class Launch:
    """One launch of a run: the manifest and the trainings' out.log sizes from before it started."""

    run: Path
    before: dict[str, Any]
    logs: dict[str, int]

    @classmethod
    def snapshot(cls, run: Path) -> Launch:
        logs = {s: _size(run / "train" / s / "out.log") for s in STRATEGIES}
        return cls(run, manifest(run), logs)

    def phase(self) -> tuple[str, bool]:
        """(the stage this launch is in, whether it finished it there); 'startup' before any."""
        stages = manifest(self.run)
        for name in reversed(RUNNER_STAGES):
            started = stages.get(name, {}).get("started")
            if started and started != self.before.get(name, {}).get("started"):
                finished = stages[name].get("status") == "done"
                if name == "filter":
                    return ("apply" if self._fitted() else "fit"), finished
                return name, finished
        return "startup", False

    def _fitted(self) -> bool:
        fit = self.run / "fit"
        names = [p.name for p in fit.iterdir()] if fit.is_dir() else []
        return len(names) >= FITS and not any(n.startswith(".") for n in names)

    def epochs_started(self, strategy: str) -> int:
        """open_clip's 'Start epoch' lines this launch wrote for `strategy`."""
        log = self.run / "train" / strategy / "out.log"
        if not log.exists():
            return 0
        with log.open("rb") as f:
            f.seek(self.logs[strategy])
            return f.read().count(b"| Start epoch ")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# ---------------------------------------------------------------- kill points


@dataclass(frozen=True)
class KillPoint:
    """Kill `delay` s after the launch did `k` more shards of `stage` (train: `k` more epochs of
    `strategy` and the next one started; fit: once the fits started)."""

    stage: str
    k: int
    delay: float
    strategy: str = ""

    def describe(self) -> str:
        what = {"fit": "fits under way", "train": f"{self.k} epochs of {self.strategy} done"}
        return f"{self.stage}: {what.get(self.stage, f'{self.k} shards done')} + {self.delay:.2f} s"


def draw(rng: random.Random, stage: str) -> KillPoint:
    delay = round(rng.uniform(0, DELAYS[stage]), 3)
    if stage == "fit":
        return KillPoint("fit", 0, delay)
    if stage == "train":
        return KillPoint("train", rng.randrange(CHECKPOINTS), delay, rng.choice(STRATEGIES))
    low = 1 if stage == "apply" else 0  # apply: once a part is done, so surely past the fits
    return KillPoint(stage, rng.randrange(low, max(low + 1, SHARDS[stage] - 1)), delay)


def schedule(seed: int, kills: int, stages: tuple[str, ...] = ()) -> list[KillPoint]:
    """`kills` kill points in pipeline order, at `stages` or else at random: distinct stages but the
    last, which repeats one of them (that stage is killed again in its rerun)."""
    rng = random.Random(seed)
    if not stages:
        picked = rng.sample(STAGES, min(kills - 1, len(STAGES)))
        stages = tuple(sorted([*picked, rng.choice(picked)], key=STAGES.index))
    return [draw(rng, s) for s in stages]


class Waiter:
    """Whether a launch has reached a kill point, or gone past its stage (nothing was left to do
    there): then the kill lands where the launch is."""

    ORDER = {s: i for i, s in enumerate(("startup", *STAGES))}

    def __init__(self, point: KillPoint, launch: Launch) -> None:
        self.point, self.launch = point, launch
        self.entry: int | None = None  # shards done when the launch entered the stage
        self.strategy, self.k = point.strategy, point.k
        if point.stage == "train":  # within what is left of the trainings
            left = {s: CHECKPOINTS - epochs_done(launch.run, s) for s in STRATEGIES}
            if left[self.strategy] <= 0:
                self.strategy = max(left, key=lambda s: left[s])
            self.k = min(point.k, max(0, left[self.strategy] - 1))

    def reached(self) -> bool:
        stage, finished = self.launch.phase()
        target = self.point.stage
        if self.ORDER[stage] > self.ORDER[target] or (stage == target and finished):
            return True
        if stage != target:
            return False
        if stage == "fit":
            return True
        if stage == "train":
            return self.launch.epochs_started(self.strategy) >= self.k + 1
        done = done_count(manifest(self.launch.run), "filter" if stage == "apply" else stage)
        if self.entry is None:
            self.entry = done
        left = shard_total(self.launch.run, stage) - self.entry
        return done - self.entry >= min(self.k, max(0, left - 1))


def kill_at(config: Path, run: Path, point: KillPoint, log: Path) -> str:
    """Start a run and SIGKILL it at `point`; returns the stage it was in ('finished' if it ended)."""
    launch = Launch.snapshot(run)
    waiter = Waiter(point, launch)
    proc = start(config, log)
    try:
        deadline = time.time() + 600
        while not waiter.reached():
            if proc.poll() is not None:
                assert proc.returncode == 0, f"the run failed before the kill: {tail(log)}"
                return "finished"
            assert time.time() < deadline, f"timed out waiting for {point.describe()}: {tail(log)}"
            time.sleep(0.05)
        time.sleep(point.delay)
        if proc.poll() is not None:
            return "finished"
    finally:
        kill(proc)
    return launch.phase()[0]


# ---------------------------------------------------------------- comparison


def compare(run: Path, clean: Path) -> list[str]:
    """How a resumed run differs from the uninterrupted one where it must not (empty: it does not)."""
    problems: list[str] = []

    def same_bytes(rel: str) -> None:
        if not (run / rel).exists():
            problems.append(f"{rel}: missing")
        elif (run / rel).read_bytes() != (clean / rel).read_bytes():
            problems.append(f"{rel}: differs from the uninterrupted run")

    for sub in ("shards", "metadata"):
        want = sorted(p.name for p in (clean / sub).iterdir() if not p.name.startswith("."))
        have = sorted(p.name for p in (run / sub).iterdir() if not p.name.startswith("."))
        if have != want:
            problems.append(f"{sub}/: {have} != {want}")
        for name in want:
            if name.endswith((".tar", ".parquet", ".npz")):  # not _stats.json: it holds timings
                same_bytes(f"{sub}/{name}")
    for path in sorted((clean / "fit").rglob("*")):
        if path.is_file() and path.name != "_fit.json":  # _fit.json: the fit's duration
            same_bytes(str(path.relative_to(clean)))
    for path in sorted((clean / "decisions").rglob("*.parquet")):
        same_bytes(str(path.relative_to(clean)))
    for name in STRATEGIES:
        same_bytes(f"subsets/{name}.npy")
        problems += _compare_resharded(run, clean, name)
        if (clean / "train").is_dir():
            problems += _compare_training(run, clean, name)
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".") and p.name != ".train.lock"]
    leftovers += list(run.glob("train/*/checkpoints/tmp.pt"))  # open_clip's checkpoint being saved
    if leftovers:
        problems.append(f"temporary files left: {[str(p.relative_to(run)) for p in leftovers]}")
    return problems


def tar_uids(tar: Path) -> list[str]:
    """The uid in every sample's json, in order."""
    with tarfile.open(tar) as tf:
        return [json.loads(tf.extractfile(m).read())["uid"] for m in tf if m.name.endswith(".json")]


def _compare_resharded(run: Path, clean: Path, name: str) -> list[str]:
    """Every uid of the subset exactly once (nothing here is missing from the shards), and the same
    shards, sample_ids.npy and missing_uids.txt as the uninterrupted run."""
    out, ref, rel = run / "resharded" / name, clean / "resharded" / name, f"resharded/{name}"
    want = sorted(p.name for p in ref.glob("*.tar"))
    have = sorted(p.name for p in out.glob("*.tar"))
    if have != want:
        return [f"{rel}: shards {have} != {want}"]
    problems = []
    uids = Counter(u for tar in have for u in tar_uids(out / tar))
    subset = Counter(array_to_uids(read_subset(run / "subsets" / f"{name}.npy")))
    doubled = sorted(u for u, c in uids.items() if c > 1)
    lost, extra = sorted(subset - uids), sorted(uids - subset)
    if doubled or lost or extra:
        problems.append(f"{rel}: uids doubled {doubled}, lost {lost}, not in the subset {extra}")
    for file in [*want, "sample_ids.npy", "missing_uids.txt"]:
        if not (out / file).exists() or (out / file).read_bytes() != (ref / file).read_bytes():
            problems.append(f"{rel}/{file}: missing or differs from the uninterrupted run")
    meta, ref_meta = json.loads((out / "meta.json").read_text()), json.loads((ref / "meta.json").read_text())
    for key in ("output_count", "output_shard_count", "missing_count"):
        if meta.get(key) != ref_meta.get(key):
            problems.append(f"{rel}/meta.json: {key} {meta.get(key)} != {ref_meta.get(key)}")
    return problems


def _compare_training(run: Path, clean: Path, name: str) -> list[str]:
    """Finished, with the samples seen of the uninterrupted run and its last epoch's checkpoints."""
    out, rel = run / "train" / name, f"train/{name}"
    info = json.loads((out / "info.json").read_text()) if (out / "info.json").exists() else {}
    ref = json.loads((clean / "train" / name / "info.json").read_text())
    problems = []
    pkl = (out / "info.pkl").exists()
    if info.get("status") != "done" or not pkl:
        problems.append(f"{rel}: not finished (status {info.get('status')}, info.pkl there: {pkl})")
    if info.get("samples_seen") != ref["samples_seen"]:
        problems.append(f"{rel}: samples_seen {info.get('samples_seen')} != {ref['samples_seen']}")
    have = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    want = [f"epoch_{CHECKPOINTS}.pt", "epoch_latest.pt"]  # what open_clip keeps (no save frequency)
    if have != want:
        problems.append(f"{rel}: checkpoints {have} != {want}")
    elif (epochs := epochs_done(run, name)) != CHECKPOINTS:
        problems.append(f"{rel}: epoch_latest.pt holds {epochs} epochs, not {CHECKPOINTS}")
    return problems
