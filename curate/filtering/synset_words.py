"""Does a caption name an ImageNet class? DataComp's text_based test (§2.5), made fast.

A caption matches when any whitespace token's FIRST WordNet synset (`wordnet.synsets(token)[0]`:
lowercased, morphy, nouns first; computed as NLTK 3.8.1 does, see first_synset.py) has an offset in
the id list; offsets are compared without the POS letter, as the reference does. Each distinct token
is looked up once per process (a bounded cache): captions repeat their words, so most tokens are hits.

The default id list is DataComp's `imagenet21k_wordnet_ids.txt`, shipped in `curate/assets`: the
same bytes (sha256 66362bde…f48cb2f2, the hash DataComp's download() pins) as Google's BiT list and
timm's `imagenet21k_goog_synsets.txt`, from which it was copied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from curate.errors import CurateError
from curate.filtering import wordnet
from curate.filtering.first_synset import first_synset_offset

_WNID = re.compile(r"[a-z]\d+")
_CACHE_LIMIT = 2_000_000  # distinct tokens remembered per process (~200 MB at most)


def default_ids_path() -> Path:
    """DataComp's ImageNet-21k WordNet id list, shipped with curate."""
    return Path(__file__).resolve().parent.parent / "assets" / "imagenet21k_wordnet_ids.txt"


def read_offsets(path: str | Path) -> frozenset[int]:
    """WordNet offsets of a wnid list (one `n01440764` per line): the POS letter is dropped, as in
    the reference. A malformed line is an error naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CurateError(f"{path}: cannot read the WordNet id list ({exc.strerror})") from None
    offsets = set()
    for number, line in enumerate(lines, 1):
        wnid = line.strip()
        if not wnid:
            continue
        if not _WNID.fullmatch(wnid):
            raise CurateError(
                f"{path}, line {number}: {wnid[:40]!r} is not a WordNet id (one per line, like n02084071)"
            )
        offsets.add(int(wnid[1:]))
    if not offsets:
        raise CurateError(f"{path}: no WordNet ids in the file (one per line, like n02084071)")
    return frozenset(offsets)


class SynsetMatcher:
    """Answers, per caption, whether a token's first WordNet synset is in `offsets`."""

    def __init__(self, offsets: frozenset[int]) -> None:
        self.offsets = offsets
        self._known: dict[str, bool] = {}
        self._wn = wordnet.wordnet()

    def token_matches(self, token: str) -> bool:
        """The reference's per-token rule: `wordnet.synsets(token)[0].offset()` is listed."""
        return first_synset_offset(self._wn, token) in self.offsets

    def matches(self, texts: Sequence[str | None]) -> np.ndarray:
        """Bool per caption (None and empty captions match nothing)."""
        known = self._known
        if len(known) > _CACHE_LIMIT:
            known.clear()
        out = np.zeros(len(texts), dtype=bool)
        for i, text in enumerate(texts):
            if not text:
                continue
            for token in text.split():
                hit = known.get(token)
                if hit is None:
                    hit = known[token] = self.token_matches(token)
                if hit:
                    out[i] = True
                    break
        return out


@cache
def matcher(ids_path: str) -> SynsetMatcher:
    """One matcher (and its token cache) per process and id list; filters stay picklable."""
    return SynsetMatcher(read_offsets(ids_path))
