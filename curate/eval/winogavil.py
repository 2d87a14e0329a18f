"""WinoGAViL as DataComp's `wino_eval.py`: one instance at a time, the cue as "A/An <cue>", the
n_assoc candidate images closest to it predicted, scored with the Jaccard index of predicted vs gold."""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.eval.metrics import winogavil_instance, winogavil_summary
from curate.eval.zeroshot import EvalModel


def winogavil_prompt(cue: str) -> str:
    """DataComp lowercases the cue and puts "An" before a vowel, "A" otherwise."""
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in ("a", "e", "i", "o", "u") else f"A {cue}"


def evaluate_winogavil(model: EvalModel, items: list[Any]) -> dict[str, Any]:
    if not items:
        raise CurateError("misc/winogavil: the set holds no instance")
    scores, sizes = [], []
    for i, item in enumerate(items):
        if len(item.candidates) != len(item.candidate_images):
            raise CurateError(
                f"misc/winogavil: instance {i} has {len(item.candidates)} candidates but "
                f"{len(item.candidate_images)} images"
            )
        images = model.encode_images(item.candidate_images, amp=True)
        text = model.encode_texts([winogavil_prompt(item.cue)], amp=True).cpu().numpy()
        similarities = (text @ images.T)[0]
        gold = np.isin(np.asarray(item.candidates), np.asarray(item.associations))
        scores.append(winogavil_instance(similarities, gold))
        sizes.append(len(item.candidates))
    return winogavil_summary(scores, sizes)
