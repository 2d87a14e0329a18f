"""Small matplotlib charts as inline SVG (no files beside the report, no JavaScript)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402


def bar_svg(bins: list[tuple[float, int]], title: str, xlabel: str, width: float) -> str:
    """A histogram from precomputed (bin start, count) pairs, as an <svg> string."""
    fig, ax = plt.subplots(figsize=(5.2, 2.6), dpi=100)
    ax.bar([b for b, _ in bins], [n for _, n in bins], width=width, align="edge", color="#4c72b0")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("rows", fontsize=9)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # same run, same bytes
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: the SVG is inlined in HTML
