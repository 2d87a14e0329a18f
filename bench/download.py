"""Download benchmark: run a pipeline's download from scratch and report images/s and peak memory.

    python bench/download.py pipelines/openclipart_demo.yaml [key=value ...]

Runs `curate run` in a fresh run directory (bench/runs/<name>), samples the resident memory of the
whole process tree (driver, Ray, its workers) every 0.2 s, then runs it again to time the no-op rerun.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def timed_run(cmd: list[str]) -> tuple[float, int, int]:
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.2)
    return time.time() - t0, peak, proc.returncode


def main() -> None:
    pipeline, overrides = sys.argv[1], sys.argv[2:]
    name = Path(pipeline).stem
    run_dir = Path("bench/runs") / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "curate.cli", "run", pipeline, f"run_dir={run_dir}", *overrides]
    wall, peak, rc = timed_run(cmd)
    if rc != 0:
        sys.exit(f"curate run failed with exit code {rc}")
    rerun_wall, _, _ = timed_run(cmd)
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"]["download"]
    counts = stage["counts"]
    print(
        json.dumps(
            {
                "pipeline": pipeline,
                "overrides": overrides,
                "samples": counts["count"],
                "successes": counts["successes"],
                "success_rate": counts["success_rate"],
                "failed_to_download": counts["failed_to_download"],
                "failed_to_resize": counts["failed_to_resize"],
                "skipped": counts["skipped"],
                "top_errors": counts["top_errors"],
                "wall_s": round(wall, 1),
                "stage_s": stage["timings"]["seconds"],
                "images_per_s_stage": stage["throughput"]["items_per_s"],
                "peak_rss_gib_process_tree": round(peak / 2**30, 2),
                "noop_rerun_s": round(rerun_wall, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
