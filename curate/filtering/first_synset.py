"""`wordnet.synsets(token)[0].offset()` exactly as NLTK 3.8.1 (DataComp's pinned version) computes it.

Two reasons not to call the installed NLTK's `synsets` directly:
- NLTK 3.9 changed morphy: 3.8.1 keeps applying the suffix rules until some form is a lemma, 3.9+
  applies them once. So 'dogss' is dog.n.01 for DataComp and nothing for NLTK 3.10; alt-text has
  such tokens.
- `synsets` builds every sense of every part of speech (e.g. 57 for 'run') by parsing data-file
  lines, where the test needs only the first offset: an index lookup.
The order is NLTK's: parts of speech noun, verb, adjective, adverb; within one, the morphy forms in
order; within a form, the senses as the index lists them. Only NLTK's loaded index and exception
lists are used, not its code.
"""

from __future__ import annotations

from typing import Any

POS_ORDER = ("n", "v", "a", "r")
# NLTK's WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS (the same in 3.8.1 and 3.10).
SUBSTITUTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
        ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"),
    ),
    "v": (
        ("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}  # fmt: skip


def _apply_rules(forms: list[str], rules: tuple[tuple[str, str], ...]) -> list[str]:
    out = [form[: -len(old)] + new for form in forms for old, new in rules if form.endswith(old)]
    return list(dict.fromkeys(out))  # first occurrences only: same answer, no exponential blow-up


def first_form(lemma: str, pos: str, index: dict[str, dict[str, list[int]]], exceptions: dict) -> str | None:
    """The first form NLTK 3.8.1's `_morphy(lemma, pos)` returns (None when it returns nothing)."""

    def first_known(forms: list[str]) -> str | None:
        return next((f for f in forms if pos in index.get(f, ())), None)

    if lemma in exceptions:  # 0. the exception list, and nothing else
        return first_known([lemma, *exceptions[lemma]])
    forms = _apply_rules([lemma], SUBSTITUTIONS[pos])  # 1. the rules once, the lemma itself first
    found = first_known([lemma, *forms])
    while found is None and forms:  # 2. (3.8.1 only) again and again until a form is known
        forms = _apply_rules(forms, SUBSTITUTIONS[pos])
        found = first_known(forms)
    return found


def first_synset_offset(wn: Any, token: str) -> int | None:
    """Offset of `wn.synsets(token)[0]` under NLTK 3.8.1, or None when the token has no synset.

    `wn` is an NLTK WordNetCorpusReader (its `_lemma_pos_offset_map` and `_exception_map`)."""
    lemma = token.lower()
    index = wn._lemma_pos_offset_map
    for pos in POS_ORDER:
        form = first_form(lemma, pos, index, wn._exception_map[pos])
        if form is not None:
            return index[form][pos][0]
    return None
