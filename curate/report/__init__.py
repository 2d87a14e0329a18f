"""The HTML report of a run: `curate report RUN` -> RUN/report/index.html (self-contained)."""

from curate.report.render import build_report

__all__ = ["build_report"]
