"""Aggregate scores from `eval_results.jsonl`, as DataComp's `aggregate_scores.py` (§6.1), made honest
about partial results.

ImageNet = main metric of ImageNet 1k; ImageNet dist. shifts, VTAB and Retrieval = unweighted means of
their tasks' main metrics; Average = mean over the 38 scored tasks. DataComp asserts that all 38 are
there; here every aggregate states how many of its tasks it covers, and one computed over fewer is
marked partial (its value is the mean over the covered tasks). Extra tasks are reported on their own.
"""

from __future__ import annotations

from typing import Any

from curate.eval.tasks import AGGREGATES, DATACOMP_BY_KEY, EXTRA_TASKS


def _main(line: dict[str, Any] | None) -> float | None:
    if line is None:
        return None
    value = line.get("metrics", {}).get("main_metric")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def aggregate(lines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{aggregate name: {score, covered "n/N", partial, missing [keys]}} from lines keyed by task key."""
    out: dict[str, dict[str, Any]] = {}
    for agg in AGGREGATES:
        values = {k: _main(lines.get(k)) for k in agg.keys}
        have = [v for v in values.values() if v is not None]
        out[agg.name] = {
            "score": sum(have) / len(have) if have else None,
            "covered": f"{len(have)}/{len(agg.keys)}",
            "partial": len(have) < len(agg.keys),
            "missing": [k for k, v in values.items() if v is None],
        }
    return out


def datacomp_scores(lines: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Exactly aggregate_scores.py: only with all 38 scored tasks present, else ValueError."""
    scored = {k: _main(line) for k, line in lines.items() if k in DATACOMP_BY_KEY and _main(line) is not None}
    if len(scored) != 38:
        raise ValueError(f"results have {len(scored)} scored DataComp tasks; DataComp's aggregation needs 38")
    return {name: entry["score"] for name, entry in aggregate(lines).items()}


def extra_scores(lines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Extra (non-DataComp) tasks, each under its own key: its name and main metric."""
    return {
        key: {"dataset": task.name, "main_metric": _main(lines.get(key))}
        for key, task in EXTRA_TASKS.items()
        if key in lines
    }
