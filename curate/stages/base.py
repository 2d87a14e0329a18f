"""The stage contract the runner schedules: plan shards, run one shard (a plain function), finish.

A stage never imports Ray. `run_shard` is called in whatever process the runner chooses (a Ray worker,
or the caller itself in tests), so a stage object must be picklable: config, paths and plain data only.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: a shard id (8 digits) and whatever the stage needs to process it."""

    shard_id: str
    items: int  # how many samples the shard holds, for progress and throughput
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShardResult:
    """What a shard reports back to the runner; `stats` goes into the manifest."""

    shard_id: str
    items: int
    stats: dict[str, Any]
    seconds: float
    node: str = ""  # where it ran (Ray node id), for cluster runs


class Stage(ABC):
    """A pipeline stage; subclasses are Ray-agnostic."""

    name: str = "stage"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    items_label: str = "samples"
    uses_actors: bool = False  # True: long-lived workers that call setup() once (model loading)
    shards_per_worker: int = 1  # actor stages: shards a worker runs at once, in threads (run_shard must
    # then be thread-safe); 2 lets a shard's reading and writing overlap the previous shard's GPU work

    @abstractmethod
    def settings(self) -> Any:
        """Everything that decides this stage's outputs (hashed with the upstream hash)."""

    @abstractmethod
    def output_dirs(self) -> list[Path]:
        """Directories this stage writes; cleared when its config hash changes."""

    @abstractmethod
    def plan(self) -> list[ShardTask]:
        """All shards of this stage, done or not, in order (driver side)."""

    @abstractmethod
    def shard_outputs(self, shard_id: str) -> list[Path]:
        """Files that must all exist for a shard to count as done."""

    @abstractmethod
    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        """Process one shard, writing its outputs atomically; returns its stats (JSON-able)."""

    def preflight(self) -> list[str]:
        """Problems that must stop the run before any work or any write (missing inputs); cheap."""
        return []

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """One-time driver-side work before planning (e.g. building a pool table)."""

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Driver-side resources held while shards run (e.g. a loopback HTTP server)."""
        yield

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Driver-side work after every shard is done; returns stage-level counts for the manifest."""
        totals: dict[str, Any] = {}
        for stats in results.values():
            for key, value in stats.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return totals

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Once per worker process before its first shard (actor stages): load models and the like."""

    def place(self, cluster_gpus: float) -> None:  # noqa: B027 - optional hook
        """Adapt resource needs to the cluster (e.g. GPU workers when it has GPUs); driver side."""

    def needs_rerun(self, record: dict[str, Any]) -> bool:
        """Whether a shard recorded as done must run again anyway (e.g. `download --retry-failed`)."""
        return False

    def max_concurrency(self) -> int | None:
        """Cap on shards in flight (None: as many as Ray has CPUs/GPUs for)."""
        return None

    def describe(self) -> tuple[str, str]:
        """(what it reads, what it writes), for `curate plan`."""
        return ("", ", ".join(str(p) for p in self.output_dirs()))
