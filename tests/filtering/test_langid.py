"""Language ID with DataComp's semantics (top-1 == en, no threshold) and fastText's tokenizer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.errors import CurateError
from curate.filtering.langid import (
    _fasttext_model,
    default_model_path,
    english_mask,
    fasttext_token_counts,
)

CAPTIONS = [
    "a brown dog running on the beach",
    "un chien brun qui court sur la plage",
    "ein brauner Hund, der am Strand läuft",
    None,
    "",
    "a brown dog\nrunning on the beach",
    "a brown dog running on the beach",  # a repeat: predicted once, answered twice
]


def _top1_is_en(text: str) -> bool:
    """The reference rule, one caption at a time through fastText's own wrapper."""
    labels, _ = _fasttext_model(default_model_path()).predict(text.replace("\n", " "), k=1)
    return labels[0] == "__label__en"


def test_english_mask_follows_the_reference_rule() -> None:
    got = english_mask(CAPTIONS)
    expected = [bool(t) and _top1_is_en(t) for t in CAPTIONS]
    assert got.tolist() == expected == [True, False, False, False, False, True, True]


def test_arrow_input_and_chunks_give_the_same_answer() -> None:
    arr = pa.array(CAPTIONS, pa.string())
    chunked = pa.chunked_array([arr.slice(0, 3), arr.slice(3)])
    assert english_mask(arr).tolist() == english_mask(chunked).tolist() == english_mask(CAPTIONS).tolist()
    assert english_mask([]).shape == (0,) and english_mask(pa.array([], pa.string())).shape == (0,)


def test_no_confidence_threshold() -> None:
    # a low-confidence top-1 'en' still counts: DataComp applies no threshold
    labels, probs = _fasttext_model(default_model_path()).predict("I am a", k=1)
    assert labels[0] == "__label__en" and probs[0] < 0.5
    assert english_mask(["I am a"]).tolist() == [True]


def test_explicit_model_path_and_missing_model() -> None:
    assert english_mask(CAPTIONS, default_model_path()).tolist() == english_mask(CAPTIONS).tolist()
    with pytest.raises(CurateError, match="not found"):
        english_mask(["hello there"], "/nonexistent/lid.176.bin")


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("a b", 2),
        ("a  b", 2),
        ("  lead and trail  ", 3),
        ("a\nb", 3),  # '\n' is also an end-of-sentence token
        ("a\n", 2),
        ("\n", 1),
        ("a\r\nb", 3),
        ("a\tb\vc\fd\re\x00f", 6),
        ("a\u00a0b", 1),  # fastText splits on ASCII bytes only, unlike str.split()
        ("a\u3000b c", 2),
        ("", 0),
        (None, 0),
    ],
)
def test_fasttext_token_counts(text: str | None, tokens: int) -> None:
    assert fasttext_token_counts([text]).tolist() == [tokens]
    assert fasttext_token_counts(pa.array([text], pa.string())).tolist() == [tokens]


def test_token_counts_vectorised() -> None:
    counts = fasttext_token_counts(["one", "two words", None, "x\ny z"])
    assert counts.dtype == np.int64 and counts.tolist() == [1, 2, 0, 4]
