"""DataComp's `text_based` baseline (§2.5): English captions that name an ImageNet-21k class.

Keep a row when fastText's top-1 language is English and some whitespace token's first WordNet
synset is one of the ImageNet-21k synsets (offsets compared without POS, exactly as the reference,
so "dog," with its comma matches nothing while "dogs" matches through morphy). WordNet comes from
the Debian packages (see curate/filtering/wordnet.py); the id list defaults to DataComp's own, which
curate ships.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from curate.errors import CurateError
from curate.filtering import wordnet
from curate.filtering.base import Batch, Filter, FilterParams, Verdict, merge_reasons
from curate.filtering.langid import english_mask
from curate.filtering.synset_words import default_ids_path, matcher, read_offsets


class TextBasedParams(FilterParams):
    synsets: str | None = Field(
        None, description="WordNet id list, one per line (default: DataComp's imagenet21k_wordnet_ids.txt)."
    )
    lid_model: str | None = Field(None, description="fastText lid.176 .bin/.ftz (default: bundled .ftz).")


class TextBased(Filter):
    name = "text_based"
    Params = TextBasedParams

    def columns(self) -> list[str]:
        return ["text"]

    def preflight(self) -> list[str]:
        found = wordnet.problems()
        try:
            read_offsets(self.params.synsets or default_ids_path())
        except CurateError as exc:
            found.append(f"synsets: {exc}")
        model = self.params.lid_model
        if model and not Path(model).is_file():
            found.append(f"lid_model: file not found (got '{model}')")
        return found

    def apply(self, batch: Batch) -> Verdict:
        texts = batch.texts()
        english = english_mask(batch.table.column("text"), self.params.lid_model)
        named = np.zeros(len(texts), dtype=bool)
        rows = np.flatnonzero(english)  # WordNet only where the language test passed
        named[rows] = matcher(self.params.synsets or str(default_ids_path())).matches(
            [texts[i] for i in rows]
        )
        keep, reason = merge_reasons((english, "not English"), (named, "no ImageNet synset word"))
        return Verdict(keep, reason=reason)
