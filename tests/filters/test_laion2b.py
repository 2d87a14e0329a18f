"""laion2b (reference §2.8): clip_b32_similarity_score >= 0.28 and gcld3 says English."""

from __future__ import annotations

import pytest

from curate.filtering.compose import parse_strategy, preflight_problems
from curate.filtering.langid import cld3_available, cld3_english_mask
from tests.metadata_parts import ENGLISH, batch, rows

pytestmark = pytest.mark.skipif(not cld3_available(), reason="gcld3 not installed (install.sh installs it)")

FRENCH = "un chien brun qui court sur la plage avec une balle rouge"


def test_threshold_and_language() -> None:
    texts = [ENGLISH, ENGLISH, ENGLISH, FRENCH, FRENCH, None, ""]
    scores = [0.28, 0.2799, float("nan"), 0.5, 0.1, 0.5, 0.5]
    ev = parse_strategy("s", "laion2b").evaluate(batch(rows(7, text=texts, clip_b32_similarity_score=scores)))
    assert ev.keep.tolist() == [True, False, False, False, False, False, False]
    assert ev.leaves["laion2b"].reason.tolist() == [
        None,
        "clip_b32_similarity_score < 0.28",
        "clip_b32_similarity_score is missing (NaN)",
        "not English (gcld3)",
        "clip_b32_similarity_score < 0.28",  # both fail: the threshold is checked first
        "not English (gcld3)",
        "not English (gcld3)",
    ]


def test_gcld3_reads_newlines_as_spaces() -> None:
    assert cld3_english_mask([ENGLISH.replace(" ", "\n"), FRENCH]).tolist() == [True, False]


def test_needs_the_b32_score_column() -> None:
    strategies = {"s": parse_strategy("s", "laion2b")}
    problems = preflight_problems(strategies, {"uid", "text"}, set())
    assert len(problems) == 1 and problems[0].startswith(
        "strategies.s.laion2b: needs column clip_b32_similarity_score, which the metadata does not have"
    )
