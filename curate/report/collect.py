"""What the report shows, read from the run directory: stage timings, funnels, strategy table, the
distributions and, per filter, the samples on either side of its decision boundary.

Everything goes through the same DuckDB views as `curate sql`, so the report and a curator's own
queries agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.rundir import Manifest, read_json
from curate.sql import Views, connect


@dataclass
class StageRow:
    name: str
    status: str
    shards: int
    seconds: float | None
    rate: float | None
    unit: str
    counts: dict[str, Any]


@dataclass
class Example:
    uid: str
    part: str
    key: str
    text: str
    score: float | None
    reason: str | None
    thumb: str | None = None  # data: URI, filled in by thumbs.attach


@dataclass
class FilterView:
    """One leaf filter of one strategy: its counts and the samples nearest its boundary."""

    strategy: str
    path: str
    kept: int
    removed: int
    by_score: bool  # True: examples are the ones nearest the score threshold
    kept_examples: list[Example] = field(default_factory=list)
    removed_examples: list[Example] = field(default_factory=list)
    reasons: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class StrategyRow:
    name: str
    rows: int | None
    kept: int | None
    funnel: list[dict[str, Any]]
    scores: dict[str, Any]  # scores.json of its evaluation, when there is one


_UNITS = {
    "download": "samples",
    "embed": "rows",
    "filter": "rows",
    "reshard": "samples",
    "train": "samples",
    "evaluate": "tasks",
    "sweep_train": "samples",
    "sweep_evaluate": "tasks",
}


def stage_rows(run: Path) -> list[StageRow]:
    out = []
    for name, rec in Manifest.load(run / "manifest.json").data.get("stages", {}).items():
        counts = {k: v for k, v in rec.get("counts", {}).items() if not isinstance(v, dict | list)}
        out.append(
            StageRow(
                name,
                rec.get("status", "?"),
                len(rec.get("shards", {})),
                rec.get("timings", {}).get("seconds"),
                (rec.get("throughput") or {}).get("items_per_s"),
                _UNITS.get(name, "items"),
                counts,
            )
        )
    return out


def strategy_rows(run: Path) -> list[StrategyRow]:
    out = []
    for path in sorted((run / "subsets").glob("*.json")):
        if path.name.startswith("."):
            continue
        summary = read_json(path, "a strategy's funnel, written by the filter stage")
        scores_file = run / "eval" / path.stem / "scores.json"
        scores = read_json(scores_file, "written by the evaluate stage") if scores_file.exists() else {}
        out.append(
            StrategyRow(
                path.stem, summary.get("rows"), summary.get("count"), summary.get("funnel", []), scores
            )
        )
    return out


def sweep_leaderboard(run: Path) -> dict[str, Any] | None:
    """sweep/leaderboard.json of `curate sweep` (curate.leaderboard), when the run was swept."""
    path = run / "sweep" / "leaderboard.json"
    return read_json(path, "written by curate sweep") if path.exists() else None


def histograms(run: Path) -> dict[str, list[tuple[float, int]]]:
    """CLIP score histograms per score column, and caption lengths in words (capped at 40)."""
    con, views = connect(run)
    if "samples" not in views.present:
        return {}
    out: dict[str, list[tuple[float, int]]] = {}
    columns = [c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE samples)").fetchall()]
    for col in columns:
        if col.endswith("_similarity_score") and col.startswith(("clip_", "pool_clip_")):
            rows = con.execute(
                f'SELECT floor("{col}" * 50) / 50 AS b, count(*) FROM samples '
                f'WHERE "{col}" IS NOT NULL AND NOT isnan("{col}") GROUP BY b ORDER BY b'
            ).fetchall()
            out[col] = [(float(b), int(n)) for b, n in rows]
    rows = con.execute(
        "SELECT least(len(string_split_regex(trim(text), '\\s+')), 40) AS w, count(*) FROM samples "
        "WHERE text IS NOT NULL AND trim(text) <> '' GROUP BY w ORDER BY w"
    ).fetchall()
    out["caption words"] = [(float(w), int(n)) for w, n in rows]
    return out


def filter_views(run: Path, per_side: int = 6) -> list[FilterView]:
    """Per strategy and leaf filter: kept/removed counts among downloaded rows, the reasons, and the
    `per_side` samples nearest the boundary on each side (scored filters), or a fixed pseudo-random
    draw of each side (unscored ones: the order of hash(uid) is stable across runs)."""
    con, views = connect(run)
    if not {"decisions", "samples"} <= set(views.present):
        return []
    out = []
    columns = [c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE decisions)").fetchall()]
    leaves = [c[: -len(".keep")] for c in columns if c.endswith(".keep")]
    strategies = [s for (s,) in con.execute("SELECT DISTINCT strategy FROM decisions ORDER BY 1").fetchall()]
    for strategy in strategies:
        for path in leaves:
            view = _filter_view(con, views, strategy, path, per_side)
            if view is not None:
                out.append(view)
    return out


def _filter_view(con: Any, views: Views, strategy: str, path: str, n: int) -> FilterView | None:
    keep, score, reason = (f'd."{path}.{x}"' for x in ("keep", "score", "reason"))
    base = (
        f"FROM decisions d JOIN samples s ON s.uid = d.uid AND s.part = d.part "
        f"WHERE d.strategy = $s AND d.downloaded AND {keep} IS NOT NULL"
    )
    counts = con.execute(
        f"SELECT count_if({keep}), count_if(NOT {keep}), count({score}) {base}", {"s": strategy}
    )
    kept, removed, scored = (int(x or 0) for x in counts.fetchone())
    if kept + removed == 0:  # a leaf of another strategy
        return None
    view = FilterView(strategy, path, kept, removed, by_score=scored > 0)
    view.reasons = [
        (str(r), int(c))
        for r, c in con.execute(
            f"SELECT {reason}, count(*) {base} AND NOT {keep} GROUP BY 1 ORDER BY 2 DESC LIMIT 8",
            {"s": strategy},
        ).fetchall()
    ]
    pick = f"SELECT d.uid, s.part, s.key, s.text, {score}, {reason} {base}"
    if view.by_score:
        kept_sql = f"{pick} AND {keep} ORDER BY {score} ASC NULLS LAST, d.uid LIMIT {n}"
        removed_sql = f"{pick} AND NOT {keep} ORDER BY {score} DESC NULLS LAST, d.uid LIMIT {n}"
    else:
        kept_sql = f"{pick} AND {keep} ORDER BY hash(d.uid), d.uid LIMIT {n}"
        removed_sql = f"{pick} AND NOT {keep} ORDER BY hash(d.uid), d.uid LIMIT {n}"
    view.kept_examples = _examples(con.execute(kept_sql, {"s": strategy}).fetchall())
    view.removed_examples = _examples(con.execute(removed_sql, {"s": strategy}).fetchall())
    return view


def _examples(rows: list[tuple[Any, ...]]) -> list[Example]:
    """Rows of (uid, part, key, text, score, reason); a NaN score (no image to score) shows as none."""
    return [
        Example(uid, part, key, text, None if score is None or math.isnan(score) else float(score), reason)
        for uid, part, key, text, score, reason in rows
    ]
