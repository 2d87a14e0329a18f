"""The leaderboard of a sweep: per strategy, its scores over seeds and whether it beats the baseline
beyond seed noise. Written as sweep/leaderboard.json and .csv, printed as a table, shown in the report.

Headline ("ImageNet-like") score: DataComp's ImageNet (task imagenet1k) when it was evaluated, else the
held-out `openclipart` classification task (the openclipart pool's own ImageNet stand-in) when it was,
else DataComp's Average. Besides it: every evaluated task's main metric, and the Average with its
coverage ("1/38" = an Average over one of DataComp's 38 scored tasks, i.e. partial).

Beyond seed noise (the rule, stated in leaderboard.json too): Welch's t-test, one-sided (strategy >
baseline), on the headline score over seeds at p < 0.05:
    t = (mean_s - mean_b) / sqrt(var_s / n_s + var_b / n_b)   (sample variances, ddof 1)
with the Welch-Satterthwaite degrees of freedom. It needs at least 2 seeds on both sides; when neither
side varies at all over its seeds, p is 0 for a higher mean and 1 otherwise.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from curate.rundir import atomic_write_json, atomic_write_text, read_json

ALPHA = 0.05
RULE = (
    "Welch's t-test, one-sided (strategy > baseline), on the headline score over seeds, p < 0.05; "
    "needs >= 2 seeds on both sides"
)


@dataclass(frozen=True)
class Comparison:
    """A strategy's headline against the baseline's."""

    diff: float
    t: float | None
    df: float | None
    p: float
    beats: bool


def welch(values: list[float], baseline: list[float]) -> Comparison | None:
    """Welch's one-sided t-test of mean(values) > mean(baseline); None with fewer than 2 of either."""
    if len(values) < 2 or len(baseline) < 2:
        return None
    diff = statistics.fmean(values) - statistics.fmean(baseline)
    va, vb = statistics.variance(values) / len(values), statistics.variance(baseline) / len(baseline)
    if va + vb == 0:  # no seed noise measured on either side
        p = 0.0 if diff > 0 else 1.0
        return Comparison(diff, None, None, p, p < ALPHA)
    from scipy.stats import t as student_t

    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(values) - 1) + vb**2 / (len(baseline) - 1))
    p = float(student_t.sf(t, df))
    return Comparison(diff, t, df, p, p < ALPHA)


def headline_metric(task_keys: list[str]) -> tuple[str, str]:
    """(metric, why): which score ranks the strategies."""
    if "imagenet1k" in task_keys:
        return "imagenet1k", "DataComp's ImageNet (imagenet1k)"
    if "openclipart" in task_keys:
        return "openclipart", "held-out openclipart classification (the openclipart pool's ImageNet stand-in)"
    return "Average", "DataComp's Average (no ImageNet-like task was evaluated)"


def _score(scores: dict[str, Any], metric: str) -> float | None:
    if metric == "Average":
        value = (scores.get("aggregates") or {}).get("Average", {}).get("score")
    else:
        entry = (scores.get("tasks") or {}).get(metric) or (scores.get("extra") or {}).get(metric) or {}
        value = entry.get("main_metric")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _summary(per_seed: list[float | None]) -> dict[str, Any]:
    have = [v for v in per_seed if v is not None]
    return {
        "per_seed": per_seed,
        "mean": statistics.fmean(have) if have else None,
        "std": statistics.stdev(have) if len(have) > 1 else None,
    }


def build(
    sweep_dir: Path,
    subsets_dir: Path,
    strategies: list[str],
    seeds: list[int],
    task_keys: list[str],
    baseline: str | None,
    about: dict[str, Any],
) -> dict[str, Any]:
    """The leaderboard from sweep/eval/<strategy>/seed<k>/scores.json and subsets/<strategy>.json."""
    headline, why = headline_metric(task_keys)
    metrics = [
        headline,
        *(k for k in task_keys if k != headline),
        *(["Average"] if headline != "Average" else []),
    ]
    rows = []
    for strategy in strategies:
        scores = []
        for seed in seeds:
            path = sweep_dir / "eval" / strategy / f"seed{seed}" / "scores.json"
            scores.append(read_json(path, "written by the sweep's evaluate stage") if path.exists() else {})
        funnel = subsets_dir / f"{strategy}.json"
        subset = read_json(funnel, "written by the filter stage") if funnel.exists() else {}
        average = next((s["aggregates"]["Average"] for s in scores if "aggregates" in s), {})
        rows.append(
            {
                "strategy": strategy,
                "subset_size": subset.get("count"),
                "pool_rows": subset.get("rows"),
                "seeds": seeds,
                "scores": {m: _summary([_score(s, m) for s in scores]) for m in metrics},
                "average_covered": average.get("covered"),
                "average_partial": average.get("partial"),
            }
        )
    base = next((r for r in rows if r["strategy"] == baseline), None)
    for row in rows:
        row["versus_baseline"] = None
        if base is not None and row is not base:
            found = welch(_values(row, headline), _values(base, headline))
            row["versus_baseline"] = found.__dict__ if found else None
    rows.sort(key=lambda r: (r["scores"][headline]["mean"] is None, -(r["scores"][headline]["mean"] or 0)))
    return {
        **about,
        "seeds": seeds,
        "headline": {"metric": headline, "what": why},
        "metrics": metrics,
        "baseline": baseline,
        "rule": RULE,
        "rows": rows,
    }


def _values(row: dict[str, Any], metric: str) -> list[float]:
    return [v for v in row["scores"][metric]["per_seed"] if v is not None]


def verdict(row: dict[str, Any], baseline: str | None) -> str:
    """The table's 'beats baseline' cell."""
    if baseline is None:
        return "no baseline"
    if row["strategy"] == baseline:
        return "(baseline)"
    found = row.get("versus_baseline")
    if found is None:
        return "n/a (< 2 seeds)"
    return f"{'yes' if found['beats'] else 'no'} (p={found['p']:.3g})"


def to_csv(board: dict[str, Any]) -> str:
    """One row per strategy, best headline first: mean, std and per-seed values of every metric."""
    metrics = board["metrics"]
    header = ["rank", "strategy", "subset_size", "seeds"]
    for m in metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_per_seed"]
    header += ["average_covered", "average_partial", "headline_diff_vs_baseline", "p_value", "beats_baseline"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for rank, row in enumerate(board["rows"], 1):
        line = [rank, row["strategy"], row["subset_size"], len(row["seeds"])]
        for m in metrics:
            s = row["scores"][m]
            line += [s["mean"], s["std"], ";".join("" if v is None else repr(v) for v in s["per_seed"])]
        versus = row["versus_baseline"] or {}
        line += [row["average_covered"], row["average_partial"], versus.get("diff"), versus.get("p")]
        line.append(versus.get("beats") if versus else "")
        writer.writerow(["" if v is None else v for v in line])
    return buf.getvalue()


def write(board: dict[str, Any], sweep_dir: Path) -> tuple[Path, Path]:
    json_path, csv_path = sweep_dir / "leaderboard.json", sweep_dir / "leaderboard.csv"
    atomic_write_json(json_path, board)
    atomic_write_text(csv_path, to_csv(board))
    return json_path, csv_path


def _shown(summary: dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "-"
    return f"{summary['mean']:.4f}" + (f" ± {summary['std']:.4f}" if summary["std"] is not None else "")


def table(board: dict[str, Any], max_tasks: int = 4) -> Table:
    """The leaderboard for the terminal: headline, a few tasks, the Average, the verdict."""
    headline = board["headline"]["metric"]
    shown = board["metrics"][: 1 + max_tasks]
    if "Average" in board["metrics"] and "Average" not in shown:
        shown.append("Average")
    seeds = len(board["seeds"])
    title = (
        f"{board.get('pipeline', '')}: scale {board.get('scale', '?')}"
        f"{'' if board.get('official') else ' (UNOFFICIAL)'}, {seeds} seed{'s' if seeds > 1 else ''}, "
        f"mean ± std; ranked by {headline}"
    )
    out = Table(
        title=title, caption=f"beats {board['baseline']}: {board['rule']}" if board["baseline"] else ""
    )
    out.add_column("strategy")
    out.add_column("subset size", justify="right")
    for m in shown:
        label = f"{m} (headline)" if m == headline else m
        out.add_column(label, justify="right")
    out.add_column(f"beats {board['baseline'] or 'baseline'}?")
    for row in board["rows"]:
        cells = [row["strategy"], "" if row["subset_size"] is None else f"{row['subset_size']:,}"]
        for m in shown:
            cell = _shown(row["scores"][m])
            if m == "Average" and row["average_partial"]:
                cell += f" (partial, {row['average_covered']})"
            cells.append(cell)
        cells.append(verdict(row, board["baseline"]))
        out.add_row(*cells)
    return out
