"""Turns a config into stages and runs them on Ray, with shard-level resume and a manifest.

This is the only module that imports Ray. A stage's hash chains its own settings to the hash of the
stage before it, so changing one stage's settings reruns that stage and every later one, nothing
before. A shard counts as done when the manifest says so under the current hash and its outputs exist.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from curate.config import PipelineConfig, config_hash, dump_config
from curate.diskfull import disk_full_error, disk_full_reason, stop_when_disk_full
from curate.errors import CurateError, PreflightError
from curate.rundir import Manifest, RunDir, atomic_write_text, clear_stale_temps, now_iso
from curate.stages.base import ShardResult, ShardTask, Stage
from curate.storage import RemoteRun, keep_synced

# Environment every Ray worker gets (img2dataset imports albumentations, which phones home otherwise).
WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "RAY_AUTH_MODE": "disabled"}
# Times an actor stage's shard is handed to another worker after its worker died under it (node lost).
LOST_SHARD_RETRIES = 2

log = logging.getLogger(__name__)


Outcome = tuple[ShardTask, ShardResult | str]  # a shard's result, or its error as text


class StageFailed(CurateError):
    """Some shards of a stage failed; finished shards are kept and a rerun retries only the others."""


def build_stages(cfg: PipelineConfig, run: RunDir) -> list[Stage]:
    """The stages of a pipeline, in order. Later issues add reshard, train, evaluate."""
    from curate.stages.download import DownloadStage
    from curate.stages.embed import EmbedStage

    stages: list[Stage] = [DownloadStage(cfg, run)]
    if cfg.embed is not None:
        stages.append(EmbedStage(cfg, run))
    if cfg.strategies:  # last of download, embed, filter: it reads what they wrote
        from curate.stages.filter import FilterStage

        stages.append(FilterStage(cfg, run))
    if cfg.strategies and (cfg.reshard is not None or cfg.train is not None):
        from curate.stages.reshard import ReshardStage

        stages.append(ReshardStage(cfg, run))
    if cfg.train is not None:  # after reshard: one model per strategy from resharded/<strategy>/
        from curate.stages.train import TrainStage

        stages.append(TrainStage(cfg, run))
    if cfg.evaluate is not None:  # keep last: after train (it reads train/<strategy>/info.json)
        from curate.stages.evaluate import EvaluateStage

        stages.append(EvaluateStage(cfg, run))
    return stages


def stage_hashes(stages: list[Stage]) -> dict[str, str]:
    """Each stage's hash: its settings chained to the previous stage's hash."""
    hashes, prev = {}, ""
    for stage in stages:
        prev = config_hash(prev, stage.name, stage.settings())
        hashes[stage.name] = prev
    return hashes


@dataclass
class StageStatus:
    name: str
    config_hash: str
    reads: str
    writes: str
    total: int
    done: int
    stale: bool  # recorded under another hash: will be cleared and rerun


def plan_status(cfg: PipelineConfig, run: RunDir) -> list[StageStatus]:
    """What `curate plan` shows: per stage, what it reads and writes and how much is already done."""
    stages = build_stages(cfg, run)
    hashes = stage_hashes(stages)
    manifest = run.read_manifest()
    out = []
    for stage in stages:
        stage.prepare()
        tasks = stage.plan()
        recorded = manifest.data["stages"].get(stage.name, {}).get("config_hash")
        done = _done_ids(stage, manifest, hashes[stage.name], tasks)
        reads, writes = stage.describe()
        out.append(
            StageStatus(
                stage.name,
                hashes[stage.name],
                reads,
                writes,
                len(tasks),
                len(done),
                stale=recorded is not None and recorded != hashes[stage.name],
            )
        )
    return out


def _done_ids(stage: Stage, manifest: Manifest, h: str, tasks: list[ShardTask]) -> set[str]:
    recorded = manifest.done_shards(stage.name, h)
    return {t.shard_id for t in tasks if t.shard_id in recorded and _outputs_exist(stage, t.shard_id)}


def _outputs_exist(stage: Stage, shard_id: str) -> bool:
    return all(p.exists() for p in stage.shard_outputs(shard_id))


def run_pipeline(
    cfg: PipelineConfig,
    run: RunDir,
    *,
    only: list[str] | None = None,
    console: Console | None = None,
    stage_filter: Callable[[Stage], Stage] | None = None,
) -> Manifest:
    """Run every stage (or those named in `only`) in order; returns the final manifest."""
    console = console or Console(stderr=True)
    stages = build_stages(cfg, run)
    if stage_filter is not None:
        stages = [stage_filter(s) for s in stages]
    problems = [p for stage in stages if not only or stage.name in only for p in stage.preflight()]
    remote = RemoteRun.of(cfg, run)  # run_dir is a URL: the stages work in a local copy (curate.storage)
    if remote is not None:
        problems += remote.check()
    if problems:  # before anything is written, the run directory included
        raise PreflightError(f"{cfg.name}: cannot start", problems)
    if remote is not None:
        remote.pull(lambda msg: console.print(msg, markup=False, highlight=False))
    run.root.mkdir(parents=True, exist_ok=True)
    for stale in run.root.glob(".*.tmp"):  # a killed run's manifest.json or config.yaml, half written
        stale.unlink(missing_ok=True)
    with stop_when_disk_full("run", run.root):
        atomic_write_text(run.config, dump_config(cfg))
    hashes = stage_hashes(stages)
    manifest = run.read_manifest()
    manifest.data["name"] = cfg.name
    with RayExecutor(cfg) as executor, keep_synced(remote, manifest, console):
        for stage in stages:
            if only and stage.name not in only:
                continue
            with stop_when_disk_full(stage.name, run.root):  # the driver's own writes (manifest, finish)
                _run_stage(stage, hashes[stage.name], manifest, executor, console)
    return manifest


def _run_stage(stage: Stage, h: str, manifest: Manifest, executor: RayExecutor, console: Console) -> None:
    t0 = time.time()
    record = manifest.data["stages"].get(stage.name)
    if record is None or record.get("config_hash") != h:
        if record is not None:
            console.print(f"[yellow]{stage.name}[/]: settings changed since the last run; redoing the stage")
        for d in stage.output_dirs():
            shutil.rmtree(d, ignore_errors=True)
        record = manifest.reset_stage(stage.name, h)
        manifest.save()
    for d in stage.output_dirs():
        clear_stale_temps(d)
    stage.prepare()
    tasks = stage.plan()
    done = _done_ids(stage, manifest, h, tasks)
    planned = {t.shard_id for t in tasks}
    record["shards"] = {sid: rec for sid, rec in record["shards"].items() if sid in planned}
    pending = [
        t for t in tasks if t.shard_id not in done or stage.needs_rerun(record["shards"].get(t.shard_id, {}))
    ]
    if not pending:
        console.print(f"[green]{stage.name}[/]: all {len(tasks)} shards already done")
        if record.get("status") != "done":
            _finish(stage, record, manifest, 0.0, 0, 0)
        return
    record.update(status="running", started=now_iso())
    manifest.save()
    failures: dict[str, str] = {}
    items = 0
    outcomes = executor.map(stage, pending)  # closed on any way out: shards still running are stopped
    with stage.running(), _progress(console) as progress, contextlib.closing(outcomes):
        bar = progress.add_task(stage.name, total=sum(t.items for t in tasks), completed=0)
        progress.update(bar, completed=sum(t.items for t in tasks if t.shard_id in done))
        for task, outcome in outcomes:
            if isinstance(outcome, ShardResult):
                record["shards"][task.shard_id] = {
                    "status": "done",
                    "hash": h,
                    "items": outcome.items,
                    "seconds": round(outcome.seconds, 3),
                    "node": outcome.node,
                    "stats": outcome.stats,
                }
                items += outcome.items
            else:
                failures[task.shard_id] = outcome
                record["shards"][task.shard_id] = {"status": "failed", "hash": h, "error": outcome}
                if disk_full_reason(outcome):  # every other shard would fail the same way: stop now
                    _stop_disk_full(stage.name, task.shard_id, outcome, record, manifest)
            manifest.save()
            progress.update(bar, advance=task.items)
    if failures:
        record["status"] = "failed"
        manifest.save()
        first = sorted(failures.items())[:5]
        raise StageFailed(
            f"{stage.name}: {len(failures)} of {len(tasks)} shards failed; finished shards are kept, "
            "run again to retry the failed ones",
            [f"shard {sid}: {err}" for sid, err in first],
        )
    _finish(stage, record, manifest, time.time() - t0, items, len(pending))
    counts = record.get("counts", {})
    rate = record.get("throughput", {}).get("items_per_s", 0)
    console.print(
        f"[green]{stage.name}[/]: {len(pending)} shards, {items} {stage.items_label} in "
        f"{time.time() - t0:.1f} s ({rate:.0f} {stage.items_label}/s); "
        + ", ".join(f"{k} {v}" for k, v in counts.items() if not isinstance(v, dict))
    )


def _stop_disk_full(
    stage: str, shard_id: str, error: str, record: dict[str, Any], manifest: Manifest
) -> NoReturn:
    """Record why the stage stopped (if the manifest still fits) and raise DiskFull."""
    exc = disk_full_error(f"{stage}, shard {shard_id}", manifest.path.parent, error)
    record.update(status="failed", stopped=exc.message)
    with contextlib.suppress(OSError):  # it may not fit: the last saved manifest stays valid
        manifest.save()
    raise exc


def _finish(
    stage: Stage, record: dict[str, Any], manifest: Manifest, seconds: float, items: int, shards_run: int
) -> None:
    results = {
        sid: rec.get("stats", {}) for sid, rec in record["shards"].items() if rec.get("status") == "done"
    }
    record["counts"] = stage.finish(results)
    record["counts"]["shards"] = len(results)
    record.update(status="done", finished=now_iso())
    if items:
        record["timings"] = {"seconds": round(seconds, 3), "shards_run": shards_run}
        record["throughput"] = {"items_per_s": round(items / seconds, 2) if seconds else None}
    manifest.save()


class _RateColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} items/s" if speed else "… items/s", style="cyan")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run_task(stage: Stage, task: ShardTask) -> ShardResult:
    """Runs in a Ray worker (or anywhere): one shard of one stage, timed."""
    import ray

    t0 = time.time()
    stats = stage.run_shard(task)
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return ShardResult(task.shard_id, task.items, stats, time.time() - t0, node)


class RayExecutor:
    """Maps a stage's shard function over shards with Ray tasks; starts Ray only when there is work."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self._started = False  # we started Ray, so we shut it down
        self._ready = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def _init(self) -> None:
        if self._ready:
            return
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        if ray.is_initialized():  # the caller (a notebook, a test) already holds a Ray: use it, leave it up
            self._ready = True
            return
        kwargs: dict[str, Any] = {
            "address": self.cfg.ray.address,
            "runtime_env": {"env_vars": WORKER_ENV},
            "include_dashboard": False,
            "logging_level": "WARNING",
            "configure_logging": True,
        }
        if self.cfg.ray.address is None:
            kwargs["num_cpus"] = self.cfg.ray.num_cpus
            kwargs["num_gpus"] = self.cfg.ray.num_gpus
        try:
            ray.init(**kwargs)
        except ConnectionError as exc:
            raise CurateError(
                f"ray.address: cannot connect to the Ray cluster at '{self.cfg.ray.address}' ({exc}); "
                "start it with `ray start --head` or set ray.address=null for a local Ray"
            ) from None
        self._started = self._ready = True

    def map(self, stage: Stage, tasks: list[ShardTask]) -> Iterator[Outcome]:
        """Yield (task, result or error text) as shards finish, keeping at most the stage's cap in flight."""
        self._init()
        import ray

        stage.place(float(ray.cluster_resources().get("GPU", 0)))
        if stage.uses_actors:
            yield from self._map_actors(stage, tasks)
            return
        remote = ray.remote(_run_task).options(
            num_cpus=stage.num_cpus, num_gpus=stage.num_gpus, max_retries=2, retry_exceptions=False
        )
        stage_ref = ray.put(stage)
        cap = stage.max_concurrency() or len(tasks)
        queue = list(tasks)
        in_flight: dict[Any, ShardTask] = {}
        try:
            while queue or in_flight:
                while queue and len(in_flight) < cap:
                    task = queue.pop(0)
                    in_flight[remote.remote(stage_ref, task)] = task
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                task = in_flight.pop(ready[0])
                try:
                    yield task, ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    yield task, _error_text(exc)
        finally:  # the stage stopped early (a full disk, Ctrl-C): interrupt what still runs
            if in_flight:
                _cancel(list(in_flight))
                for d in stage.output_dirs():  # a shard cut off mid-write may leave its temporary
                    clear_stale_temps(d)

    def _map_actors(self, stage: Stage, tasks: list[ShardTask]) -> Iterator[Outcome]:
        """Long-lived workers, one per GPU (or CPU), each loading its models once, fed shard by shard.

        A worker that dies (its node lost, its process killed) is dropped and its shard handed to another
        worker, up to LOST_SHARD_RETRIES times; when none is left a new one is started wherever Ray finds
        room. Ray's own actor restarts are off: a restart waits for a free slot on any node, which the
        surviving workers hold, so the dead worker's shard would wait forever. A worker takes up to
        `stage.shards_per_worker` shards at once (threads), one per shard after the first lost worker.
        """
        import ray

        resources = ray.cluster_resources()
        unit = "GPU" if stage.num_gpus else "CPU"
        per = stage.num_gpus or stage.num_cpus
        slots = int(resources.get(unit, 1) // per) or 1
        count = min(len(tasks), stage.max_concurrency() or slots, slots)
        worker = ray.remote(_StageWorker).options(
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus,
            max_restarts=0,
            max_task_retries=0,
            max_concurrency=stage.shards_per_worker,
        )
        workers = [worker.remote(stage) for _ in range(count)]
        load = {id(w): 0 for w in workers}  # shards in flight per worker
        per = stage.shards_per_worker
        queue = list(tasks)
        in_flight: dict[Any, tuple[ShardTask, Any]] = {}
        lost: Counter[str] = Counter()
        broken = ""  # a worker's setup() raised: the same error for every shard, no new workers
        while queue or in_flight:
            if queue and not workers:
                if broken:
                    yield from ((task, broken) for task in queue)
                    break
                workers.append(worker.remote(stage))
                load[id(workers[-1])] = 0
            while queue and (free := [w for w in workers if load[id(w)] < per]):
                actor = min(free, key=lambda w: load[id(w)])  # spread over the workers first
                task = queue.pop(0)
                load[id(actor)] += 1
                in_flight[actor.run.remote(task)] = (task, actor)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            task, actor = in_flight.pop(ready[0])
            load[id(actor)] -= 1
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                ray.kill(actor)  # dead already, or unreachable: either way its slot goes to a new worker
                workers = [w for w in workers if w is not actor]
                per = 1  # a dying worker takes its other shards with it: from now on a shard runs alone
                if exc.actor_init_failed:
                    broken = _error_text(exc)
                if broken or lost[task.shard_id] >= LOST_SHARD_RETRIES:
                    yield task, broken or _error_text(exc)
                    continue
                lost[task.shard_id] += 1
                log.warning(
                    "%s: shard %s lost with its worker (%s); running it again on another worker",
                    stage.name,
                    task.shard_id,
                    _error_text(exc),
                )
                queue.insert(0, task)
                continue
            except ray.exceptions.RayError as exc:
                result = _error_text(exc)
            yield task, result
        for actor in workers:
            ray.kill(actor)


def _cancel(refs: list[Any]) -> None:
    """Shards still running when a stage stops early are interrupted (their temporaries are removed)
    and awaited a little, so none writes after the run stopped or is reported later as unhandled."""
    import ray

    for ref in refs:
        ray.cancel(ref)
    finished, _ = ray.wait(refs, num_returns=len(refs), timeout=10) if refs else ([], [])
    for ref in finished:
        with contextlib.suppress(Exception):  # cancelled, or failed: the run has stopped already
            ray.get(ref)


class _StageWorker:
    """A Ray actor around one stage: `setup()` once (models loaded), then shards one after another."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        stage.setup()

    def run(self, task: ShardTask) -> ShardResult:
        return _run_task(self.stage, task)


def _error_text(exc: Exception) -> str:
    """A failed shard's error as one line: the stage's own exception when there is one."""
    import ray

    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed and lines:
        return f"worker setup failed: {lines[-1]}"  # the last line of the setup's traceback
    if isinstance(exc, ray.exceptions.RayActorError):  # the why (e.g. its node died) after the what
        said = [line for line in str(exc).splitlines()[1:] if line.strip() and not line.startswith("\t")]
        return f"{type(exc).__name__}: {' '.join(lines[:1] + [s.strip() for s in said[:1]])}"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
