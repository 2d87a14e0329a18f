"""Render the report: collect from the run, attach thumbnails, fill the template, write atomically."""

from __future__ import annotations

import time
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from curate.errors import CurateError
from curate.report import collect, plots, thumbs
from curate.rundir import atomic_write_text


def build_report(run: Path, per_side: int = 6) -> Path:
    """Write `<run>/report/index.html` and return its path."""
    if not (run / "manifest.json").exists():
        raise CurateError(
            f"{run}: not a run directory (no manifest.json); give the directory `curate run` made"
        )
    stages = collect.stage_rows(run)
    strategies = collect.strategy_rows(run)
    board = collect.sweep_leaderboard(run)
    charts = []
    for name, bins in collect.histograms(run).items():
        if not bins:
            continue
        words = name == "caption words"
        title = "caption length (words; 40 = 40 or more)" if words else name
        charts.append(plots.bar_svg(bins, title, "words" if words else "score", 1.0 if words else 0.02))
    views = collect.filter_views(run, per_side)
    shown = [ex for v in views for ex in (*v.kept_examples, *v.removed_examples)]
    found = thumbs.attach(run / "shards", shown)
    aggregates = sorted({name for s in strategies for name in (s.scores.get("aggregates") or {})})
    extras = sorted({key for s in strategies for key in (s.scores.get("extra") or {})})
    env = Environment(loader=PackageLoader("curate.report"), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("index.html.j2").render(
        run=run.resolve(),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        stages=stages,
        strategies=strategies,
        board=board,
        aggregates=aggregates,
        extras=extras,
        charts=charts,
        views=views,
        thumbs_found=found,
        thumbs_wanted=len(shown),
    )
    out = run / "report" / "index.html"
    atomic_write_text(out, html)
    return out
