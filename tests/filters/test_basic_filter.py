"""basic_filter (reference §2.4): English, words > 2, chars > 5, min side >= 200, aspect <= 3."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.errors import ConfigError
from curate.filtering.compose import parse_strategy
from filters.basic_filter import THREE_WORDS
from tests.metadata_parts import ENGLISH, batch, rows

# (caption, width, height, kept?, reason) -- each row derived by hand from §2.4
CASES = [
    (ENGLISH, 300, 300, True, None),
    ("two words", 300, 300, False, "fewer than 3 words"),
    ("the red car", 300, 300, True, None),  # exactly 3 words
    ("a b c", 300, 300, False, "fewer than 6 characters"),  # 3 words, 5 characters
    ("I am a", 300, 300, True, None),  # 3 words, 6 characters, fastText top-1 'en'
    (ENGLISH, 199, 300, False, "image side < 200 px (or size unknown)"),
    (ENGLISH, 300, 200, True, None),  # min side exactly 200
    (ENGLISH, 200, 600, True, None),  # aspect exactly 3.0
    (ENGLISH, 300, 903, False, "aspect ratio > 3"),  # aspect 3.01
    (ENGLISH, 903, 300, False, "aspect ratio > 3"),
    ("", 300, 300, False, "fewer than 3 words"),
    (None, 300, 300, False, "no caption"),
    ("un chien brun qui court sur la plage", 300, 300, False, "not English (fastText)"),
    ("a brown dog\nrunning on\tthe beach", 300, 300, True, None),  # newline: replaced for language ID
    ("the\u00a0red car", 300, 300, True, None),  # str.split() splits on NBSP: 3 words
    ("the red\u2003car", 300, 300, True, None),  # and on an em space
    ("the\u200bred car", 300, 300, False, "fewer than 3 words"),  # not on a zero-width space: 2 words
    (ENGLISH, None, 300, False, "image side < 200 px (or size unknown)"),
    (ENGLISH, 0, 300, False, "image side < 200 px (or size unknown)"),
]


def test_each_threshold_on_its_boundary() -> None:
    data = rows(
        len(CASES),
        text=[c[0] for c in CASES],
        original_width=[c[1] for c in CASES],
        original_height=[c[2] for c in CASES],
    )
    ev = parse_strategy("s", "basic_filter").evaluate(batch(data))
    verdict = ev.leaves["basic_filter"]
    for i, (caption, w, h, kept, reason) in enumerate(CASES):
        assert verdict.keep[i] == kept, (caption, w, h)
        assert verdict.reason[i] == reason, (caption, w, h)
    assert ev.keep.tolist() == [c[3] for c in CASES]


def test_three_word_pattern_equals_python_split() -> None:
    rng = random.Random(0)
    alphabet = [
        "a",
        "b",
        "é",
        "字",
        " ",
        "\t",
        "\n",
        "\x1c",
        "\x85",
        "\u00a0",
        "\u2003",
        "\u200b",
        "\u3000",
        ".",
    ]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9))) for _ in range(20_000)]
    got = pc.match_substring_regex(pa.array(texts), THREE_WORDS).to_numpy(zero_copy_only=False)
    assert got.tolist() == [len(t.split()) > 2 for t in texts]


def test_character_count_is_code_points() -> None:
    data = rows(2, text=["a b é", "a b cé"])  # 5 and 6 code points (6 and 7 bytes)
    reason = parse_strategy("s", "basic_filter").evaluate(batch(data)).leaves["basic_filter"].reason
    assert reason[0] == "fewer than 6 characters" and reason[1] != "fewer than 6 characters"


def test_missing_lid_model_is_a_preflight_problem() -> None:
    strategy = parse_strategy("s", {"basic_filter": {"lid_model": "/nonexistent/lid.176.bin"}})
    problems = strategy.leaves()[0].filter.preflight()
    assert problems == ["lid_model: no such file: /nonexistent/lid.176.bin"]
    with pytest.raises(ConfigError, match="basic_filter.threshold: unknown parameter"):
        parse_strategy("s", {"basic_filter": {"threshold": 3}})


def test_reads_only_the_reference_columns() -> None:
    strategy = parse_strategy("s", "basic_filter")
    assert strategy.columns() == ["text", "original_width", "original_height"]
    assert np.asarray(strategy.embeddings()).size == 0
