"""`curate sql` on a DataComp-small-sized metadata directory: every named query over `samples`, timed.

    python bench/sql.py [--metadata bench/data/filter/metadata_12800000_26] [--repeat 1]

The directory is the filter benchmark's (12.8M rows in 26 parts, DataComp's schema; `python
bench/filter.py --generate-only` makes it). Each query runs the way `curate sql --metadata DIR NAME`
runs it (a fresh connection, views over the parquet parts), result fetched whole. Target: seconds, not
minutes, on 2 cores. Queries that need a run (funnel, subsets, eval, stages) are not timed here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from curate import sql  # noqa: E402

RUN_ONLY = {"funnel", "strategy_overlap", "eval_scores", "stage_timings"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", default=str(ROOT / "data" / "filter" / "metadata_12800000_26"))
    parser.add_argument("--repeat", type=int, default=1, help="Runs per query; the best is reported.")
    args = parser.parse_args()
    if not Path(args.metadata).is_dir():
        sys.exit(f"{args.metadata}: missing; run `python bench/filter.py --generate-only` first")
    con, _ = sql.connect(metadata=args.metadata)
    rows = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    print(f"{rows:,} rows in {args.metadata}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'query':<24}{'seconds':>10}{'result rows':>14}")
    for name, query in sql.library().items():
        if name in RUN_ONLY:
            continue
        best = float("inf")
        for _ in range(args.repeat):
            con, views = sql.connect(metadata=args.metadata)
            t0 = time.perf_counter()
            result = sql.execute(con, views, query, sql.bind_params(query, {})).fetchall()
            best = min(best, time.perf_counter() - t0)
        print(f"{name:<24}{best:>10.2f}{len(result):>14,}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
