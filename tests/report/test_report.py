"""The HTML report of a small real run: what it picks near each filter's boundary, thumbnails read from
the shards, and the page rendered in headless Chromium (no console errors, every image decoded); the
screenshot is kept in test-artifacts/report.png."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.report import build_report
from curate.report.collect import filter_views
from curate.report.thumbs import attach
from tests.metadata_parts import uid

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_boundary_examples_are_the_nearest_on_each_side(small_run: Path) -> None:
    views = {(v.strategy, v.path): v for v in filter_views(small_run, per_side=2)}
    top = views[("top", "clip_score")]
    # scores 0.0..0.9 by row; the fraction cut keeps >= 0.4; row 9 was not downloaded (not shown)
    assert (top.kept, top.removed, top.by_score) == (5, 4, True)
    assert [e.uid for e in top.kept_examples] == [uid(4), uid(5)]  # lowest kept scores
    assert [e.uid for e in top.removed_examples] == [uid(3), uid(2)]  # highest removed scores
    assert top.kept_examples[0].score == pytest.approx(0.4)
    basic = views[("basic", "basic_filter")]
    assert basic.kept + basic.removed == 9 and not basic.by_score
    assert all(e.reason for e in basic.removed_examples)
    assert dict(basic.reasons) and sum(dict(basic.reasons).values()) == basic.removed
    shown = [*top.kept_examples, *top.removed_examples]
    assert attach(small_run / "shards", shown) == 4
    assert all(e.thumb and e.thumb.startswith("data:image/jpeg") for e in shown)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed for this test (install.sh installs it)"
    return found


def test_report_renders_in_headless_chromium(small_run: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    page_path = build_report(run, per_side=3)
    html = page_path.read_text()
    assert page_path == run / "report" / "index.html"
    sections = ("Stages", "Funnels", "clip_b32_similarity_score", "caption length", "top &middot; clip_score")
    for text in sections:
        assert text in html, text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # self-contained: nothing fetched
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 1600})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        charts = page.evaluate("document.querySelectorAll('.charts svg').length")
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) >= 6 and all(images)  # thumbnails of both strategies' boundary samples
    assert charts == 2  # the score histogram and caption lengths
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_report_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output and "Traceback" not in res.output
